/* libFuzzer driver: JWK -> public key and signature checks of csrc/crypto.c
 * (included, so that build_rsa / build_ec are reachable).
 *
 * Input: one mode byte, then fields separated by '\n' (never part of base64url):
 *   f1 = n (RSA) or x (EC), f2 = e or y, f3 = signing input, f4 = signature bytes.
 * mode bit 0: RSA / EC; bits 1-2: curve (3 = unknown); bits 3-6: algorithm.
 * Each input goes twice through the key builders: directly, and through
 * core.public_key{...} and key:verify(...) in a Lua state (jwk_field, userdata
 * lifetime, error paths). Neither may raise on a table argument: a Lua error here
 * is a bug. */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>

#include <lualib.h>

#include "../csrc/crypto.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;

static const char *CRV[] = {"P-256", "P-384", "P-521", "P-999"};

static void die_lua(const char *where)
{
    fprintf(stderr, "fuzz_jwk: Lua error in %s: %s\n", where, lua_tostring(L, -1));
    abort();
}

static void setup(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    lua_newtable(L);
    sk_crypto_open(L);
    lua_setglobal(L, "core");
    /* check(kty, crv, a, b, alg, input, sig): build the key, verify, close */
    if (luaL_dostring(L,
            "local core = core\n"
            "return function(kty, crv, a, b, alg, input, sig)\n"
            "  local jwk = { kty = kty, crv = crv }\n"
            "  if kty == 'RSA' then jwk.n, jwk.e = a, b else jwk.x, jwk.y = a, b end\n"
            "  local key, msg = core.public_key(jwk)\n"
            "  if not key then assert(type(msg) == 'string'); return end\n"
            "  assert(key:type() == kty)\n"
            "  local ok, why = key:verify(alg, input, sig)\n"
            "  assert(ok == true or (ok == false and type(why) == 'string'))\n"
            "  key:close()\n"
            "end\n") != 0)
        die_lua("setup");
    lua_setglobal(L, "check");
}

/* next '\n'-separated field of data[*pos..size) */
static const char *field(const uint8_t *data, size_t size, size_t *pos, size_t *len)
{
    const uint8_t *start = data + *pos, *nl;
    if (*pos >= size) {
        *len = 0;
        return "";
    }
    nl = memchr(start, '\n', size - *pos);
    *len = nl ? (size_t)(nl - start) : size - *pos;
    *pos += *len + (nl ? 1 : 0);
    return (const char *)start;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t pos = 1, l1, l2, l3, l4;
    const char *f1, *f2, *f3, *f4, *err;
    int mode, rsa, curve, bits = 0;
    const alg_info *alg;
    EVP_PKEY *pkey = NULL;
    static int ready = 0;

    if (!ready) {
        setup();
        ready = 1;
    }
    if (size < 1)
        return 0;
    mode = data[0];
    rsa = !(mode & 1);
    curve = (mode >> 1) & 3;
    alg = &ALGS[((mode >> 3) & 15) % NALGS];
    f1 = field(data, size, &pos, &l1);
    f2 = field(data, size, &pos, &l2);
    f3 = field(data, size, &pos, &l3);
    f4 = field(data, size, &pos, &l4);

    /* 1. the builders, directly (copies: exact-size buffers for ASan) */
    {
        char *a = (char *)malloc(l1 + 1), *b = (char *)malloc(l2 + 1);
        memcpy(a, f1, l1);
        memcpy(b, f2, l2);
        if (rsa)
            err = build_rsa(a, l1, b, l2, &pkey, &bits);
        else if (curve < NCURVES)
            err = build_ec(curve, a, l1, b, l2, &pkey);
        else
            err = "skipped";
        assert((err == NULL) == (pkey != NULL));
        if (pkey != NULL) {
            if (rsa)
                assert(bits >= RSA_MIN_BITS && bits <= RSA_MAX_BITS);
            EVP_PKEY_free(pkey);
        }
        ERR_clear_error();
        free(a);
        free(b);
    }

    /* 2. through Lua: core.public_key, key:verify, key:close */
    lua_settop(L, 0);
    lua_getglobal(L, "check");
    lua_pushstring(L, rsa ? "RSA" : "EC");
    lua_pushstring(L, CRV[curve]);
    lua_pushlstring(L, f1, l1);
    lua_pushlstring(L, f2, l2);
    lua_pushstring(L, alg->name);
    lua_pushlstring(L, f3, l3);
    lua_pushlstring(L, f4, l4);
    if (lua_pcall(L, 7, 0, 0) != 0)
        die_lua("check");
    lua_gc(L, LUA_GCSTEP, 0);
    /* the OpenSSL error queue is always left empty */
    assert(ERR_peek_error() == 0);
    return 0;
}
