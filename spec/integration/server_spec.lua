-- Self-test of the fake Scalekit (spec/support/fake.lua + spec/support/fake/).
-- Talks to it with the curl CLI, except the stateful-resources block (the real client). Runs on lua5.4 and luajit.
package.path = "./?.lua;" .. package.path

local server = require("spec.support.fake")
local proc = require("spec.support.proc")
local cjson = require("cjson")

local json = cjson.new()
local quote, run, read_file = proc.quote, proc.run, proc.read_file

local started = {} -- every prefix we started, checked at the end

local function start(opts)
  local srv = server.start(opts)
  started[#started + 1] = srv.prefix
  return srv
end

local function now()
  local out = run("date +%s.%N")
  return tonumber(out)
end

-- One curl invocation. req: method, path (or url), headers, body (raw string),
-- form (list of "k=v" for --data-urlencode), token, user (basic auth), curl (extra args).
-- Returns {rc, status, headers (lowercased, last value), body, json, err}.
local seq = 0
local function curl(srv, req)
  seq = seq + 1
  local base = srv.prefix .. "/spec_" .. seq
  local cmd = { "curl -sS --max-time 10", "-D", quote(base .. ".hdr"), "-o", quote(base .. ".body"),
    "-w", quote("%{http_code}") }
  if srv.tls and not req.no_cacert then
    cmd[#cmd + 1] = "--cacert " .. quote(srv.ca_file)
  end
  if req.method then
    cmd[#cmd + 1] = "-X " .. quote(req.method)
  end
  for k, v in pairs(req.headers or {}) do
    cmd[#cmd + 1] = "-H " .. quote(k .. ": " .. v)
  end
  if req.token then
    cmd[#cmd + 1] = "-H " .. quote("Authorization: Bearer " .. req.token)
  end
  if req.user then
    cmd[#cmd + 1] = "-u " .. quote(req.user)
  end
  if req.body then
    local f = assert(io.open(base .. ".req", "wb"))
    f:write(req.body)
    f:close()
    cmd[#cmd + 1] = "--data-binary " .. quote("@" .. base .. ".req")
  end
  for _, kv in ipairs(req.form or {}) do
    cmd[#cmd + 1] = "--data-urlencode " .. quote(kv)
  end
  if req.curl then
    cmd[#cmd + 1] = req.curl
  end
  cmd[#cmd + 1] = quote(req.url or (srv.url .. req.path))
  local out, rc = run(table.concat(cmd, " ") .. " 2>&1")
  local res = { rc = rc, err = out, status = tonumber(out:match("(%d%d%d)%s*$")), headers = {} }
  local hdr = read_file(base .. ".hdr") or ""
  for name, value in hdr:gmatch("([%w%-]+):%s*([^\r\n]*)") do
    res.headers[name:lower()] = value
  end
  res.body = read_file(base .. ".body") or ""
  local ok, v = pcall(json.decode, res.body)
  if ok then
    res.json = v
  end
  return res
end

local function api(srv, token, method, path, body)
  return curl(srv, {
    method = method,
    path = path,
    token = token,
    headers = body and { ["Content-Type"] = "application/json" } or nil,
    body = body and json.encode(body) or nil,
  })
end

local function assert_scalekit_error(res, status, code, error_code)
  assert.equal(status, res.status)
  assert.is_table(res.json, res.body)
  assert.equal(code, res.json.code)
  assert.is_string(res.json.message)
  assert.equal("type.googleapis.com/scalekit.v1.errdetails.ErrorInfo", res.json.details[1]["@type"])
  assert.equal(error_code, res.json.details[1].error_code)
end

local function nginx_procs(prefix)
  -- "[/]" so that the shell running pgrep does not match itself
  local out = run("pgrep -f " .. quote("[/]" .. prefix:sub(2) .. "/nginx.conf"))
  local pids = {}
  for p in out:gmatch("%d+") do
    pids[#pids + 1] = p
  end
  return pids
end

describe("fake scalekit", function()
  local srv, token

  setup(function()
    srv = start({ workers = 1 })
  end)

  teardown(function()
    srv:stop()
  end)

  before_each(function()
    srv:reset()
    token = srv:token()
  end)

  describe("lifecycle", function()
    it("starts on 127.0.0.1 with a temp prefix", function()
      assert.matches("^http://127%.0%.0%.1:%d+$", srv.url)
      assert.is_true(srv.port >= 20000 and srv.port <= 50000)
      assert.matches("^/tmp/", srv.prefix)
      assert.is_string(read_file(srv.prefix .. "/nginx.conf"))
      assert.equal(srv.prefix .. "/error.log", srv.error_log)
      assert.is_true(proc.pid_alive(srv.pid))
      local ping = srv:admin("GET", "/_admin/ping")
      assert.is_true(ping.ok)
    end)

    it("writes the expected nginx.conf", function()
      local conf = read_file(srv.prefix .. "/nginx.conf")
      assert.truthy(conf:find("lua_package_path \"" .. srv.prefix .. "/lua/?.lua;;\"", 1, true))
      assert.truthy(conf:find("listen 127.0.0.1:" .. srv.port .. ";", 1, true))
      assert.truthy(conf:find("keepalive_requests 100000;", 1, true))
      assert.truthy(conf:find("access_log off;", 1, true))
      assert.truthy(conf:find("ndk_http_module.so;\nload_module", 1, true))
    end)

    it("mounts extra config and finds modules on a relative lua_package_path", function()
      local s = start({
        extra_http = "lua_shared_dict hello_extra 1m;",
        extra_server = "location = /hello_app { content_by_lua_block { require('hello_app').run() } }",
        lua_package_path = "spec/support/fake/fixtures/?.lua",
      })
      finally(function() s:stop() end)
      -- the workers run as nobody and may not read the checkout: the modules are
      -- copied into the prefix and found there
      local conf = read_file(s.prefix .. "/nginx.conf")
      assert.truthy(conf:find('lua_package_path "' .. s.prefix .. '/mod1/?.lua;', 1, true), conf)
      assert.equal("hello 1", curl(s, { path = "/hello_app" }).body)
      assert.equal("hello 2", curl(s, { path = "/hello_app" }).body)
    end)

    it("retries with another port when the chosen one is busy", function()
      local busy = srv.port
      local ok, s = pcall(start, { port = busy, port_fallback = true })
      assert.is_true(ok, s)
      finally(function() s:stop() end)
      -- the busy port, then a random one (another try if that one was taken too)
      assert.is_true(s.attempts >= 2, tostring(s.attempts))
      assert.not_equal(busy, s.port)
      assert.equal(200, curl(s, { path = "/_admin/ping" }).status)
      s:stop()
      -- the busy server is unharmed
      assert.is_true(srv:admin("GET", "/_admin/ping").ok)
    end)

    it("stops with SIGKILL after 3 s when a request hangs", function()
      local s = start({})
      local workers = run("pgrep -P " .. s.pid)
      s:faults({ { delay = 30 } })
      os.execute("curl -s --max-time 40 -o /dev/null " .. quote(s.url .. "/api/v1/x") .. " >/dev/null 2>&1 &")
      os.execute("sleep 0.3")
      local t0 = now()
      s:stop()
      local elapsed = now() - t0
      assert.is_true(elapsed >= 2.5 and elapsed < 8, tostring(elapsed))
      assert.is_false(proc.pid_alive(s.pid))
      for w in workers:gmatch("%d+") do
        assert.is_false(proc.pid_alive(tonumber(w)))
      end
      assert.is_nil(io.open(s.prefix .. "/nginx.conf"))
    end)

    it("reports a broken configuration with the error log and cleans up", function()
      local ok, err = pcall(server.start, { extra_server = "no_such_directive on;" })
      assert.is_false(ok)
      assert.matches("nginx failed to start", err)
      assert.matches("no_such_directive", err)
      local prefix = err:match("in (/tmp/scalekit%-fake%.%w+)")
      assert.is_string(prefix)
      assert.is_nil(io.open(prefix .. "/nginx.conf"))
    end)

    it("rejects unknown options", function()
      assert.has_error(function() server.start({ prot = 1 }) end)
      assert.has_error(function() server.start({ workers = "2" }) end)
    end)

    it("stops: process gone, temp dir removed, idempotent", function()
      local s = start({ workers = 2, extra_server = "location = /hello { return 200 'hi'; }" })
      local r = curl(s, { path = "/hello" })
      assert.equal(200, r.status)
      assert.equal("hi", r.body)
      local kids = run("pgrep -P " .. s.pid)
      local workers = {}
      for p in kids:gmatch("%d+") do
        workers[#workers + 1] = tonumber(p)
      end
      assert.equal(2, #workers)
      assert.equal(1, #nginx_procs(s.prefix))
      assert.is_true(s:stop())
      assert.is_true(s:stop())
      assert.is_false(proc.pid_alive(s.pid))
      for _, w in ipairs(workers) do
        assert.is_false(proc.pid_alive(w))
      end
      assert.equal(0, #nginx_procs(s.prefix))
      assert.is_nil(io.open(s.prefix .. "/nginx.conf"))
      assert.is_nil(io.open(s.prefix))
      assert.has_error(function() s:admin("GET", "/_admin/ping") end)
      assert.is_string(s:error_log_text())
    end)
  end)

  describe("token endpoint", function()
    it("issues client-credentials tokens and counts them", function()
      local r = curl(srv, { method = "POST", path = "/oauth/token",
        form = { "grant_type=client_credentials", "client_id=skc_test", "client_secret=test_secret_value" } })
      assert.equal(200, r.status)
      assert.equal("Bearer", r.json.token_type)
      assert.equal(3600, r.json.expires_in)
      assert.equal("openid", r.json.scope)
      assert.is_true(#r.json.access_token >= 40)
      assert.not_equal(token, r.json.access_token)
      assert.matches("^req_%d+$", r.headers["x-request-id"])
      assert.matches('"expires_in":3600[,}]', r.body)
      assert.equal(2, srv:stats().tokens_issued)
    end)

    it("echoes the scope and accepts HTTP Basic client auth", function()
      local r = curl(srv, { method = "POST", path = "/oauth/token", user = "skc_test:test_secret_value",
        form = { "grant_type=client_credentials", "scope=openid profile email" } })
      assert.equal(200, r.status)
      assert.equal("openid profile email", r.json.scope)
      assert.equal(200, api(srv, r.json.access_token, "GET", "/api/v1/organizations").status)
    end)

    it("rejects wrong credentials, bad grants and missing fields", function()
      local r = curl(srv, { method = "POST", path = "/oauth/token",
        form = { "grant_type=client_credentials", "client_id=skc_test", "client_secret=nope" } })
      assert.equal(401, r.status)
      assert.same({ error = "invalid_client", error_description = "invalid client credentials" }, r.json)
      r = curl(srv, { method = "POST", path = "/oauth/token", user = "skc_test:wrong",
        form = { "grant_type=client_credentials" } })
      assert.equal(401, r.status)
      r = curl(srv, { method = "POST", path = "/oauth/token",
        form = { "grant_type=password", "client_id=skc_test", "client_secret=test_secret_value" } })
      assert.equal(400, r.status)
      assert.equal("unsupported_grant_type", r.json.error)
      r = curl(srv, { method = "POST", path = "/oauth/token", form = { "client_id=skc_test" } })
      assert.equal(400, r.status)
      assert.equal("invalid_request", r.json.error)
      r = curl(srv, { method = "POST", path = "/oauth/token", form = { "grant_type=client_credentials" } })
      assert.equal(400, r.status)
      assert.equal("invalid_request", r.json.error)
      assert.equal(1, srv:stats().tokens_issued)
    end)

    it("enforces token expiry on the server and follows configure()", function()
      local conf = srv:configure({ token_ttl = 1 })
      assert.equal(1, conf.token_ttl)
      local t = srv:token()
      assert.equal(200, api(srv, t, "GET", "/api/v1/organizations").status)
      os.execute("sleep 1.2")
      local r = api(srv, t, "GET", "/api/v1/organizations")
      assert_scalekit_error(r, 401, 16, "UNAUTHENTICATED")
      assert.equal("token is invalid or expired", r.json.message)
      srv:configure({ token_ttl = 3600, client_secret = "rotated" })
      local r2 = curl(srv, { method = "POST", path = "/oauth/token",
        form = { "grant_type=client_credentials", "client_id=skc_test", "client_secret=rotated" } })
      assert.equal(200, r2.status)
      assert.equal(3600, r2.json.expires_in)
      srv:configure({ client_secret = "test_secret_value" })
      -- reset keeps the configuration
      srv:configure({ token_ttl = 42 })
      srv:reset()
      assert.equal(42, srv:admin("GET", "/_admin/config").token_ttl)
      srv:configure({ token_ttl = 3600 })
    end)
  end)

  describe("API authentication", function()
    it("answers 401 in Scalekit's format without a valid token", function()
      local r = api(srv, nil, "GET", "/api/v1/organizations")
      assert_scalekit_error(r, 401, 16, "UNAUTHENTICATED")
      assert.equal("Token empty", r.json.message)
      assert.matches("^req_%d+$", r.headers["x-request-id"])
      r = api(srv, "not-a-token", "GET", "/api/v1/anything")
      assert_scalekit_error(r, 401, 16, "UNAUTHENTICATED")
      assert.equal("token is invalid or expired", r.json.message)
      r = curl(srv, { path = "/api/v1/users", headers = { Authorization = "Basic Zm9vOmJhcg==" } })
      assert.equal(401, r.status)
    end)

    it("reset clears tokens unless keep_tokens", function()
      srv:reset({ keep_tokens = true })
      assert.equal(200, api(srv, token, "GET", "/api/v1/users").status)
      srv:reset()
      assert.equal(401, api(srv, token, "GET", "/api/v1/users").status)
    end)

    it("answers 404 in Scalekit's format outside the API", function()
      local r = curl(srv, { path = "/nope" })
      assert_scalekit_error(r, 404, 5, "NOT_FOUND")
    end)
  end)

  describe("organizations", function()
    it("supports create, get, get by external id, patch and delete", function()
      local r = api(srv, token, "POST", "/api/v1/organizations",
        { display_name = "Acme", external_id = "acme-1", metadata = { plan = "gold" } })
      assert.equal(201, r.status)
      local org = r.json.organization
      assert.matches("^org_%d+$", org.id)
      assert.equal(17, #org.id - 4)
      assert.equal("Acme", org.display_name)
      assert.equal("acme-1", org.external_id)
      assert.equal("US", org.region_code)
      assert.same({ plan = "gold" }, org.metadata)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", org.create_time)
      assert.is_table(org.settings.features)

      r = api(srv, token, "GET", "/api/v1/organizations/" .. org.id)
      assert.equal(200, r.status)
      assert.same(org, r.json.organization)

      r = api(srv, token, "GET", "/api/v1/organizations:external/acme-1")
      assert.equal(200, r.status)
      assert.equal(org.id, r.json.organization.id)

      r = api(srv, token, "GET", "/api/v1/organizations?external_id=acme-1")
      assert.equal(1, r.json.total_size)
      assert.equal(org.id, r.json.organizations[1].id)

      r = api(srv, token, "PATCH", "/api/v1/organizations/" .. org.id, { display_name = "Acme 2" })
      assert.equal(200, r.status)
      assert.equal("Acme 2", r.json.organization.display_name)
      assert.equal("acme-1", r.json.organization.external_id)
      assert.same({ plan = "gold" }, r.json.organization.metadata)
      assert.equal(org.create_time, r.json.organization.create_time)

      r = api(srv, token, "DELETE", "/api/v1/organizations/" .. org.id)
      assert.equal(200, r.status)
      assert.same({}, r.json)
      assert_scalekit_error(api(srv, token, "GET", "/api/v1/organizations/" .. org.id), 404, 5, "NOT_FOUND")
      assert_scalekit_error(api(srv, token, "DELETE", "/api/v1/organizations/" .. org.id), 404, 5, "NOT_FOUND")
      assert_scalekit_error(api(srv, token, "PATCH", "/api/v1/organizations/" .. org.id, { display_name = "x" }),
        404, 5, "NOT_FOUND")
      assert_scalekit_error(api(srv, token, "GET", "/api/v1/organizations:external/acme-1"), 404, 5, "NOT_FOUND")
      -- the external id is free again
      assert.equal(201, api(srv, token, "POST", "/api/v1/organizations",
        { display_name = "Acme again", external_id = "acme-1" }).status)
    end)

    it("answers 409 on a duplicate external_id and 400 without display_name", function()
      assert.equal(201, api(srv, token, "POST", "/api/v1/organizations",
        { display_name = "One", external_id = "dup" }).status)
      assert_scalekit_error(api(srv, token, "POST", "/api/v1/organizations",
        { display_name = "Two", external_id = "dup" }), 409, 6, "ALREADY_EXISTS")
      assert_scalekit_error(api(srv, token, "POST", "/api/v1/organizations", { external_id = "x" }),
        400, 3, "INVALID_ARGUMENT")
      local r = curl(srv, { method = "POST", path = "/api/v1/organizations", token = token, body = "{not json" })
      assert_scalekit_error(r, 400, 3, "INVALID_ARGUMENT")
      assert.equal(1, srv:stats().organizations)
    end)

    it("pages over 2 500 seeded organizations", function()
      local seeded = srv:seed({ organizations = 2500 })
      assert.equal(2500, seeded.organizations)
      local seen, n, pages, page_token = {}, 0, 0, nil
      local prev_of_second
      repeat
        local path = "/api/v1/organizations?page_size=100"
        if page_token then
          path = path .. "&page_token=" .. page_token:gsub("[^%w]", function(c)
            return string.format("%%%02X", c:byte())
          end)
        end
        local r = api(srv, token, "GET", path)
        assert.equal(200, r.status)
        pages = pages + 1
        assert.equal(2500, r.json.total_size)
        assert.equal(100, #r.json.organizations)
        for _, o in ipairs(r.json.organizations) do
          assert.is_nil(seen[o.id])
          seen[o.id] = true
          n = n + 1
        end
        if pages == 1 then
          assert.equal("", r.json.prev_page_token)
          assert.equal(seeded.first_organization_id, r.json.organizations[1].id)
        elseif pages == 2 then
          prev_of_second = r.json.prev_page_token
        end
        page_token = r.json.next_page_token
      until page_token == "" or pages > 30
      assert.equal(25, pages)
      assert.equal(2500, n)
      assert.equal("", page_token)

      -- prev_page_token leads back to the first page
      local r = api(srv, token, "GET", "/api/v1/organizations?page_size=100&page_token="
        .. prev_of_second:gsub("=", "%%3D"))
      assert.equal(seeded.first_organization_id, r.json.organizations[1].id)
    end)

    it("clamps page_size, defaults to 10 and rejects garbled page tokens", function()
      srv:seed({ organizations = 150 })
      local r = api(srv, token, "GET", "/api/v1/organizations")
      assert.equal(10, #r.json.organizations)
      assert.is_true(#r.json.next_page_token > 0)
      r = api(srv, token, "GET", "/api/v1/organizations?page_size=500")
      assert.equal(100, #r.json.organizations)
      assert_scalekit_error(api(srv, token, "GET", "/api/v1/organizations?page_token=garbage!"),
        400, 3, "INVALID_ARGUMENT")
      assert_scalekit_error(api(srv, token, "GET", "/api/v1/organizations?page_token=Zm9vYmFy"),
        400, 3, "INVALID_ARGUMENT")
      assert_scalekit_error(api(srv, token, "GET", "/api/v1/organizations?page_size=abc"),
        400, 3, "INVALID_ARGUMENT")
    end)

    it("answers an empty list as an array", function()
      local r = api(srv, token, "GET", "/api/v1/organizations")
      assert.matches('"organizations":%[%]', r.body)
      assert.equal(0, r.json.total_size)
      assert.equal("", r.json.next_page_token)
    end)

    it("answers a seeded organization by id quickly with ~600 bytes", function()
      local seeded = srv:seed({ organizations = 3 })
      local r = api(srv, token, "GET", "/api/v1/organizations/" .. seeded.last_organization_id)
      assert.equal(200, r.status)
      assert.is_true(#r.body > 450 and #r.body < 800, #r.body)
    end)
  end)

  describe("users", function()
    it("creates, gets, lists, searches, patches and deletes users", function()
      local org = api(srv, token, "POST", "/api/v1/organizations", { display_name = "Users Inc" }).json.organization
      local r = api(srv, token, "POST", "/api/v1/organizations/" .. org.id .. "/users", {
        user = { email = "alice@example.com", external_id = "alice", user_profile = { given_name = "Alice" } },
      })
      assert.equal(201, r.status)
      local u = r.json.user
      assert.matches("^usr_%d+$", u.id)
      assert.equal("alice@example.com", u.email)
      assert.equal("alice", u.external_id)
      assert.equal(org.id, u.memberships[1].organization_id)
      assert.equal("Alice", u.user_profile.given_name)
      assert.is_string(u.create_time)
      -- the body as in the OpenAPI description (no "user" wrapper)
      r = api(srv, token, "POST", "/api/v1/organizations/" .. org.id .. "/users", { email = "bob@example.com" })
      assert.equal(201, r.status)
      srv:seed({ users = 5 })

      r = api(srv, token, "GET", "/api/v1/users/" .. u.id)
      assert.same(u, r.json.user)
      r = api(srv, token, "GET", "/api/v1/users?page_size=3")
      assert.equal(7, r.json.total_size)
      assert.equal(3, #r.json.users)
      r = api(srv, token, "GET", "/api/v1/organizations/" .. org.id .. "/users")
      assert.equal(2, r.json.total_size)
      r = api(srv, token, "GET", "/api/v1/users:search?query=ALICE")
      assert.equal(1, r.json.total_size)
      assert.equal(u.id, r.json.users[1].id)
      r = api(srv, token, "GET", "/api/v1/users:search?query=seeded&page_size=2")
      assert.equal(5, r.json.total_size)
      assert.equal(2, #r.json.users)
      local r2 = api(srv, token, "GET", "/api/v1/users:search?query=seeded&page_size=2&page_token="
        .. r.json.next_page_token:gsub("=", "%%3D"))
      assert.equal(2, #r2.json.users)
      assert.not_equal(r.json.users[1].id, r2.json.users[1].id)

      r = api(srv, token, "PATCH", "/api/v1/users/" .. u.id, { user_profile = { family_name = "Smith" } })
      assert.equal(200, r.status)
      assert.equal("Smith", r.json.user.user_profile.family_name)
      assert.equal("Alice", r.json.user.user_profile.given_name)

      assert.equal(200, api(srv, token, "DELETE", "/api/v1/users/" .. u.id).status)
      assert_scalekit_error(api(srv, token, "GET", "/api/v1/users/" .. u.id), 404, 5, "NOT_FOUND")
      assert_scalekit_error(api(srv, token, "POST", "/api/v1/organizations/org_404/users",
        { email = "x@example.com" }), 404, 5, "NOT_FOUND")
      assert_scalekit_error(api(srv, token, "POST", "/api/v1/organizations/" .. org.id .. "/users",
        { user = {} }), 400, 3, "INVALID_ARGUMENT")
    end)
  end)

  describe("echo", function()
    it("echoes other routes with the raw uri", function()
      local r = curl(srv, { method = "PATCH", token = token,
        path = "/api/v1/organizations/org%2F1/connections/c1:enable?x=1&x=2&name=a%20b",
        headers = { ["Content-Type"] = "application/json" }, body = '{"enabled":true}' })
      assert.equal(200, r.status)
      local e = r.json.echo
      assert.equal("PATCH", e.method)
      assert.equal("/api/v1/organizations/org%2F1/connections/c1:enable?x=1&x=2&name=a%20b", e.uri)
      assert.equal("/api/v1/organizations/org%2F1/connections/c1:enable", e.path)
      assert.equal("x=1&x=2&name=a%20b", e.query)
      assert.same({ "1", "2" }, e.args.x)
      assert.equal("a b", e.args.name)
      assert.same({ enabled = true }, e.body)
      assert.equal("application/json", e.content_type)

      r = api(srv, token, "GET", "/api/v1/roles/admin/users:count")
      assert.equal(cjson.null, r.json.echo.body)
      assert.equal("/api/v1/roles/admin/users:count", r.json.echo.path)
      -- a stateful path with an unsupported method is echoed as well
      r = api(srv, token, "PUT", "/api/v1/organizations/org_1/portal_links")
      assert.equal("PUT", r.json.echo.method)
      -- the echo still requires the bearer token
      assert.equal(401, api(srv, nil, "GET", "/api/v1/roles").status)
    end)
  end)

  describe("faults", function()
    it("answers a status with Scalekit's error body and Retry-After, once", function()
      srv:faults({ { status = 503, retry_after = "2" } })
      local r = api(srv, token, "GET", "/api/v1/organizations")
      assert_scalekit_error(r, 503, 14, "UNAVAILABLE")
      assert.equal("2", r.headers["retry-after"])
      assert.equal(200, api(srv, token, "GET", "/api/v1/organizations").status)
      srv:faults({ { status = 429 }, { status = 500 } })
      assert_scalekit_error(api(srv, token, "GET", "/api/v1/x"), 429, 8, "RESOURCE_EXHAUSTED")
      assert_scalekit_error(api(srv, token, "GET", "/api/v1/x"), 500, 13, "INTERNAL")
      assert.equal(200, api(srv, token, "GET", "/api/v1/x").status)
    end)

    it("honours count, match (prefix or pattern) and FIFO order", function()
      srv:faults({
        { status = 500, match = "/api/v1/users", count = 2 },
        { status = 502, match = "^/api/v1/organizations/[^/]+$" },
        { status = 504 },
      })
      assert.equal(504, api(srv, token, "GET", "/api/v1/roles").status)
      assert.equal(502, api(srv, token, "GET", "/api/v1/organizations/org_1").status)
      assert.equal(500, api(srv, token, "GET", "/api/v1/users").status)
      assert.equal(500, api(srv, token, "GET", "/api/v1/users:search?query=a").status)
      assert.equal(200, api(srv, token, "GET", "/api/v1/users").status)
      assert.equal(0, srv:stats().faults_pending)
    end)

    it("applies to /oauth/token too, never to admin calls", function()
      srv:faults({ { status = 500, match = "/oauth/" } })
      assert.is_true(srv:admin("GET", "/_admin/ping").ok)
      local r = curl(srv, { method = "POST", path = "/oauth/token",
        form = { "grant_type=client_credentials", "client_id=skc_test", "client_secret=test_secret_value" } })
      assert.equal(500, r.status)
      assert.is_string(srv:token())
    end)

    it("answers a raw body, extra headers and a delay", function()
      srv:faults({
        { status = 418, body = "teapot", headers = { ["X-Fault"] = "yes" } },
        { delay = 0.5 },
        { delay = 0.3, status = 503 },
      })
      local r = api(srv, token, "GET", "/api/v1/x")
      assert.equal(418, r.status)
      assert.equal("teapot", r.body)
      assert.equal("yes", r.headers["x-fault"])
      local t0 = now()
      r = api(srv, token, "GET", "/api/v1/organizations")
      assert.is_true(now() - t0 >= 0.45)
      assert.equal(200, r.status)
      t0 = now()
      r = api(srv, token, "GET", "/api/v1/organizations")
      assert.is_true(now() - t0 >= 0.25)
      assert.equal(503, r.status)
    end)

    it("answers invalid JSON, an empty body, chunks, or closes", function()
      srv:faults({
        { invalid_json = true }, { empty_body = true }, { close = true }, { chunked = true, chunk_size = 7 },
      })
      local r = api(srv, token, "GET", "/api/v1/organizations")
      assert.equal(200, r.status)
      assert.is_nil(r.json)
      assert.is_true(#r.body > 0)
      r = api(srv, token, "GET", "/api/v1/organizations")
      assert.equal(200, r.status)
      assert.equal("", r.body)
      assert.equal("0", r.headers["content-length"])
      r = api(srv, token, "GET", "/api/v1/organizations")
      assert.equal(52, r.rc) -- curl: empty reply from server
      r = api(srv, token, "GET", "/api/v1/organizations")
      assert.equal(200, r.status)
      assert.equal("chunked", r.headers["transfer-encoding"])
      assert.equal(0, r.json.total_size)
    end)

    it("revokes every token, so the next call gets a 401", function()
      local other = srv:token()
      srv:faults({ { revoke = true } })
      local r = api(srv, token, "GET", "/api/v1/organizations")
      assert_scalekit_error(r, 401, 16, "UNAUTHENTICATED")
      assert.equal(401, api(srv, other, "GET", "/api/v1/organizations").status)
      local fresh = srv:token()
      assert.equal(200, api(srv, fresh, "GET", "/api/v1/organizations").status)
    end)

    it("is cleared by reset and by clear_faults", function()
      srv:faults({ { status = 500, count = 5 } })
      assert.equal(1, srv:stats().faults_pending)
      srv:clear_faults()
      assert.equal(200, api(srv, token, "GET", "/api/v1/x").status)
      srv:faults({ { status = 500 } })
      srv:reset()
      token = srv:token()
      assert.equal(200, api(srv, token, "GET", "/api/v1/x").status)
    end)
  end)

  describe("stats and request log", function()
    it("counts requests, API requests and keep-alive connections", function()
      -- before_each issued one token over one connection
      local s = srv:stats()
      assert.same({ 1, 1, 0, 1 }, { s.tokens_issued, s.requests, s.api_requests, s.connections })
      local r = curl(srv, { token = token, path = "/api/v1/organizations",
        curl = "-o /dev/null " .. quote(srv.url .. "/api/v1/users") })
      assert.equal(0, r.rc)
      s = srv:stats()
      assert.equal(3, s.requests)
      assert.equal(2, s.api_requests)
      assert.equal(2, s.connections) -- the token call, then one for both API calls
      api(srv, token, "GET", "/api/v1/users")
      assert.equal(3, srv:stats().connections)
    end)

    it("keeps the last 100 requests with raw uri, headers and body", function()
      curl(srv, { method = "POST", token = token, path = "/api/v1/organizations/a%2Fb:x?q=1%202&q=3",
        headers = { ["Content-Type"] = "application/json", ["X-Custom"] = "Yes" }, body = '{"k":"v"}' })
      local log = srv:requests()
      assert.equal(2, #log)
      assert.equal("/oauth/token", log[1].path)
      assert.matches("client_secret=test_secret_value", log[1].body)
      local e = log[2]
      assert.equal("POST", e.method)
      assert.equal("/api/v1/organizations/a%2Fb:x?q=1%202&q=3", e.uri)
      assert.equal("/api/v1/organizations/a%2Fb:x", e.path)
      assert.equal("q=1%202&q=3", e.query)
      assert.equal('{"k":"v"}', e.body)
      assert.equal("Yes", e.headers["x-custom"])
      assert.equal("Bearer " .. token, e.headers["authorization"])
      for _ = 1, 105 do
        srv:admin("GET", "/_admin/ping")
      end
      assert.equal(2, #srv:requests()) -- admin calls are not logged
      local cmd = {}
      for i = 1, 110 do
        cmd[#cmd + 1] = quote(srv.url .. "/api/v1/n" .. i) .. " -o /dev/null"
      end
      run("curl -sS -H " .. quote("Authorization: Bearer " .. token) .. " " .. table.concat(cmd, " "))
      log = srv:requests()
      assert.equal(100, #log)
      assert.equal("/api/v1/n110", log[100].path)
      assert.equal("/api/v1/n11", log[1].path)
    end)
  end)

  describe("with 2 workers", function()
    it("shares state between the workers", function()
      local s2 = start({ workers = 2 })
      local t = s2:token()
      local org = api(s2, t, "POST", "/api/v1/organizations", { display_name = "Shared" }).json.organization
      -- block the worker that takes the next request; a concurrent one must
      -- then be served by the other worker
      s2:faults({ { match = "/api/v1/organizations/" .. org.id, block = 1.5 } })
      local bg = s2.prefix .. "/bg.out"
      os.execute("curl -sS -o /dev/null -D " .. quote(bg) .. " -H " .. quote("Authorization: Bearer " .. t)
        .. " " .. quote(s2.url .. "/api/v1/organizations/" .. org.id) .. " >/dev/null 2>&1 &")
      os.execute("sleep 0.4")
      local r = api(s2, t, "GET", "/api/v1/organizations/" .. org.id)
      assert.equal(200, r.status)
      assert.equal("Shared", r.json.organization.display_name)
      os.execute("sleep 1.4")
      local hdr = read_file(bg) or ""
      local blocked_worker = hdr:match("[Xx]%-[Ff]ake%-[Ww]orker:%s*(%d+)")
      assert.is_not_nil(blocked_worker, hdr)
      assert.not_equal(blocked_worker, r.headers["x-fake-worker"])
      local st = s2:stats()
      assert.equal(1, st.tokens_issued)
      assert.equal(1, st.organizations)
      assert.equal(1, st.faults_applied)
      assert.equal(3, st.api_requests)
      s2:stop()
      assert.equal(0, #nginx_procs(s2.prefix))
    end)
  end)

  describe("with tls", function()
    it("serves HTTPS with a throwaway CA", function()
      local s = start({ tls = true })
      assert.matches("^https://localhost:%d+$", s.url)
      assert.is_string(read_file(s.ca_file))
      local r = curl(s, { path = "/oauth/token", method = "POST",
        form = { "grant_type=client_credentials", "client_id=skc_test", "client_secret=test_secret_value" } })
      assert.equal(200, r.status)
      assert.equal(200, api(s, r.json.access_token, "GET", "/api/v1/organizations").status)
      r = curl(s, { path = "/_admin/ping", no_cacert = true })
      assert.equal(60, r.rc) -- curl: peer certificate cannot be authenticated
      r = curl(s, { url = "https://127.0.0.1:" .. s.port .. "/_admin/ping" })
      assert.equal(0, r.rc) -- the certificate also names IP 127.0.0.1
      assert.equal(1, s:stats().tokens_issued)
      s:stop()
      assert.is_nil(io.open(s.ca_file))
    end)
  end)

  describe("error log", function()
    it("has no [error] lines", function()
      assert.is_nil(srv:error_log_text():find("[error]", 1, true), srv:error_log_text())
    end)
  end)
end)

describe("fake scalekit cleanup", function()
  it("leaves no nginx process and no temp dir behind", function()
    assert.is_true(#started >= 4)
    for _, prefix in ipairs(started) do
      -- the shared server is stopped in the other block's teardown
      assert.equal(0, #nginx_procs(prefix), prefix)
      assert.is_nil(io.open(prefix .. "/nginx.conf"), prefix)
    end
  end)
end)

-- The stateful resources through the real client; every answer's field names are
-- checked against the response schema of its operation in api/openapi.json.
describe("fake scalekit stateful resources, through the client", function()
  local helpers = require("spec.support.client")
  local openapi = json.decode(read_file("api/openapi.json"))
  local srv, sk

  local function schema_of(op)
    for _, item in pairs(openapi.paths) do
      for _, o in pairs(item) do
        if type(o) == "table" and o.operationId == op then
          local content = (o.responses["200"] or {}).content
          return content and content["application/json"].schema or {}
        end
      end
    end
    error("no operation " .. op)
  end

  -- every key of `v` is a property of `schema` (recursively); returns the path of the first stray one
  local function stray(schema, v, path)
    if schema["$ref"] then
      schema = openapi.components.schemas[schema["$ref"]:match("[^/]+$")]
    end
    if schema.allOf then
      return stray(schema.allOf[1], v, path)
    end
    if type(v) ~= "table" or schema.additionalProperties or not (schema.properties or schema.items) then
      return nil
    end
    for k, x in pairs(v) do
      local sub = schema.items or schema.properties[k]
      if not sub then
        return path .. "." .. tostring(k)
      end
      local bad = stray(sub, x, path .. "." .. tostring(k))
      if bad then return bad end
    end
  end

  -- sk:call that must succeed with an answer shaped like the operation's schema
  local function call(op, params)
    local res, err = sk:call(op, params)
    assert.is_nil(err, tostring(err))
    assert.is_nil(res.echo, op .. " was echoed")
    assert.is_nil(stray(schema_of(op), res, op), op)
    return res
  end

  setup(function()
    srv = start({ workers = 1 })
    sk = helpers.new_client(srv)
  end)
  teardown(function()
    sk:close()
    srv:stop()
  end)

  local org
  before_each(function()
    srv:reset({ keep_tokens = true })
    org = call("OrganizationService_CreateOrganization", { body = { display_name = "Acme" } }).organization
  end)

  it("organizations and users answer their schemas", function()
    call("OrganizationService_GetOrganization", { id = org.id })
    call("OrganizationService_UpdateOrganization", { id = org.id, body = { display_name = "Acme 2" } })
    local u = call("UserService_CreateUserAndMembership", { organization_id = org.id,
      body = { email = "a@acme.test", user_profile = { given_name = "A" } } }).user
    call("UserService_GetUser", { id = u.id })
    call("UserService_ListOrganizationUsers", { organization_id = org.id })
  end)

  it("portal links: a URL on the fake that expires in a minute", function()
    local res = call("OrganizationService_GeneratePortalLink", { id = org.id, features = { "sso" } })
    assert.matches("^lnk_%x+$", res.link.id)
    assert.equal(srv.url .. "/magicLink/" .. res.link.id .. "?features=sso", res.link.location)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", res.link.expire_time)
    local _, err = sk.organizations:generate_portal_link("org_00000000000000404")
    assert.equal(404, err.status)
  end)

  it("domains: create, get, list by page_number, delete", function()
    local d = call("DomainService_CreateDomain", { organization_id = org.id, body = { domain = "acme.test" } }).domain
    assert.equal(org.id, d.organization_id)
    assert.equal("PENDING", d.verification_status)
    assert.equal("ORGANIZATION_DOMAIN", d.domain_type)
    for i = 1, 4 do
      call("DomainService_CreateDomain", { organization_id = org.id, body = { domain = i .. ".acme.test" } })
    end
    local _, err = sk.domains:create(org.id, { domain = "acme.test" })
    assert.equal(409, err.status)
    assert.same(d, call("DomainService_GetDomain", { organization_id = org.id, id = d.id }).domain)
    local page = call("DomainService_ListDomains", { organization_id = org.id, page_size = 2, page_number = 2 })
    assert.equal(1, #page.domains) -- 0-based page numbers
    assert.equal(2, page.page_number)
    local n = 0
    for _ in sk.domains:each(org.id, { page_size = 2 }) do n = n + 1 end
    assert.equal(5, n)
    assert.truthy(sk.domains:delete(org.id, d.id))
    _, err = sk.domains:get(org.id, d.id)
    assert.equal(404, err.status)
  end)

  it("connections: seeded; list, get, disable, enable, delete", function()
    srv:seed({ connections = 2, organization_id = org.id })
    local other = assert(sk.organizations:create{ display_name = "Other" }).organization
    srv:seed({ connections = 1, organization_id = other.id })
    assert.equal(3, #call("ConnectionService_ListConnections", {}).connections)
    local list = call("ConnectionService_ListConnections", { organization_id = org.id }).connections
    assert.equal(2, #list)
    local c = call("ConnectionService_GetConnection", { organization_id = org.id, id = list[1].id }).connection
    assert.is_true(c.enabled)
    assert.same({ enabled = false, error_message = "" },
      call("ConnectionService_DisableConnection", { organization_id = org.id, id = c.id }))
    assert.is_false(assert(sk.connections:get(org.id, c.id)).connection.enabled)
    assert.is_true(call("ConnectionService_EnableConnection", { organization_id = org.id, id = c.id }).enabled)
    local _, err = sk.connections:get(other.id, c.id) -- another organization's
    assert.equal(404, err.status)
    assert.truthy(sk.connections:delete(org.id, c.id))
    assert.equal(1, #assert(sk.connections:list{ organization_id = org.id }).connections)
  end)

  it("memberships: create, update roles, delete", function()
    local second = assert(sk.organizations:create{ display_name = "Second" }).organization
    local u = assert(sk.users:create(org.id, { email = "m@acme.test" })).user
    local res = call("UserService_CreateMembership", { organization_id = second.id, id = u.id,
      body = { roles = { { name = "member" } }, metadata = { team = "x" } } })
    assert.equal(2, #res.user.memberships)
    assert.equal("member", res.user.memberships[2].roles[1].name)
    local _, err = sk.memberships:create(second.id, u.id, {})
    assert.equal(409, err.status)
    res = call("UserService_UpdateMembership", { organization_id = second.id, id = u.id,
      body = { roles = { { name = "admin" } } } })
    assert.equal("admin", res.user.memberships[2].roles[1].name)
    assert.equal(1, #assert(sk.users:list_by_organization(second.id)).users)
    assert.truthy(sk.memberships:delete(second.id, u.id))
    assert.equal(1, #assert(sk.users:get(u.id)).user.memberships)
    assert.equal(0, #assert(sk.users:list_by_organization(second.id)).users)
  end)

  it("permissions and roles: create, get, list, update, add and list permissions, delete", function()
    for _, name in ipairs({ "invoices:read", "invoices:write", "reports:read" }) do
      call("RolesService_CreatePermission", { body = { name = name, description = "can " .. name } })
    end
    local _, err = sk.permissions:create{ name = "invoices:read" }
    assert.equal(409, err.status)
    assert.equal("can reports:read", call("RolesService_GetPermission",
      { permission_name = "reports:read" }).permission.description)
    local page = call("RolesService_ListPermissions", { page_size = 2 })
    assert.equal(3, page.total_size)
    assert.equal(2, #page.permissions)
    assert.equal(3, #assert(sk:all("RolesService_ListPermissions", { page_size = 2 })))
    call("RolesService_UpdatePermission", { permission_name = "reports:read", body = { description = "reports" } })
    assert.equal("reports", assert(sk.permissions:get("reports:read")).permission.description)

    local role = call("RolesService_CreateRole", { body = { name = "billing", display_name = "Billing",
      permissions = { "invoices:read" } } }).role
    assert.equal("billing", role.name)
    assert.equal("invoices:read", role.permissions[1].name)
    _, err = sk.roles:create{ name = "billing" }
    assert.equal(409, err.status)
    local perms = call("RolesService_AddPermissionsToRole",
      { role_name = "billing", body = { permission_names = { "invoices:write", "invoices:read" } } }).permissions
    assert.equal(2, #perms)
    _, err = sk.roles:add_permissions("billing", { "nope" })
    assert.equal(404, err.status)
    assert.equal(2, #call("RolesService_ListRolePermissions", { role_name = "billing" }).permissions)
    assert.truthy(sk.roles:remove_permission("billing", "invoices:write"))
    role = call("RolesService_UpdateRole", { role_name = "billing", body = { description = "Money",
      permissions = { "reports:read" } } }).role
    assert.equal("Money", role.description)
    assert.equal("Billing", role.display_name)
    assert.equal("reports:read", role.permissions[1].name)
    assert.same(role, call("RolesService_GetRole", { role_name = "billing" }).role)
    assert.equal(1, #call("RolesService_ListRoles", {}).roles)
    assert.truthy(sk.roles:delete("billing"))
    _, err = sk.roles:get("billing")
    assert.equal(404, err.status)
    assert.truthy(sk.permissions:delete("reports:read"))
    assert.equal(2, #assert(sk.permissions:list{}).permissions)
  end)

  it("sessions: seeded; get, list by user with a status filter, revoke, revoke all", function()
    local u = assert(sk.users:create(org.id, { email = "s@acme.test" })).user
    local seeded = srv:seed({ sessions = 3, user_id = u.id })
    local s = call("SessionService_GetSession", { session_id = seeded.first_session_id })
    assert.equal(u.id, s.user_id)
    assert.equal("ACTIVE", s.status)
    local list = call("SessionService_GetUserSessions", { user_id = u.id, page_size = 2 })
    assert.equal(3, list.total_size)
    assert.equal(2, #list.sessions)
    local revoked = call("SessionService_RevokeSession", { session_id = s.session_id }).revoked_session
    assert.equal("REVOKED", revoked.status)
    assert.equal(2, call("SessionService_GetUserSessions",
      { user_id = u.id, ["filter.status"] = { "ACTIVE" } }).total_size)
    local all = call("SessionService_RevokeAllUserSessions", { user_id = u.id })
    assert.equal(2, all.total_revoked)
    assert.equal(3, assert(sk.sessions:list_by_user(u.id, { ["filter.status"] = { "REVOKED" } })).total_size)
    local _, err = sk.sessions:get("ses_00000000000000404")
    assert.equal(404, err.status)
  end)

  it("echo routes under made-up parent ids, 404 under ids the fake issued", function()
    assert.is_table(assert(sk.connections:enable("org_1", "conn_1")).echo)
    assert.is_table(assert(sk.domains:list("org_1")).echo)
    assert.is_table(assert(sk.roles:add_permissions("admin", { "read" })).echo)
    assert.truthy(sk.organizations:delete(org.id))
    local _, err = sk.domains:list(org.id)
    assert.equal(404, err.status)
    -- POST /roles is stateful like every other supported route: never an echo
    local created = assert(sk.roles:create{ name = "x" })
    assert.is_nil(created.echo)
    assert.equal("x", created.role.name)
  end)
end)

describe("make fake (tools/fake.lua)", function()
  it("starts on the chosen port, answers, and stops on SIGINT leaving nothing behind", function()
    local port, pid, out
    local out_file = os.tmpname()
    -- a random port may be taken by another suite's server meanwhile: then another one
    for _ = 1, 3 do
      port = proc.random_port()
      pid = tonumber(run("lua5.4 tools/fake.lua " .. port .. " >" .. quote(out_file)
        .. " 2>&1 </dev/null & echo $!"):match("%d+"))
      out = ""
      for _ = 1, 100 do
        out = read_file(out_file) or ""
        if (out:find("SCALEKIT_CLIENT_SECRET", 1, true) and out:find("admin:", 1, true))
          or out:find("is busy", 1, true) then break end
        proc.sleep(0.1)
      end
      if not out:find("is busy", 1, true) then break end
    end
    local url = "http://127.0.0.1:" .. port
    assert.truthy(out:find("export SCALEKIT_ENVIRONMENT_URL=" .. url, 1, true), out)
    assert.truthy(out:find("export SCALEKIT_CLIENT_ID=skc_test", 1, true), out)
    assert.truthy(out:find("export SCALEKIT_CLIENT_SECRET=test_secret_value", 1, true), out)
    local ping = json.decode((run("curl -sS --max-time 5 " .. url .. "/_admin/stats")))
    assert.equal(3, ping.organizations)
    assert.equal(3, ping.sso_connections)
    local prefix = run("ls -d /tmp/scalekit-fake.* 2>/dev/null | while read d; do grep -l ':"
      .. port .. "' \"$d/nginx.conf\" 2>/dev/null; done"):match("(/tmp/scalekit%-fake%.%w+)/nginx%.conf")
    assert.is_string(prefix)
    assert.equal(1, #nginx_procs(prefix))

    assert.truthy(proc.sh("kill -INT " .. pid))
    for _ = 1, 40 do
      if not proc.pid_alive(pid) then break end
      proc.sleep(0.1)
    end
    assert.is_false(proc.pid_alive(pid))
    assert.truthy((read_file(out_file) or ""):find("fake: stopped", 1, true))
    assert.equal(0, #nginx_procs(prefix))
    assert.is_nil(io.open(prefix .. "/nginx.conf"))
    os.remove(out_file)
  end)
end)
