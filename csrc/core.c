/* scalekit.core: the C half of scalekit-lua. It only assembles the module; each
 * area lives in its own file (http.c, multi.c, token.c, crypto.c, util.c, url.c). */
#include "sk.h"

__attribute__((visibility("default"))) int luaopen_scalekit_core(lua_State *L);

__attribute__((visibility("default"))) int luaopen_scalekit_core(lua_State *L)
{
    lua_newtable(L);
    lua_pushliteral(L, SK_VERSION);
    lua_setfield(L, -2, "version");
    sk_util_open(L);
    sk_url_open(L);
    sk_token_open(L);
    sk_http_open(L);
    sk_multi_open(L);
    sk_crypto_open(L);
    sk_aead_open(L);
    return 1;
}
