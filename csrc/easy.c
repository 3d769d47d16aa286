/* What http.c and multi.c share: see easy.h. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "easy.h"

static const struct {
    const char *name;
    size_t len;
} captured[SK_H_COUNT] = {
    {"retry-after", 11},
    {"x-request-id", 12},
    {"content-type", 12},
};

static int curl_ready = 0;  /* the only global: curl_global_init done */

int sk_curl_global_init(void)
{
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return -1;
        curl_ready = 1;
    }
    return 0;
}

/* ---- libcurl callbacks: plain C, never touch the Lua state ---- */

size_t sk_on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    sk_response *r = (sk_response *)ud;
    size_t n = size * nmemb;
    if (n > r->max_body - r->body_len) {
        r->body_overflow = 1;
        return 0;  /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (r->body_len + n > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 4096;
        char *p;
        while (cap < r->body_len + n)
            cap *= 2;
        if (cap > r->max_body)
            cap = r->max_body;
        p = (char *)realloc(r->body, cap);
        if (p == NULL)
            return 0;
        r->body = p;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, ptr, n);
    r->body_len += n;
    return n;
}

size_t sk_on_header(char *line, size_t size, size_t nmemb, void *ud)
{
    sk_response *r = (sk_response *)ud;
    size_t n = size * nmemb, i;

    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        /* a new response block (after 1xx): forget the previous one's headers */
        memset(r->hset, 0, sizeof r->hset);
        return n;
    }
    for (i = 0; i < r->hwant; i++) {
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
        if (b - a > SK_HVAL_MAX)
            b = a + SK_HVAL_MAX;
        memcpy(r->hval[i], line + a, b - a);
        r->hlen[i] = b - a;
        r->hset[i] = 1;
        break;
    }
    return n;
}

void sk_response_reset(sk_response *r, size_t hwant)
{
    r->body_len = 0;
    r->body_overflow = 0;
    r->hwant = hwant;
    memset(r->hset, 0, sizeof r->hset);
}

int sk_response_push_headers(lua_State *L, const sk_response *r)
{
    size_t i;
    for (i = 0; i < r->hwant; i++) {
        if (r->hset[i])
            lua_pushlstring(L, r->hval[i], r->hlen[i]);
        else
            lua_pushnil(L);
    }
    return (int)r->hwant;
}

void sk_response_trim(sk_response *r, int all)
{
    /* keep big buffers from pinning memory after one large answer */
    if (all || r->body_cap > 1024 * 1024) {
        free(r->body);
        r->body = NULL;
        r->body_cap = 0;
        r->body_len = 0;
    }
}

/* ---- options ---- */

static char *opt_string(lua_State *L, int idx, const char *who, const char *field)
{
    char *s = NULL;
    lua_getfield(L, idx, field);
    if (!lua_isnil(L, -1)) {
        size_t len;
        const char *v;
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "%s: option %s must be a string", who, field);
        v = lua_tolstring(L, -1, &len);
        if (len != strlen(v) || strpbrk(v, "\r\n") != NULL)
            luaL_error(L, "%s: option %s has NUL or line breaks", who, field);
        s = strdup(v);
        if (s == NULL)
            luaL_error(L, "scalekit: out of memory");
    }
    lua_pop(L, 1);
    return s;
}

long sk_opt_ms(lua_State *L, int idx, const char *who, const char *field, double dflt)
{
    double v = dflt;
    lua_getfield(L, idx, field);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "%s: option %s must be a number", who, field);
        v = lua_tonumber(L, -1);
        if (!(v > 0 && v <= 86400))
            luaL_error(L, "%s: option %s must be in (0, 86400] seconds", who, field);
    }
    lua_pop(L, 1);
    return (long)(v * 1000.0 + 0.5) > 0 ? (long)(v * 1000.0 + 0.5) : 1;
}

