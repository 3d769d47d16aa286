/* One HTTP attempt over a reused libcurl easy handle.
 *
 * The Lua layer owns the policy (token, retries, backoff, errors); this file owns the
 * wire: keep-alive, timeouts, TLS verification and a lean request path. Nothing is
 * allocated per call in the common case: the handle remembers what it was last set to
 * (method, URL, header list, Accept-Encoding) and only what changed is set again;
 * header lists are built once and rebuilt only when the Bearer token changes (the
 * token is read in place from the C vault when the session passes the vault, so no
 * Lua string of it is made per call); GET and DELETE send neither Content-Type nor
 * Expect; Accept-Encoding only when the caller asks (paged lists), so small answers
 * skip the decoder; and the response body grows one reusable buffer that is pushed to
 * Lua in a single copy after curl_easy_perform returns (no Lua API call happens
 * inside a libcurl callback, so no longjmp can cross libcurl). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "easy.h"

#define HTTP_MT "scalekit.core.Http"

typedef struct {
    CURL *curl;
    pid_t pid;               /* process that created curl; a forked child makes its own */
    int closed;

    struct curl_slist *hdr_plain;  /* Accept, Expect:, extra, Content-Type: application/json */
    struct curl_slist *hdr_form;   /* the same with Content-Type: x-www-form-urlencoded */
    struct curl_slist *hdr_nobody; /* Accept, extra: GET and DELETE */
    struct curl_slist *hdr_auth;   /* hdr_plain + Authorization, built when first needed */
    struct curl_slist *hdr_auth_nobody; /* hdr_nobody + Authorization, likewise */
    size_t bearer_len;             /* token in the Authorization lines of both (0: none) */

    /* what the handle was last set to: the setopt is skipped when a request asks for
     * the same (reset for a new handle) */
    int set_method;                /* M_*, M_UNSET */
    struct curl_slist *set_hdrs;
    int set_encoding;              /* Accept-Encoding on (1), off (0), unknown (-1) */
    char *set_url;                 /* copy of the URL last set, NUL-terminated */
    size_t set_url_len, set_url_cap;
    int set_url_valid;
    const char *set_proxy;         /* what sk_easy_proxy gave last (NULL: unknown) */

    sk_response resp;              /* the answer being received (easy.c callbacks) */
    sk_easy_opts opts;             /* timeouts, CA, User-Agent, proxy, extra lines */
    long requests, connects;
    char errbuf[CURL_ERROR_SIZE];
} sk_http;

/* The methods as the handle knows them: a GET, a DELETE without a body, or one of
 * the methods with a body (CURLOPT_POST + the custom method). */
enum { M_UNSET, M_GET, M_DELETE, M_POST, M_PUT, M_PATCH, M_DELETE_BODY };

#define AUTH_PREFIX "Authorization: Bearer "
#define AUTH_PREFIX_LEN 22

/* ---- handle setup ---- */

static void free_wiped(struct curl_slist *l)
{
    struct curl_slist *s;
    for (s = l; s != NULL; s = s->next)
        OPENSSL_cleanse(s->data, strlen(s->data));
    curl_slist_free_all(l);
}

/* Forget both Authorization lists (wiped), and tell libcurl if it holds one. */
static void free_bearer(sk_http *h)
{
    if (h->curl != NULL && h->set_hdrs != NULL &&
        (h->set_hdrs == h->hdr_auth || h->set_hdrs == h->hdr_auth_nobody)) {
        curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, NULL);
        h->set_hdrs = NULL;
    }
    free_wiped(h->hdr_auth);
    free_wiped(h->hdr_auth_nobody);
    h->hdr_auth = h->hdr_auth_nobody = NULL;
    h->bearer_len = 0;
}

/* Accept: application/json, the handle's extra lines, then `line` (may be NULL): the
 * list of a request without a body. NULL when out of memory. */
static struct curl_slist *nobody_headers(const sk_http *h, const char *line)
{
    struct curl_slist *l, *t;
    const struct curl_slist *e;
    if ((l = curl_slist_append(NULL, "Accept: application/json")) == NULL)
        return NULL;
    for (e = h->opts.extra; e != NULL; e = e->next) {
        if ((t = curl_slist_append(l, e->data)) == NULL)
            goto fail;
        l = t;
    }
    if (line == NULL)
        return l;
    if ((t = curl_slist_append(l, line)) != NULL)
        return t;
fail:
    curl_slist_free_all(l);
    return NULL;
}

/* Apply the options that live for the whole handle, and forget what the previous
 * handle was set to. Returns NULL or a message. */
