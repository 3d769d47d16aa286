/* Crypto of the C core (OpenSSL 3 libcrypto): base64 / base64url codecs,
 * SHA-256, HMAC-SHA256, constant-time comparison, random bytes, and JWK public
 * keys ("scalekit.core.PublicKey") that verify JWS signatures
 * (RS256/384/512, PS256/384/512, ES256/384/512).
 *
 * Failures of the data (bad base64, bad key, bad signature) are values:
 * `nil, msg` (or `false, reason` for verify). Misuse (wrong argument type, a
 * closed key) raises. The OpenSSL error queue is cleared after every failure
 * and nothing is ever printed. */

/* Only the non-deprecated OpenSSL 3 API. */
#define OPENSSL_API_COMPAT 30000
#define OPENSSL_NO_DEPRECATED 1

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "sk.h"

#define PUBKEY_MT "scalekit.core.PublicKey"

#define RSA_MIN_BITS 2048
#define RSA_MAX_BITS 16384
#define RANDOM_MAX 4096

/* ------------------------------------------------------------------------ */
/* base64 / base64url                                                        */

static const char B64_STD[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char B64_URL[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Value of one base64 character in the given alphabet, or -1. No table, no
 * lookup by a signed char: every byte value 0..255 is handled. */
static int b64_value(unsigned char c, int url)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (url) {
        if (c == '-') return 62;
        if (c == '_') return 63;
    } else {
        if (c == '+') return 62;
        if (c == '/') return 63;
    }
    return -1;
}

/* Length of the encoding of n bytes; 0 on overflow (n > 0). */
static size_t b64_encoded_len(size_t n, int pad)
{
    size_t full = n / 3, rem = n % 3;
    if (full > (SIZE_MAX - 4) / 4) return 0;
    return full * 4 + (rem == 0 ? 0 : (pad ? 4 : rem + 1));
}

static void b64_encode_into(const unsigned char *in, size_t n, char *out,
                            const char *alpha, int pad)
{
    size_t i = 0, o = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
        out[o++] = alpha[(v >> 18) & 63];
        out[o++] = alpha[(v >> 12) & 63];
        out[o++] = alpha[(v >> 6) & 63];
        out[o++] = alpha[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = alpha[(v >> 18) & 63];
        out[o++] = alpha[(v >> 12) & 63];
        if (pad) { out[o++] = '='; out[o++] = '='; }
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8);
        out[o++] = alpha[(v >> 18) & 63];
        out[o++] = alpha[(v >> 12) & 63];
        out[o++] = alpha[(v >> 6) & 63];
        if (pad) out[o++] = '=';
    }
}

/* Decode `n` characters without padding (n % 4 != 1) into out (room for
 * n / 4 * 3 + 2 bytes). Rejects any character outside the alphabet and
 * non-canonical encodings (non-zero bits after the last byte). Returns the
 * number of bytes written, or (size_t)-1. */
static size_t b64_decode_unpadded(const unsigned char *in, size_t n,
                                  unsigned char *out, int url)
{
    size_t i = 0, o = 0, rem = n % 4;
    int a, b, c, d;
    if (rem == 1) return (size_t)-1;
    for (; i + 4 <= n; i += 4) {
        a = b64_value(in[i], url);
        b = b64_value(in[i + 1], url);
        c = b64_value(in[i + 2], url);
        d = b64_value(in[i + 3], url);
        if ((a | b | c | d) < 0) return (size_t)-1;
        out[o++] = (unsigned char)((a << 2) | (b >> 4));
        out[o++] = (unsigned char)(((b & 15) << 4) | (c >> 2));
        out[o++] = (unsigned char)(((c & 3) << 6) | d);
    }
    if (rem == 2) {
        a = b64_value(in[i], url);
        b = b64_value(in[i + 1], url);
        if ((a | b) < 0 || (b & 15) != 0) return (size_t)-1;
        out[o++] = (unsigned char)((a << 2) | (b >> 4));
    } else if (rem == 3) {
        a = b64_value(in[i], url);
        b = b64_value(in[i + 1], url);
        c = b64_value(in[i + 2], url);
        if ((a | b | c) < 0 || (c & 3) != 0) return (size_t)-1;
        out[o++] = (unsigned char)((a << 2) | (b >> 4));
        out[o++] = (unsigned char)(((b & 15) << 4) | (c >> 2));
    }
    return o;
}

