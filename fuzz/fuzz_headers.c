/* libFuzzer driver: the response header and body callbacks of the C core
 * (csrc/easy.c: sk_on_header, sk_on_body, shared by http.c and multi.c).
 *
 * easy.c is included, not linked, so that the driver stands alone. The input is cut into lines the way
 * libcurl hands them to CURLOPT_HEADERFUNCTION (one complete line per call, CRLF
 * included; status lines start a new block), each line copied into a buffer of
 * exactly its size so that ASan sees any read past it. The whole input is then
 * written through on_body in chunks, against a small max_body.
 *
 * Invariants: a captured value is at most SK_HVAL_MAX bytes, has no leading blank and
 * no trailing CR, LF or blank, and is a substring of the line it came from; the
 * body buffer holds exactly what was accepted, never more than max_body. */
#include <assert.h>
#include <stdint.h>

#include "../csrc/easy.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_captured(const sk_response *h)
{
    int i;
    for (i = 0; i < SK_H_COUNT; i++) {
        size_t n = h->hlen[i];
        if (!h->hset[i])
            continue;
        assert(n <= SK_HVAL_MAX);
        if (n > 0) {
            char first = h->hval[i][0], last = h->hval[i][n - 1];
            assert(first != ' ' && first != '\t');
            /* trimmed at the end unless cut at SK_HVAL_MAX */
            assert(n == SK_HVAL_MAX || (last != '\r' && last != '\n' && last != ' ' && last != '\t'));
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sk_response h;
    size_t pos = 0, accepted = 0, chunk;

    memset(&h, 0, sizeof h);
    h.max_body = size > 0 ? (size_t)data[0] * 16 : 0;
    h.hwant = SK_H_COUNT;  /* every captured header, as a raw request asks */

    /* headers: one callback per line */
    while (pos < size) {
        const uint8_t *nl = memchr(data + pos, '\n', size - pos);
        size_t len = nl ? (size_t)(nl - (data + pos)) + 1 : size - pos;
        char *line = (char *)malloc(len ? len : 1);
        char prev[SK_H_COUNT][SK_HVAL_MAX];
        size_t prev_len[SK_H_COUNT], r;
        int prev_set[SK_H_COUNT], i;
        memcpy(line, data + pos, len);
        memcpy(prev, h.hval, sizeof prev);
        memcpy(prev_len, h.hlen, sizeof prev_len);
        memcpy(prev_set, h.hset, sizeof prev_set);
        r = sk_on_header(line, 1, len, &h);
        assert(r == len);  /* never aborts the transfer */
        for (i = 0; i < SK_H_COUNT; i++) {
            int changed = h.hset[i] && (!prev_set[i] || prev_len[i] != h.hlen[i] ||
                                        memcmp(prev[i], h.hval[i], h.hlen[i]) != 0);
            if (len >= 5 && memcmp(line, "HTTP/", 5) == 0)
                assert(!h.hset[i]);  /* a status line starts a new block */
            if (changed && h.hlen[i] > 0)  /* a new value comes from this line */
                assert(memmem(line, len, h.hval[i], h.hlen[i]) != NULL);
        }
        check_captured(&h);
        free(line);
        pos += len;
    }

    /* body: chunks of 1..64 bytes chosen by the data itself */
    pos = 0;
    while (pos < size && !h.body_overflow) {
        size_t r;
        chunk = 1 + (data[pos] & 63);
        if (chunk > size - pos)
            chunk = size - pos;
        r = sk_on_body((char *)(data + pos), 1, chunk, &h);
        if (r == 0) {
            assert(h.body_overflow);
            assert(accepted + chunk > h.max_body);
            break;
        }
        assert(r == chunk);
        accepted += chunk;
        pos += chunk;
    }
    assert(h.body_len == accepted);
    assert(h.body_len <= h.max_body);
    assert(h.body_len <= h.body_cap);
    if (accepted > 0)
        assert(memcmp(h.body, data, accepted) == 0);
    free(h.body);
    return 0;
}
