/* The monotonic clock and sleeping, for the Lua layer's retry loop and waits. */
#include <errno.h>
#include <math.h>

#include "sk.h"

/* core.monotonic() -> seconds, only meaningful as differences. */
static int util_monotonic(lua_State *L)
{
    lua_pushnumber(L, sk_clock(CLOCK_MONOTONIC));
    return 1;
}

/* core.sleep(seconds): blocks the thread; the Lua layer uses ngx.sleep instead
 * inside nginx request handlers. Signals do not cut the sleep short. */
static int util_sleep(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    struct timespec req, rem;
    luaL_argcheck(L, s >= 0 && s <= 86400 && !isnan(s), 1, "must be between 0 and 86400");
    req.tv_sec = (time_t)s;
    req.tv_nsec = (long)((s - (double)req.tv_sec) * 1e9);
    while (nanosleep(&req, &rem) != 0 && errno == EINTR)
        req = rem;
    return 0;
}

void sk_util_open(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"monotonic", util_monotonic},
        {"sleep", util_sleep},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
}