/* Decode standard (url = 0: padding required) or base64url (url = 1: padding
 * optional, but when present it must be the exact padding of a multiple of
 * four characters). Returns the decoded length or (size_t)-1. */
static size_t b64_decode(const unsigned char *in, size_t n, unsigned char *out, int url)
{
    size_t pads = 0;
    if (n % 4 == 0) {
        if (n >= 1 && in[n - 1] == '=') pads++;
        if (n >= 2 && in[n - 2] == '=') pads++;
    } else if (!url) {
        return (size_t)-1;
    }
    /* With n % 4 == 0 and 1 or 2 pads the unpadded rest has n % 4 == 3 or 2,
     * which is exactly what that padding means; a third '=' is an invalid
     * character for b64_decode_unpadded. */
    return b64_decode_unpadded(in, n - pads, out, url);
}

static int push_encoded(lua_State *L, const char *alpha, int pad)
{
    size_t n;
    const unsigned char *in = (const unsigned char *)luaL_checklstring(L, 1, &n);
    size_t outlen = b64_encoded_len(n, pad);
    char *out;
    if (n > 0 && outlen == 0) return luaL_error(L, "input too large");
    if (outlen == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    /* Scratch space owned by the GC: nothing leaks if a push raises. */
    out = (char *)sk_newuserdata(L, outlen);
    b64_encode_into(in, n, out, alpha, pad);
    lua_pushlstring(L, out, outlen);
    return 1;
}

static int push_decoded(lua_State *L, int url)
{
    size_t n, outlen;
    const unsigned char *in = (const unsigned char *)luaL_checklstring(L, 1, &n);
    unsigned char *out;
    if (n == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    out = (unsigned char *)sk_newuserdata(L, n / 4 * 3 + 3);
    outlen = b64_decode(in, n, out, url);
    if (outlen == (size_t)-1) {
        lua_pushnil(L);
        lua_pushstring(L, url ? "invalid base64url" : "invalid base64");
        return 2;
    }
    lua_pushlstring(L, (const char *)out, outlen);
    return 1;
}

/* core.b64encode(s) -> standard base64 with padding */
static int crypto_b64encode(lua_State *L) { return push_encoded(L, B64_STD, 1); }
/* core.b64decode(s) -> bytes | nil, "invalid base64" (padding required) */
static int crypto_b64decode(lua_State *L) { return push_decoded(L, 0); }
/* core.b64url_encode(s) -> base64url without padding */
static int crypto_b64url_encode(lua_State *L) { return push_encoded(L, B64_URL, 0); }
/* core.b64url_decode(s) -> bytes | nil, "invalid base64url" (padding optional) */
static int crypto_b64url_decode(lua_State *L) { return push_decoded(L, 1); }

/* ------------------------------------------------------------------------ */
/* digests, MAC, comparison, randomness                                      */

static int push_failure(lua_State *L, const char *msg)
{
    ERR_clear_error();
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* core.sha256(data) -> 32 raw bytes */
static int crypto_sha256(lua_State *L)
{
    size_t n;
    const char *data = luaL_checklstring(L, 1, &n);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(data, n, md, &mdlen, EVP_sha256(), NULL) != 1)
        return push_failure(L, "sha256 failed");
    lua_pushlstring(L, (const char *)md, mdlen);
    return 1;
}

/* core.hmac_sha256(key, data) -> 32 raw bytes */
static int crypto_hmac_sha256(lua_State *L)
{
    size_t klen, n;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *data = luaL_checklstring(L, 2, &n);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    luaL_argcheck(L, klen <= INT_MAX, 1, "key too long");
    if (HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)data, n, md, &mdlen) == NULL)
        return push_failure(L, "hmac_sha256 failed");
    lua_pushlstring(L, (const char *)md, mdlen);
    OPENSSL_cleanse(md, sizeof md);
    return 1;
}

/* core.constant_eq(a, b) -> boolean; constant time when the lengths are equal */
static int crypto_constant_eq(lua_State *L)
{
    size_t la, lb;
    const char *a = luaL_checklstring(L, 1, &la);
    const char *b = luaL_checklstring(L, 2, &lb);
    lua_pushboolean(L, la == lb && CRYPTO_memcmp(a, b, la) == 0);
    return 1;
}

