/* Lua 5.1 / LuaJIT vs 5.2+ C API differences, in one place.
 * The rest of csrc/ is written against the 5.2+ names; LuaJIT 2.1 already
 * exports luaL_setfuncs, luaL_newlib, luaL_testudata and luaL_setmetatable. */
#ifndef SK_COMPAT_H
#define SK_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM < 502
#  include <luajit.h>
#  define lua_rawlen(L, i)        lua_objlen((L), (i))
#  define lua_absindex(L, i)      (((i) > 0 || (i) <= LUA_REGISTRYINDEX) ? (i) : lua_gettop(L) + (i) + 1)
#  if !defined(LUAJIT_VERSION_NUM) || LUAJIT_VERSION_NUM < 20100
#    error "scalekit needs Lua 5.2+ or LuaJIT 2.1 (plain Lua 5.1 lacks luaL_setfuncs)"
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
