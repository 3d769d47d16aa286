/* Many HTTP attempts at once over one libcurl multi handle (userdata
 * scalekit.core.Multi), for sk:batch in plain Lua (lua/scalekit/batch.lua).
 *
 *   local m = core.multi{ timeout =, connect_timeout =, ca_file =, user_agent =, proxy =,
 *                         no_proxy =, headers =,
 *                         max_body_size =, concurrency = 8, http2 = true }
 *   m:add(id, method, url, body, ctype, bearer, compressed)  -- starts one attempt
 *   for _, c in ipairs(m:run(timeout_s)) do … end    -- the attempts that ended
 *   m:pending(), m:stats(), m:close()
 *
 * The wire is the one of csrc/http.c: same timeouts, TLS verification always on, no
 * redirects, http/https only, the same response headers captured (Retry-After,
 * x-request-id) and one failure shape. Connections: at most `concurrency` to the
 * host (CURLMOPT_MAX_HOST_CONNECTIONS); when the server offers HTTP/2 by ALPN
 * (CURL_HTTP_VERSION_2TLS), transfers wait for the first connection (PIPEWAIT) and
 * are multiplexed over it (CURLPIPE_MULTIPLEX).
 *
 * No Lua API call happens inside libcurl: the callbacks fill the transfer's malloc'd
 * buffers, and completions are pushed to Lua once curl_multi_perform / poll have
 * returned, so no longjmp can cross libcurl. A forked child abandons the parent's
 * handles (never cleans them up, never reuses their connections) and reports the
 * transfers it inherited as failed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "easy.h"

#define MULTI_MT "scalekit.core.Multi"

#define MAX_CONCURRENCY 64     /* connections per host; sk:batch's own ceiling */
#define MAX_ACTIVE 1024        /* attempts in flight in one handle */

enum { X_IDLE, X_ACTIVE, X_DONE };

typedef struct xfer {
    CURL *easy;
    int state;
    lua_Integer id;
    CURLcode rc;
    int forked;                 /* inherited from the parent process: failed */
    struct xfer *next_done;

    sk_response resp;           /* the answer being received (easy.c callbacks) */

    struct curl_slist *hdr_auth;  /* this attempt's headers with its bearer token */
    char errbuf[CURL_ERROR_SIZE];
} xfer;

typedef struct {
    CURLM *multi;
    pid_t pid;
    int closed;

    xfer **pool;                /* every transfer ever made, reused when idle */
    int npool, active;
    xfer *done_head, *done_tail;

    struct curl_slist *hdr_plain, *hdr_form;
    sk_easy_opts opts;          /* timeouts, CA, User-Agent, proxy, extra lines */
    long concurrency;
    int http2;
    long requests, connects, h2;
} sk_multi;

/* ---- helpers ---- */

static void free_auth(xfer *x)
{
    struct curl_slist *s;
    for (s = x->hdr_auth; s != NULL; s = s->next)
        OPENSSL_cleanse(s->data, strlen(s->data));
    curl_slist_free_all(x->hdr_auth);
    x->hdr_auth = NULL;
}

/* Options that live for the whole easy handle. Returns NULL or a message. */
static const char *configure(sk_multi *m, xfer *x)
{
    CURL *c = x->easy;
    const char *err = sk_easy_configure(c, &m->opts, &x->resp, x->errbuf);
    CURLcode rc = CURLE_OK;
    if (err != NULL)
        return err;
#define SET(opt, val) if (rc == CURLE_OK) rc = curl_easy_setopt(c, opt, val)
    SET(CURLOPT_PRIVATE, (void *)x);
    if (m->http2) {
        SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
        SET(CURLOPT_PIPEWAIT, 1L);
    } else {
        SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    }
#undef SET
    return rc == CURLE_OK ? NULL : curl_easy_strerror(rc);
}

static const char *configure_multi(sk_multi *m)
{
    CURLMcode rc = CURLM_OK;
#define MSET(opt, val) if (rc == CURLM_OK) rc = curl_multi_setopt(m->multi, opt, val)
    MSET(CURLMOPT_PIPELINING, m->http2 ? (long)CURLPIPE_MULTIPLEX : (long)CURLPIPE_NOTHING);
    MSET(CURLMOPT_MAX_HOST_CONNECTIONS, m->concurrency);
    MSET(CURLMOPT_MAX_TOTAL_CONNECTIONS, m->concurrency);
    MSET(CURLMOPT_MAXCONNECTS, m->concurrency);
#undef MSET
    return rc == CURLM_OK ? NULL : curl_multi_strerror(rc);
}