/* core.random_bytes(n) -> n bytes from the CSPRNG (1 <= n <= 4096) */
static int crypto_random_bytes(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    unsigned char buf[RANDOM_MAX];
    luaL_argcheck(L, n >= 1 && n <= RANDOM_MAX, 1, "must be between 1 and 4096");
    if (RAND_bytes(buf, (int)n) != 1)
        return push_failure(L, "RAND_bytes failed");
    lua_pushlstring(L, (const char *)buf, (size_t)n);
    OPENSSL_cleanse(buf, (size_t)n);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* public keys                                                               */

enum { KEY_RSA = 1, KEY_EC = 2 };

typedef struct {
    const char *crv;      /* JWK name */
    const char *group;    /* OpenSSL group name */
    size_t size;          /* bytes of one coordinate / of r and s */
    int bits;
} curve_info;

static const curve_info CURVES[] = {
    {"P-256", "prime256v1", 32, 256},
    {"P-384", "secp384r1", 48, 384},
    {"P-521", "secp521r1", 66, 521},
};
#define NCURVES ((int)(sizeof CURVES / sizeof CURVES[0]))

typedef struct {
    EVP_PKEY *pkey;       /* NULL: closed (or never built) */
    int type;             /* KEY_RSA / KEY_EC */
    int curve;            /* index in CURVES for EC keys */
    int bits;
} pubkey;

static int pubkey_close(lua_State *L)
{
    pubkey *k = (pubkey *)luaL_checkudata(L, 1, PUBKEY_MT);
    if (k->pkey != NULL) {
        EVP_PKEY_free(k->pkey);
        k->pkey = NULL;
    }
    return 0;
}

static pubkey *check_open_key(lua_State *L)
{
    pubkey *k = (pubkey *)luaL_checkudata(L, 1, PUBKEY_MT);
    if (k->pkey == NULL)
        luaL_error(L, PUBKEY_MT ": the key is closed");
    return k;
}

static const char *key_type_name(const pubkey *k)
{
    return k->type == KEY_RSA ? "RSA" : "EC";
}

static int pubkey_tostring(lua_State *L)
{
    pubkey *k = (pubkey *)luaL_checkudata(L, 1, PUBKEY_MT);
    if (k->pkey == NULL)
        lua_pushfstring(L, PUBKEY_MT " (closed): %p", (void *)k);
    else
        lua_pushfstring(L, PUBKEY_MT " (%s %d): %p", key_type_name(k), k->bits, (void *)k);
    return 1;
}

static int pubkey_type(lua_State *L)
{
    pubkey *k = check_open_key(L);
    lua_pushstring(L, key_type_name(k));
    return 1;
}

static int pubkey_bits(lua_State *L)
{
    pubkey *k = check_open_key(L);
    lua_pushinteger(L, k->bits);
    return 1;
}

/* Decoded base64url JWK member (malloc'd; free with free_bytes). Public
 * key material: nothing to wipe. */
typedef struct {
    unsigned char *p;
    size_t n;
} bytes;

static void free_bytes(bytes *b)
{
    free(b->p);
    b->p = NULL;
    b->n = 0;
}

/* Decode a base64url JWK member of at most `max` bytes into b. Returns NULL
 * on success, else `invalid` or "out of memory" (b is then empty). The
 * length is checked before anything is allocated. */
static const char *decode_member(const char *s, size_t n, size_t max, bytes *b,
                                 const char *invalid)
{
    size_t outlen;
    b->p = NULL;
    b->n = 0;
    if (n == 0 || n / 4 > max / 3 + 1) return invalid;
    b->p = (unsigned char *)malloc(n / 4 * 3 + 3);
    if (b->p == NULL) return "out of memory";
    outlen = b64_decode((const unsigned char *)s, n, b->p, 1);
    if (outlen == (size_t)-1) {
        free(b->p);
        b->p = NULL;
        return invalid;
    }
    b->n = outlen;
    return NULL;
}

/* Build an EVP_PKEY of `type_name` from the params; NULL on failure. */
static EVP_PKEY *pkey_from_params(const char *type_name, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;

    params = OSSL_PARAM_BLD_to_param(bld);
    if (params == NULL) goto done;
    ctx = EVP_PKEY_CTX_new_from_name(NULL, type_name, NULL);
    if (ctx == NULL) goto done;
    if (EVP_PKEY_fromdata_init(ctx) != 1) goto done;
    if (EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        pkey = NULL;
        goto done;
    }
done:
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

/* Returns NULL and sets *out, or an error message. */
static const char *build_rsa(const char *n_s, size_t n_len, const char *e_s, size_t e_len,
                             EVP_PKEY **out, int *bits)
{
    bytes nb = {NULL, 0}, eb = {NULL, 0};
    BIGNUM *n = NULL, *e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    const char *err = NULL;
    int nbits;

    if ((err = decode_member(n_s, n_len, RSA_MAX_BITS / 8 + 1, &nb, "invalid RSA key: bad n")) != NULL)
        goto done;
    if ((err = decode_member(e_s, e_len, 32, &eb, "invalid RSA key: bad e")) != NULL)
        goto done;
    if (nb.n > RSA_MAX_BITS / 8 + 1 || eb.n > 32) {
        err = "invalid RSA key: too large";
        goto done;
    }
    n = BN_bin2bn(nb.p, (int)nb.n, NULL);
    e = BN_bin2bn(eb.p, (int)eb.n, NULL);
    if (n == NULL || e == NULL) { err = "out of memory"; goto done; }
    nbits = BN_num_bits(n);
    if (nbits < RSA_MIN_BITS) { err = "RSA key too small (< 2048 bits)"; goto done; }
    if (nbits > RSA_MAX_BITS) { err = "invalid RSA key: too large"; goto done; }
    if (!BN_is_odd(n)) { err = "invalid RSA key: even modulus"; goto done; }
    if (!BN_is_odd(e) || BN_is_one(e)) { err = "invalid RSA key: bad exponent"; goto done; }

    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL
        || OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) != 1
        || OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) != 1) {
        err = "out of memory";
        goto done;
    }
    *out = pkey_from_params("RSA", bld);
    if (*out == NULL) { err = "invalid RSA key"; goto done; }
    *bits = nbits;
