/* The yardstick for `make bench`: a plain libcurl keep-alive loop, GET <url> with a
 * Bearer token, body into a reused buffer, nothing decoded. Prints calls/second and
 * the size of the last answer.
 *   raw_curl URL TOKEN SECONDS          as many calls as fit in SECONDS
 *   raw_curl URL TOKEN SECONDS CALLS    exactly CALLS calls (0: start-up only), for
 *                                       bench/callgrind.lua's instruction counts */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

struct buf {
    char *p;
    size_t len, cap;
};

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct buf *b = ud;
    size_t n = size * nmemb;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        char *q;
        while (cap < b->len + n)
            cap *= 2;
        if ((q = realloc(b->p, cap)) == NULL)
            return 0;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, ptr, n);
    b->len += n;
    return n;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    struct buf b = {0};
    struct curl_slist *h = NULL;
    char auth[4096];
    double secs, t0, t;
    long calls = 0, status = 0, limit = -1;
    CURL *c;

    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s URL TOKEN SECONDS [CALLS]\n", argv[0]);
        return 2;
    }
    secs = atof(argv[3]);
    if (argc == 5)
        limit = atol(argv[4]);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", argv[2]);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    c = curl_easy_init();
    h = curl_slist_append(h, "Accept: application/json");
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, auth);
    curl_easy_setopt(c, CURLOPT_URL, argv[1]);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    t0 = now();
    while (limit != 0) {
        b.len = 0;
        if (curl_easy_perform(c) != CURLE_OK) {
            fprintf(stderr, "raw_curl: request failed\n");
            return 1;
        }
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (status != 200) {
            fprintf(stderr, "raw_curl: HTTP %ld\n", status);
            return 1;
        }
        calls++;
        t = now();
        if (limit > 0 ? calls >= limit : t - t0 >= secs)
            break;
    }
    t = now();
    printf("%.1f %zu\n", calls ? (double)calls / (t - t0) : 0.0, b.len);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(b.p);
    curl_global_cleanup();
    return 0;
}
