/* What the two libcurl front ends share: http.c (one reused easy handle) and multi.c
 * (a multi handle for sk:batch). The response buffer and its callbacks, the one
 * curl_global_init flag, the handle options read from Lua, the base header list, and
 * the classification of libcurl errors. */
#ifndef SK_EASY_H
#define SK_EASY_H

#include <curl/curl.h>

#include "sk.h"

/* Response headers the Lua layer reads; everything else is ignored. Content-Type only
 * for the requests that ask for it (raw pass-through calls): SK_H_COUNT_API are the
 * others. */
enum { SK_H_RETRY_AFTER, SK_H_REQUEST_ID, SK_H_CONTENT_TYPE, SK_H_COUNT };
#define SK_H_COUNT_API SK_H_CONTENT_TYPE
#define SK_HVAL_MAX 512
#define SK_UA_MAX 4096  /* bytes of a User-Agent: far above any real one, below nginx's 8 KiB header lines */

#define SK_MAX_BODY_DEFAULT (16u * 1024u * 1024u)
#define SK_MAX_BODY_LIMIT (1024u * 1024u * 1024u)  /* 1 GiB: fits an int and a Lua string */

/* One answer being received: filled by the callbacks (plain C, never the Lua state),
 * pushed to Lua after the transfer. */
typedef struct {
    char *body;
    size_t body_len, body_cap, max_body;
    int body_overflow;
    char hval[SK_H_COUNT][SK_HVAL_MAX];
    size_t hlen[SK_H_COUNT];
    int hset[SK_H_COUNT];
    size_t hwant;  /* headers captured: SK_H_COUNT_API or SK_H_COUNT */
} sk_response;

/* CURLOPT_WRITEFUNCTION / CURLOPT_HEADERFUNCTION, with an sk_response as user data. */
SK_INTERNAL size_t sk_on_body(char *ptr, size_t size, size_t nmemb, void *ud);
SK_INTERNAL size_t sk_on_header(char *line, size_t size, size_t nmemb, void *ud);
/* Ready for the next answer, capturing `hwant` headers. */
SK_INTERNAL void sk_response_reset(sk_response *r, size_t hwant);
/* Push the captured headers (nil for the missing ones); returns how many. */
SK_INTERNAL int sk_response_push_headers(lua_State *L, const sk_response *r);
/* Free the body buffer after a large answer, or always with `all`. */
SK_INTERNAL void sk_response_trim(sk_response *r, int all);

/* curl_global_init, once per process (the only global of the core). 0 on success. */
SK_INTERNAL int sk_curl_global_init(void);

/* The options of a handle, from core.http{…} / core.multi{…}. */
typedef struct {
    long connect_timeout_ms, timeout_ms;
    size_t max_body;
    char *ca_file, *user_agent, *proxy, *no_proxy;
    /* the environment's proxies, read once when the options are read (see
     * sk_easy_proxy): for http:// URLs, for https:// URLs, and NO_PROXY; NULL when
     * unset */
    char *env_http, *env_https, *env_no_proxy;
    struct curl_slist *extra;  /* lines sent with every request (User-Agent, x-api-version) */
} sk_easy_opts;

/* Read the options of the table at `idx` (`who` names the function in errors); raises
 * on misuse. sk_easy_opts_free frees what was read, safe on a zeroed struct. */
SK_INTERNAL void sk_easy_opts_read(lua_State *L, int idx, const char *who, sk_easy_opts *o);
SK_INTERNAL void sk_easy_opts_free(sk_easy_opts *o);
/* The options every easy handle of the core gets: callbacks into `r`, no signals,
 * no redirects, http/https only, TLS peer and host verification, keep-alive, the
 * timeouts, CA file, User-Agent and proxy. NULL or a message. */
SK_INTERNAL const char *sk_easy_configure(CURL *c, const sk_easy_opts *o, sk_response *r, char *errbuf);
/* The proxy of a request to `url`: the `proxy` option, else the environment's for
 * the URL's scheme, else "" (none). Set as CURLOPT_PROXY on every request, it keeps
 * libcurl from reading six environment variables per request. */
SK_INTERNAL const char *sk_easy_proxy(const sk_easy_opts *o, const char *url);
/* A list of "Name: value" lines (no NUL, CR or LF) as a curl_slist (NULL when empty or
 * absent); raises on misuse, freeing what it built. */
SK_INTERNAL struct curl_slist *sk_header_lines(lua_State *L, int idx, const char *what);
/* Accept: application/json, Expect:, the extra lines, then `content_type` and `line`
 * when not NULL. NULL when out of memory. */
SK_INTERNAL struct curl_slist *sk_base_headers(const sk_easy_opts *o, const char *content_type,
                                               const char *line);
/* A line of `l` starts with `name` (n bytes, case-insensitive). */
SK_INTERNAL int sk_has_header(const struct curl_slist *l, const char *name, size_t n);
/* A number of seconds option as milliseconds (in (0, 86400] s). */
SK_INTERNAL long sk_opt_ms(lua_State *L, int idx, const char *who, const char *field, double dflt);
/* "timeout", "tls" or "network". */
SK_INTERNAL const char *sk_error_kind(CURLcode rc);

#endif
