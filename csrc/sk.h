/* Shared declarations of the C core: each area registers its functions into the
 * module table on top of the stack. Only luaopen_scalekit_core is exported. */
#ifndef SK_H
#define SK_H

#include <time.h>

#include "compat.h"

#define SK_VERSION "0.1.0"

#define SK_INTERNAL __attribute__((visibility("hidden")))

SK_INTERNAL void sk_http_open(lua_State *L);   /* http.c:   core.http(opts)          */
SK_INTERNAL void sk_multi_open(lua_State *L);  /* multi.c:  core.multi(opts)         */
SK_INTERNAL void sk_token_open(lua_State *L);  /* token.c:  core.token_vault()       */
SK_INTERNAL void sk_crypto_open(lua_State *L); /* crypto.c: base64, hmac, rsa, random */
SK_INTERNAL void sk_util_open(lua_State *L);   /* util.c:   sleep, monotonic clock   */
SK_INTERNAL void sk_url_open(lua_State *L);    /* url.c:    url_encode               */
SK_INTERNAL void sk_aead_open(lua_State *L);   /* aead.c:   AES-256-GCM seal/open */

/* token.c: the bytes of the token vault at `idx`, read in place for http.c (1), an
 * empty or closed vault (0), not a vault (-1). */
SK_INTERNAL int sk_token_bytes(lua_State *L, int idx, const char **tok, size_t *len,
                               lua_Integer *gen);

/* Seconds on `id` (CLOCK_MONOTONIC for expiry and retry timing, CLOCK_REALTIME for
 * the epoch times users see). */
static inline double sk_clock(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Register the metatable `name` with metamethods `meta` and methods `methods`
 * (its __index); leaves the stack as it was. Inline so that each area's file
 * stands alone (the fuzz drivers include them one at a time). */
static inline void sk_newclass(lua_State *L, const char *name, const luaL_Reg *meta,
                               const luaL_Reg *methods)
{
    luaL_newmetatable(L, name);
    luaL_setfuncs(L, meta, 0);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushstring(L, name);  /* 5.4 sets __name itself; LuaJIT does not */
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}

#endif