static void push_done(sk_multi *m, xfer *x)
{
    x->state = X_DONE;
    x->next_done = NULL;
    if (m->done_tail != NULL)
        m->done_tail->next_done = x;
    else
        m->done_head = x;
    m->done_tail = x;
}

/* After fork() the child must not touch the parent's connections: abandon the multi
 * and easy handles (no cleanup), turn the inherited attempts into failures and
 * start a fresh multi handle. */
static const char *ensure_multi(sk_multi *m)
{
    pid_t me = getpid();
    int i;
    if (m->multi != NULL && m->pid == me)
        return NULL;
    if (m->multi != NULL) {
        for (i = 0; i < m->npool; i++) {
            xfer *x = m->pool[i];
            x->easy = NULL;
            if (x->state == X_ACTIVE) {
                x->forked = 1;
                push_done(m, x);
            }
        }
    }
    m->multi = curl_multi_init();
    if (m->multi == NULL)
        return "curl_multi_init failed";
    m->pid = me;
    return configure_multi(m);
}

static void xfer_free(sk_multi *m, xfer *x)
{
    if (x->easy != NULL && m->pid == getpid()) {
        if (x->state == X_ACTIVE && m->multi != NULL)
            curl_multi_remove_handle(m->multi, x->easy);
        curl_easy_cleanup(x->easy);
    }
    x->easy = NULL;
    free_auth(x);
    sk_response_trim(&x->resp, 1);
    free(x);
}

static void multi_release(sk_multi *m)
{
    int i;
    for (i = 0; i < m->npool; i++)
        xfer_free(m, m->pool[i]);
    free(m->pool);
    m->pool = NULL;
    m->npool = m->active = 0;
    m->done_head = m->done_tail = NULL;
    if (m->multi != NULL && m->pid == getpid())
        curl_multi_cleanup(m->multi);
    m->multi = NULL;
    curl_slist_free_all(m->hdr_plain);
    curl_slist_free_all(m->hdr_form);
    m->hdr_plain = m->hdr_form = NULL;
    sk_easy_opts_free(&m->opts);
}

/* ---- options ---- */

static double opt_number(lua_State *L, int idx, const char *field, double dflt, double lo, double hi)
{
    double v = dflt;
    lua_getfield(L, idx, field);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "scalekit.core.multi: option %s must be a number", field);
        v = lua_tonumber(L, -1);
        if (!(v >= lo && v <= hi))
            luaL_error(L, "scalekit.core.multi: option %s must be in [%f, %f]", field, lo, hi);
    }
    lua_pop(L, 1);
    return v;
}

/* core.multi{timeout=, connect_timeout=, ca_file=, user_agent=, max_body_size=,
 *            concurrency=, http2=} */
static int multi_new(lua_State *L)
{
    sk_multi *m;
    const char *err;

    luaL_checktype(L, 1, LUA_TTABLE);
    m = (sk_multi *)sk_newuserdata(L, sizeof *m);
    memset(m, 0, sizeof *m);
    luaL_setmetatable(L, MULTI_MT);  /* __gc is safe from here */

    if (sk_curl_global_init() != 0)
        return luaL_error(L, "scalekit: curl_global_init failed");
    sk_easy_opts_read(L, 1, "scalekit.core.multi", &m->opts);
    m->concurrency = (long)opt_number(L, 1, "concurrency", 8, 1, MAX_CONCURRENCY);
    lua_getfield(L, 1, "http2");
    m->http2 = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
    lua_pop(L, 1);

    m->hdr_plain = sk_base_headers(&m->opts, "Content-Type: application/json", NULL);
    m->hdr_form = sk_base_headers(&m->opts, "Content-Type: application/x-www-form-urlencoded", NULL);
    if (m->hdr_plain == NULL || m->hdr_form == NULL)
        return luaL_error(L, "scalekit: out of memory");
    if ((err = ensure_multi(m)) != NULL)
        return luaL_error(L, "scalekit: cannot set up libcurl: %s", err);
    return 1;
}

static sk_multi *multi_check(lua_State *L)
{
    sk_multi *m = (sk_multi *)luaL_checkudata(L, 1, MULTI_MT);
    if (m->closed)
        luaL_error(L, "scalekit: multi handle is closed");
    return m;
}