done:
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    free_bytes(&nb);
    free_bytes(&eb);
    return err;
}

static const char *build_ec(int curve, const char *x_s, size_t x_len,
                            const char *y_s, size_t y_len, EVP_PKEY **out)
{
    const curve_info *ci = &CURVES[curve];
    bytes xb = {NULL, 0}, yb = {NULL, 0};
    unsigned char *point = NULL;
    size_t plen = 1 + 2 * ci->size;
    OSSL_PARAM_BLD *bld = NULL;
    EVP_PKEY_CTX *cctx = NULL;
    const char *err = NULL;

    if ((err = decode_member(x_s, x_len, ci->size, &xb, "invalid EC key: bad x")) != NULL)
        goto done;
    if ((err = decode_member(y_s, y_len, ci->size, &yb, "invalid EC key: bad y")) != NULL)
        goto done;
    /* RFC 7518 6.2.1.2: x and y are the full-length coordinates. */
    if (xb.n != ci->size || yb.n != ci->size) {
        err = "invalid EC key: wrong coordinate length for the curve";
        goto done;
    }
    point = (unsigned char *)malloc(plen);
    if (point == NULL) { err = "out of memory"; goto done; }
    point[0] = POINT_CONVERSION_UNCOMPRESSED;
    memcpy(point + 1, xb.p, ci->size);
    memcpy(point + 1 + ci->size, yb.p, ci->size);

    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL
        || OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, ci->group, 0) != 1
        || OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, plen) != 1) {
        err = "out of memory";
        goto done;
    }
    *out = pkey_from_params("EC", bld);
    if (*out == NULL) { err = "invalid EC key: point not on the curve"; goto done; }
    /* Explicit public-key validation: on the curve, not infinity, right order. */
    cctx = EVP_PKEY_CTX_new_from_pkey(NULL, *out, NULL);
    if (cctx == NULL) { err = "out of memory"; goto done; }
    if (EVP_PKEY_public_check(cctx) != 1) {
        err = "invalid EC key: point not on the curve";
        goto done;
    }
done:
    if (err != NULL && *out != NULL) {
        EVP_PKEY_free(*out);
        *out = NULL;
    }
    EVP_PKEY_CTX_free(cctx);
    OSSL_PARAM_BLD_free(bld);
    free(point);
    free_bytes(&xb);
    free_bytes(&yb);
    return err;
}

