/* One HTTP attempt over a reused libcurl easy handle.
 *
 * The Lua layer owns the policy (token, retries, backoff, errors); this file owns the
 * wire: keep-alive, timeouts, TLS verification and a lean request path. Nothing is
 * allocated per call in the common case: the URL is handed to libcurl (which copies
 * it into its own buffer), header lists are built once and rebuilt only when the
 * Bearer token changes, and the response body grows one reusable buffer that is
 * pushed to Lua in a single copy after curl_easy_perform returns (no Lua API call
 * happens inside a libcurl callback, so no longjmp can cross libcurl). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "sk.h"

#define HTTP_MT "scalekit.core.Http"

#define MAX_BODY_DEFAULT (16u * 1024u * 1024u)
#define MAX_BODY_LIMIT (1024u * 1024u * 1024u)  /* 1 GiB: fits an int and a Lua string */

/* Response headers the Lua layer reads; everything else is ignored. Content-Type
 * only for requests that ask for it (raw proxy calls): H_COUNT_API are the rest. */
enum { H_RETRY_AFTER, H_REQUEST_ID, H_CONTENT_TYPE, H_COUNT };
#define H_COUNT_API H_CONTENT_TYPE
static const struct {
    const char *name;
    size_t len;
} captured[H_COUNT] = {
    {"retry-after", 11},
    {"x-request-id", 12},
    {"content-type", 12},
};
#define HVAL_MAX 512

typedef struct {
    CURL *curl;
    pid_t pid;               /* process that created curl; a forked child makes its own */
    int closed;

    struct curl_slist *hdr_plain;  /* Accept + Content-Type: application/json */
    struct curl_slist *hdr_form;   /* Accept + Content-Type: x-www-form-urlencoded */
    struct curl_slist *hdr_auth;   /* hdr_plain + Authorization for `bearer` */
    char *bearer;                  /* token that hdr_auth carries (wiped on change) */
    size_t bearer_len;

    char *body;
    size_t body_len, body_cap, max_body;
    int body_overflow;

    char hval[H_COUNT][HVAL_MAX];
    size_t hlen[H_COUNT];
    int hset[H_COUNT];
    size_t hwant;                  /* headers captured this request: H_COUNT_API or H_COUNT */

    long connect_timeout_ms, timeout_ms;
    char *ca_file;
    char *user_agent;
    char *proxy, *no_proxy;        /* NULL: libcurl's defaults (http_proxy & co.) */
    struct curl_slist *extra;      /* lines sent with every request (x-api-version) */
    long requests, connects;
    char errbuf[CURL_ERROR_SIZE];
} sk_http;

static int curl_ready = 0;  /* the only global: curl_global_init done */

/* ---- libcurl callbacks: plain C, never touch the Lua state ---- */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    sk_http *h = (sk_http *)ud;
    size_t n = size * nmemb;
    if (n > h->max_body - h->body_len) {
        h->body_overflow = 1;
        return 0;  /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (h->body_len + n > h->body_cap) {
        size_t cap = h->body_cap ? h->body_cap : 4096;
        char *p;
        while (cap < h->body_len + n)
            cap *= 2;
        if (cap > h->max_body)
            cap = h->max_body;
        p = (char *)realloc(h->body, cap);
        if (p == NULL)
            return 0;
        h->body = p;
        h->body_cap = cap;
    }
    memcpy(h->body + h->body_len, ptr, n);
    h->body_len += n;
    return n;
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *ud)
{
    sk_http *h = (sk_http *)ud;
    size_t n = size * nmemb, i;

    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        /* a new response block (after 1xx): forget the previous one's headers */
        memset(h->hset, 0, sizeof h->hset);
        return n;
    }
    for (i = 0; i < h->hwant; i++) {
        size_t nl = captured[i].len, a, b;
        if (n <= nl || line[nl] != ':' || strncasecmp(line, captured[i].name, nl) != 0)
            continue;
        a = nl + 1;
        b = n;
        while (a < b && (line[a] == ' ' || line[a] == '\t'))
            a++;
        while (b > a && (line[b - 1] == '\r' || line[b - 1] == '\n' ||
                         line[b - 1] == ' ' || line[b - 1] == '\t'))
            b--;
        if (b - a > HVAL_MAX)
            b = a + HVAL_MAX;
        memcpy(h->hval[i], line + a, b - a);
        h->hlen[i] = b - a;
        h->hset[i] = 1;
        break;
    }
    return n;
}

