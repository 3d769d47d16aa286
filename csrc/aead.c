/* AES-256-GCM of the C core (OpenSSL 3 libcrypto), for the session cookies of the
 * OpenResty gateway (lua/scalekit/gateway/cookie.lua):
 *
 *   core.aead_seal(key, plaintext[, aad]) -> nonce(12) .. ciphertext .. tag(16)
 *   core.aead_open(key, sealed[, aad])    -> plaintext | nil, reason
 *
 * `key` is exactly 32 bytes (a wrong length is misuse and raises). The nonce is 12
 * random bytes per seal (RAND_bytes); the tag is the full 16 bytes. A sealed value
 * that is too short, altered, or sealed under another key or another aad opens to
 * `nil, "authentication failed"` (or "too short"): the reason never says which
 * byte was wrong. Buffers are Lua userdata (no leak if a push raises) and are
 * wiped before returning. */

/* Only the non-deprecated OpenSSL 3 API. */
#define OPENSSL_API_COMPAT 30000
#define OPENSSL_NO_DEPRECATED 1

#include <limits.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "sk.h"

#define AEAD_KEY 32
#define AEAD_NONCE 12
#define AEAD_TAG 16
/* sealed values are cookies and small documents; keep every length an int */
#define AEAD_MAX (16 * 1024 * 1024)

static int aead_failure(lua_State *L, const char *msg)
{
    ERR_clear_error();
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

static const unsigned char *check_key(lua_State *L)
{
    size_t klen;
    const char *key = luaL_checklstring(L, 1, &klen);
    luaL_argcheck(L, klen == AEAD_KEY, 1, "key must be 32 bytes");
    return (const unsigned char *)key;
}

/* core.aead_seal(key, plaintext[, aad]) -> sealed | nil, msg */
static int aead_seal(lua_State *L)
{
    const unsigned char *key = check_key(L);
    size_t n, alen = 0;
    const char *pt = luaL_checklstring(L, 2, &n);
    const char *aad = luaL_optlstring(L, 3, "", &alen);
    luaL_argcheck(L, n <= AEAD_MAX, 2, "plaintext too large");
    luaL_argcheck(L, alen <= AEAD_MAX, 3, "aad too large");
    size_t total = AEAD_NONCE + n + AEAD_TAG;
    unsigned char *out = sk_newuserdata(L, total);
    unsigned char *nonce = out, *ct = out + AEAD_NONCE, *tag = out + AEAD_NONCE + n;
    const char *fail = NULL;
    int len = 0;
    EVP_CIPHER_CTX *ctx = NULL;

    if (RAND_bytes(nonce, AEAD_NONCE) != 1) { fail = "RAND_bytes failed"; goto done; }
    ctx = EVP_CIPHER_CTX_new();
    if (!ctx) { fail = "out of memory"; goto done; }
    if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1
        || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, AEAD_NONCE, NULL) != 1
        || EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce) != 1) {
        fail = "aes-256-gcm init failed";
        goto done;
    }
    if (alen > 0 && EVP_EncryptUpdate(ctx, NULL, &len, (const unsigned char *)aad, (int)alen) != 1) {
        fail = "aes-256-gcm aad failed";
        goto done;
    }
    if (n > 0 && EVP_EncryptUpdate(ctx, ct, &len, (const unsigned char *)pt, (int)n) != 1) {
        fail = "aes-256-gcm encrypt failed";
        goto done;
    }
    if (EVP_EncryptFinal_ex(ctx, ct + n, &len) != 1
        || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, AEAD_TAG, tag) != 1) {
        fail = "aes-256-gcm final failed";
        goto done;
    }
done:
    EVP_CIPHER_CTX_free(ctx);
    if (fail) {
        OPENSSL_cleanse(out, total);
        return aead_failure(L, fail);
    }
    lua_pushlstring(L, (const char *)out, total);
    return 1;
}

/* core.aead_open(key, sealed[, aad]) -> plaintext | nil, msg */
static int aead_open(lua_State *L)
{
    const unsigned char *key = check_key(L);
    size_t n, alen = 0;
    const unsigned char *in = (const unsigned char *)luaL_checklstring(L, 2, &n);
    const char *aad = luaL_optlstring(L, 3, "", &alen);
    luaL_argcheck(L, alen <= AEAD_MAX, 3, "aad too large");
    if (n < AEAD_NONCE + AEAD_TAG) return aead_failure(L, "too short");
    if (n > AEAD_MAX) return aead_failure(L, "too large");
    size_t ptlen = n - AEAD_NONCE - AEAD_TAG;
    const unsigned char *nonce = in, *ct = in + AEAD_NONCE, *tag = in + n - AEAD_TAG;
    /* +1: a userdata of size 0 is fine, but keep the pointer arithmetic obvious */
    unsigned char *out = sk_newuserdata(L, ptlen + 1);
    unsigned char tagbuf[AEAD_TAG];
    const char *fail = NULL;
    int len = 0;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();

    memcpy(tagbuf, tag, AEAD_TAG);  /* the ctrl takes a non-const pointer */
    if (!ctx) { fail = "out of memory"; goto done; }
    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1
        || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, AEAD_NONCE, NULL) != 1
        || EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) != 1) {
        fail = "aes-256-gcm init failed";
        goto done;
    }
    if (alen > 0 && EVP_DecryptUpdate(ctx, NULL, &len, (const unsigned char *)aad, (int)alen) != 1) {
        fail = "authentication failed";
        goto done;
    }
    if (ptlen > 0 && EVP_DecryptUpdate(ctx, out, &len, ct, (int)ptlen) != 1) {
        fail = "authentication failed";
        goto done;
    }
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, AEAD_TAG, tagbuf) != 1
        || EVP_DecryptFinal_ex(ctx, out + ptlen, &len) != 1) {
        fail = "authentication failed";
        goto done;
    }
done:
    EVP_CIPHER_CTX_free(ctx);
    if (fail) {
        OPENSSL_cleanse(out, ptlen + 1);
        return aead_failure(L, fail);
    }
    lua_pushlstring(L, (const char *)out, ptlen);
    OPENSSL_cleanse(out, ptlen + 1);
    return 1;
}

void sk_aead_open(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"aead_seal", aead_seal},
        {"aead_open", aead_open},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
}