static const char *configure(sk_http *h)
{
    h->set_method = M_GET;  /* a new handle's default */
    h->set_hdrs = NULL;
    h->set_url_valid = 0;
    h->set_proxy = NULL;
    h->set_encoding = -1;
    return sk_easy_configure(h->curl, &h->opts, &h->resp, h->errbuf);
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

static void http_release(sk_http *h)
{
    if (h->curl != NULL && h->pid == getpid())
        curl_easy_cleanup(h->curl);
    h->curl = NULL;
    free_bearer(h);
    curl_slist_free_all(h->hdr_plain);
    curl_slist_free_all(h->hdr_form);
    curl_slist_free_all(h->hdr_nobody);
    h->hdr_plain = h->hdr_form = h->hdr_nobody = NULL;
    free(h->set_url);
    h->set_url = NULL;
    h->set_url_len = h->set_url_cap = 0;
    h->set_url_valid = 0;
    sk_response_trim(&h->resp, 1);
    sk_easy_opts_free(&h->opts);
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

    if (sk_curl_global_init() != 0)
        return luaL_error(L, "scalekit: curl_global_init failed");
    sk_easy_opts_read(L, 1, "scalekit.core.http", &h->opts);
    h->resp.max_body = h->opts.max_body;

    h->hdr_plain = sk_base_headers(&h->opts, "Content-Type: application/json", NULL);
    h->hdr_form = sk_base_headers(&h->opts, "Content-Type: application/x-www-form-urlencoded", NULL);
    h->hdr_nobody = nobody_headers(h, NULL);
    if (h->hdr_plain == NULL || h->hdr_form == NULL || h->hdr_nobody == NULL)
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

/* The Authorization line of the lists built for the current token, or NULL. */
static const char *auth_line(const sk_http *h)
{
    const struct curl_slist *l = h->hdr_auth_nobody ? h->hdr_auth_nobody : h->hdr_auth;
    if (l == NULL)
        return NULL;
    while (l->next != NULL)
        l = l->next;
    return l->data;
}

/* The header list (`nobody`: of a GET/DELETE) carrying `Authorization: Bearer <tok>`.
 * Both lists are dropped when the token changes; each is built when first needed, so
 * the common call compares the token with the line libcurl already has and nothing
 * else (no copy of the token is kept beside those lines). NULL when out of memory. */
static struct curl_slist *auth_headers(sk_http *h, const char *tok, size_t len, int nobody)
{
    struct curl_slist **slot = nobody ? &h->hdr_auth_nobody : &h->hdr_auth;
    const char *have;
    char *line;
    if (*slot != NULL && len == h->bearer_len && (have = auth_line(h)) != NULL &&
        memcmp(have + AUTH_PREFIX_LEN, tok, len) == 0)
        return *slot;
    if (len != h->bearer_len || (have = auth_line(h)) == NULL ||
        memcmp(have + AUTH_PREFIX_LEN, tok, len) != 0)
        free_bearer(h);  /* another token: both lists go */
    if ((line = (char *)malloc(len + AUTH_PREFIX_LEN + 1)) == NULL)
        return NULL;
    memcpy(line, AUTH_PREFIX, AUTH_PREFIX_LEN);
    memcpy(line + AUTH_PREFIX_LEN, tok, len);
    line[AUTH_PREFIX_LEN + len] = '\0';
    if (nobody) {
        *slot = nobody_headers(h, line);
    } else {
        *slot = sk_base_headers(&h->opts, "Content-Type: application/json", line);
    }
    OPENSSL_cleanse(line, len + AUTH_PREFIX_LEN);
    free(line);
    if (*slot != NULL)
        h->bearer_len = len;
    return *slot;
}

/* Set CURLOPT_URL unless it is what the handle already has (out of memory for the
 * copy: set anyway, and remembered as unknown). */
static void set_url(sk_http *h, const char *url, size_t len)
{
    if (h->set_url_valid && len == h->set_url_len && memcmp(url, h->set_url, len) == 0)
        return;
    curl_easy_setopt(h->curl, CURLOPT_URL, url);
    h->set_url_valid = 0;
    if (len + 1 > h->set_url_cap) {
        char *p = (char *)realloc(h->set_url, len + 1);
        if (p == NULL)
            return;
        h->set_url = p;
        h->set_url_cap = len + 1;
    }
    memcpy(h->set_url, url, len + 1);
    h->set_url_len = len;
    h->set_url_valid = 1;
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

/* `l` with the line prefix + value appended (the copy wiped: it may be the token);
 * on failure `l` is freed and NULL returned. */
static struct curl_slist *append_line(struct curl_slist *l, const char *prefix, const char *value)
{
    size_t pn = strlen(prefix), vn = strlen(value);
    struct curl_slist *t = NULL;
    char *line = (char *)malloc(pn + vn + 1);
    if (line != NULL) {
        memcpy(line, prefix, pn);
        memcpy(line + pn, value, vn + 1);
        t = curl_slist_append(l, line);
        OPENSSL_cleanse(line, pn + vn);
        free(line);
    }
    if (t == NULL)
        curl_slist_free_all(l);
    return t;
}

/* Headers of a raw request (sk:proxy_request): Expect:, the handle's extra lines, the
 * caller's Content-Type, the Bearer and the caller's lines, in a list of its own
 * (freed, and wiped for the token, after the request). NULL when out of memory. */
static struct curl_slist *raw_headers(const sk_http *h, const char *ctype, const char *tok,
                                      const struct curl_slist *user)
{
    struct curl_slist *l = sk_base_headers(&h->opts, NULL, NULL), *t;
    if (l == NULL)
        return NULL;
    /* base_headers starts with Accept: application/json; a raw call sends the caller's,
     * and the caller's User-Agent instead of ours */
    if (l->next != NULL) {
        t = l->next;
        l->next = NULL;
        curl_slist_free_all(l);
        l = t;
    }
    /* ours is the first extra line, after Expect: (sk_base_headers, sk_easy_opts_read) */
    if (l->next != NULL && strncasecmp(l->next->data, "User-Agent:", 11) == 0 &&
        sk_has_header(user, "User-Agent:", 11)) {
        t = l->next;
        l->next = t->next;
        t->next = NULL;
        curl_slist_free_all(t);
    }
    if (ctype != NULL && (l = append_line(l, "Content-Type: ", ctype)) == NULL)
        return NULL;
    if (tok != NULL && (l = append_line(l, AUTH_PREFIX, tok)) == NULL)
        return NULL;
    for (; user != NULL; user = user->next) {
        if ((t = curl_slist_append(l, user->data)) == NULL) {
            free_wiped(l);  /* holds the token */
            return NULL;
        }
        l = t;
    }
    return l;
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
    if (rc == CURLE_COULDNT_CONNECT && h->opts.proxy != NULL)
        via_proxy = 1;
    curl_easy_getinfo(h->curl, CURLINFO_HTTP_CONNECTCODE, &connect_code);
    if (connect_code >= 300)
        snprintf(out, n, "proxy CONNECT failed: HTTP %ld (%s)", connect_code, base);
    else if (via_proxy)
        snprintf(out, n, "proxy: %s", base);
    else
        snprintf(out, n, "%s", base);
}

/* http:request(method, url, body, content_type, bearer[, raw[, compressed]])
 *   content_type: nil or "json" (application/json) | "form" (x-www-form-urlencoded)
 *                 | "raw" (with `raw`)
 *   bearer: nil, the access token for the Authorization header, or the token vault
 *           (scalekit.core.Token) holding it: read in place, no Lua copy
 *   raw: nil, or {content_type=, headers={"Name: value", ...}, timeout=seconds} for
 *        a pass-through call: the caller's content type and headers, its own timeout,
 *        and the answer's Content-Type returned as a 5th value
 *   compressed: send Accept-Encoding (what libcurl decodes) — for large answers such
 *        as paged lists; raw calls always do
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
    const char *tok = NULL;
    int raw = !lua_isnoneornil(L, 7);
    int compressed = raw || lua_toboolean(L, 8);
    struct curl_slist *hdrs, *own = NULL;
    const char *err;
    CURLcode rc;
    CURL *c;
    long status = 0, nconn = 0, timeout_ms = h->opts.timeout_ms;
    size_t i;
    int has_body = body != NULL, want, nobody;

    luaL_argcheck(L, ulen == strlen(url) && strpbrk(url, "\r\n\t ") == NULL, 3,
                  "URL must not contain NUL, spaces or line breaks");
    switch (lua_type(L, 6)) {
    case LUA_TNONE:
    case LUA_TNIL:
        break;
    case LUA_TSTRING:
    case LUA_TNUMBER:
        tok = lua_tolstring(L, 6, &tlen);
        break;
    default: {
        lua_Integer gen;
        int got = sk_token_bytes(L, 6, &tok, &tlen, &gen);
        if (got < 0)
            return luaL_argerror(L, 6, lua_pushfstring(L, "string expected, got %s (or the token vault)",
                                                        luaL_typename(L, 6)));
        luaL_argcheck(L, got > 0, 6, "the token vault is empty");
    }
    }

    /* the method as the handle knows it */
    if (strcmp(method, "GET") == 0) {
        if (has_body)
            return luaL_argerror(L, 4, "GET takes no body");
        want = M_GET;
    } else if (strcmp(method, "DELETE") == 0) {
        want = has_body ? M_DELETE_BODY : M_DELETE;
    } else if (strcmp(method, "POST") == 0) {
        want = M_POST;
    } else if (strcmp(method, "PUT") == 0) {
        want = M_PUT;
    } else if (strcmp(method, "PATCH") == 0) {
        want = M_PATCH;
    } else {
        return luaL_argerror(L, 2, "must be GET, POST, PUT, PATCH or DELETE");
    }
    nobody = want == M_GET || want == M_DELETE;

    /* a token that is not already in our Authorization lines is checked once, here */
    if (tok != NULL && !(h->bearer_len == tlen && auth_line(h) != NULL &&
                         memcmp(auth_line(h) + AUTH_PREFIX_LEN, tok, tlen) == 0))
        luaL_argcheck(L, tlen > 0 && tlen == strlen(tok) && strpbrk(tok, "\r\n") == NULL, 6,
                      "token must not be empty or contain NUL or line breaks");
    if (raw) {
        struct curl_slist *user;
        const char *rct = NULL;
        luaL_checktype(L, 7, LUA_TTABLE);
        luaL_argcheck(L, strcmp(ctype, "raw") == 0, 5, "must be \"raw\" with a raw request");
        timeout_ms = sk_opt_ms(L, 7, "scalekit.core.http", "timeout", (double)h->opts.timeout_ms / 1000.0);
        lua_getfield(L, 7, "content_type");
        if (!lua_isnil(L, -1)) {
            size_t cl;
            rct = luaL_checklstring(L, -1, &cl);
            luaL_argcheck(L, cl == strlen(rct) && strpbrk(rct, "\r\n") == NULL, 7,
                          "content_type must not contain NUL or line breaks");
        }
        lua_getfield(L, 7, "headers");
        user = sk_header_lines(L, -1, "headers");
        own = raw_headers(h, rct, tok, user);
        curl_slist_free_all(user);
        lua_pop(L, 2);
        if (own == NULL)
            return luaL_error(L, "scalekit: out of memory");
        hdrs = own;
    } else if (strcmp(ctype, "json") == 0) {
        hdrs = tok ? NULL : nobody ? h->hdr_nobody : h->hdr_plain;
    } else if (strcmp(ctype, "form") == 0 && tok == NULL) {
        hdrs = h->hdr_form;
    } else {
        return luaL_argerror(L, 5, "must be \"json\", or \"form\" without a token");
    }
    if ((err = ensure_handle(h)) != NULL) {
        free_wiped(own);
        return push_failure(L, "network", err, 0, 1);
    }
    if (!raw && tok != NULL && (hdrs = auth_headers(h, tok, tlen, nobody)) == NULL)
        return luaL_error(L, "scalekit: out of memory");

    /* only what differs from the previous request is set */
    c = h->curl;
    if (want != h->set_method) {
        static const char *const custom[] = {NULL, NULL, "DELETE", NULL, "PUT", "PATCH", "DELETE"};
        if (nobody)
            curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
        else
            curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, custom[want]);
        h->set_method = want;
    }
    if (!nobody) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, has_body ? body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
    }
    set_url(h, url, ulen);
    {
        const char *proxy = sk_easy_proxy(&h->opts, url);
        if (proxy != h->set_proxy) {
            curl_easy_setopt(c, CURLOPT_PROXY, proxy);
            h->set_proxy = proxy;
        }
    }
    if (hdrs != h->set_hdrs) {
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
        h->set_hdrs = hdrs;
    }
    if (compressed != h->set_encoding) {
        curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, compressed ? "" : NULL);
        h->set_encoding = compressed;
    }
    if (raw)
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);

    h->errbuf[0] = '\0';
    sk_response_reset(&h->resp, raw ? SK_H_COUNT : SK_H_COUNT_API);
    rc = curl_easy_perform(c);
    h->requests++;
    if (curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &nconn) == CURLE_OK)
        h->connects += nconn;
    /* libcurl keeps pointers to the body and the headers; drop them so a later reuse
     * can't see them (a body method stays one: CURLOPT_POSTFIELDS implies POST) */
    if (!nobody)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, NULL);
    if (raw) {
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
        h->set_hdrs = NULL;
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, h->opts.timeout_ms);
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
        if (h->resp.body_overflow) {
            snprintf(msg, sizeof msg, "response body larger than max_body_size (%lu bytes)",
                     (unsigned long)h->resp.max_body);
            return push_failure(L, "network", msg, sent, 1);
        }
        failure_message(h, rc, msg, sizeof msg);
        return push_failure(L, sk_error_kind(rc), msg, sent, 0);
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    lua_pushinteger(L, (lua_Integer)status);
    lua_pushlstring(L, h->resp.body_len ? h->resp.body : "", h->resp.body_len);
    i = (size_t)sk_response_push_headers(L, &h->resp);
    sk_response_trim(&h->resp, 0);
    return 2 + (int)i;
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
    lua_pushinteger(L, (lua_Integer)SK_MAX_BODY_LIMIT);  /* scalekit.config checks against it */
    lua_setfield(L, -2, "MAX_BODY_LIMIT");
}