/* ---- handle setup ---- */

static void free_bearer(sk_http *h)
{
    if (h->bearer != NULL) {
        OPENSSL_cleanse(h->bearer, h->bearer_len);
        free(h->bearer);
    }
    h->bearer = NULL;
    h->bearer_len = 0;
    if (h->hdr_auth != NULL) {
        struct curl_slist *s;
        for (s = h->hdr_auth; s != NULL; s = s->next)
            OPENSSL_cleanse(s->data, strlen(s->data));
        curl_slist_free_all(h->hdr_auth);
    }
    h->hdr_auth = NULL;
}

/* Accept, Expect:, the handle's extra lines, then `content_type` (may be NULL). */
static struct curl_slist *base_headers(const sk_http *h, const char *content_type)
{
    struct curl_slist *l = NULL, *t;
    const struct curl_slist *e;
    static const char *lines[] = {
        "Accept: application/json",
        "Expect:",  /* never wait for 100-continue */
        NULL,
    };
    int i;
    for (i = 0; lines[i] != NULL; i++) {
        if ((t = curl_slist_append(l, lines[i])) == NULL)
            goto fail;
        l = t;
    }
    for (e = h->extra; e != NULL; e = e->next) {
        if ((t = curl_slist_append(l, e->data)) == NULL)
            goto fail;
        l = t;
    }
    if (content_type == NULL)
        return l;
    if ((t = curl_slist_append(l, content_type)) == NULL)
        goto fail;
    return t;
fail:
    curl_slist_free_all(l);
    return NULL;
}

/* Apply the options that live for the whole handle. Returns NULL or a message. */
static const char *configure(sk_http *h)
{
    CURL *c = h->curl;
    CURLcode rc = CURLE_OK;
#define SET(opt, val) if (rc == CURLE_OK) rc = curl_easy_setopt(c, opt, val)
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_ERRORBUFFER, h->errbuf);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, (void *)h);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, (void *)h);
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_TCP_NODELAY, 1L);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    SET(CURLOPT_ACCEPT_ENCODING, "");
    SET(CURLOPT_CONNECTTIMEOUT_MS, h->connect_timeout_ms);
    SET(CURLOPT_TIMEOUT_MS, h->timeout_ms);
#if LIBCURL_VERSION_NUM >= 0x075500
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    if (h->ca_file != NULL)
        SET(CURLOPT_CAINFO, h->ca_file);
    if (h->user_agent != NULL)
        SET(CURLOPT_USERAGENT, h->user_agent);
    if (h->proxy != NULL)
        SET(CURLOPT_PROXY, h->proxy);
    if (h->no_proxy != NULL)
        SET(CURLOPT_NOPROXY, h->no_proxy);
#undef SET
    return rc == CURLE_OK ? NULL : curl_easy_strerror(rc);
}

/* After fork() the child must not touch the parent's connections (a TLS
 * close_notify from the child would break the parent's session): abandon the
 * inherited handle without cleanup and start a fresh one. */
static const char *ensure_handle(sk_http *h)
{
    pid_t me = getpid();
    if (h->curl != NULL && h->pid == me)
        return NULL;
    h->curl = curl_easy_init();
    if (h->curl == NULL)
        return "curl_easy_init failed";
    h->pid = me;
    return configure(h);
}

static char *dup_opt_string(lua_State *L, int idx, const char *field)
{
    char *s = NULL;
    lua_getfield(L, idx, field);
    if (!lua_isnil(L, -1)) {
        size_t len;
        const char *v;
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "scalekit.core.http: option %s must be a string", field);
        v = lua_tolstring(L, -1, &len);
        if (len != strlen(v) || strpbrk(v, "\r\n") != NULL)
            luaL_error(L, "scalekit.core.http: option %s has NUL or line breaks", field);
        s = strdup(v);
        if (s == NULL)
            luaL_error(L, "scalekit: out of memory");
    }
    lua_pop(L, 1);
    return s;
}

static long opt_ms(lua_State *L, int idx, const char *field, double dflt)
{
    double v = dflt;
    lua_getfield(L, idx, field);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "scalekit.core.http: option %s must be a number", field);
        v = lua_tonumber(L, -1);
        if (!(v > 0 && v <= 86400))
            luaL_error(L, "scalekit.core.http: option %s must be in (0, 86400] seconds", field);
    }
    lua_pop(L, 1);
    return (long)(v * 1000.0 + 0.5) > 0 ? (long)(v * 1000.0 + 0.5) : 1;
}