/* An idle transfer of the pool, or a new one. NULL on out of memory. */
static xfer *take_xfer(sk_multi *m, const char **err)
{
    int i;
    xfer *x = NULL, **p;
    *err = NULL;
    for (i = 0; i < m->npool; i++) {
        if (m->pool[i]->state == X_IDLE) {
            x = m->pool[i];
            break;
        }
    }
    if (x == NULL) {
        if ((p = (xfer **)realloc(m->pool, sizeof *p * (size_t)(m->npool + 1))) == NULL)
            return NULL;
        m->pool = p;
        if ((x = (xfer *)calloc(1, sizeof *x)) == NULL)
            return NULL;
        m->pool[m->npool++] = x;
    }
    if (x->easy == NULL) {
        if ((x->easy = curl_easy_init()) == NULL) {
            *err = "curl_easy_init failed";
            return x;
        }
        if ((*err = configure(m, x)) != NULL) {
            curl_easy_cleanup(x->easy);
            x->easy = NULL;
        }
    }
    return x;
}

/* m:add(id, method, url, body, ctype, bearer, compressed)
 *   -> true | nil, kind, message, sent, permanent
 *   id: an integer the completion carries back; ctype "json" | "form" (no token);
 *   compressed: send Accept-Encoding (paged lists), as http:request does */
static int multi_add(lua_State *L)
{
    sk_multi *m = multi_check(L);
    lua_Integer id = luaL_checkinteger(L, 2);
    size_t mlen, ulen, blen = 0, tlen = 0;
    const char *method = luaL_checklstring(L, 3, &mlen);
    const char *url = luaL_checklstring(L, 4, &ulen);
    const char *body = luaL_optlstring(L, 5, NULL, &blen);
    const char *ctype = luaL_optstring(L, 6, "json");
    const char *tok = luaL_optlstring(L, 7, NULL, &tlen);
    int compressed = lua_toboolean(L, 8);
    struct curl_slist *hdrs;
    const char *err;
    int is_get, is_body_method;
    xfer *x;
    CURL *c;

    luaL_argcheck(L, ulen == strlen(url) && strpbrk(url, "\r\n\t ") == NULL, 4,
                  "URL must not contain NUL, spaces or line breaks");
    if (tok != NULL)
        luaL_argcheck(L, tlen > 0 && tlen == strlen(tok) && strpbrk(tok, "\r\n") == NULL, 7,
                      "token must not be empty or contain NUL or line breaks");
    if (strcmp(ctype, "json") == 0)
        hdrs = m->hdr_plain;
    else if (strcmp(ctype, "form") == 0 && tok == NULL)
        hdrs = m->hdr_form;
    else
        return luaL_argerror(L, 6, "must be \"json\", or \"form\" without a token");
    is_get = strcmp(method, "GET") == 0 || (strcmp(method, "DELETE") == 0 && body == NULL);
    is_body_method = strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
                     strcmp(method, "PATCH") == 0 || strcmp(method, "DELETE") == 0;
    if (!is_get && !is_body_method)
        return luaL_argerror(L, 3, "must be GET, POST, PUT, PATCH or DELETE");
    luaL_argcheck(L, body == NULL || method[0] != 'G', 5, "GET takes no body");
    if (m->active >= MAX_ACTIVE)
        return luaL_error(L, "scalekit: more than %d transfers in flight", MAX_ACTIVE);

    if ((err = ensure_multi(m)) != NULL)
        return luaL_error(L, "scalekit: cannot set up libcurl: %s", err);
    if ((x = take_xfer(m, &err)) == NULL)
        return luaL_error(L, "scalekit: out of memory");
    if (err != NULL) {
        lua_pushnil(L);
        lua_pushstring(L, "network");
        lua_pushstring(L, err);
        lua_pushboolean(L, 0);
        lua_pushboolean(L, 1);
        return 5;
    }
    free_auth(x);  /* a transfer inherited across fork() may still hold one */
    if (tok != NULL) {
        char *line = (char *)malloc(tlen + 23);
        if (line == NULL)
            return luaL_error(L, "scalekit: out of memory");
        memcpy(line, "Authorization: Bearer ", 22);
        memcpy(line + 22, tok, tlen + 1);
        /* a GET or bodiless DELETE carries no Content-Type, as in http.c */
        x->hdr_auth = sk_base_headers(&m->opts, is_get ? NULL : "Content-Type: application/json", line);
        OPENSSL_cleanse(line, tlen + 22);
        free(line);
        if (x->hdr_auth == NULL)
            return luaL_error(L, "scalekit: out of memory");
        hdrs = x->hdr_auth;
    }

    c = x->easy;
    if (is_get) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method[0] == 'G' ? NULL : "DELETE");
    } else {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
        /* copied by libcurl: the Lua string may be collected meanwhile */
        curl_easy_setopt(c, CURLOPT_COPYPOSTFIELDS, body != NULL ? body : "");
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, strcmp(method, "POST") == 0 ? NULL : method);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROXY, sk_easy_proxy(&m->opts, url));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, compressed ? "" : NULL);
    x->id = id;
    x->rc = CURLE_OK;
    x->forked = 0;
    x->resp.max_body = m->opts.max_body;
    sk_response_reset(&x->resp, SK_H_COUNT_API);
    x->errbuf[0] = '\0';
    if (curl_multi_add_handle(m->multi, c) != CURLM_OK) {
        free_auth(x);
        return luaL_error(L, "scalekit: curl_multi_add_handle failed");
    }
    x->state = X_ACTIVE;
    m->active++;
    m->requests++;
    lua_pushboolean(L, 1);
    return 1;
}