/* Read string member `name` of the table at index 1 and leave it on the
 * stack (so the pointer stays valid). NULL when absent or not a string. */
static const char *jwk_field(lua_State *L, const char *name, size_t *len)
{
    lua_getfield(L, 1, name);
    if (lua_type(L, -1) != LUA_TSTRING) {
        *len = 0;
        return NULL;
    }
    return lua_tolstring(L, -1, len);
}

/* core.public_key(jwk) -> PublicKey | nil, msg */
static int crypto_public_key(lua_State *L)
{
    size_t kty_len, a_len = 0, b_len = 0, crv_len = 0;
    const char *kty, *a = NULL, *b = NULL, *crv;
    const char *err = NULL;
    int type, curve = -1, i, bits = 0;
    EVP_PKEY *pkey = NULL;
    pubkey *k;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    kty = jwk_field(L, "kty", &kty_len);                 /* 2 */
    if (kty == NULL) return push_failure(L, "invalid JWK: missing kty");
    if (strcmp(kty, "RSA") == 0 && kty_len == 3) {
        type = KEY_RSA;
        a = jwk_field(L, "n", &a_len);                   /* 3 */
        b = jwk_field(L, "e", &b_len);                   /* 4 */
        if (a == NULL || b == NULL) return push_failure(L, "invalid RSA JWK: missing n or e");
    } else if (strcmp(kty, "EC") == 0 && kty_len == 2) {
        type = KEY_EC;
        crv = jwk_field(L, "crv", &crv_len);             /* 3 */
        if (crv == NULL) return push_failure(L, "invalid EC JWK: missing crv");
        for (i = 0; i < NCURVES; i++)
            if (strlen(CURVES[i].crv) == crv_len && strcmp(CURVES[i].crv, crv) == 0)
                curve = i;
        if (curve < 0) return push_failure(L, "unsupported EC curve");
        a = jwk_field(L, "x", &a_len);                   /* 4 */
        b = jwk_field(L, "y", &b_len);                   /* 5 */
        if (a == NULL || b == NULL) return push_failure(L, "invalid EC JWK: missing x or y");
    } else {
        return push_failure(L, "unsupported key type");
    }

    /* The userdata is zeroed and has its metatable before the key exists:
     * __gc is safe whatever happens next. */
    k = (pubkey *)sk_newuserdata(L, sizeof *k);
    memset(k, 0, sizeof *k);
    luaL_setmetatable(L, PUBKEY_MT);

    if (type == KEY_RSA) {
        err = build_rsa(a, a_len, b, b_len, &pkey, &bits);
    } else {
        err = build_ec(curve, a, a_len, b, b_len, &pkey);
        bits = CURVES[curve].bits;
    }
    if (err != NULL) return push_failure(L, err);
    k->pkey = pkey;
    k->type = type;
    k->curve = curve;
    k->bits = bits;
    return 1;
}

typedef struct {
    const char *name;
    const char *md;
    int type;             /* KEY_RSA / KEY_EC */
    int pss;              /* RSA: PSS padding */
    int curve;            /* EC: index in CURVES */
} alg_info;

static const alg_info ALGS[] = {
    {"RS256", "SHA256", KEY_RSA, 0, -1},
    {"RS384", "SHA384", KEY_RSA, 0, -1},
    {"RS512", "SHA512", KEY_RSA, 0, -1},
    {"PS256", "SHA256", KEY_RSA, 1, -1},
    {"PS384", "SHA384", KEY_RSA, 1, -1},
    {"PS512", "SHA512", KEY_RSA, 1, -1},
    {"ES256", "SHA256", KEY_EC, 0, 0},
    {"ES384", "SHA384", KEY_EC, 0, 1},
    {"ES512", "SHA512", KEY_EC, 0, 2},
};
#define NALGS ((int)(sizeof ALGS / sizeof ALGS[0]))

/* JOSE R||S -> DER ECDSA-Sig-Value. Returns NULL or an error message; on
 * success *der (OPENSSL_malloc'd) and *der_len are set. */