static void http_release(sk_http *h)
{
    if (h->curl != NULL && h->pid == getpid())
        curl_easy_cleanup(h->curl);
    h->curl = NULL;
    free_bearer(h);
    curl_slist_free_all(h->hdr_plain);
    curl_slist_free_all(h->hdr_form);
    h->hdr_plain = h->hdr_form = NULL;
    free(h->body);
    h->body = NULL;
    h->body_len = h->body_cap = 0;
    free(h->ca_file);
    free(h->user_agent);
    free(h->proxy);
    free(h->no_proxy);
    h->ca_file = h->user_agent = h->proxy = h->no_proxy = NULL;
    curl_slist_free_all(h->extra);
    h->extra = NULL;
}

/* A list of "Name: value" lines (no NUL, CR or LF) as a curl_slist; NULL for an empty
 * or absent list. `what` names the option in errors. Raises on misuse; the list is
 * freed first. */
static struct curl_slist *header_lines(lua_State *L, int idx, const char *what)
{
    struct curl_slist *l = NULL, *t;
    int i, n;
    if (lua_isnoneornil(L, idx))
        return NULL;
    luaL_checktype(L, idx, LUA_TTABLE);
    n = (int)lua_rawlen(L, idx);
    for (i = 1; i <= n; i++) {
        size_t len;
        const char *v;
        lua_rawgeti(L, idx, i);
        v = lua_tolstring(L, -1, &len);
        if (v == NULL || len != strlen(v) || strpbrk(v, "\r\n") != NULL || strchr(v, ':') == NULL) {
            curl_slist_free_all(l);
            luaL_error(L, "scalekit.core.http: %s[%d] must be a 'Name: value' line without line breaks",
                       what, i);
        }
        if ((t = curl_slist_append(l, v)) == NULL) {
            curl_slist_free_all(l);
            luaL_error(L, "scalekit: out of memory");
        }
        l = t;
        lua_pop(L, 1);
    }
    return l;
}

/* core.http{connect_timeout=, timeout=, ca_file=, user_agent=, max_body_size=, proxy=,
 *           no_proxy=, headers={"Name: value", ...}} */
static int http_new(lua_State *L)
{
    sk_http *h;
    const char *err;

    luaL_checktype(L, 1, LUA_TTABLE);
    h = (sk_http *)sk_newuserdata(L, sizeof *h);
    memset(h, 0, sizeof *h);
    luaL_setmetatable(L, HTTP_MT);  /* before acquiring anything: __gc is safe from here */

    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return luaL_error(L, "scalekit: curl_global_init failed");
        curl_ready = 1;
    }
    h->connect_timeout_ms = opt_ms(L, 1, "connect_timeout", 3);
    h->timeout_ms = opt_ms(L, 1, "timeout", 10);
    h->ca_file = dup_opt_string(L, 1, "ca_file");
    h->user_agent = dup_opt_string(L, 1, "user_agent");
    h->proxy = dup_opt_string(L, 1, "proxy");
    h->no_proxy = dup_opt_string(L, 1, "no_proxy");
    lua_getfield(L, 1, "headers");
    h->extra = header_lines(L, -1, "headers");
    lua_pop(L, 1);
    lua_getfield(L, 1, "max_body_size");
    if (lua_isnil(L, -1)) {
        h->max_body = MAX_BODY_DEFAULT;
    } else {
        /* checked as a double first: casting NaN, negatives or huge values to size_t
         * is undefined behaviour */
        double v = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
        if (!(v >= 1024 && v <= (double)MAX_BODY_LIMIT))
            return luaL_error(L, "scalekit.core.http: option max_body_size must be in [1024, %d]",
                              (int)MAX_BODY_LIMIT);
        h->max_body = (size_t)v;
    }
    lua_pop(L, 1);

    h->hdr_plain = base_headers(h, "Content-Type: application/json");
    h->hdr_form = base_headers(h, "Content-Type: application/x-www-form-urlencoded");
    if (h->hdr_plain == NULL || h->hdr_form == NULL)
        return luaL_error(L, "scalekit: out of memory");
    if ((err = ensure_handle(h)) != NULL)
        return luaL_error(L, "scalekit: cannot set up libcurl: %s", err);
    return 1;
}

static sk_http *http_check(lua_State *L)
{
    sk_http *h = (sk_http *)luaL_checkudata(L, 1, HTTP_MT);
    if (h->closed)
        luaL_error(L, "scalekit: HTTP client is closed");
    return h;
}

