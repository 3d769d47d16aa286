/* Clocks and sleeping for the Lua layer's retry loop and token expiry, and the
 * percent-encoding of the request path. */
#include <errno.h>
#include <math.h>
#include <time.h>

#include "sk.h"

static double clock_seconds(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* core.monotonic() -> seconds, only meaningful as differences. */
static int util_monotonic(lua_State *L)
{
    lua_pushnumber(L, clock_seconds(CLOCK_MONOTONIC));
    return 1;
}

/* core.now() -> wall-clock epoch seconds with sub-second precision. */
static int util_now(lua_State *L)
{
    lua_pushnumber(L, clock_seconds(CLOCK_REALTIME));
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

/* core.url_encode(s) -> s percent-encoded (RFC 3986: all but A-Z a-z 0-9 - . _ ~).
 * The request path is built on every call: this is the hot part of it, and a
 * string with nothing to escape (most ids) comes back as the same object, with no
 * allocation. */
static int util_url_encode(lua_State *L)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len, i, extra = 0;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    luaL_Buffer b;

#define UNRESERVED(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z') || \
                       ((c) >= '0' && (c) <= '9') || (c) == '-' || (c) == '.' || \
                       (c) == '_' || (c) == '~')
    for (i = 0; i < len; i++)
        if (!UNRESERVED(s[i]))
            extra++;
    if (extra == 0) {
        lua_settop(L, 1);
        return 1;
    }
    luaL_buffinit(L, &b);
    for (i = 0; i < len; i++) {
        unsigned char c = s[i];
        if (UNRESERVED(c)) {
            luaL_addchar(&b, (char)c);
        } else {
            luaL_addchar(&b, '%');
            luaL_addchar(&b, hex[c >> 4]);
            luaL_addchar(&b, hex[c & 15]);
        }
    }
#undef UNRESERVED
    luaL_pushresult(&b);
    return 1;
}

void sk_util_open(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"monotonic", util_monotonic},
        {"now", util_now},
        {"sleep", util_sleep},
        {"url_encode", util_url_encode},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
}
