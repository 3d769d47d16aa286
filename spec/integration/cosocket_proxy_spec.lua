-- OpenResty, issue 15 and 13: the cosocket transport through an HTTP proxy (CONNECT
-- tunnel for https, absolute form for http, no_proxy, a refused CONNECT), and the
-- JWKS negative cache under load in real nginx (2 workers, a shared dict, 50
-- concurrent validations against a /keys that answers 503).
local helpers = require "spec.support.client"
local server = require "spec.support.fake"
local launcher = require "spec.support.app"
local scenarios = require "spec.support.scenarios"
local proc = require "spec.support.proc"

local function enc(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- the handler: one client per worker and query (without i=), a call or a validation
local HANDLER = [[
        location = /t/px {
            content_by_lua_block {
                local scalekit = require "scalekit"
                local scenarios = require "spec.support.scenarios"
                local cjson = require "cjson"
                local a = function(n) local v = ngx.var["arg_" .. n]; return v and ngx.unescape_uri(v) end
                _G.__px_clients = _G.__px_clients or {}
                local key = ngx.var.args:gsub("&?i=%d+", "")
                local sk = __px_clients[key]
                if not sk then
                  sk = assert(scalekit.new{ environment_url = a("url"), client_id = scenarios.CLIENT_ID,
                    client_secret = scenarios.CLIENT_SECRET, proxy = a("proxy"), no_proxy = a("no_proxy"),
                    shared_dict = a("shared_dict"), max_retries = tonumber(a("max_retries")) })
                  __px_clients[key] = sk
                end
                local res, err
                if a("token") then
                  res, err = sk:validate_access_token(a("token"))
                else
                  res, err = sk:call("OrganizationService_ListOrganization", {})
                end
                ngx.say(cjson.encode({ ok = res ~= nil, worker = ngx.worker.pid(),
                  err = err and { kind = err.kind, message = err.message, error_code = err.error_code,
                                  status = err.status } }))
            }
        }
]]

local function start_proxy(mode)
  local port = proc.random_port()
  local log = os.tmpname()
  local pid = proc.run("python3 " .. proc.CWD .. "/spec/support/connect_proxy.py " .. port .. " " .. log
    .. " " .. (mode or "ok") .. " >/dev/null 2>&1 & echo $!"):match("%d+")
  for _ = 1, 100 do
    local f = io.open(log)
    local text = f and f:read("*a") or ""
    if f then f:close() end
    if text:find("listening", 1, true) then break end
    proc.sleep(0.05)
  end
  return { url = "http://127.0.0.1:" .. port, pid = pid, log = log,
           lines = function()
             local f = io.open(log)
             local t = {}
             for l in f:lines() do if l ~= "listening" then t[#t + 1] = l end end
             f:close()
             return t
           end,
           stop = function() os.execute("kill " .. pid .. " 2>/dev/null"); os.remove(log) end }
end

describe("cosocket transport through a proxy", function()
  local srv, srv_tls, app, proxy, deny

  setup(function()
    srv = server.start{ workers = 1, oidc = true }
    srv_tls = server.start{ workers = 1, tls = true }
    proxy = start_proxy("ok")
    deny = start_proxy("deny")
    app = launcher.start{
      workers = 2, reuseport = true,
      http = "    lua_shared_dict scalekit 1m;\n    lua_ssl_trusted_certificate " .. srv_tls.ca_file
        .. ";\n    lua_ssl_verify_depth 2;",
      server = HANDLER,
    }
  end)

  teardown(function()
    if app then app:stop() end
    if srv then srv:stop() end
    if srv_tls then srv_tls:stop() end
    if proxy then proxy.stop() end
    if deny then deny.stop() end
  end)

  it("https goes through a CONNECT tunnel (TLS verified against the origin)", function()
    local v = app:get("/t/px?url=" .. enc(srv_tls.url) .. "&proxy=" .. enc(proxy.url))
    assert.is_true(v.ok, v.err and v.err.message)
    local port = srv_tls.url:match(":(%d+)$")
    local connects = 0
    for _, l in ipairs(proxy.lines()) do
      if l == "CONNECT localhost:" .. port .. " HTTP/1.1" then connects = connects + 1 end
    end
    assert.is_true(connects >= 1, table.concat(proxy.lines(), "\n"))
  end)

  it("plain http goes to the proxy in absolute form", function()
    local v = app:get("/t/px?url=" .. enc(srv.url) .. "&proxy=" .. enc(proxy.url))
    assert.is_true(v.ok, v.err and v.err.message)
    local seen = false
    for _, l in ipairs(proxy.lines()) do
      if l:find("^POST " .. srv.url:gsub("%p", "%%%0") .. "/oauth/token HTTP/1%.1$") then seen = true end
    end
    assert.is_true(seen, table.concat(proxy.lines(), "\n"))
  end)

  it("no_proxy hosts are reached directly", function()
    local before = #proxy.lines()
    local v = app:get("/t/px?url=" .. enc(srv_tls.url) .. "&proxy=" .. enc(proxy.url)
      .. "&no_proxy=example.com,localhost")
    assert.is_true(v.ok, v.err and v.err.message)
    assert.are.equal(before, #proxy.lines())
  end)

  it("a refused CONNECT is a network error that names the proxy and the status", function()
    local v = app:get("/t/px?max_retries=0&url=" .. enc(srv_tls.url) .. "&proxy=" .. enc(deny.url))
    assert.is_false(v.ok)
    assert.are.equal("network", v.err.kind)
    local port = srv_tls.url:match(":(%d+)$")
    assert.are.equal("proxy CONNECT to localhost:" .. port .. " failed: HTTP 407",
                     v.err.message:match("proxy CONNECT.*407"), v.err.message)
  end)

  -- 3 waves of 50 concurrent validations over 2 workers; /keys requests after each
  local function jwks_waves(env_url, extra)
    srv:reset()
    srv:faults{ { match = "/keys", status = 503, count = 100000 } }
    local now = os.time()
    local token = srv:sign_jwt{ iss = srv.url, sub = "usr_1", aud = { scenarios.CLIENT_ID },
                                iat = now - 10, exp = now + 600 }
    local function keys_requests()
      local n = 0
      for _, r in ipairs(srv:requests()) do
        if (r.path or ""):find("^/keys") then n = n + 1 end
      end
      return n
    end
    local q = "/t/px?shared_dict=scalekit&token=" .. enc(token) .. "&url=" .. enc(env_url) .. (extra or "")
    local t0 = helpers.clock()
    local waves, kinds = {}, {}
    for w = 1, 3 do
      local answers = app:parallel(q, 50)
      for i, a in ipairs(answers) do
        assert.is_table(a, "answer " .. i)
        assert.is_false(a.ok)
        assert.is_true(a.err.kind == "network" or a.err.kind == "http", a.err.kind)
        kinds[a.err.error_code or a.err.kind] = (kinds[a.err.error_code or a.err.kind] or 0) + 1
      end
      waves[w] = keys_requests()
    end
    local elapsed = helpers.clock() - t0
    local k = {}
    for name, n in pairs(kinds) do k[#k + 1] = name .. "=" .. n end
    table.sort(k)
    print(string.format("# JWKS 503%s: /keys requests after 3 waves of 50 (2 workers): %s, in %.2f s (%s)",
                        extra or "", table.concat(waves, ", "), elapsed, table.concat(k, " ")))
    srv:clear_faults()
    return waves, elapsed, kinds
  end

  it("JWKS negative cache: 2 workers x 50 concurrent validations, failing /keys, one attempt each",
     function()
    -- max_retries = 0 stands for the single attempt the JWKS fetch asks the session for
    local waves, _, kinds = jwks_waves(srv.url, "&max_retries=0")
    -- wave 1: one fetch shared by the callers of both workers (a late arrival after
    -- that first failure may make a second: one failure is not held against the next
    -- caller); wave 2: after two failures the window holds; wave 3 may start a new
    -- window on a slow machine. Before the negative cache: up to 150 (200 with retries).
    assert.is_true(waves[1] <= 2 and waves[3] <= 4, table.concat(waves, ", "))
    assert.is_true((kinds.jwks_unavailable or 0) >= 50)
  end)

  it("JWKS fetches make one attempt whatever max_retries (needs the session's opts.max_retries)", function()
    -- a new environment_url string (localhost, not 127.0.0.1): its own JWKS cache entry
    local waves, elapsed = jwks_waves((srv.url:gsub("127%.0%.0%.1", "localhost")))
    assert.is_true(waves[1] <= 2 and waves[3] <= 4, table.concat(waves, ", "))
    assert.is_true(elapsed < 5, elapsed)
  end)
end)
