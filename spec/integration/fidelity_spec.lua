-- API fidelity against the fake Scalekit: answers the spec allows (empty deletes),
-- the SDK features (proxy_request, client_token, IdP-initiated login, several
-- issuers, api_version, tool errors), observability (log hook, err.attempts, the
-- proxy option) and misuse messages that guide.
local helpers = require "spec.support.client"
local server = require "spec.support.fake"
local scalekit = require "scalekit"
local errors = require "scalekit.errors"

local mtype = rawget(math, "type")

-- A /proxy/ location in the fake: echoes what Scalekit's proxy would forward
-- (method, path, query, the connected-account headers, the raw body) as a raw
-- text/plain answer, or waits `?sleep=` seconds.
local PROXY_ECHO = [[
        underscores_in_headers on;
        location /proxy/ {
            content_by_lua_block {
                ngx.req.read_body()
                local h = ngx.req.get_headers()
                local args = ngx.req.get_uri_args()
                if args.sleep then ngx.sleep(tonumber(args.sleep)) end
                if args.ua then  -- every User-Agent line that arrived, in order
                  local ua = h["user-agent"]
                  ngx.print(type(ua) == "table" and table.concat(ua, "\n") or ua or "-")
                  return
                end
                ngx.header["Content-Type"] = args.ctype or "text/plain; charset=utf-8"
                ngx.status = tonumber(args.status) or 200
                ngx.print(table.concat({ ngx.req.get_method(), ngx.var.uri, ngx.var.args or "",
                  h["connection_name"] or "-", h["identifier"] or "-", h["x-extra"] or "-",
                  h["content-type"] or "-", (h["authorization"] or "-"):sub(1, 7),
                  ngx.req.get_body_data() or "" }, "|"))
            }
        }
]]

