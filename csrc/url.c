/* Percent-encoding (RFC 3986) of path segments, query values and form fields. */
#include "sk.h"

/* core.url_encode(s) -> s percent-encoded (RFC 3986: all but A-Z a-z 0-9 - . _ ~).
 * The request path is built on every call: this is the hot part of it, and a
 * string with nothing to escape (most ids) comes back as the same object, with no
 * allocation. */
static int url_encode(lua_State *L)
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

void sk_url_open(lua_State *L)
{
    lua_pushcfunction(L, url_encode);
    lua_setfield(L, -2, "url_encode");
}