/* Header list carrying `Authorization: Bearer <token>`, rebuilt only on change. */
static struct curl_slist *auth_headers(sk_http *h, const char *tok, size_t len)
{
    struct curl_slist *l, *t;
    char *line;
    if (h->hdr_auth != NULL && len == h->bearer_len && memcmp(tok, h->bearer, len) == 0)
        return h->hdr_auth;
    free_bearer(h);
    if ((h->bearer = (char *)malloc(len + 1)) == NULL)
        return NULL;
    memcpy(h->bearer, tok, len + 1);
    h->bearer_len = len;
    if ((line = (char *)malloc(len + 32)) == NULL)
        return NULL;
    memcpy(line, "Authorization: Bearer ", 22);
    memcpy(line + 22, tok, len + 1);
    l = base_headers(h, "Content-Type: application/json");
    t = l ? curl_slist_append(l, line) : NULL;
    OPENSSL_cleanse(line, len + 22);
    free(line);
    if (t == NULL) {
        curl_slist_free_all(l);
        return NULL;
    }
    h->hdr_auth = t;
    return t;
}

static const char *error_kind(CURLcode rc)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return "timeout";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_USE_SSL_FAILED:
        return "tls";
    default:
        return "network";
    }
}

/* The one failure shape of http:request: nil, kind, message, sent, permanent.
 *   sent: false when the request surely never left; permanent: true when trying
 *   again cannot help (the answer is larger than max_body_size, no handle). */
static int push_failure(lua_State *L, const char *kind, const char *msg, int sent, int permanent)
{
    lua_pushnil(L);
    lua_pushstring(L, kind);
    lua_pushstring(L, msg);
    lua_pushboolean(L, sent);
    lua_pushboolean(L, permanent);
    return 5;
}

/* Headers of a raw request (sk:proxy_request): Expect:, the handle's extra lines, the
 * caller's Content-Type, the Bearer and the caller's lines, in a list of its own
 * (freed, and wiped for the token, after the request). NULL when out of memory. */
static struct curl_slist *raw_headers(const sk_http *h, const char *ctype, const char *tok,
                                      const struct curl_slist *user)
{
    struct curl_slist *l = base_headers(h, NULL), *t;
    char *line = NULL;
    size_t n;
    if (l == NULL)
        return NULL;
    /* base_headers starts with Accept: application/json; a raw call sends the caller's */
    if (l->next != NULL) {
        t = l->next;
        l->next = NULL;
        curl_slist_free_all(l);
        l = t;
    }
    if (ctype != NULL) {
        n = strlen(ctype) + 16;
        if ((line = (char *)malloc(n)) == NULL)
            goto fail;
        snprintf(line, n, "Content-Type: %s", ctype);
        if ((t = curl_slist_append(l, line)) == NULL)
            goto fail;
        l = t;
        free(line);
        line = NULL;
    }
    if (tok != NULL) {
        n = strlen(tok) + 24;
        if ((line = (char *)malloc(n)) == NULL)
            goto fail;
        snprintf(line, n, "Authorization: Bearer %s", tok);
        t = curl_slist_append(l, line);
        OPENSSL_cleanse(line, n);
        free(line);
        line = NULL;
        if (t == NULL)
            goto fail;
        l = t;
    }
    for (; user != NULL; user = user->next) {
        if ((t = curl_slist_append(l, user->data)) == NULL)
            goto fail;
        l = t;
    }
    return l;
fail:
    free(line);
    curl_slist_free_all(l);
    return NULL;
}

static void free_wiped(struct curl_slist *l)
{
    struct curl_slist *s;
    for (s = l; s != NULL; s = s->next)
        OPENSSL_cleanse(s->data, strlen(s->data));
    curl_slist_free_all(l);
}

