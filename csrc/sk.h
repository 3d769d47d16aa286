/* Shared declarations of the C core: each area registers its functions into the
 * module table on top of the stack. Only luaopen_scalekit_core is exported. */
#ifndef SK_H
#define SK_H

#include "compat.h"

#define SK_VERSION "0.1.0"

#define SK_INTERNAL __attribute__((visibility("hidden")))

SK_INTERNAL void sk_http_open(lua_State *L);   /* http.c:   core.http(opts)          */
SK_INTERNAL void sk_token_open(lua_State *L);  /* token.c:  core.token_vault()       */
SK_INTERNAL void sk_crypto_open(lua_State *L); /* crypto.c: base64, hmac, rsa, random */
SK_INTERNAL void sk_util_open(lua_State *L);   /* util.c:   sleep, clocks            */

#endif
