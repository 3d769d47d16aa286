/* The token vault: where the client-credentials access token lives between calls.
 *
 * Keeping it in C means the token bytes are wiped (OPENSSL_cleanse) when replaced or
 * closed, never show up in tostring(), and expiry runs on CLOCK_MONOTONIC so a wall
 * clock jump cannot make a dead token look alive. http.c reads the bytes in place
 * (sk_token_bytes) when the session hands it the vault instead of a string, so an API
 * call makes no Lua copy of the token; the generation number, bumped on every change,
 * tells "the token that was sent" apart from a newer one without the bytes. */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "sk.h"

#define TOKEN_MT "scalekit.core.Token"

typedef struct {
    char *token;          /* NUL-terminated copy, NULL when empty */
    size_t len;
    double expires_mono;  /* the token is dead after this instant */
    double refresh_mono;  /* fetch a new one from this instant on */
    double expires_wall;  /* epoch seconds, reported to users */
    lua_Integer gen;      /* bumped on every set and wipe */
    int closed;
} sk_token;

static void token_wipe(sk_token *t)
{
    if (t->token != NULL) {
        OPENSSL_cleanse(t->token, t->len);
        free(t->token);
    }
    if (t->token != NULL || t->len != 0)
        t->gen++;
    t->token = NULL;
    t->len = 0;
    t->expires_mono = t->refresh_mono = t->expires_wall = 0;
}

static sk_token *token_check(lua_State *L)
{
    sk_token *t = (sk_token *)luaL_checkudata(L, 1, TOKEN_MT);
    if (t->closed)
        luaL_error(L, "scalekit: token vault is closed");
    return t;
}

/* core.token_vault() -> vault */
static int token_new(lua_State *L)
{
    sk_token *t = (sk_token *)sk_newuserdata(L, sizeof *t);
    memset(t, 0, sizeof *t);
    luaL_setmetatable(L, TOKEN_MT);
    return 1;
}

/* vault:set(token, expires_in, margin): keep `token` for expires_in seconds and ask
 * for a new one `margin` seconds before that. */
static int token_set(lua_State *L)
{
    sk_token *t = token_check(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    double expires_in = luaL_checknumber(L, 3);
    double margin = luaL_optnumber(L, 4, 0);
    char *copy;
    double now;

    luaL_argcheck(L, len > 0 && len == strlen(s), 2, "must be a non-empty string without NUL");
    luaL_argcheck(L, expires_in > 0, 3, "must be positive");
    luaL_argcheck(L, margin >= 0 && margin < expires_in, 4, "must be in [0, expires_in)");
    copy = (char *)malloc(len + 1);
    if (copy == NULL)
        return luaL_error(L, "scalekit: out of memory");
    memcpy(copy, s, len + 1);
    token_wipe(t);
    now = sk_clock(CLOCK_MONOTONIC);
    t->token = copy;
    t->len = len;
    t->gen++;
    t->expires_mono = now + expires_in;
    t->refresh_mono = now + expires_in - margin;
    t->expires_wall = sk_clock(CLOCK_REALTIME) + expires_in;
    return 0;
}

/* vault:get() -> token, expires_at, needs_refresh | nil
 * A token past its refresh point is still returned (with needs_refresh = true) so
 * the caller can keep using it if fetching a new one fails. */
static int token_get(lua_State *L)
{
    sk_token *t = token_check(L);
    double now;
    if (t->token == NULL)
        return 0;
    now = sk_clock(CLOCK_MONOTONIC);
    if (now >= t->expires_mono) {
        token_wipe(t);
        return 0;
    }
    lua_pushlstring(L, t->token, t->len);
    lua_pushnumber(L, t->expires_wall);
    lua_pushboolean(L, now >= t->refresh_mono);
    return 3;
}

/* vault:fresh() -> generation | nil: the generation of the token held when it is
 * alive and not yet due for a refresh (the common case of every API call, answered
 * without copying the token out). */
static int token_fresh(lua_State *L)
{
    sk_token *t = token_check(L);
    if (t->token == NULL || sk_clock(CLOCK_MONOTONIC) >= t->refresh_mono)
        return 0;
    lua_pushinteger(L, t->gen);
    return 1;
}

/* vault:clear([token | generation]) -> boolean. With a token (or the generation
 * vault:fresh() gave), clears only if it is still the one held (a 401 for an old token
 * must not throw away a newer one). */
static int token_clear(lua_State *L)
{
    sk_token *t = token_check(L);
    if (lua_type(L, 2) == LUA_TNUMBER) {
        if (t->token == NULL || lua_tointeger(L, 2) != t->gen) {
            lua_pushboolean(L, 0);
            return 1;
        }
    } else if (!lua_isnoneornil(L, 2)) {
        size_t len;
        const char *s = luaL_checklstring(L, 2, &len);
        if (t->token == NULL || len != t->len || CRYPTO_memcmp(s, t->token, len) != 0) {
            lua_pushboolean(L, 0);
            return 1;
        }
    }
    lua_pushboolean(L, t->token != NULL);
    token_wipe(t);
    return 1;
}

/* The token held by the vault at `idx`, read in place (NUL-terminated, valid until
 * the vault changes), for http.c. 1: *tok, *len and *gen are set; 0: the vault is
 * empty or closed; -1: the value at `idx` is not a vault. */
int sk_token_bytes(lua_State *L, int idx, const char **tok, size_t *len, lua_Integer *gen)
{
    sk_token *t = (sk_token *)lua_touserdata(L, idx);
    int same;
    /* luaL_testudata, which PUC Lua 5.1 lacks */
    if (t == NULL || !lua_getmetatable(L, idx))
        return -1;
    luaL_getmetatable(L, TOKEN_MT);
    same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (!same)
        return -1;
    if (t->closed || t->token == NULL)
        return 0;
    *tok = t->token;
    *len = t->len;
    *gen = t->gen;
    return 1;
}

/* close, __gc and __close: wipe and forget; safe to call any number of times. */
static int token_close(lua_State *L)
{
    sk_token *t = (sk_token *)luaL_checkudata(L, 1, TOKEN_MT);
    token_wipe(t);
    t->closed = 1;
    return 0;
}

static int token_tostring(lua_State *L)
{
    sk_token *t = (sk_token *)luaL_checkudata(L, 1, TOKEN_MT);
    lua_pushfstring(L, TOKEN_MT " (%s): %p", t->closed ? "closed" : "open", (void *)t);
    return 1;
}

void sk_token_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"set", token_set},
        {"get", token_get},
        {"fresh", token_fresh},
        {"clear", token_clear},
        {"close", token_close},
        {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", token_close},
#ifdef SK_HAS_CLOSE
        {"__close", token_close},
#endif
        {"__tostring", token_tostring},
        {NULL, NULL},
    };
    sk_newclass(L, TOKEN_MT, meta, methods);
    lua_pushcfunction(L, token_new);
    lua_setfield(L, -2, "token_vault");
}