/* Move the finished transfers of libcurl to the done list. */
static void collect(sk_multi *m)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m->multi, &left)) != NULL) {
        xfer *x = NULL;
        long nconn = 0, ver = 0;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        if (x == NULL || x->state != X_ACTIVE)
            continue;
        x->rc = msg->data.result;
        if (curl_easy_getinfo(x->easy, CURLINFO_NUM_CONNECTS, &nconn) == CURLE_OK)
            m->connects += nconn;
        if (curl_easy_getinfo(x->easy, CURLINFO_HTTP_VERSION, &ver) == CURLE_OK &&
            ver == CURL_HTTP_VERSION_2_0)
            m->h2++;
        curl_multi_remove_handle(m->multi, x->easy);
        /* libcurl copied the body (COPYPOSTFIELDS); the token list goes now */
        curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, NULL);
        free_auth(x);
        push_done(m, x);
    }
}

static void set_field_bool(lua_State *L, const char *k, int v)
{
    lua_pushboolean(L, v);
    lua_setfield(L, -2, k);
}

static void set_field_str(lua_State *L, const char *k, const char *v)
{
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

/* One completion table: {id=, status=, body=, retry_after=, request_id=} or
 * {id=, kind=, message=, sent=, permanent=}. */
static void push_completion(lua_State *L, xfer *x)
{
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, x->id);
    lua_setfield(L, -2, "id");
    if (x->forked || x->rc != CURLE_OK) {
        int sent = 1;
        if (x->forked) {
            set_field_str(L, "kind", "network");
            set_field_str(L, "message", "the process forked during the transfer");
        } else {
            curl_off_t pre = 0;
            if (x->rc == CURLE_COULDNT_CONNECT || x->rc == CURLE_COULDNT_RESOLVE_HOST ||
                x->rc == CURLE_COULDNT_RESOLVE_PROXY)
                sent = 0;
            else if (curl_easy_getinfo(x->easy, CURLINFO_PRETRANSFER_TIME_T, &pre) == CURLE_OK &&
                     pre == 0)
                sent = 0;
            if (x->resp.body_overflow) {
                char msg[96];
                snprintf(msg, sizeof msg, "response body larger than max_body_size (%lu bytes)",
                         (unsigned long)x->resp.max_body);
                set_field_str(L, "kind", "network");
                set_field_str(L, "message", msg);
                set_field_bool(L, "permanent", 1);
            } else {
                set_field_str(L, "kind", sk_error_kind(x->rc));
                set_field_str(L, "message",
                              x->errbuf[0] != '\0' ? x->errbuf : curl_easy_strerror(x->rc));
                set_field_bool(L, "permanent", 0);
            }
        }
        set_field_bool(L, "sent", sent);
        return;
    }
    {
        long status = 0;
        int i;
        static const char *names[SK_H_COUNT_API] = {"retry_after", "request_id"};
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        lua_pushinteger(L, (lua_Integer)status);
        lua_setfield(L, -2, "status");
        lua_pushlstring(L, x->resp.body_len ? x->resp.body : "", x->resp.body_len);
        lua_setfield(L, -2, "body");
        for (i = 0; i < SK_H_COUNT_API; i++) {
            if (x->resp.hset[i]) {
                lua_pushlstring(L, x->resp.hval[i], x->resp.hlen[i]);
                lua_setfield(L, -2, names[i]);
            }
        }
    }
}