struct curl_slist *sk_header_lines(lua_State *L, int idx, const char *what)
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
            luaL_error(L, "scalekit.core: %s[%d] must be a 'Name: value' line without line breaks",
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

/* The first of `names` set and not empty in the environment, copied (NULL when none
 * is): an empty variable counts as unset, as in curl_getenv. */
static char *first_env(lua_State *L, const char *const *names)
{
    for (; *names != NULL; names++) {
        const char *v = getenv(*names);
        if (v != NULL && *v != '\0') {
            char *copy = strdup(v);
            if (copy == NULL)
                luaL_error(L, "scalekit: out of memory");
            return copy;
        }
    }
    return NULL;
}

/* libcurl's own lookup (url.c, detect_proxy and the no_proxy check), done once
 * instead of on every request: <scheme>_proxy, then its uppercase form except
 * HTTP_PROXY (which a CGI client could set through a Proxy: header), then all_proxy
 * and ALL_PROXY; no_proxy, then NO_PROXY. */
static void env_proxies(lua_State *L, sk_easy_opts *o)
{
    static const char *const http[] = {"http_proxy", "all_proxy", "ALL_PROXY", NULL};
    static const char *const https[] = {"https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", NULL};
    static const char *const no[] = {"no_proxy", "NO_PROXY", NULL};
    o->env_http = first_env(L, http);
    o->env_https = first_env(L, https);
    o->env_no_proxy = first_env(L, no);
}

int sk_has_header(const struct curl_slist *l, const char *name, size_t n)
{
    for (; l != NULL; l = l->next)
        if (strncasecmp(l->data, name, n) == 0)
            return 1;
    return 0;
}

/* The User-Agent goes out as the first extra header line, not as CURLOPT_USERAGENT:
 * libcurl 7.88 formats that option into every request twice, byte by byte (about
 * 185 instructions a byte against 83 for a list line: 4 k per call for ours). The
 * option is still set where a proxy may be used (sk_easy_configure), because
 * libcurl's CONNECT takes the User-Agent from it only; the list's line then wins
 * for the request itself, so the server never sees two. A "User-Agent:" line among
 * `headers` wins over ours, as it would over the option. */
static void user_agent_lines(lua_State *L, const char *who, sk_easy_opts *o)
{
    size_t n = strlen(o->user_agent);
    char *line;
    struct curl_slist *first;
    if (n > SK_UA_MAX)
        luaL_error(L, "%s: option user_agent is longer than %d bytes", who, SK_UA_MAX);
    if (sk_has_header(o->extra, "User-Agent:", 11))
        return;
    if ((line = (char *)malloc(n + 13)) == NULL)
        luaL_error(L, "scalekit: out of memory");
    memcpy(line, "User-Agent: ", 12);
    memcpy(line + 12, o->user_agent, n + 1);
    first = curl_slist_append(NULL, line);
    free(line);
    if (first == NULL)
        luaL_error(L, "scalekit: out of memory");
    first->next = o->extra;  /* first: sent before the other extra lines */
    o->extra = first;
}

void sk_easy_opts_read(lua_State *L, int idx, const char *who, sk_easy_opts *o)
{
    o->connect_timeout_ms = sk_opt_ms(L, idx, who, "connect_timeout", 3);
    o->timeout_ms = sk_opt_ms(L, idx, who, "timeout", 10);
    o->ca_file = opt_string(L, idx, who, "ca_file");
    o->user_agent = opt_string(L, idx, who, "user_agent");
    o->proxy = opt_string(L, idx, who, "proxy");
    o->no_proxy = opt_string(L, idx, who, "no_proxy");
    env_proxies(L, o);
    lua_getfield(L, idx, "headers");
    o->extra = sk_header_lines(L, -1, "headers");
    lua_pop(L, 1);
    if (o->user_agent != NULL)
        user_agent_lines(L, who, o);
    lua_getfield(L, idx, "max_body_size");
    if (lua_isnil(L, -1)) {
        o->max_body = SK_MAX_BODY_DEFAULT;
    } else {
        /* checked as a double first: casting NaN, negatives or huge values to size_t
         * is undefined behaviour */
        double v = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
        if (!(v >= 1024 && v <= (double)SK_MAX_BODY_LIMIT))
            luaL_error(L, "%s: option max_body_size must be in [1024, %d]", who, (int)SK_MAX_BODY_LIMIT);
        o->max_body = (size_t)v;
    }
    lua_pop(L, 1);
}

void sk_easy_opts_free(sk_easy_opts *o)
{
    free(o->ca_file);
    free(o->user_agent);
    free(o->env_http);
    free(o->env_https);
    free(o->env_no_proxy);
    free(o->proxy);
    free(o->no_proxy);
    o->ca_file = o->user_agent = o->proxy = o->no_proxy = NULL;
    o->env_http = o->env_https = o->env_no_proxy = NULL;
    curl_slist_free_all(o->extra);
    o->extra = NULL;
}

const char *sk_easy_proxy(const sk_easy_opts *o, const char *url)
{
    const char *p;
    if (o->proxy != NULL)
        return o->proxy;
    p = strncasecmp(url, "https:", 6) == 0 ? o->env_https : o->env_http;
    return p != NULL ? p : "";
}

const char *sk_easy_configure(CURL *c, const sk_easy_opts *o, sk_response *r, char *errbuf)
{
    CURLcode rc = CURLE_OK;
#define SET(opt, val) if (rc == CURLE_OK) rc = curl_easy_setopt(c, opt, val)
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_ERRORBUFFER, errbuf);
    SET(CURLOPT_WRITEFUNCTION, sk_on_body);
    SET(CURLOPT_WRITEDATA, (void *)r);
    SET(CURLOPT_HEADERFUNCTION, sk_on_header);
    SET(CURLOPT_HEADERDATA, (void *)r);
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_TCP_NODELAY, 1L);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    SET(CURLOPT_ACCEPT_ENCODING, "");
    SET(CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
    SET(CURLOPT_TIMEOUT_MS, o->timeout_ms);
#if LIBCURL_VERSION_NUM >= 0x075500
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    if (o->ca_file != NULL)
        SET(CURLOPT_CAINFO, o->ca_file);
    /* (CURLOPT_PROXY is set per request: sk_easy_proxy) */
    if (o->user_agent != NULL && ((o->proxy != NULL && *o->proxy) || o->env_http || o->env_https))
        SET(CURLOPT_USERAGENT, o->user_agent);
    /* always set, even to "": libcurl would read no_proxy on every request otherwise */
    SET(CURLOPT_NOPROXY, o->no_proxy != NULL ? o->no_proxy : o->env_no_proxy != NULL ? o->env_no_proxy : "");
#undef SET
    return rc == CURLE_OK ? NULL : curl_easy_strerror(rc);
}

struct curl_slist *sk_base_headers(const sk_easy_opts *o, const char *content_type, const char *line)
{
    struct curl_slist *l = NULL, *t;
    const struct curl_slist *e;
    static const char *fixed[] = {
        "Accept: application/json",
        "Expect:",  /* never wait for 100-continue */
        NULL,
    };
    const char *tail[3];
    int i;
    tail[0] = content_type;
    tail[1] = line;
    tail[2] = NULL;
    for (i = 0; fixed[i] != NULL; i++) {
        if ((t = curl_slist_append(l, fixed[i])) == NULL)
            goto fail;
        l = t;
    }
    for (e = o->extra; e != NULL; e = e->next) {
        if ((t = curl_slist_append(l, e->data)) == NULL)
            goto fail;
        l = t;
    }
    for (i = 0; i < 2; i++) {
        if (tail[i] == NULL)
            continue;
        if ((t = curl_slist_append(l, tail[i])) == NULL)
            goto fail;
        l = t;
    }
    return l;
fail:
    curl_slist_free_all(l);
    return NULL;
}

const char *sk_error_kind(CURLcode rc)
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
