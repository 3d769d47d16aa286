-- The OpenResty gateway over real HTTP: nginx (2 workers, LuaJIT) running
-- spec/support/gateway_app.lua against the fake Scalekit with its OIDC endpoints.
-- protect (every RFC 6750 outcome, RFC 9728), login with curl and with headless
-- Chromium (redirect, authorize, callback, cookie, page, refresh, logout), one refresh
-- for 20 parallel requests, tampered cookies, bad state and nonce, 502, and the
-- webhook / interceptor receivers with replays.
local helpers = require "spec.support.client" -- and the package paths for this runtime
local server = require "spec.support.fake"
local launcher = require "spec.support.app"
local proc = require "spec.support.proc"
local scenarios = require "spec.support.scenarios"
local core = require "scalekit.core"
local cjson = require "cjson"

local quote = proc.quote
local CWD = proc.CWD
local WEBHOOK_KEY = "gateway test webhook key"

local sh = proc.run

local function b64url(s) return core.b64url_encode(s) end

-- curl: status, headers (lower-case name -> list), body. opts: headers, data,
-- jar (cookie file, read and written), follow, method
local function http(url, opts)
  opts = opts or {}
  local hfile = os.tmpname()
  local cmd = { "curl -sS --max-time 30 -D", quote(hfile) }
  for _, h in ipairs(opts.headers or {}) do cmd[#cmd + 1] = "-H " .. quote(h) end
  if opts.data then cmd[#cmd + 1] = "--data-binary " .. quote(opts.data) end
  if opts.data_file then cmd[#cmd + 1] = "--data-binary @" .. quote(opts.data_file) end
  if opts.method then cmd[#cmd + 1] = "-X " .. opts.method end
  if opts.jar then cmd[#cmd + 1] = "-b " .. quote(opts.jar) .. " -c " .. quote(opts.jar) end
  if opts.follow then cmd[#cmd + 1] = "-L" end
  cmd[#cmd + 1] = quote(url)
  local body = sh(table.concat(cmd, " "))
  local raw = proc.read_file(hfile) or ""
  os.remove(hfile)
  -- the last response of a redirect chain
  local last = raw:match(".*(HTTP/%d[%.%d]* %d%d%d.-)$") or raw
  local status = tonumber(last:match("^HTTP/%S+ (%d%d%d)"))
  local headers = {}
  for name, value in last:gmatch("\n([%w%-]+):%s*([^\r\n]*)") do
    name = name:lower()
    headers[name] = headers[name] or {}
    table.insert(headers[name], value)
  end
  local ok, doc = pcall(cjson.decode, body)
  return status, headers, ok and doc or body
end

local function h1(headers, name) return headers[name] and headers[name][1] end

local query = helpers.url_query

local function tmpfile(text)
  local path = os.tmpname()
  proc.write_file(path, text or "")
  return path
end

describe("OpenResty gateway", function()
  local srv, app, url
  local client_id

  local function stats() return srv:stats() end

  setup(function()
    srv = server.start{ workers = 1, oidc = true }
    client_id = srv.client_id or scenarios.CLIENT_ID
    local function loc(path, case, access, content, extra)
      return "        location = " .. path .. " { " .. (case and ("set $gw_case " .. case .. "; ") or "")
        .. (extra or "")
        .. (access and (" access_by_lua_block { require(\"gateway_app\")." .. access .. "() }") or "")
        .. " content_by_lua_block { require(\"gateway_app\")." .. content .. "() } }\n"
    end
    local server_block = {}
    for _, case in ipairs({ "basic", "scopes", "perms", "granted", "mcp", "nocache", "issuers",
                            "other_issuer", "anyaud", "otheraud", "noaud", "strict" }) do
      server_block[#server_block + 1] = loc("/p/" .. case, case, "protect", "claims")
    end
    for _, l in ipairs({
      loc("/.well-known/oauth-protected-resource", nil, nil, "metadata"),
      loc("/bench/protect", nil, nil, "protect_loop"),
      loc("/app/whoami", "default", "login", "whoami"),
      loc("/app/page", "default", "login", "page"),
      loc("/soon/page", "soon", "login", "page"),
      loc("/soon/whoami", "soon", "login", "whoami"),
      loc("/dict/whoami", "dict", "login", "whoami"),
      loc("/dict/callback", "dict", "login", "whoami"),
      loc("/callback", "default", "login", "whoami"),
      loc("/logout", "default", "login", "whoami"),
      loc("/bye", nil, nil, "bye"),
      loc("/webhook", nil, nil, "webhook"),
      loc("/webhook_file", nil, nil, "webhook", "client_body_in_file_only on;"),
      loc("/interceptor", nil, nil, "interceptor"),
      loc("/webhook_count", nil, nil, "webhook_count"),
      loc("/iterate", nil, nil, "iterate"),
    }) do server_block[#server_block + 1] = l end
    app = launcher.start{
      workers = 2,
      reuseport = true,
      http = table.concat({
        "    lua_shared_dict scalekit 1m;",
        "    lua_shared_dict app_results 1m;",
        "    init_by_lua_block { package.path = \"" .. CWD .. "/spec/support/?.lua;\" .. package.path",
        "      require(\"gateway_app\").init(\"" .. srv.url .. "\", \"" .. client_id .. "\", \""
          .. (srv.client_secret or scenarios.CLIENT_SECRET) .. "\") }",
      }, "\n"),
      server = table.concat(server_block),
    }
    url = app.url
  end)

  teardown(function()
    if app then app:stop() end
    if srv then srv:stop() end
  end)

  local function claims(extra)
    local now = os.time()
    local c = { iss = srv.url, aud = { client_id }, sub = "usr_1", iat = now, nbf = now, exp = now + 600,
                scope = "openid profile", permissions = { "organizations:read", "users:read" } }
    for k, v in pairs(extra or {}) do c[k] = v end
    return c
  end
  local function token(extra, header) return srv:sign_jwt(claims(extra), header) end
  local function bearer(t) return { headers = { "Authorization: Bearer " .. t } } end

  ---------------------------------------------------------------------------
  describe("protect", function()
    it("401 with a bare challenge when no token is sent (no header, empty header, another scheme)", function()
      for _, o in ipairs({ {}, { headers = { "Authorization;" } },
                           { headers = { "Authorization: Basic dXM6cHc=" } } }) do
        local status, h, body = http(url .. "/p/basic", o)
        assert.equal(401, status)
        assert.same({ 'Bearer realm="scalekit"' }, h["www-authenticate"])
        assert.equal("application/json", h1(h, "content-type"))
        assert.equal("unauthorized", body.error)
      end
    end)

    it("200 with the claims for a good token (and the claims in ngx.ctx)", function()
      local status, _, body = http(url .. "/p/basic", bearer(token()))
      assert.equal(200, status)
      assert.equal("usr_1", body.sub)
      assert.equal(srv.url, body.iss)
    end)

    it("401 invalid_token: malformed, expired, wrong issuer, wrong audience, unknown key, alg none", function()
      local none = b64url('{"alg":"none","typ":"JWT"}') .. "." .. b64url(cjson.encode(claims())) .. "."
      local cases = {
        { "/p/basic", "not-a-jwt" },
        { "/p/basic", "Zm9v.YmFy" },
        { "/p/basic", token{ exp = os.time() - 3600, iat = os.time() - 7200, nbf = os.time() - 7200 } },
        { "/p/basic", token{ iss = "https://evil.example" } },
        { "/p/basic", token{ aud = { "someone-else" } } },
        { "/p/otheraud", token() },
        { "/p/basic", token(nil, { alg = "RS256", typ = "JWT", kid = "no-such-key" }) },
        { "/p/basic", none },
        { "/p/other_issuer", token() },
      }
      for i, c in ipairs(cases) do
        local status, h, body = http(url .. c[1], bearer(c[2]))
        assert.equal(401, status, "case " .. i)
        local www = h1(h, "www-authenticate")
        assert.matches('^Bearer realm="scalekit", error="invalid_token", error_description="[^"]+"$', www)
        assert.equal("invalid_token", body.error)
        assert.is_string(body.error_description)
      end
    end)

    it("403 insufficient_scope with the scope parameter for a missing scope or permission", function()
      local status, h, body = http(url .. "/p/scopes", bearer(token()))
      assert.equal(403, status)
      assert.matches('error="insufficient_scope"', h1(h, "www-authenticate"))
      assert.matches('scope="openid orgs:write"', h1(h, "www-authenticate"), 1, true)
      assert.equal("insufficient_scope", body.error)
      assert.matches("orgs:write", body.error_description, 1, true)
      status, h = http(url .. "/p/perms", bearer(token()))
      assert.equal(403, status)
      assert.matches('scope="organizations:read users:delete"', h1(h, "www-authenticate"), 1, true)
      status = http(url .. "/p/granted", bearer(token()))
      assert.equal(200, status)
    end)

    it("an issuer list, and audience = false", function()
      assert.equal(200, (http(url .. "/p/issuers", bearer(token()))))
      assert.equal(200, (http(url .. "/p/anyaud", bearer(token{ aud = "anything" }))))
    end)

    it("RFC 9728: resource_metadata on every 401, and the metadata document", function()
      local status, h = http(url .. "/p/mcp")
      assert.equal(401, status)
      assert.same({ 'Bearer realm="mcp", resource_metadata="http://127.0.0.1/.well-known/oauth-protected-resource"' },
                  h["www-authenticate"])
      status, h = http(url .. "/p/mcp", bearer("bad"))
      assert.equal(401, status)
      assert.matches('error="invalid_token".*resource_metadata="http://127.0.0.1/', h1(h, "www-authenticate"))
      local doc
      status, h, doc = http(url .. "/.well-known/oauth-protected-resource")
      assert.equal(200, status)
      assert.equal("application/json", h1(h, "content-type"))
      assert.same({ srv.url }, doc.authorization_servers)
      assert.equal("http://127.0.0.1/mcp", doc.resource)
      assert.same({ "orgs:read" }, doc.scopes_supported)
      assert.same({ "header" }, doc.bearer_methods_supported)
    end)

    it("a missing audience is a misuse whose message reaches the error log", function()
      assert.equal(500, (http(url .. "/p/noaud", bearer(token()))))
      local log = app:error_log_text()
      assert.matches("option 'audience' is required", log, 1, true)
      -- positioned at the caller, not inside the library
      assert.is_nil(log:find("gateway/protect%.lua:%d+: scalekit: protect"))
    end)

    it("a cached token stays valid only until its exp", function()
      local t = token{ exp = os.time() + 2 }
      for _ = 1, 4 do assert.equal(200, (http(url .. "/p/strict", bearer(t)))) end
      proc.sleep(3.2)
      local status, _, body = http(url .. "/p/strict", bearer(t))
      assert.equal(401, status)
      assert.matches("expired", body.error_description)
      assert.equal(200, (http(url .. "/p/nocache", bearer(t))))  -- within the default 60 s leeway
    end)
  end)

  ---------------------------------------------------------------------------
  describe("login", function()
    local function jar() return tmpfile("") end

    local function login(path, j)
      local status, _, body = http(url .. (path or "/app/whoami"), { jar = j, follow = true })
      return status, body
    end

    it("not logged in: 302 to authorize with state, nonce and PKCE S256; the login cookie", function()
      local status, h = http(url .. "/app/whoami?x=1")
      assert.equal(302, status)
      local loc = h1(h, "location")
      assert.equal(srv.url .. "/oauth/authorize", loc:match("^[^?]+"))
      local q = query(loc)
      assert.equal("code", q.response_type)
      assert.equal(client_id, q.client_id)
      assert.equal(url .. "/callback", q.redirect_uri)
      assert.equal("S256", q.code_challenge_method)
      assert.is_true(#q.state >= 40 and #q.nonce >= 40 and #q.code_challenge == 43)
      assert.matches("offline_access", q.scope)
      local sc = h1(h, "set-cookie")
      assert.matches("^scalekit_session_login=", sc)
      assert.matches("HttpOnly", sc)
      assert.matches("SameSite=Lax", sc)
      assert.is_nil(sc:find("Secure"))   -- plain http to 127.0.0.1
      assert.equal(401, (http(url .. "/app/whoami", { method = "POST", data = "x" })))
    end)

    it("the whole flow with a cookie jar: authorize, callback, session, logout", function()
      local j = jar()
      local before = stats().oidc_tokens
      local status, body = login("/app/whoami?back=1", j)
      assert.equal(200, status)
      assert.equal("user@example.com", body.email)
      assert.is_true(body.nonce)
      assert.equal(before + 1, stats().oidc_tokens)
      local text = proc.read_file(j)
      assert.matches("#HttpOnly_127%.0%.0%.1%s+%S+%s+/%s+FALSE%s+%d+%s+scalekit_session%s", text)
      -- logged in: no more redirects, no more token requests
      local s2, _, b2 = http(url .. "/app/whoami", { jar = j })
      assert.equal(200, s2)
      assert.equal(body.access_token, b2.access_token)
      assert.equal(before + 1, stats().oidc_tokens)
      -- logout
      local s3, h3 = http(url .. "/logout", { jar = j })
      assert.equal(302, s3)
      local loc = h1(h3, "location")
      assert.equal(srv.url .. "/oidc/logout", loc:match("^[^?]+"))
      local q = query(loc)
      assert.equal(url .. "/bye", q.post_logout_redirect_uri)
      assert.is_string(q.id_token_hint)
      assert.matches("scalekit_session=;.*Max%-Age=0", table.concat(h3["set-cookie"], "\n"))
      assert.equal(302, (http(url .. "/app/whoami", { jar = j })))
      os.remove(j)
    end)

    it("a tampered cookie is not logged in", function()
      local j = jar()
      assert.equal(200, (login(nil, j)))
      local text = proc.read_file(j)
      local tampered = text:gsub("(scalekit_session\t)(%S)(%S+)", function(a, c, rest)
        return a .. (c == "A" and "B" or "A") .. rest
      end)
      proc.write_file(j, tampered)
      local status, h = http(url .. "/app/whoami", { jar = j })
      assert.equal(302, status)
      assert.matches("/oauth/authorize", h1(h, "location"))
      os.remove(j)
    end)

    it("a bad state, a missing login cookie and a bad nonce get 401", function()
      -- start, then go to Scalekit ourselves
      local j = jar()
      local _, h = http(url .. "/app/whoami", { jar = j })
      local authorize = h1(h, "location")
      local _, h2 = http(authorize)
      local cb = h1(h2, "location")
      assert.equal(401, (http((cb:gsub("state=[^&]+", "state=forged")), { jar = j })))
      assert.equal(401, (http(cb)))   -- no login cookie
      -- the code was bound to another nonce than the one of our login cookie
      local _, h3 = http(url .. "/app/whoami", { jar = j })
      local evil = h1(h3, "location"):gsub("nonce=[^&]+", "nonce=evil")
      local _, h4 = http(evil)
      local before = stats().oidc_tokens
      assert.equal(401, (http(h1(h4, "location"), { jar = j })))
      assert.equal(before + 1, stats().oidc_tokens)  -- the exchange happened, the id_token was refused
      assert.matches("nonce", app:error_log_text())
      os.remove(j)
    end)

    it("Scalekit unreachable at the callback: 502, the reason in the log only", function()
      local j = jar()
      local _, h = http(url .. "/app/whoami", { jar = j })
      local _, h2 = http(h1(h, "location"))
      srv:faults{ { match = "/oauth/token", status = 503 } }
      local status, _, body = http(h1(h2, "location"), { jar = j })
      srv:clear_faults()
      assert.equal(502, status)
      assert.is_nil(tostring(body):find("503"))
      assert.matches("code exchange failed: scalekit: http error .-HTTP 503", app:error_log_text())
      os.remove(j)
    end)

    it("refreshes ahead of expiry: a new access token and a new cookie", function()
      local j = jar()
      local _, a = login(nil, j)
      local before = stats().oidc_tokens
      proc.sleep(1.1)   -- the fake's tokens differ only by their iat second
      local status, h, b = http(url .. "/soon/whoami", { jar = j })
      assert.equal(200, status)
      assert.are_not.equal(a.access_token, b.access_token)
      assert.matches("^scalekit_session=", h1(h, "set-cookie"))
      assert.equal(before + 1, stats().oidc_tokens)
      -- the new cookie carries the new token
      local _, _, c = http(url .. "/app/whoami", { jar = j })
      assert.equal(b.access_token, c.access_token)
      os.remove(j)
    end)

    local function parallel(path, j, n)
      local dir = proc.mktemp_dir("par")
      local out = sh("curl -sS --max-time 60 --parallel --parallel-immediate --parallel-max " .. n
        .. " -b " .. quote(j) .. " -o " .. quote(dir .. "/out_#1") .. " -w 'CODE:%{http_code}\\n' "
        .. quote(url .. path .. "?i=[1-" .. n .. "]") .. " 2>&1")
      local codes, bodies = {}, {}
      for c in out:gmatch("CODE:(%d+)") do codes[#codes + 1] = tonumber(c) end
      for i = 1, n do
        local ok, v = pcall(cjson.decode, proc.read_file(dir .. "/out_" .. i) or "")
        bodies[i] = ok and v or nil
      end
      proc.remove_dir(dir)
      return codes, bodies
    end

    it("20 parallel requests of one session needing a refresh: 1 refresh, 20 successes", function()
      local j = jar()
      assert.equal(200, (login(nil, j)))
      local before = stats().oidc_tokens
      local codes, bodies = parallel("/soon/whoami", j, 20)
      assert.equal(20, #codes)
      for i = 1, 20 do
        assert.equal(200, codes[i])
        assert.equal("user@example.com", bodies[i] and bodies[i].email)
      end
      assert.equal(before + 1, stats().oidc_tokens)
      os.remove(j)
    end)

    it("20 parallel requests of one session whose token has expired: 1 refresh, all wait for it", function()
      srv:configure{ token_ttl = 2 }
      local j = jar()
      local ok, err = pcall(function()
        assert.equal(200, (login(nil, j)))
        proc.sleep(3.2)
        local before = stats().oidc_tokens
        local codes, bodies = parallel("/app/whoami", j, 20)
        assert.equal(20, #codes)
        local tokens = {}
        for i = 1, 20 do
          assert.equal(200, codes[i])
          tokens[bodies[i].access_token] = true
        end
        assert.equal(before + 1, stats().oidc_tokens)
        local n = 0
        for _ in pairs(tokens) do n = n + 1 end
        assert.equal(1, n)   -- every request got the one new token
      end)
      srv:configure{ token_ttl = 3600 }
      os.remove(j)
      assert(ok, err)
    end)

    it("session_store = shared_dict: a small cookie, the session server-side", function()
      local j = jar()
      local status, body = login("/dict/whoami", j)
      assert.equal(200, status)
      assert.equal("user@example.com", body.email)
      local _, _, b2 = http(url .. "/dict/whoami", { jar = j })
      assert.equal(body.access_token, b2.access_token)
      os.remove(j)
    end)

    it("the cookie size", function()
      local j = jar()
      login(nil, j)
      local value = proc.read_file(j):match("scalekit_session\t(%S+)")
      assert.is_true(#value < 4000, "cookie of " .. #value .. " bytes")
      print("# session cookie: " .. #value .. " bytes")
      os.remove(j)
    end)

    it("headless Chromium: redirect, authorize, callback, cookie, page, refresh, logout", function()
      -- one browser profile, one navigation per run: cookies persist between runs
      local profile = proc.mktemp_dir("chromium")
      local function browse(path)
        local out = sh("timeout 60 chromium --headless --disable-gpu --no-sandbox --no-first-run"
          .. " --user-data-dir=" .. quote(profile) .. " --dump-dom " .. quote(url .. path)
          .. " 2>" .. quote(profile .. "/stderr"))
        assert.matches("</html>", out, 1, true)
        return out
      end
      local ok, err = pcall(function()
        local n0 = stats().oidc_tokens
        local page = browse("/app/page")   -- → Scalekit's authorize → /callback → /app/page
        assert.matches('<p id="email">user@example.com</p>', page, 1, true)
        assert.matches("cookie-hidden", page, 1, true)   -- HttpOnly
        local t1 = page:match('<p id="token">(%x+)</p>')
        assert.equal(n0 + 1, stats().oidc_tokens)
        page = browse("/app/page")           -- the cookie is sent: no new login
        assert.equal(t1, page:match('<p id="token">(%x+)</p>'))
        assert.equal(n0 + 1, stats().oidc_tokens)
        page = browse("/soon/page")          -- refreshed ahead of expiry
        local t2 = page:match('<p id="token">(%x+)</p>')
        assert.is_string(t2)
        assert.are_not.equal(t1, t2)
        assert.equal(n0 + 2, stats().oidc_tokens)
        page = browse("/app/page")           -- the browser kept the refreshed cookie
        assert.equal(t2, page:match('<p id="token">(%x+)</p>'))
        page = browse("/logout")             -- → Scalekit's logout → /bye
        assert.matches('<p id="bye">logged out</p>', page, 1, true)
        page = browse("/app/page")           -- logged out: a new login
        assert.matches("user@example.com", page, 1, true)
        assert.equal(n0 + 3, stats().oidc_tokens)
      end)
      proc.remove_dir(profile)
      assert(ok, err)
    end)
  end)

  ---------------------------------------------------------------------------
  describe("receivers", function()
    local n = 0
    local function signed(body, id, ts)
      n = n + 1
      id = id or ("msg_" .. n .. "_" .. os.time())
      ts = ts or tostring(os.time())
      local sig = core.b64encode(core.hmac_sha256(WEBHOOK_KEY, id .. "." .. ts .. "." .. body))
      return { "webhook-id: " .. id, "webhook-timestamp: " .. ts, "webhook-signature: v1," .. sig,
               "Content-Type: application/json" }, id
    end
    local function count() local _, _, b = http(url .. "/webhook_count"); return b.n end

    it("webhook: 204, then 401 for the replay; 401 bad signature; 400 missing headers or not JSON", function()
      local body = '{"type":"organization.created","id":"evt_1"}'
      local headers = signed(body)
      local c0 = count()
      assert.equal(204, (http(url .. "/webhook", { headers = headers, data = body })))
      assert.equal(c0 + 1, count())
      local status, _, b = http(url .. "/webhook", { headers = headers, data = body })
      assert.equal(401, status)
      assert.equal("webhook_replayed", b.error)
      assert.equal(c0 + 1, count())
      local h2 = signed(body)
      h2[3] = "webhook-signature: v1," .. core.b64encode(("x"):rep(32))
      assert.equal(401, (http(url .. "/webhook", { headers = h2, data = body })))
      assert.equal(400, (http(url .. "/webhook", { headers = { "Content-Type: application/json" }, data = body })))
      assert.equal(400, (http(url .. "/webhook", { headers = signed("not json"), data = "not json" })))
      local old = signed(body, nil, tostring(os.time() - 3600))
      assert.equal(401, (http(url .. "/webhook", { headers = old, data = body })))
      assert.equal(405, (http(url .. "/webhook")))
    end)

    it("webhook: a body nginx buffered to a file", function()
      local body = cjson.encode({ type = "big", data = ("x"):rep(200000) })
      local file = tmpfile(body)
      assert.equal(204, (http(url .. "/webhook_file", { headers = signed(body), data_file = file })))
      os.remove(file)
    end)

    it("webhook: a handler that raises gets 500, and Scalekit's retry is not a replay", function()
      local body = '{"type":"explode"}'
      local headers = signed(body)
      assert.equal(500, (http(url .. "/webhook", { headers = headers, data = body })))
      assert.equal(500, (http(url .. "/webhook", { headers = headers, data = body })))
      assert.matches("handler failed: .*handler exploded on purpose", app:error_log_text())
    end)

    it("interceptor: ALLOW and DENY as JSON", function()
      local body = '{"email":"a@ok.example"}'
      local status, h, doc = http(url .. "/interceptor", { headers = signed(body), data = body })
      assert.equal(200, status)
      assert.equal("application/json", h1(h, "content-type"))
      assert.equal("ALLOW", doc.decision)
      body = '{"email":"b@blocked.example"}'
      local _
      status, _, doc = http(url .. "/interceptor", { headers = signed(body), data = body })
      assert.equal(200, status)
      assert.equal("DENY", doc.decision)
      assert.matches("signups closed", cjson.encode(doc), 1, true)
    end)
  end)

  ---------------------------------------------------------------------------
  describe("errors in the nginx log", function()
    it("a pagination iterator that raises in content_by_lua logs its message", function()
      srv:faults{ { match = "/api/v1/organizations", status = 500, remaining = 5 } }
      local status = http(url .. "/iterate")
      srv:clear_faults()
      assert.equal(500, status)
      assert.matches("list iterator raised: scalekit: http error in OrganizationService_ListOrganization",
                     app:error_log_text())
    end)
  end)
end)
