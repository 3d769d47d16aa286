/* Lua 5.1 / LuaJIT vs 5.2+ C API differences, in one place.
 * The rest of csrc/ is written against the 5.2+ names. LuaJIT 2.1 already exports
 * luaL_setfuncs, luaL_testudata and luaL_setmetatable (and defines the
 * luaL_newlibtable macro, which tells it apart from PUC Lua 5.1); plain 5.1 gets the
 * two it lacks here, as lua-cjson and Lua-cURLv3 do. */
#ifndef SK_COMPAT_H
#define SK_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM < 502
#  define lua_rawlen(L, i)        lua_objlen((L), (i))
#  define lua_absindex(L, i)      (((i) > 0 || (i) <= LUA_REGISTRYINDEX) ? (i) : lua_gettop(L) + (i) + 1)
#  ifndef luaL_newlibtable  /* PUC Lua 5.1, not LuaJIT 2.1 */
static inline void luaL_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
    luaL_checkstack(L, nup + 1, "too many upvalues");
    for (; l->name != NULL; l++) {
        int i;
        for (i = 0; i < nup; i++)
            lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}
static inline void luaL_setmetatable(lua_State *L, const char *tname)
{
    luaL_getmetatable(L, tname);
    lua_setmetatable(L, -2);
}
#  endif
#endif

/* A userdata with no user values (5.4 gives every userdata one by default). */
#if LUA_VERSION_NUM >= 504
#  define sk_newuserdata(L, sz)   lua_newuserdatauv((L), (sz), 0)
#else
#  define sk_newuserdata(L, sz)   lua_newuserdata((L), (sz))
#endif

/* __close exists from 5.4 on. */
#if LUA_VERSION_NUM >= 504
#  define SK_HAS_CLOSE 1
#endif

#endif
