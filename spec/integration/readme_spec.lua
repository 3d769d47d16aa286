-- Every ```nginx block of README.md, run as the complete nginx.conf it claims to be:
-- one real nginx per block (ngx_lua + the checkout's scalekit), pointed at the local
-- fake Scalekit through the SCALEKIT_* variables, driven over HTTP with the curl CLI.
--
-- The rewrite of a block is deliberately small, and every step is counted so that a
-- README change that defeats it fails here instead of silently testing less:
--   * prepended: `daemon on; pid <prefix>/nginx.pid; error_log <prefix>/error.log info;`
--     (`info` so that the snippets' `warn` lines can be checked too);
--   * after `http {`: the temp paths and the access log under <prefix>, and (when the
--     block has the `backend` upstream) a one-location backend server that echoes
--     the X-User header it was sent;
--   * `/opt/scalekit/` -> <prefix>/ (holding copies of lua/ and build-luajit/: nginx
--     workers run as `nobody`, so everything is copied world-readable);
--   * `listen 8080;` -> `listen 127.0.0.1:<free port>;`, and the upstream's
--     `server 127.0.0.1:9000;` -> the backend's free port;
--   * `/usr/lib/nginx/modules/` -> $SCALEKIT_FAKE_NGINX_MODULES, only when that is set.
-- Nothing else changes: the Lua code, the env lines and the rest run as printed.
-- This process never loads scalekit (no curl_global_init here): webhooks are signed
-- with the openssl CLI and tokens by the fake's key (Server:sign_jwt).
local cjson = require "cjson"
local nginx = require "spec.support.nginx"
local proc = require "spec.support.proc"
local creds = require "spec.support.client"
local server = require "spec.support.fake"
local util = require "spec.support.crypto_util"

local json = cjson.new()
local quote, run, sh = proc.quote, proc.run, proc.sh
local read_file, write_file = proc.read_file, proc.write_file

local CWD = proc.CWD
local CLIENT_ID, CLIENT_SECRET = creds.CLIENT_ID, creds.CLIENT_SECRET -- the fake's defaults
local WEBHOOK_KEY = "readme-spec webhook signing key"
local EXPECTED_SNIPPETS = 3
local WEBHOOK_KEY_B64 = util.run("printf %s " .. quote(WEBHOOK_KEY) .. " | openssl base64 -A"):gsub("%s+", "")
local WEBHOOK_SECRET = "whsec_" .. WEBHOOK_KEY_B64

---------------------------------------------------------------------------
-- README → snippets
---------------------------------------------------------------------------

local function snippets()
  local text = assert(read_file(CWD .. "/README.md"), "cannot read README.md")
  local list = {}
  for block in text:gmatch("\n```nginx\n(.-\n)```") do
    list[#list + 1] = block
  end
  return list
end

local SNIPPETS = snippets()

-- the one snippet holding `marker` (nil when none or several do)
local function snippet_with(marker)
  local found
  for _, s in ipairs(SNIPPETS) do
    if s:find(marker, 1, true) then
      if found then return nil end
      found = s
    end
  end
  return found
end

-- plain-text gsub; returns the new text and the number of replacements
local function replace(text, old, new)
  local escaped = old:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")
  return text:gsub(escaped, (new:gsub("%%", "%%%%")))
end

local BACKEND = [[
    server {   # readme_spec: stands in for the application behind the upstream
        listen 127.0.0.1:${BPORT};
        location / { return 200 "backend: user=$http_x_user uri=$request_uri\n"; }
    }
]]

-- The documented rewrite (see the header); raises when a step finds nothing to do.
local function rewrite(conf, prefix, port, bport)
  local n
  conf, n = replace(conf, "/opt/scalekit/", prefix .. "/")
  assert(n >= 3, "expected lua_package_path and lua_package_cpath under /opt/scalekit/")
  conf, n = replace(conf, "listen 8080;", "listen 127.0.0.1:" .. port .. ";")
  assert(n == 1, "expected one `listen 8080;`, found " .. n)
  local extra = {
    "    # readme_spec: temp files and the access log under the prefix",
    "    client_body_temp_path " .. prefix .. "/tmp_body;",
    "    proxy_temp_path " .. prefix .. "/tmp_proxy;",
    "    fastcgi_temp_path " .. prefix .. "/tmp_fastcgi;",
    "    uwsgi_temp_path " .. prefix .. "/tmp_uwsgi;",
    "    scgi_temp_path " .. prefix .. "/tmp_scgi;",
    "    access_log " .. prefix .. "/access.log;",
  }
  conf, n = replace(conf, "server 127.0.0.1:9000;", "server 127.0.0.1:" .. bport .. ";")
  if n > 0 then
    assert(n == 1, "expected at most one `server 127.0.0.1:9000;`")
    extra[#extra + 1] = proc.render(BACKEND, { BPORT = bport }, "readme_spec:")
  end
  conf, n = conf:gsub("\nhttp {\n", function() return "\nhttp {\n" .. table.concat(extra, "\n") .. "\n" end)
  assert(n == 1, "expected one `http {` line")
  local modules = os.getenv("SCALEKIT_FAKE_NGINX_MODULES")
  if modules and modules ~= "" then
    conf = replace(conf, "/usr/lib/nginx/modules/", (modules:gsub("/*$", "/")))
  end
  return table.concat({
    "# readme_spec: machine-specific lines",
    "daemon on;",
    "pid " .. prefix .. "/nginx.pid;",
    "error_log " .. prefix .. "/error.log info;",
    "",
  }, "\n") .. conf
end

---------------------------------------------------------------------------
-- one nginx per snippet
---------------------------------------------------------------------------

local App = {}
App.__index = App

local function install(prefix)
  local core = CWD .. "/build-luajit/scalekit/core.so"
  assert(sh("test -f " .. quote(core)), "build-luajit/scalekit/core.so is missing: run make LUA=luajit")
  for _, c in ipairs({
    "chmod 755 " .. quote(prefix),
    "mkdir -p " .. quote(prefix .. "/build-luajit/scalekit"),
    "cp -R " .. quote(CWD .. "/lua") .. " " .. quote(prefix .. "/lua"),
    "cp " .. quote(core) .. " " .. quote(prefix .. "/build-luajit/scalekit/"),
    "chmod -R a+rX " .. quote(prefix),
  }) do
    assert(sh(c), c)
  end
end

-- Starts nginx with the snippet `conf`, the SCALEKIT_* variables pointing at `srv`.
local function start(conf, srv)
  assert(conf, "snippet not found in README.md")
  local n = nginx.start({
    kind = "readme", who = "readme_spec", install = install, ports = { "port", "backend" },
    env = table.concat({
      "SCALEKIT_ENVIRONMENT_URL=" .. quote(srv.url),
      "SCALEKIT_CLIENT_ID=" .. quote(CLIENT_ID),
      "SCALEKIT_CLIENT_SECRET=" .. quote(CLIENT_SECRET),
      "SCALEKIT_WEBHOOK_SECRET=" .. quote(WEBHOOK_SECRET),
    }, " "),
    conf = function(prefix, ports)
      return rewrite(conf, prefix, ports.port, ports.backend)
    end,
  }, 2)
  return setmetatable({ nginx = n, prefix = n.prefix, url = "http://127.0.0.1:" .. n.port }, App)
end

function App:stop()
  self.nginx:stop()
end

function App:log()
  return self.nginx:log()
end

-- curl `url` (a path of this app, or absolute); opts: headers (list), data (POST body).
-- Returns status, headers (lower-case names → last value) and body.
local function request(dir, url, opts)
  opts = opts or {}
  local bfile, hfile = dir .. "/resp.body", dir .. "/resp.headers"
  local cmd = { "curl -sS --max-time 15 -o", quote(bfile), "-D", quote(hfile), "-w '%{http_code}'" }
  for _, h in ipairs(opts.headers or {}) do
    cmd[#cmd + 1] = "-H " .. quote(h)
  end
  if opts.data then
    write_file(dir .. "/req.body", opts.data)
    cmd[#cmd + 1] = "--data-binary " .. quote("@" .. dir .. "/req.body")
  end
  cmd[#cmd + 1] = quote(url)
  local out, rc = run(table.concat(cmd, " ") .. " 2>&1")
  assert(rc == 0, "curl " .. url .. " failed: " .. out)
  local headers = {}
  for line in (read_file(hfile) or ""):gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:]+):%s*(.*)$")
    if k then headers[k:lower()] = v end
  end
  return tonumber(out:match("(%d%d%d)%s*$")), headers, read_file(bfile) or ""
end

function App:request(path, opts)
  return request(self.prefix, self.url .. path, opts)
end

-- [error]-or-worse lines of an error log
local function error_lines(text)
  local bad = {}
  for line in text:gmatch("[^\n]+") do
    if line:find("%[error%]") or line:find("%[crit%]") or line:find("%[alert%]") or line:find("%[emerg%]") then
      bad[#bad + 1] = line
    end
  end
  return bad
end

local function assert_no_errors(app)
  local bad = error_lines(app:log())
  assert.equal(0, #bad, "unexpected lines in error.log:\n" .. table.concat(bad, "\n"))
end

---------------------------------------------------------------------------
-- webhooks and tokens, made outside the library
---------------------------------------------------------------------------


-- Standard Webhooks headers for `body`, signed with the openssl CLI
local function webhook_headers(dir, id, ts, body)
  util.writefile(dir .. "/wh.content", id .. "." .. ts .. "." .. body)
  local mac = util.run("openssl dgst -sha256 -mac HMAC -macopt hexkey:" .. util.hex(WEBHOOK_KEY)
    .. " -binary " .. quote(dir .. "/wh.content") .. " | openssl base64 -A"):gsub("%s+", "")
  return {
    "webhook-id: " .. id,
    "webhook-timestamp: " .. ts,
    "webhook-signature: v1," .. mac,
    "Content-Type: application/json",
  }
end

-- No secret and none of `tokens` anywhere in an error log; none of `codes` in what the
-- snippets log (nginx itself appends the request line, which carries the callback's
-- single-use code, to every line: that part is after ", client: ").
local function assert_no_secret(text, tokens, codes)
  for _, s in ipairs({ CLIENT_SECRET, WEBHOOK_SECRET, WEBHOOK_KEY_B64, WEBHOOK_KEY }) do
    assert.is_nil(text:find(s, 1, true), "error.log contains a secret")
  end
  for _, s in ipairs(tokens or {}) do
    local at = text:find(s, 1, true)
    assert.is_nil(at, "error.log contains a token: " .. text:sub((at or 1) - 300, (at or 1) + 100))
  end
  for line in text:gmatch("[^\n]+") do
    local msg = line:match("^(.-), client: ") or line
    for _, s in ipairs(codes or {}) do
      assert.is_nil(msg:find(s, 1, true), "a code is logged: " .. line)
    end
  end
end

local unescape, query = creds.unescape, creds.url_query

---------------------------------------------------------------------------
-- the specs
---------------------------------------------------------------------------

local MARKERS = {
  "location = /orgs",
  "location = /login",
  "location = /webhooks/scalekit",
}

describe("README nginx snippets", function()
  local srv

  setup(function()
    srv = server.start{ workers = 1, oidc = true }
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  it("are " .. EXPECTED_SNIPPETS .. " complete nginx.conf files, each driven below", function()
    assert.equal(EXPECTED_SNIPPETS, #SNIPPETS)
    for i, s in ipairs(SNIPPETS) do
      local hits = 0
      for _, m in ipairs(MARKERS) do
        if s:find(m, 1, true) then hits = hits + 1 end
      end
      assert.equal(1, hits, "snippet " .. i .. " is not driven by exactly one test:\n" .. s)
      assert.truthy(s:find("load_module /usr/lib/nginx/modules/ndk_http_module.so;", 1, true), "snippet " .. i)
      assert.truthy(s:find("load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;", 1, true), "snippet " .. i)
      assert.truthy(s:find("\nevents {}\n", 1, true), "snippet " .. i .. ": events {}")
      -- an env line for every variable the Lua code reads
      local vars = { SCALEKIT_ENVIRONMENT_URL = true, SCALEKIT_CLIENT_ID = true, SCALEKIT_CLIENT_SECRET = true }
      for v in s:gmatch('os%.getenv%("([%w_]+)"%)') do vars[v] = true end
      for v in pairs(vars) do
        assert.truthy(s:find("\nenv " .. v .. ";", 1, true), "snippet " .. i .. " lacks `env " .. v .. ";`")
      end
      for mod in s:gmatch('require%(?%s*"(app%.[%w_.]+)"') do
        assert.truthy(s:find('package.loaded["' .. mod .. '"]', 1, true),
          "snippet " .. i .. " requires " .. mod .. " without defining it")
      end
    end
    for _, m in ipairs(MARKERS) do
      assert.truthy(snippet_with(m), "no single snippet with " .. m)
    end
  end)

  describe("OpenResty (/orgs)", function()
    local app
    setup(function() app = start(snippet_with("location = /orgs"), srv) end)
    teardown(function() if app then app:stop() end end)

    it("lists the organizations", function()
      srv:seed{ organizations = 3 }
      local status, _, body = app:request("/orgs")
      assert.equal(200, status, body .. app:log())
      assert.equal("3 organizations\n", body)
      assert_no_errors(app)
      assert_no_secret(app:log())
    end)

    it("logs a failed call at error level and answers 404", function()
      srv:faults{ { match = "/api/v1/organizations", status = 404, count = 1 } }
      local status = app:request("/orgs")
      srv:clear_faults()
      assert.equal(404, status)
      local bad = error_lines(app:log())
      assert.equal(1, #bad, table.concat(bad, "\n"))
      assert.truthy(bad[1]:find("HTTP 404", 1, true), bad[1])
      assert_no_secret(app:log())
    end)
  end)

  describe("Login with Scalekit (/login, /callback, /api/)", function()
    local app, tokens, codes = nil, {}, {}
    setup(function() app = start(snippet_with("location = /login"), srv) end)
    teardown(function() if app then app:stop() end end)

    local function login()
      local status, headers = app:request("/login")
      assert.equal(302, status, app:log())
      local authorize = headers.location
      assert.equal(srv.url .. "/oauth/authorize", authorize:match("^[^?]+"))
      local q = query(authorize)
      assert.equal("https://app.example.com/callback", q.redirect_uri)
      assert.equal(CLIENT_ID, q.client_id)
      local cookie = assert(headers["set-cookie"]):match("^(sk_state=[^;]+)")
      assert.equal("sk_state=" .. q.state .. "." .. q.nonce, cookie)
      -- the fake "logs the user in" and sends them back with a code
      local fstatus, fheaders = request(app.prefix, authorize)
      assert.equal(302, fstatus)
      local back = fheaders.location
      assert.equal("https://app.example.com/callback", back:match("^[^?]+"))
      local code, state = back:match("[?&]code=([^&]+)"), back:match("[?&]state=([^&]+)")
      codes[#codes + 1] = unescape(code)
      return code, state, cookie
    end

    it("redirects to /oauth/authorize and accepts the callback with a real code", function()
      local code, state, cookie = login()
      local status, headers, body = app:request("/callback?code=" .. code .. "&state=" .. state,
        { headers = { "Cookie: " .. cookie } })
      assert.equal(200, status, body .. app:log())
      assert.equal("hello user@example.com\n", body)
      assert.truthy(headers["set-cookie"]:find("^sk_state=;"), headers["set-cookie"])
      assert_no_errors(app)

      -- the same code again: refused by the fake, logged at warn, 401
      status = app:request("/callback?code=" .. code .. "&state=" .. state, { headers = { "Cookie: " .. cookie } })
      assert.equal(401, status)
      assert.truthy(app:log():find("%[warn%].-invalid_grant"), app:log())
      assert_no_errors(app)
      assert_no_secret(app:log(), tokens, codes)
    end)

    it("answers 400 to a callback whose state is not the cookie's", function()
      local code, _, cookie = login()
      local status = app:request("/callback?code=" .. code .. "&state=forged", { headers = { "Cookie: " .. cookie } })
      assert.equal(400, status)
      status = app:request("/callback?code=" .. code .. "&state=forged")
      assert.equal(400, status)
      assert_no_errors(app)
    end)

    it("lets a valid token through to the backend and refuses the others", function()
      local now = os.time()
      local function token(scope, opts)
        local t = srv:sign_jwt({ iss = srv.url, sub = "usr_readme", aud = { CLIENT_ID }, iat = now, nbf = now,
                                 exp = now + 600, scope = scope }, nil, opts)
        tokens[#tokens + 1] = t
        return t
      end
      local good = token("openid api:read")
      local status, _, body = app:request("/api/things?x=1", {
        headers = { "Authorization: Bearer " .. good, "X-User: spoofed" } })
      assert.equal(200, status, body .. app:log())
      assert.equal("backend: user=usr_readme uri=/api/things?x=1\n", body)

      local forged = token("openid api:read", { raw_signature = string.rep("x", 256) })
      local headers
      status, headers, body = app:request("/api/things", { headers = { "Authorization: Bearer " .. forged } })
      assert.equal(401, status)
      assert.equal('Bearer error="invalid_token"', headers["www-authenticate"])
      assert.is_nil(body:find("backend", 1, true))
      assert.truthy(app:log():find("%[warn%].-rejected token: .-bad_signature"), app:log())

      status, headers = app:request("/api/things")
      assert.equal(401, status)
      assert.equal("Bearer", headers["www-authenticate"])

      status, headers = app:request("/api/things", { headers = { "Authorization: Bearer " .. token("openid") } })
      assert.equal(403, status)
      assert.equal('Bearer error="insufficient_scope", scope="api:read"', headers["www-authenticate"])

      assert_no_errors(app)
      assert_no_secret(app:log(), tokens, codes)
    end)
  end)

  describe("Webhooks (/webhooks/scalekit)", function()
    local app
    setup(function() app = start(snippet_with("location = /webhooks/scalekit"), srv) end)
    teardown(function() if app then app:stop() end end)

    local BODY = json.encode({ id = "evt_1", type = "organization.created", data = { id = "org_1" } })

    it("answers 204 to a correctly signed webhook", function()
      local headers = webhook_headers(app.prefix, "msg_readme_1", tostring(os.time()), BODY)
      local status, _, body = app:request("/webhooks/scalekit", { headers = headers, data = BODY })
      assert.equal(204, status, body .. app:log())
      assert.equal("", body)
      assert.truthy(app:log():find("webhook organization.created", 1, true), app:log())
      assert_no_errors(app)
      assert_no_secret(app:log())
    end)

    it("answers 400 to a tampered or stale one", function()
      local ts = tostring(os.time())
      local headers = webhook_headers(app.prefix, "msg_readme_2", ts, BODY)
      local status = app:request("/webhooks/scalekit", { headers = headers, data = BODY:gsub("org_1", "org_2") })
      assert.equal(400, status)
      assert.truthy(app:log():find("%[warn%].-rejected webhook: .-webhook_bad_signature"), app:log())

      local old = tostring(os.time() - 3600)
      status = app:request("/webhooks/scalekit", { headers = webhook_headers(app.prefix, "msg_readme_3", old, BODY),
                                                   data = BODY })
      assert.equal(400, status)
      assert.truthy(app:log():find("webhook_timestamp_out_of_tolerance", 1, true), app:log())

      status = app:request("/webhooks/scalekit", { data = BODY })
      assert.equal(400, status)
      assert_no_errors(app)
      assert_no_secret(app:log())
    end)
  end)
end)
