/* libFuzzer driver: base64 and base64url of csrc/crypto.c (included, so that the
 * static codecs are reachable).
 *
 * Invariants: the decoders accept only canonical encodings, so decode followed by
 * encode gives the input back (base64url: minus its optional padding); encode then
 * decode gives any byte string back; the output never exceeds n / 4 * 3 + 2 bytes
 * (the room the Lua binding allocates, plus one spare byte that must stay
 * untouched). */
#include <assert.h>
#include <stdint.h>

#include "../csrc/crypto.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void decode_roundtrip(const uint8_t *data, size_t size, int url)
{
    size_t room = size / 4 * 3 + 3, n, elen, cmp_len = size;
    unsigned char *out = (unsigned char *)malloc(room);
    char *enc;
    out[room - 1] = 0xA5;
    n = b64_decode(data, size, out, url);
    assert(out[room - 1] == 0xA5);
    if (n == (size_t)-1) {
        free(out);
        return;
    }
    assert(n <= size / 4 * 3 + 2);
    elen = b64_encoded_len(n, !url);
    assert(n == 0 || elen > 0);
    enc = (char *)malloc(elen + 1);
    b64_encode_into(out, n, enc, url ? B64_URL : B64_STD, !url);
    if (url) {
        while (cmp_len > 0 && data[cmp_len - 1] == '=')
            cmp_len--;
    }
    assert(elen == cmp_len);
    assert(memcmp(enc, data, elen) == 0);
    free(enc);
    free(out);
}

static void encode_roundtrip(const uint8_t *data, size_t size, int url)
{
    size_t elen = b64_encoded_len(size, !url), n;
    char *enc = (char *)malloc(elen + 1);
    unsigned char *back = (unsigned char *)malloc(elen / 4 * 3 + 3);
    b64_encode_into(data, size, enc, url ? B64_URL : B64_STD, !url);
    n = b64_decode((const unsigned char *)enc, elen, back, url);
    assert(n == size);
    assert(size == 0 || memcmp(back, data, size) == 0);
    free(back);
    free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    decode_roundtrip(data, size, 0);
    decode_roundtrip(data, size, 1);
    encode_roundtrip(data, size, 0);
    encode_roundtrip(data, size, 1);
    return 0;
}