describe("API fidelity", function()
  local sk
  local srv = server.for_suite(setup, teardown, { workers = 1, oidc = true, extra_server = PROXY_ECHO })
  teardown(function() if sk then sk:close() end end)
  before_each(function()
    srv:clear_faults()
    if sk then sk:close() end
    sk = helpers.new_client(srv)
  end)

  describe("answers the spec allows", function()
    it("a delete answered with null, {} or nothing is a success ({}), for every empty-schema operation", function()
      for _, body in ipairs({ "null", "{}", "" }) do
        srv:faults{ { match = "/api/v1/organizations/", method = "DELETE", status = 200, body = body } }
        local res, err = sk.organizations:delete("org_1")
        assert.is_nil(err, body)
        assert.same({}, res)
      end
      -- and only for those: a get answered with null is still a decode error
      srv:faults{ { match = "/api/v1/organizations/", method = "GET", status = 200, body = "null" } }
      local res, err = sk.organizations:get("org_1")
      assert.is_nil(res)
      assert.equal("decode", err.kind)
    end)
  end)

  describe("tool errors", function()
    it("a provider failure (error_code TOOL_ERROR) is never retried", function()
      srv:faults{ { match = "/api/v1/execute_tool", status = 429, error_code = "TOOL_ERROR", count = 5 } }
      local before = helpers.count_requests(srv, "execute_tool")
      local res, err = sk.tools:execute{ tool_name = "gmail_send" }
      assert.is_nil(res)
      assert.equal(429, err.status)
      assert.equal("TOOL_ERROR", err.error_code)
      assert.is_false(err.retryable)
      assert.equal(1, err.attempts)
      assert.equal(before + 1, helpers.count_requests(srv, "execute_tool"))
    end)

    it("a 401 from the provider (TOOL_ERROR) does not renew the client's token", function()
      assert(sk:token())
      local tokens = srv:stats().tokens_issued
      srv:faults{ { match = "/api/v1/execute_tool", status = 401, error_code = "TOOL_ERROR" } }
      local res, err = sk.tools:execute{ tool_name = "gmail_send" }
      assert.is_nil(res)
      assert.equal(401, err.status)
      assert.equal(tokens, srv:stats().tokens_issued)
      -- an ordinary 401 still renews once
      srv:faults{ { match = "/api/v1/organizations", status = 401 } }
      assert(sk.organizations:list{})
      assert.equal(tokens + 1, srv:stats().tokens_issued)
    end)
  end)

  describe("proxy_request", function()
    it("sends any method, path, query, headers and raw body through {env}/proxy/ and returns the raw answer", function()
      local res = assert(sk:proxy_request{
        connection_name = "gmail", identifier = "user@example.com", method = "POST",
        path = "gmail/v1/users/me/messages", query = { q = "a b", n = 2 },
        headers = { ["X-Extra"] = "1" }, body = "raw \0 bytes", content_type = "application/x-thing",
      })
      assert.equal(200, res.status)
      assert.equal("text/plain; charset=utf-8", res.content_type)
      assert.equal("POST|/proxy/gmail/v1/users/me/messages|n=2&q=a%20b|gmail|user@example.com|1|"
        .. "application/x-thing|Bearer |raw \0 bytes", res.body)
      assert.is_nil(res.json)
    end)

    it("sends one User-Agent: ours, or the caller's in its place", function()
      local res = assert(sk:proxy_request{ connection_name = "c", identifier = "i", path = "/x",
                                           query = { ua = 1 } })
      assert.truthy(res.body:find("^scalekit%-lua/%d+%.%d+%.%d+ %(.+; libcurl/[%d.]+%)$"), res.body)
      res = assert(sk:proxy_request{ connection_name = "c", identifier = "i", path = "/x",
                                     query = { ua = 1 }, headers = { ["user-agent"] = "mine/1" } })
      assert.equal("mine/1", res.body)
    end)

    it("encodes a table body as JSON and decodes a JSON answer", function()
      local res = assert(sk:proxy_request{
        connection_name = "c", identifier = "i", method = "PUT", path = "/x",
        query = { ctype = "application/json" }, body = { a = 1 },
      })
      assert.equal("application/json", res.content_type)
      assert.truthy(res.body:find('|application/json|Bearer |{"a":1}', 1, true), res.body)
    end)

    it("returns the provider's HTTP error as an error, with its own timeout", function()
      local res, err = sk:proxy_request{ connection_name = "c", identifier = "i", path = "/x",
                                         query = { status = 404 } }
      assert.is_nil(res)
      assert.equal(404, err.status)
      res, err = sk:proxy_request{ connection_name = "c", identifier = "i", path = "/slow",
                                   query = { sleep = 2 }, timeout = 0.3 }
      assert.is_nil(res)
      assert.equal("timeout", err.kind)
    end)

    it("raises on misuse", function()
      assert.has_error(function() sk:proxy_request{ identifier = "i", path = "/x" } end)
      assert.has_error(function() sk:proxy_request{ connection_name = "c", identifier = "i", path = "/x",
                                                    headers = { Authorization = "x" } } end)
      assert.has_error(function() sk:proxy_request{ connection_name = "c", identifier = "i", path = "/x",
                                                    method = "GET", body = "x" } end)
      local ok, msg = pcall(sk.proxy_request, sk, { connection_name = "c", identifier = "i", path = "/x",
                                                    quer = {} })
      assert.is_false(ok)
      assert.truthy(msg:find("unknown option 'quer' (did you mean 'query'?)", 1, true), msg)
    end)
  end)

  describe("client_token", function()
    it("gets a token for another M2M client, with its scopes, and caches nothing", function()
      local token, expires_at = scalekit.client_token{
        environment_url = srv.url, client_id = helpers.CLIENT_ID, client_secret = helpers.CLIENT_SECRET,
        scopes = { "orgs:read", "users:write" },
      }
      assert.is_string(token)
      assert.is_number(expires_at)
      local last
      for _, r in ipairs(srv:requests()) do
        if (r.path or r.uri):find("/oauth/token", 1, true) then last = r end
      end
      assert.truthy(last.body:find("scope=orgs%3Aread%20users%3Awrite", 1, true), last.body)
      local t2, err = scalekit.client_token{ environment_url = srv.url, client_id = helpers.CLIENT_ID,
                                             client_secret = "wrong" }
      assert.is_nil(t2)
      assert.equal("auth", err.kind)
      assert.has_error(function() scalekit.client_token{ environment_url = srv.url, client_id = "a",
                                                          client_secret = "b", scopes = "a b" } end)
    end)
  end)

  describe("token validation", function()
    local function claims(over)
      local now = os.time()
      local c = { iss = srv.url, aud = { helpers.CLIENT_ID }, sub = "usr_1", exp = now + 600, iat = now }
      for k, v in pairs(over or {}) do c[k] = v end
      return c
    end

    it("accepts several issuers (the environment and its MCP resources)", function()
      local issuers = { srv.url, srv.url .. "/resources/res_1" }
      local mcp = srv:sign_jwt(claims{ iss = srv.url .. "/resources/res_1" })
      assert.truthy(sk:validate_access_token(mcp, { issuer = issuers, audience = helpers.CLIENT_ID }))
      local c, err = sk:validate_access_token(mcp, { audience = helpers.CLIENT_ID })
      assert.is_nil(c)
      assert.equal("issuer_mismatch", err.error_code)
      c, err = sk:validate_access_token(srv:sign_jwt(claims{ iss = "https://evil.example" }),
                                        { issuer = issuers })
      assert.is_nil(c)
      assert.equal("issuer_mismatch", err.error_code)
      assert.has_error(function() sk:validate_access_token(mcp, { issuer = {} }) end)
    end)

    it("get_idp_initiated_login_claims verifies the token like an id_token", function()
      local token = srv:sign_jwt(claims{ connection_id = "conn_1", organization_id = "org_1",
                                         login_hint = "a@b.c", relay_state = "rs" })
      local c = assert(sk:get_idp_initiated_login_claims(token))
      assert.equal("conn_1", c.connection_id)
      assert.equal("rs", c.relay_state)
      local bad, err = sk:get_idp_initiated_login_claims(srv:sign_jwt(claims{ aud = { "another-app" } }))
      assert.is_nil(bad)
      assert.equal("audience_mismatch", err.error_code)
      bad, err = sk:get_idp_initiated_login_claims(srv:sign_jwt(claims{ exp = os.time() - 3600 }))
      assert.is_nil(bad)
      assert.equal("token_expired", err.error_code)
    end)
  end)

  describe("observability", function()
    it("the log hook sees every attempt, answer and retry, never a secret or a token", function()
      local events = {}
      local c = helpers.new_client(srv, { log = function(e) events[#events + 1] = e end })
      srv:faults{ { match = "/api/v1/organizations", status = 503, count = 1 } }
      assert(c.organizations:list{ page_size = 5 })
      local kinds = {}
      for _, e in ipairs(events) do kinds[#kinds + 1] = e.event end
      -- token request and answer, then 503, a retry, and the 200
      assert.same({ "request", "response", "request", "response", "retry", "request", "response" }, kinds)
      assert.equal(503, events[4].status)
      assert.equal(2, events[7].attempt)
      assert.equal(200, events[7].status)
      assert.is_number(events[7].duration)
      assert.equal("GET", events[7].method)
      assert.truthy(events[7].url:find("/api/v1/organizations?page_size=5", 1, true))
      local token = c:token()
      local dump = require("cjson").encode(events)
      assert.is_nil(dump:find(helpers.CLIENT_SECRET, 1, true))
      assert.is_nil(dump:find(token, 1, true))
      assert.is_nil(dump:lower():find("authorization", 1, true))
      c:close()
    end)

    it("every error says how many attempts were made", function()
      srv:faults{ { match = "/api/v1/organizations", status = 503, count = 10 } }
      local _, err = sk.organizations:list{}
      assert.equal(4, err.attempts) -- max_retries = 3
      srv:clear_faults()
      srv:faults{ { match = "/api/v1/organizations", status = 400 } }
      _, err = sk.organizations:list{}
      assert.equal(1, err.attempts)
    end)

    it("the client's own integral numbers are integers on Lua 5.3+", function()
      srv:faults{ { match = "/api/v1/organizations", status = 404 } }
      local _, err = sk.organizations:list{}
      local _, expires_at = sk:token()
      if mtype then
        assert.equal("integer", mtype(err.status))
        assert.equal("integer", mtype(err.code))
        assert.equal("integer", mtype(err.attempts))
        assert.equal("integer", mtype(expires_at))
      end
      assert.equal(5, err.code)
    end)

    it("the proxy option sends every request through the proxy", function()
      -- 127.0.0.2:9 answers nothing: only the proxy (the fake itself) gets the calls through
      local c = helpers.new_client(srv, { environment_url = "http://127.0.0.2:9", proxy = srv.url,
                                          user_agent = "app/2" })
      assert(c.organizations:list{})
      -- the User-Agent is a header line and libcurl's option at once with a proxy
      -- (CONNECT reads the option): the request still carries exactly one
      local reqs = srv:requests()
      assert.truthy(reqs[#reqs].headers["user-agent"]:find(" app/2$"), reqs[#reqs].headers["user-agent"])
      c:close()
      local dead = helpers.new_client(srv, { environment_url = "http://127.0.0.2:9",
                                             proxy = "http://127.0.0.1:1", max_retries = 0 })
      local _, err = dead.organizations:list{}
      assert.equal("network", err.kind)
      assert.truthy(err.message:find("^proxy"), err.message)
      dead:close()
      assert.has_error(function() helpers.new_client(srv, { proxy = "socks5://x:1" }) end)
    end)

    -- The environment's proxies are read once, when the client is made (the C core
    -- sets CURLOPT_PROXY itself instead of letting libcurl read six variables per
    -- request), by curl's own rules. Each case is a child process with that
    -- environment, calling through the fake as the proxy of an unreachable host.
    it("the environment's proxies, by curl's rules, read when the client is made", function()
      local proc = require "spec.support.proc"
      local script = os.tmpname()
      finally(function() os.remove(script) end)
      proc.write_file(script, [[
        local helpers = require "spec.support.client"
        local sk = require("scalekit").new{ environment_url = "http://127.0.0.2:9",
          client_id = helpers.CLIENT_ID, client_secret = helpers.CLIENT_SECRET, max_retries = 0,
          proxy = arg[1] ~= "" and arg[1] or nil, user_agent = "envproxy/1" }
        local res, err = sk.organizations:list{}
        io.write(res and "ok" or err.kind)
        sk:close()
      ]])
      local function call(env, proxy_option)
        local out = proc.run(("cd %s && env -u http_proxy -u https_proxy -u HTTPS_PROXY -u HTTP_PROXY "
          .. "-u all_proxy -u ALL_PROXY -u no_proxy -u NO_PROXY %s %s %s %s 2>&1")
          :format(proc.quote(proc.CWD), env, helpers.LUA, proc.quote(script), proc.quote(proxy_option or "")))
        return out
      end
      local via = srv.url
      assert.equal("ok", call("http_proxy=" .. via))
      assert.equal("ok", call("ALL_PROXY=" .. via))
      -- the scheme's own variable comes first; an empty one counts as unset
      assert.equal("network", call("http_proxy=http://127.0.0.1:1 ALL_PROXY=" .. via))
      assert.equal("ok", call("http_proxy= ALL_PROXY=" .. via))
      -- HTTP_PROXY is not read for http:// (a CGI client can set it with a Proxy: header)
      assert.equal("network", call("HTTP_PROXY=" .. via))
      -- https_proxy is for https:// URLs only
      assert.equal("network", call("https_proxy=" .. via))
      assert.equal("network", call("http_proxy=" .. via .. " no_proxy=127.0.0.2"))
      assert.equal("network", call("http_proxy=" .. via .. " NO_PROXY=*"))
      -- the proxy option wins over the environment, and no_proxy still applies to it
      assert.equal("ok", call("http_proxy=http://127.0.0.1:1", via))
      -- through an environment proxy the request still carries one User-Agent
      local reqs = srv:requests()
      assert.truthy(reqs[#reqs].headers["user-agent"]:find(" envproxy/1$"), reqs[#reqs].headers["user-agent"])
    end)

    it("api_version goes out as x-api-version", function()
      local c = helpers.new_client(srv, { api_version = "2025-01-01" })
      assert(c.organizations:list{})
      local reqs = srv:requests()
      assert.equal("2025-01-01", reqs[#reqs].headers["x-api-version"])
      c:close()
      assert(sk.organizations:list{})
      reqs = srv:requests()
      assert.is_nil(reqs[#reqs].headers["x-api-version"])
    end)
  end)

  describe("misuse errors that guide", function()
    local function message(f)
      local ok, msg = pcall(f)
      assert.is_false(ok)
      return msg
    end

    it("names a misspelt resource or method, and a '.' call", function()
      assert.truthy(message(function() local _ = sk.organisations end)
        :find("no resource or method 'organisations' (did you mean 'organizations'?)", 1, true))
      assert.truthy(message(function() sk.organizations:fetch("org_1") end)
        :find("organizations has no method 'fetch' (did you mean 'get'?)", 1, true))
      assert.truthy(message(function() sk.organizations.get("org_1") end)
        :find("called with '.'; call it as sk.organizations:get(...)", 1, true))
      assert.truthy(message(function() sk.call("OrganizationService_GetOrganization") end)
        :find("call it as sk:method(...)", 1, true))
    end)

    it("checks body fields against the schema, with strict = false as the escape hatch", function()
      local msg = message(function() sk.organizations:create{ display_nmae = "X" } end)
      assert.truthy(msg:find("unknown body field 'display_nmae' (did you mean 'display_name'?)", 1, true), msg)
      msg = message(function() sk.users:create("org_1", { user_profile = { first_name = "A" } }) end)
      assert.truthy(msg:find("'user_profile.first_name' (did you mean 'given_name'?)", 1, true), msg)
      msg = message(function() sk.users:create("org_1", { email = "a@b.c", send_invite = true }) end)
      assert.truthy(msg:find("did you mean the query parameter 'send_invitation_email'?", 1, true), msg)
      msg = message(function() sk.organizations:create{ display_name = 42 } end)
      assert.truthy(msg:find("body field 'display_name' must be a string, got number", 1, true), msg)
      -- strict = false, per call or per client, sends fields the spec does not know yet
      assert(sk:call("OrganizationService_CreateOrganization",
                     { body = { display_name = "Y", brand_new_field = 1 }, strict = false }))
      local loose = helpers.new_client(srv, { strict = false })
      assert(loose.organizations:create{ display_name = "Z", brand_new_field = 1 })
      loose:close()
    end)

    it("offers only what the operation accepts, and points at the caller's line", function()
      local msg = message(function() sk:call("OrganizationService_ListOrganization", { pagesize = 1 }) end)
      assert.truthy(msg:find("unknown parameter 'pagesize' (did you mean 'page_size'?)", 1, true), msg)
      assert.is_nil(msg:find("body", 1, true), msg)
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, m = pcall(function() sk:call("Nope") return 1 end)
      assert.is_false(ok)
      assert.truthy(m:find("fidelity_spec.lua:" .. line .. ":", 1, true), m)
      assert.truthy(errors.did_you_mean("organisation", { "organizations" }):find("organizations", 1, true))
    end)
  end)
end)