/* The done list as a Lua array; each transfer goes back to the pool once pushed. */
static int push_done_list(lua_State *L, sk_multi *m)
{
    int n = 0;
    lua_newtable(L);
    while (m->done_head != NULL) {
        xfer *x = m->done_head;
        push_completion(L, x);
        lua_rawseti(L, -2, ++n);
        m->done_head = x->next_done;
        if (m->done_head == NULL)
            m->done_tail = NULL;
        x->state = X_IDLE;
        x->next_done = NULL;
        m->active--;
        sk_response_trim(&x->resp, 0);
        x->resp.body_len = 0;
    }
    return 1;
}

/* m:run(timeout_s) -> list of completions (possibly empty): drives the transfers
 * until at least one has ended, none is left, or timeout_s has passed. */
static int multi_run(lua_State *L)
{
    sk_multi *m = multi_check(L);
    double timeout = luaL_optnumber(L, 2, 0);
    double deadline;
    const char *err;
    luaL_argcheck(L, timeout >= 0 && timeout <= 86400, 2, "must be between 0 and 86400");
    if ((err = ensure_multi(m)) != NULL)
        return luaL_error(L, "scalekit: cannot set up libcurl: %s", err);
    deadline = sk_clock(CLOCK_MONOTONIC) + timeout;
    while (m->done_head == NULL && m->active > 0) {
        int running = 0;
        double left;
        CURLMcode rc = curl_multi_perform(m->multi, &running);
        if (rc != CURLM_OK && rc != CURLM_CALL_MULTI_PERFORM)
            return luaL_error(L, "scalekit: curl_multi_perform failed: %s", curl_multi_strerror(rc));
        collect(m);
        if (m->done_head != NULL)
            break;
        left = deadline - sk_clock(CLOCK_MONOTONIC);
        if (left <= 0)
            break;
#if LIBCURL_VERSION_NUM >= 0x074200
        rc = curl_multi_poll(m->multi, NULL, 0, (int)(left * 1000.0) + 1, NULL);
#else
        rc = curl_multi_wait(m->multi, NULL, 0, (int)(left * 1000.0) + 1, NULL);
#endif
        if (rc != CURLM_OK)
            return luaL_error(L, "scalekit: curl_multi_poll failed: %s", curl_multi_strerror(rc));
    }
    return push_done_list(L, m);
}

/* m:pending() -> attempts added and not yet returned by run */
static int multi_pending(lua_State *L)
{
    sk_multi *m = multi_check(L);
    lua_pushinteger(L, m->active);
    return 1;
}

/* m:stats() -> {requests =, connects =, http2 =} (http2: attempts answered over HTTP/2) */
static int multi_stats(lua_State *L)
{
    sk_multi *m = multi_check(L);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)m->requests);
    lua_setfield(L, -2, "requests");
    lua_pushinteger(L, (lua_Integer)m->connects);
    lua_setfield(L, -2, "connects");
    lua_pushinteger(L, (lua_Integer)m->h2);
    lua_setfield(L, -2, "http2");
    return 1;
}

/* close, __gc and __close: cancel what is in flight, free everything; idempotent. */
static int multi_close(lua_State *L)
{
    sk_multi *m = (sk_multi *)luaL_checkudata(L, 1, MULTI_MT);
    if (!m->closed) {
        multi_release(m);
        m->closed = 1;
    }
    return 0;
}

static int multi_tostring(lua_State *L)
{
    sk_multi *m = (sk_multi *)luaL_checkudata(L, 1, MULTI_MT);
    lua_pushfstring(L, MULTI_MT " (%s): %p", m->closed ? "closed" : "open", (void *)m);
    return 1;
}

void sk_multi_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"add", multi_add},
        {"run", multi_run},
        {"pending", multi_pending},
        {"stats", multi_stats},
        {"close", multi_close},
        {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", multi_close},
#ifdef SK_HAS_CLOSE
        {"__close", multi_close},
#endif
        {"__tostring", multi_tostring},
        {NULL, NULL},
    };
    sk_newclass(L, MULTI_MT, meta, methods);
    lua_pushcfunction(L, multi_new);
    lua_setfield(L, -2, "multi");
    lua_pushinteger(L, MAX_CONCURRENCY);
    lua_setfield(L, -2, "MULTI_MAX_CONCURRENCY");
}
