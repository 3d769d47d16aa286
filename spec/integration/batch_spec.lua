-- sk:batch / sk:get_many against the fake Scalekit over real sockets: plain Lua on
-- the libcurl multi handle (HTTP/1.1, and HTTP/2 on a TLS port that offers h2 by
-- ALPN), then OpenResty on cosockets + ngx.thread (and the multi handle in init_worker).
local helpers = require "spec.support.client"
local server = require "spec.support.fake"
local proc = require "spec.support.proc"
local errors = require "scalekit.errors"
local cjson = require "cjson"

local GET = "OrganizationService_GetOrganization"

-- seq of the newest request in the fake's log (requests after it: r.seq > mark)
local function mark(srv)
  local m = 0
  for _, r in ipairs(srv:requests()) do m = math.max(m, r.seq) end
  return m
end

local function distinct_api_connections(srv, since)
  local seen, n = {}, 0
  for _, r in ipairs(srv:requests()) do
    if r.seq > since and r.path:find("^/api/") and not seen[r.connection] then
      seen[r.connection] = true
      n = n + 1
    end
  end
  return n
end

local function org_ids(sk, n)
  local list = assert(sk:call("OrganizationService_ListOrganization", { page_size = n }))
  local ids = {}
  for i, o in ipairs(list.organizations) do ids[i] = o.id end
  assert(#ids == n)
  return ids
end

local function calls_of(ids)
  local calls = {}
  for i, id in ipairs(ids) do calls[i] = { GET, { id = id } } end
  return calls
end

describe("sk:batch (plain Lua, libcurl multi)", function()
  local srv, h2_port

  setup(function()
    h2_port = proc.random_port()
    -- one more port on the same TLS server, offering HTTP/2 by ALPN (nginx 1.22:
    -- `listen … ssl http2`; `http2 on;` from 1.25)
    srv = server.start{ workers = 1, tls = true,
                        extra_server = "        listen 127.0.0.1:" .. h2_port .. " ssl http2;" }
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  before_each(function()
    srv:reset{ keep_tokens = true }
    srv:clear_faults()
    srv:seed{ organizations = 40 }
  end)

  local function new(overrides) return helpers.new_client(srv, overrides) end
  local function new_h2(overrides)
    local o = { environment_url = "https://localhost:" .. h2_port }
    for k, v in pairs(overrides or {}) do o[k] = v end
    return new(o)
  end

  it("keeps the order and isolates one failing call", function()
    local sk = new()
    local ids = org_ids(sk, 30)
    -- the first calls answer last
    srv:faults{ { match = "/api/v1/organizations/" .. ids[1], delay = 0.2 },
                { match = "/api/v1/organizations/" .. ids[2], delay = 0.1 } }
    local calls = calls_of(ids)
    table.insert(calls, 5, { GET, { id = "org_missing" } })
    local results, errs = sk:batch(calls, { concurrency = 8 })
    assert.is_table(errs)
    assert.is_nil(results[5])
    assert.is_true(errors.is(errs[5], "http"))
    assert.equal(404, errs[5].status)
    assert.equal(GET, errs[5].operation)
    local n = 0
    for i, c in ipairs(calls) do
      if i ~= 5 then
        n = n + 1
        assert.is_nil(errs[i])
        assert.equal(c[2].id, results[i].organization.id)
      end
    end
    assert.equal(30, n)
    sk:close()
  end)

  it("returns errs == nil when every call succeeded, with one token for the batch", function()
    local sk = new()
    local ids = org_ids(sk, 20)
    sk:invalidate_token()
    local before = srv:stats().tokens_issued
    local stats = {}
    local results, errs = sk:batch(calls_of(ids), { stats = stats })
    assert.is_nil(errs)
    assert.equal(20, #results)
    assert.equal(1, srv:stats().tokens_issued - before)
    assert.equal(1, stats.tokens)
    assert.equal("multi", stats.engine)
    sk:close()
  end)

  it("sends what sk:call sends: no Content-Type on a GET, Accept-Encoding only for paged lists", function()
    local sk = new()
    local ids = org_ids(sk, 3)
    local since = mark(srv)
    local calls = calls_of(ids)
    calls[#calls + 1] = { "OrganizationService_ListOrganization", { page_size = 2 } }
    calls[#calls + 1] = { "OrganizationService_UpdateOrganization", { id = ids[1], body = { display_name = "B" } } }
    local _, errs = sk:batch(calls)
    assert.is_nil(errs)
    local seen = 0
    for _, r in ipairs(srv:requests()) do
      if r.seq > since and r.path:find("^/api/") then
        seen = seen + 1
        local h = r.headers
        assert.truthy(h["user-agent"]:find("^scalekit%-lua/"), h["user-agent"])
        if r.method == "GET" and r.path == "/api/v1/organizations" then
          assert.truthy(h["accept-encoding"], "a paged list asks for compression")
        elseif r.method == "GET" then
          assert.is_nil(h["content-type"])
          assert.is_nil(h["accept-encoding"])
        else
          assert.truthy(h["content-type"]:find("application/json", 1, true))
        end
      end
    end
    assert.equal(5, seen)
    sk:close()
  end)

  it("with concurrency = 1 is the sequential loop", function()
    local sk = new()
    local ids = org_ids(sk, 10)
    local seq = {}
    for i, id in ipairs(ids) do seq[i] = assert(sk:call(GET, { id = id })) end
    local since = mark(srv)
    local results, errs = sk:batch(calls_of(ids), { concurrency = 1 })
    assert.is_nil(errs)
    assert.same(seq, results)
    local paths = {}
    for _, r in ipairs(srv:requests()) do
      if r.seq > since and r.path:find("^/api/") then paths[#paths + 1] = r.path end
    end
    for i, id in ipairs(ids) do assert.equal("/api/v1/organizations/" .. id, paths[i]) end
    assert.equal(1, distinct_api_connections(srv, since))
    sk:close()
  end)

  -- 40 calls on the client `make` builds: check(results, stats, connections the fake
  -- saw, sk, ids) holds what the protocol promises about connections
  local PROTOCOLS = {
    { "uses HTTP/1.1 and at most `concurrency` connections when h2 is not offered",
      make = new, concurrency = 4,
      check = function(_, stats, conns)
        assert.equal(0, stats.http2)
        assert.is_true(stats.connects <= 4, "connects " .. stats.connects)
        assert.is_true(conns <= 4)
      end },
    { "multiplexes every call over one HTTP/2 connection when the server offers h2",
      make = new_h2, concurrency = 16,
      check = function(results, stats, conns, sk, ids)
        assert.equal(40, #results)
        assert.equal(40, stats.http2)
        assert.equal(1, stats.connects)
        assert.equal(1, conns)
        -- http2 = false keeps HTTP/1.1 on the same port
        stats = {}
        assert.is_nil(select(2, sk:batch(calls_of(ids), { concurrency = 4, http2 = false, stats = stats })))
        assert.equal(0, stats.http2)
      end },
  }
  for _, case in ipairs(PROTOCOLS) do
    it(case[1], function()
      local sk = case.make()
      local ids = org_ids(sk, 40)
      local since = mark(srv)
      local stats = {}
      local results, errs = sk:batch(calls_of(ids), { concurrency = case.concurrency, stats = stats })
      assert.is_nil(errs)
      case.check(results, stats, distinct_api_connections(srv, since), sk, ids)
      sk:close()
    end)
  end

  it("pauses the whole batch on a 429 until its Retry-After instant", function()
    local sk = new()
    local ids = org_ids(sk, 12)
    local since = mark(srv)
    srv:faults{ { match = "/api/v1/organizations/" .. ids[3], status = 429, retry_after = 1 } }
    local t0 = helpers.clock()
    local results, errs = sk:batch(calls_of(ids), { concurrency = 2 })
    local elapsed = helpers.clock() - t0
    assert.is_nil(errs)
    assert.equal(12, #results)
    assert.is_true(elapsed >= 0.95, "elapsed " .. elapsed)
    local t429
    local log = srv:requests()
    for _, r in ipairs(log) do
      if r.path == "/api/v1/organizations/" .. ids[3] and not t429 then t429 = r.time end
    end
    -- after the 429 only the one call in flight beside it may reach the server
    -- before the pause ends
    local early = 0
    for _, r in ipairs(log) do
      if r.seq > since and r.path:find("^/api/") and r.time > t429 + 0.02 and r.time < t429 + 0.9 then
        early = early + 1
      end
    end
    assert.is_true(early <= 1, early .. " requests during the pause")
    sk:close()
  end)

  it("renews the token once for all the calls in flight on a 401", function()
    local sk = new()
    local ids = org_ids(sk, 32)
    local before = srv:stats().tokens_issued
    -- the 10th call revokes every token: it and the calls in flight answer 401
    srv:faults{ { match = "/api/v1/organizations/" .. ids[10], revoke = true, delay = 0.05 } }
    local stats = {}
    local results, errs = sk:batch(calls_of(ids), { concurrency = 8, stats = stats })
    assert.is_nil(errs)
    assert.equal(32, #results)
    assert.equal(1, srv:stats().tokens_issued - before)
    assert.equal(1, stats.tokens)
    sk:close()
  end)

  it("fails only the call that timed out", function()
    local sk = new{ timeout = 0.3, max_retries = 0 }
    local ids = org_ids(sk, 10)
    srv:faults{ { match = "/api/v1/organizations/" .. ids[4], delay = 1 } }
    local results, errs = sk:batch(calls_of(ids), { concurrency = 4 })
    assert.is_table(errs)
    assert.is_true(errors.is(errs[4], "timeout"))
    assert.is_nil(results[4])
    for i = 1, 10 do
      if i ~= 4 then assert.equal(ids[i], results[i].organization.id) end
    end
    sk:close()
  end)

  it("retries a 503 with backoff inside the batch", function()
    local sk = new()
    local ids = org_ids(sk, 6)
    srv:faults{ { match = "/api/v1/organizations/" .. ids[2], status = 503, count = 2 } }
    local results, errs = sk:batch(calls_of(ids), { concurrency = 3 })
    assert.is_nil(errs)
    assert.equal(ids[2], results[2].organization.id)
    sk:close()
  end)

  it("streams answers to on_result without keeping them", function()
    local sk = new()
    local ids = org_ids(sk, 10)
    local seen = {}
    local results, errs = sk:batch(calls_of(ids), { on_result = function(i, res, err)
      assert.is_nil(err)
      seen[i] = res.organization.id
    end })
    assert.is_nil(errs)
    assert.same({}, results)
    assert.same(ids, seen)
    sk:close()
  end)

  it("get_many batches a resource's get", function()
    local sk = new()
    local ids = org_ids(sk, 5)
    local results, errs = sk:get_many("organizations", ids, { concurrency = 2 })
    assert.is_nil(errs)
    for i, id in ipairs(ids) do assert.equal(id, results[i].organization.id) end
    assert.has_error(function() sk:get_many("nope", ids) end)
    assert.has_error(function() sk:get_many("connections", { "only_one" }) end)
    -- the same as a resource method
    local again
    again, errs = sk.organizations:get_many(ids)
    assert.is_nil(errs)
    for i, id in ipairs(ids) do assert.equal(id, again[i].organization.id) end
    sk:close()
  end)

  it("raises on misuse before sending anything", function()
    local sk = new()
    local before = srv:stats().api_requests
    assert.has_error(function() sk:batch({ { GET, { id = "org_1" } } }, { concurrency = 65 }) end)
    assert.has_error(function() sk:batch({ { GET, { id = "org_1" } } }, { concurrency = 0 }) end)
    assert.has_error(function() sk:batch({ { GET, { id = "org_1" } } }, { bogus = 1 }) end)
    assert.has_error(function() sk:batch({ { GET, { id = "org_1" } }, { "NoSuchOperation", {} } }) end)
    assert.has_error(function() sk:batch({ { GET, { id = "org_1", nope = 1 } } }) end)
    assert.has_error(function() sk:batch({ "not a call" }) end)
    assert.equal(before, srv:stats().api_requests)
    local results, errs = sk:batch({})
    assert.same({}, results)
    assert.is_nil(errs)
    sk:close()
  end)

  it("stops cleanly when the client is closed during the batch, and refuses after", function()
    local sk = new()
    local ids = org_ids(sk, 30)
    local results, errs = sk:batch(calls_of(ids), { concurrency = 4, on_result = function(i)
      if i == 5 then sk:close() end
    end })
    assert.same({}, results)
    assert.is_table(errs)
    local closed = 0
    for i = 1, 30 do
      if errs[i] then
        closed = closed + 1
        assert.equal("client_closed", errs[i].error_code)
      end
    end
    assert.is_true(closed >= 20, closed .. " calls closed")
    assert.has_error(function() sk:batch(calls_of(ids)) end, nil)
    sk:close()
    collectgarbage()
    collectgarbage()
  end)
end)

describe("core.multi", function()
  local core = require "scalekit.core"

  it("closes idempotently, with transfers in flight, and refuses after", function()
    local m = core.multi{ concurrency = 2, timeout = 1 }
    assert.equal(0, m:pending())
    assert.same({}, m:run(0))
    assert.is_true(m:add(1, "GET", "http://127.0.0.1:9/", nil, "json", "tok"))
    assert.equal(1, m:pending())
    m:close()
    m:close()
    assert.has_error(function() m:add(2, "GET", "http://127.0.0.1:9/") end)
    assert.matches("closed", tostring(m))
    collectgarbage()
  end)

  it("reports a refused connection in the one failure shape", function()
    local m = core.multi{ concurrency = 1, timeout = 2, connect_timeout = 1 }
    assert.is_true(m:add(7, "POST", "http://127.0.0.1:9/x", "{}", "json"))
    local done = {}
    for _ = 1, 50 do
      for _, c in ipairs(m:run(0.1)) do done[#done + 1] = c end
      if #done > 0 then break end
    end
    assert.equal(1, #done)
    assert.equal(7, done[1].id)
    assert.equal("network", done[1].kind)
    assert.is_false(done[1].sent)
    assert.is_false(done[1].permanent)
    m:close()
  end)

  it("rejects bad arguments", function()
    assert.has_error(function() core.multi{ concurrency = 65 } end)
    local m = core.multi{}
    assert.has_error(function() m:add(1, "BREW", "http://127.0.0.1:9/") end)
    assert.has_error(function() m:add(1, "GET", "http://127.0.0.1:9/ x") end)
    assert.has_error(function() m:add(1, "GET", "http://127.0.0.1:9/", "body") end)
    assert.has_error(function() m:add(1, "GET", "http://127.0.0.1:9/", nil, "form", "tok") end)
    m:close()
  end)
end)

describe("sk:batch (OpenResty)", function()
  local launcher = require "spec.support.app"
  local srv, app, ids

  setup(function()
    srv = server.start{ workers = 1 }
    srv:seed{ organizations = 20 }
    local sk = helpers.new_client(srv)
    ids = org_ids(sk, 20)
    sk:close()
    app = launcher.start{
      workers = 1,
      http = "    lua_shared_dict batch_init 1m;\n" .. require("spec.integration.batch_app").init_worker_conf(
        srv.url, { ids[1], ids[2], ids[3] }),
      server = "        location = /t/batch { content_by_lua_block { require(\"batch_app\").run() } }\n",
    }
    -- the handler module goes into the app's package path (read on first require)
    assert(proc.sh("cp spec/integration/batch_app.lua " .. proc.quote(app.prefix .. "/app/batch_app.lua")
      .. " && chmod 644 " .. proc.quote(app.prefix .. "/app/batch_app.lua")))
  end)

  teardown(function()
    if app then app:stop() end
    if srv then srv:stop() end
  end)

  before_each(function()
    srv:clear_faults()
  end)

  local function batch(args)
    local q = { "url=" .. srv.url, "ids=" .. (args.ids or table.concat(ids, ",")) }
    for k, v in pairs(args) do
      if k ~= "ids" then q[#q + 1] = k .. "=" .. tostring(v) end
    end
    local out, status = app:get("/t/batch?" .. table.concat(q, "&"))
    assert.equal(200, status, type(out) == "string" and out or cjson.encode(out))
    return out
  end

  it("runs on cosockets + light threads: order kept, one failure isolated, one token", function()
    local list = { ids[1], ids[2], "org_missing", ids[4], ids[5], ids[6] }
    srv:faults{ { match = "/api/v1/organizations/" .. ids[1], delay = 0.2 } }
    local out = batch{ ids = table.concat(list, ","), concurrency = 4 }
    assert.equal("cosocket", out.stats.engine)
    assert.equal(ids[1], out.ids[1])
    assert.equal(ids[6], out.ids[6])
    assert.is_false(out.ids[3])
    assert.equal(404, out.errs["3"].status)
    assert.equal(1, out.error_count)
    assert.is_true(out.stats.connects <= 4)
  end)

  it("pauses every thread on a 429 and renews the token once on a 401", function()
    srv:faults{ { match = "/api/v1/organizations/" .. ids[3], status = 429, retry_after = 1 } }
    local out = batch{ concurrency = 4 }
    assert.equal(0, out.error_count)
    assert.is_true(out.elapsed >= 0.95, "elapsed " .. out.elapsed)
    local before = srv:stats().tokens_issued
    srv:faults{ { match = "/api/v1/organizations/" .. ids[8], revoke = true, delay = 0.05 } }
    out = batch{ concurrency = 8 }
    assert.equal(0, out.error_count)
    -- one token for the new client of the request, one renewal
    assert.equal(2, srv:stats().tokens_issued - before)
  end)

  it("stops when the client is closed during the batch", function()
    local out = batch{ concurrency = 2, close_at = 3 }
    assert.is_true(out.closed_count >= 10, tostring(out.closed_count))
  end)

  it("falls back to the libcurl multi handle in init_worker", function()
    local out = batch{ mode = "init_result" }
    assert.equal("multi", out.engine)
    assert.equal(3, out.count)
    assert.is_nil(app:error_log_text():find("[error]", 1, true))
  end)
end)