/* The message of a failed transfer; one that came from the proxy says so. */
static void failure_message(sk_http *h, CURLcode rc, char *out, size_t n)
{
    long connect_code = 0;
    const char *base = h->errbuf[0] != '\0' ? h->errbuf : curl_easy_strerror(rc);
    int via_proxy = rc == CURLE_COULDNT_RESOLVE_PROXY;
#if LIBCURL_VERSION_NUM >= 0x074900
    long proxy_error = 0;  /* CURLPX_OK: the proxy (if any) did its part */
    if (curl_easy_getinfo(h->curl, CURLINFO_PROXY_ERROR, &proxy_error) == CURLE_OK && proxy_error != 0)
        via_proxy = 1;
#endif
    /* with a proxy, every connection goes to it first */
    if (rc == CURLE_COULDNT_CONNECT && h->proxy != NULL)
        via_proxy = 1;
    curl_easy_getinfo(h->curl, CURLINFO_HTTP_CONNECTCODE, &connect_code);
    if (connect_code >= 300)
        snprintf(out, n, "proxy CONNECT failed: HTTP %ld (%s)", connect_code, base);
    else if (via_proxy)
        snprintf(out, n, "proxy: %s", base);
    else
        snprintf(out, n, "%s", base);
}

/* http:request(method, url, body, content_type, bearer[, raw])
 *   content_type: nil or "json" (application/json) | "form" (x-www-form-urlencoded)
 *                 | "raw" (with `raw`)
 *   bearer: nil or the access token for the Authorization header
 *   raw: nil, or {content_type=, headers={"Name: value", ...}, timeout=seconds} for
 *        a pass-through call: the caller's content type and headers, its own timeout,
 *        and the answer's Content-Type returned as a 5th value
 * -> status, body, retry_after, request_id[, content_type]
 * -> nil, kind, message, sent, permanent (push_failure) */
static int http_request(lua_State *L)
{
    sk_http *h = http_check(L);
    size_t mlen, ulen, blen = 0, tlen = 0;
    const char *method = luaL_checklstring(L, 2, &mlen);
    const char *url = luaL_checklstring(L, 3, &ulen);
    const char *body = luaL_optlstring(L, 4, NULL, &blen);
    const char *ctype = luaL_optstring(L, 5, "json");
    const char *tok = luaL_optlstring(L, 6, NULL, &tlen);
    int raw = !lua_isnoneornil(L, 7);
    struct curl_slist *hdrs, *own = NULL;
    const char *err;
    CURLcode rc;
    CURL *c;
    long status = 0, nconn = 0, timeout_ms = h->timeout_ms;
    size_t i;
    int has_body;

    luaL_argcheck(L, ulen == strlen(url) && strpbrk(url, "\r\n\t ") == NULL, 3,
                  "URL must not contain NUL, spaces or line breaks");
    if (tok != NULL)
        luaL_argcheck(L, tlen > 0 && tlen == strlen(tok) && strpbrk(tok, "\r\n") == NULL, 6,
                      "token must not be empty or contain NUL or line breaks");
    if (raw) {
        struct curl_slist *user;
        const char *rct = NULL;
        luaL_checktype(L, 7, LUA_TTABLE);
        luaL_argcheck(L, strcmp(ctype, "raw") == 0, 5, "must be \"raw\" with a raw request");
        timeout_ms = opt_ms(L, 7, "timeout", (double)h->timeout_ms / 1000.0);
        lua_getfield(L, 7, "content_type");
        if (!lua_isnil(L, -1)) {
            size_t cl;
            rct = luaL_checklstring(L, -1, &cl);
            luaL_argcheck(L, cl == strlen(rct) && strpbrk(rct, "\r\n") == NULL, 7,
                          "content_type must not contain NUL or line breaks");
        }
        lua_getfield(L, 7, "headers");
        user = header_lines(L, -1, "headers");
        own = raw_headers(h, rct, tok, user);
        curl_slist_free_all(user);
        lua_pop(L, 2);
        if (own == NULL)
            return luaL_error(L, "scalekit: out of memory");
        hdrs = own;
    } else if (strcmp(ctype, "json") == 0) {
        hdrs = tok ? NULL : h->hdr_plain;
    } else if (strcmp(ctype, "form") == 0 && tok == NULL) {
        hdrs = h->hdr_form;
    } else {
        return luaL_argerror(L, 5, "must be \"json\", or \"form\" without a token");
    }
    if ((err = ensure_handle(h)) != NULL) {
        free_wiped(own);
        return push_failure(L, "network", err, 0, 1);
    }
    if (!raw && tok != NULL && (hdrs = auth_headers(h, tok, tlen)) == NULL)
        return luaL_error(L, "scalekit: out of memory");

    c = h->curl;
    has_body = body != NULL;
    if (strcmp(method, "GET") == 0 || (strcmp(method, "DELETE") == 0 && !has_body)) {
        if (has_body && method[0] != 'D') {
            free_wiped(own);
            return luaL_argerror(L, 4, "GET takes no body");
        }
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method[0] == 'G' ? NULL : "DELETE");
    } else if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
               strcmp(method, "PATCH") == 0 || strcmp(method, "DELETE") == 0) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, has_body ? body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, strcmp(method, "POST") == 0 ? NULL : method);
    } else {
        free_wiped(own);
        return luaL_argerror(L, 2, "must be GET, POST, PUT, PATCH or DELETE");
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    if (raw)
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);

    h->body_len = 0;
    h->body_overflow = 0;
    h->errbuf[0] = '\0';
    h->hwant = raw ? H_COUNT : H_COUNT_API;
    memset(h->hset, 0, sizeof h->hset);
    rc = curl_easy_perform(c);
    h->requests++;
    if (curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &nconn) == CURLE_OK)
        h->connects += nconn;
    /* libcurl keeps pointers to the body and the headers; drop them so a later reuse
     * can't see them */
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, NULL);
    if (raw) {
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, h->timeout_ms);
        free_wiped(own);
    }

    if (rc != CURLE_OK) {
        curl_off_t pre = 0;
        int sent = 1;
        char msg[CURL_ERROR_SIZE + 64];
        if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
            rc == CURLE_COULDNT_RESOLVE_PROXY)
            sent = 0;
        else if (curl_easy_getinfo(c, CURLINFO_PRETRANSFER_TIME_T, &pre) == CURLE_OK && pre == 0)
            sent = 0;  /* failed before the request was written: connect or TLS stage */
        if (h->body_overflow) {
            snprintf(msg, sizeof msg, "response body larger than max_body_size (%lu bytes)",
                     (unsigned long)h->max_body);
            return push_failure(L, "network", msg, sent, 1);
        }
        failure_message(h, rc, msg, sizeof msg);
        return push_failure(L, error_kind(rc), msg, sent, 0);
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    lua_pushinteger(L, (lua_Integer)status);
    lua_pushlstring(L, h->body_len ? h->body : "", h->body_len);
    for (i = 0; i < h->hwant; i++) {
        if (h->hset[i])
            lua_pushlstring(L, h->hval[i], h->hlen[i]);
        else
            lua_pushnil(L);
    }
    /* keep big buffers from pinning memory after one large answer */
    if (h->body_cap > 1024 * 1024) {
        free(h->body);
        h->body = NULL;
        h->body_cap = 0;
    }
    return 2 + (int)h->hwant;
}

