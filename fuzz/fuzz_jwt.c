/* libFuzzer driver: JWT segment parsing and JWKS parsing, through the Lua layer
 * (lua/scalekit/auth/jwt.lua) over the C core compiled with the sanitizers (the
 * csrc/ objects are linked in, scalekit.core is preloaded). fuzz/fuzz_jwt.lua
 * returns the function run for each input; a Lua error is a bug (abort).
 * SK_ROOT (compile-time) is the checkout. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#ifndef SK_ROOT
#define SK_ROOT "."
#endif

int luaopen_scalekit_core(lua_State *L);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;
static int fn_ref = LUA_NOREF;

static void die(const char *where)
{
    fprintf(stderr, "fuzz_jwt: Lua error in %s: %s\n", where, lua_tostring(L, -1));
    abort();
}

static void setup(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_pushstring(L, SK_ROOT "/lua/?.lua;" SK_ROOT "/lua/?/init.lua;" SK_ROOT "/fuzz/?.lua");
    lua_setfield(L, -2, "path");
    lua_pushstring(L, "/usr/lib/x86_64-linux-gnu/lua/5.4/?.so;/usr/local/lib/lua/5.4/?.so;"
                      "/usr/lib/lua/5.4/?.so");
    lua_setfield(L, -2, "cpath");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_scalekit_core);
    lua_setfield(L, -2, "scalekit.core");
    lua_pop(L, 2);
    lua_getglobal(L, "require");
    lua_pushstring(L, "fuzz_jwt");
    if (lua_pcall(L, 1, 1, 0) != 0)
        die("setup");
    fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned runs = 0;
    if (L == NULL)
        setup();
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != 0)
        die("run");
    if (++runs % 256 == 0)
        lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