static const char *ec_sig_to_der(const unsigned char *sig, size_t size,
                                 unsigned char **der, int *der_len)
{
    ECDSA_SIG *es = NULL;
    BIGNUM *r = NULL, *s = NULL;
    *der = NULL;
    *der_len = 0;
    es = ECDSA_SIG_new();
    r = BN_bin2bn(sig, (int)size, NULL);
    s = BN_bin2bn(sig + size, (int)size, NULL);
    if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
        ECDSA_SIG_free(es);
        BN_free(r);
        BN_free(s);
        return "out of memory";
    }
    /* es owns r and s now */
    *der_len = i2d_ECDSA_SIG(es, der);
    ECDSA_SIG_free(es);
    if (*der_len <= 0 || *der == NULL) {
        OPENSSL_free(*der);
        *der = NULL;
        return "out of memory";
    }
    return NULL;
}

static int verify_false(lua_State *L, const char *reason)
{
    ERR_clear_error();
    lua_pushboolean(L, 0);
    lua_pushstring(L, reason);
    return 2;
}

/* key:verify(alg, signing_input, signature) -> true | false, reason */
static int pubkey_verify(lua_State *L)
{
    pubkey *k = check_open_key(L);
    size_t alg_len, in_len, sig_len;
    const char *alg = luaL_checklstring(L, 2, &alg_len);
    const unsigned char *in = (const unsigned char *)luaL_checklstring(L, 3, &in_len);
    const unsigned char *sig = (const unsigned char *)luaL_checklstring(L, 4, &sig_len);
    const alg_info *ai = NULL;
    EVP_MD_CTX *mctx = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char *der = NULL;
    int der_len = 0, rc, i;
    const char *reason = NULL;

    for (i = 0; i < NALGS; i++)
        if (alg_len == 5 && memcmp(ALGS[i].name, alg, 5) == 0)
            ai = &ALGS[i];
    if (ai == NULL) return verify_false(L, "unsupported algorithm");
    if (ai->type != k->type || (ai->type == KEY_EC && ai->curve != k->curve))
        return verify_false(L, "algorithm does not match key");

    if (ai->type == KEY_EC) {
        size_t size = CURVES[k->curve].size;
        if (sig_len != 2 * size) return verify_false(L, "bad signature length");
        if ((reason = ec_sig_to_der(sig, size, &der, &der_len)) != NULL)
            return verify_false(L, reason);
    } else {
        if (sig_len != (size_t)EVP_PKEY_get_size(k->pkey))
            return verify_false(L, "bad signature length");
    }

    mctx = EVP_MD_CTX_new();
    if (mctx == NULL) { reason = "out of memory"; goto done; }
    if (EVP_DigestVerifyInit_ex(mctx, &pctx, ai->md, NULL, NULL, k->pkey, NULL) != 1) {
        reason = "verification setup failed";
        goto done;
    }
    if (ai->pss
        && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1
            || EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1
            || EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, ai->md, NULL) != 1)) {
        reason = "verification setup failed";
        goto done;
    }
    if (der != NULL)
        rc = EVP_DigestVerify(mctx, der, (size_t)der_len, in, in_len);
    else
        rc = EVP_DigestVerify(mctx, sig, sig_len, in, in_len);
    if (rc != 1) reason = "signature mismatch";
done:
    EVP_MD_CTX_free(mctx);   /* frees pctx too */
    OPENSSL_free(der);
    if (reason != NULL) return verify_false(L, reason);
    lua_pushboolean(L, 1);
    return 1;
}

void sk_crypto_open(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"b64encode", crypto_b64encode},
        {"b64decode", crypto_b64decode},
        {"b64url_encode", crypto_b64url_encode},
        {"b64url_decode", crypto_b64url_decode},
        {"sha256", crypto_sha256},
        {"hmac_sha256", crypto_hmac_sha256},
        {"constant_eq", crypto_constant_eq},
        {"random_bytes", crypto_random_bytes},
        {"public_key", crypto_public_key},
        {NULL, NULL},
    };
    static const luaL_Reg methods[] = {
        {"verify", pubkey_verify},
        {"type", pubkey_type},
        {"bits", pubkey_bits},
        {"close", pubkey_close},
        {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", pubkey_close},
#ifdef SK_HAS_CLOSE
        {"__close", pubkey_close},
#endif
        {"__tostring", pubkey_tostring},
        {NULL, NULL},
    };

    luaL_setfuncs(L, fns, 0);

    sk_newclass(L, PUBKEY_MT, meta, methods);
}