/* http:stats() -> {requests = n, connects = n}: connects counts new connections,
 * so keep-alive shows as connects staying at 1 over many requests. */
static int http_stats(lua_State *L)
{
    sk_http *h = http_check(L);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)h->requests);
    lua_setfield(L, -2, "requests");
    lua_pushinteger(L, (lua_Integer)h->connects);
    lua_setfield(L, -2, "connects");
    return 1;
}

/* close, __gc and __close: free everything; safe to call any number of times. */
static int http_close(lua_State *L)
{
    sk_http *h = (sk_http *)luaL_checkudata(L, 1, HTTP_MT);
    if (!h->closed) {
        http_release(h);
        h->closed = 1;
    }
    return 0;
}

static int http_tostring(lua_State *L)
{
    sk_http *h = (sk_http *)luaL_checkudata(L, 1, HTTP_MT);
    lua_pushfstring(L, HTTP_MT " (%s): %p", h->closed ? "closed" : "open", (void *)h);
    return 1;
}

/* core.curl_version() -> "7.88.1" (curl_version_info, not curl_version: the latter
 * allocates through libsasl and shows up as a leak under valgrind). */
static int curl_version_string(lua_State *L)
{
    curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    lua_pushstring(L, v && v->version ? v->version : "unknown");
    return 1;
}

void sk_http_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"request", http_request},
        {"stats", http_stats},
        {"close", http_close},
        {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", http_close},
#ifdef SK_HAS_CLOSE
        {"__close", http_close},
#endif
        {"__tostring", http_tostring},
        {NULL, NULL},
    };
    sk_newclass(L, HTTP_MT, meta, methods);
    lua_pushcfunction(L, http_new);
    lua_setfield(L, -2, "http");
    lua_pushcfunction(L, curl_version_string);
    lua_setfield(L, -2, "curl_version");
    lua_pushinteger(L, (lua_Integer)MAX_BODY_LIMIT);  /* scalekit.config checks against it */
    lua_setfield(L, -2, "MAX_BODY_LIMIT");
}
