-- OpenResty integration: a real nginx running an app that uses scalekit (cosockets,
-- the shared-dict token cache, the phase rules), against the fake Scalekit.
--
-- Two nginx: the fake (spec/support/fake.lua) and the app (spec/support/app.lua,
-- handlers in spec/support/app_handlers.lua). The app's requests to the fake go over real
-- loopback sockets. The test process drives the app with the curl CLI.
local helpers = require "spec.support.client"
local server = require "spec.support.fake"
local rawserver = require "spec.support.raw"
local launcher = require "spec.support.app"
local scenarios = require "spec.support.scenarios"
local scalekit = require "scalekit"

local cjson_null = require("cjson").null
local SECRET = scenarios.CLIENT_SECRET

local function enc(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

local function sleep(s) require("scalekit.core").sleep(s) end
local clock = helpers.clock

-- [error]-or-worse lines of an error.log that no pattern of `allowed` explains
local function unexpected_errors(text, allowed)
  local bad = {}
  for line in text:gmatch("[^\n]+") do
    if line:find("%[error%]") or line:find("%[crit%]") or line:find("%[alert%]") or line:find("%[emerg%]") then
      local ok = false
      for _, p in ipairs(allowed) do
        if line:find(p) then ok = true break end
      end
      if not ok then bad[#bad + 1] = line end
    end
  end
  return bad
end

describe("OpenResty", function()
  local srv, srv_tls, rs, app
  -- [error] lines the tests provoke on purpose (Lua patterns)
  local allowed = {}

  setup(function()
    srv = server.start{ workers = 1, oidc = true }
    srv_tls = server.start{ workers = 1, tls = true }
    rs = rawserver.start{ tls = true }
    -- the raw server's CA signed nothing of srv_tls: the "wrong CA"
    local other_ca = rs.ca_file
    local function loc(path, handler, extra)
      return "        location = " .. path .. " { " .. (extra or "")
        .. " content_by_lua_block { require(\"spec.support.app_handlers\")." .. handler .. "() } }\n"
    end
    local function trusting(ca) return "lua_ssl_trusted_certificate " .. ca .. "; lua_ssl_verify_depth 2;" end
    -- a plain answer, then the handler in the <phase>_by_lua phase
    local function phase_loc(path, phase, handler)
      return "        location = " .. path .. " { content_by_lua_block { ngx.say(\"ok\") }\n"
        .. "            " .. phase .. "_by_lua_block { require(\"spec.support.app_handlers\")." .. handler .. "() } }\n"
    end
    app = launcher.start{
      workers = 1,
      http = table.concat({
        "    lua_shared_dict scalekit 1m;",
        "    lua_shared_dict app_results 1m;",
        "    init_by_lua_block { require(\"spec.support.app_handlers\").init(\"" .. srv.url .. "\") }",
        "    init_worker_by_lua_block { require(\"spec.support.app_handlers\").init_worker() }",
      }, "\n"),
      server = table.concat({
        loc("/t/step", "step"), loc("/t/close", "close_run"), loc("/t/call", "call"),
        loc("/t/new", "new"), loc("/t/stuck_lock", "stuck_lock"), loc("/t/jwks", "jwks"),
        loc("/t/validate_cached", "validate_cached"),
        loc("/t/validate", "validate"), loc("/t/result", "result"),
        loc("/t/init_client", "init_client"),
        [[
        location = /t/set_phase {
            set_by_lua_block $sk_result { return require("spec.support.app_handlers").set_phase() }
            return 200 $sk_result;
        }
]],
        phase_loc("/t/log_phase", "log", "no_io"),
        phase_loc("/t/header_filter_phase", "header_filter", "no_io"),
        phase_loc("/t/body_filter_phase", "body_filter", "no_io"),
        phase_loc("/t/log_timer", "log", "log_with_timer"),
        loc("/t/tls_good", "call", trusting(srv_tls.ca_file)),
        loc("/t/tls_wrong", "call", trusting(other_ca)),
        loc("/t/tls_none", "call"),
        loc("/t/raw", "raw", trusting(rs.ca_file)),
      }),
    }
  end)

  teardown(function()
    if app then app:stop() end
    if srv then srv:stop() end
    if srv_tls then srv_tls:stop() end
    if rs then rs:stop() end
  end)

  ---------------------------------------------------------------------------
  -- the transport scenarios through cosockets (the libcurl runs: client_spec.lua)
  ---------------------------------------------------------------------------

  describe("transport scenarios on cosockets (libcurl: client_spec.lua)", function()
    before_each(function()
      srv:reset()
      srv:configure{ token_ttl = 3600 }
    end)

    local runs = 0

    local function in_nginx(sc, shared_dict)
      runs = runs + 1
      local run = "run" .. runs .. "-" .. os.time()
      local q = "run=" .. run .. "&scenario=" .. enc(sc.name) .. "&url=" .. enc(srv.url)
        .. (shared_dict and ("&shared_dict=" .. shared_dict) or "")
      local r, ctx = scenarios.drive(sc, srv, function(i)
        local v, status = app:get("/t/step?" .. q .. "&step=" .. i)
        assert.equal(200, status, type(v) == "string" and v or nil)
        return v
      end)
      app:get("/t/close?run=" .. run)
      return r, ctx
    end

    for _, sc in ipairs(scenarios.list) do
      local title = sc.group .. " " .. sc.name
      it("cosockets + shared_dict: " .. title, function()
        local r, ctx = in_nginx(sc, "scalekit")
        sc.check(assert, r, ctx)
      end)
      if sc.group == "token" then
        it("cosockets + per-client token: " .. title, function()
          local r, ctx = in_nginx(sc, nil)
          sc.check(assert, r, ctx)
        end)
      end
    end

    -- error.log lines the scenarios provoke: ngx_lua logs socket failures itself
    -- (lua_socket_log_errors), e.g. the timeout and the refused connection
    allowed[#allowed + 1] = "lua tcp socket read timed out"
    allowed[#allowed + 1] = "connect%(%) failed %(111: Connection refused%)"
  end)

  ---------------------------------------------------------------------------
  -- wire edge cases: one attempt on each transport against misbehaving servers
  -- (spec/support/raw.lua); the two summaries must be the same
  ---------------------------------------------------------------------------

  describe("wire edge cases (one attempt, same outcome on libcurl and cosockets)", function()
    local CASES = {
      { "ok", status = 200 }, { "http10", status = 200 }, { "http11_close", status = 200 },
      { "continue", status = 200 }, { "long_request_id", status = 500 }, { "big", status = 200 },
      { "big", max_body_size = 1024, kind = "network" },
      { "close_mid_body", kind = "network" }, { "truncated_chunked", kind = "network" },
      { "empty_reply", kind = "network" }, { "garbage", kind = "network" },
      { "huge_header", kind = "network" },
      { "trickle", timeout = 0.6, kind = "timeout" }, { "never", timeout = 0.5, kind = "timeout" },
      { "ok", tls = "good", status = 200 }, { "ok", tls = "expired", kind = "tls" },
      { "ok", tls = "wrong_host", kind = "tls" }, { "ok", tls = "self_signed", kind = "tls" },
    }

    local function libcurl(base, c)
      local sk = assert(scalekit.new{
        environment_url = base, client_id = "skc_raw", client_secret = SECRET,
        timeout = c.timeout, max_body_size = c.max_body_size, ca_file = rs.ca_file,
      })
      local out = scenarios.client_step(sk, { client = "raw", method = "GET", path = "/raw/" .. c[1],
                                              bearer = "tok" })
      sk:close()
      return scenarios.roundtrip(out)
    end

    local function cosocket(base, c)
      local q = "/t/raw?base=" .. enc(base) .. "&path=" .. enc("/raw/" .. c[1])
        .. (c.timeout and ("&timeout=" .. c.timeout) or "")
        .. (c.max_body_size and ("&max_body_size=" .. c.max_body_size) or "")
      local v, status = app:get(q)
      assert.equal(200, status, tostring(v))
      return v
    end

    for _, c in ipairs(CASES) do
      local title = c[1] .. (c.tls and (" over TLS (" .. c.tls .. ")") or "")
        .. (c.max_body_size and " over max_body_size" or "")
      it(title .. ": " .. (c.kind or tostring(c.status)), function()
        local base = c.tls and rs.tls_url[c.tls] or rs.url
        local a, b = libcurl(base, c), cosocket(base, c)
        assert.equal(c.status, a.status, a.message)
        assert.equal(c.kind, a.kind)
        a.elapsed, b.elapsed, a.message, b.message = nil, nil, nil, nil
        assert.same(a, b)
      end)
    end

    allowed[#allowed + 1] = "lua ssl certificate does not match host"

    -- the one difference, on purpose: two different Content-Length headers. libcurl
    -- takes one of them (a 200 with a cut body, which the client then fails to decode); the
    -- cosocket transport refuses the answer, as RFC 9112 §6.3 asks. Neither is a success.
    it("bad_length (conflicting Content-Length): libcurl 200 + short body, cosockets network", function()
      local a, b = libcurl(rs.url, { "bad_length" }), cosocket(rs.url, { "bad_length" })
      assert.equal(200, a.status)
      assert.is_true(a.body_len < #'{"id":"ok","display_name":"raw"}')
      assert.equal("network", b.kind)
      assert.truthy(b.message:find("Content-Length", 1, true))
    end)
  end)

  ---------------------------------------------------------------------------
  -- concurrency: the worker is not blocked, one token for everybody
  ---------------------------------------------------------------------------

  describe("concurrency", function()
    before_each(function()
      srv:reset()
      srv:configure{ token_ttl = 3600 }
    end)

    it("20 concurrent calls in one worker against a 1 s upstream take about as long as one", function()
      local q = "/t/call?shared_dict=scalekit&url=" .. enc(srv.url)
      local warm = app:get(q)
      assert.is_true(warm.ok)
      srv:faults{ { match = "/api/", delay = 1 } }
      local t0 = clock()
      local one = app:get(q)
      local single = clock() - t0
      assert.is_true(one.ok)
      assert.equal("cosocket", one.transport)
      assert.is_true(single >= 0.95, single)

      srv:faults{ { match = "/api/", delay = 1, count = 20 } }
      local answers, total = app:parallel(q, 20)
      for i, a in ipairs(answers) do
        assert.is_table(a, "answer " .. i)
        assert.is_true(a.ok, "answer " .. i)
      end
      assert.equal(0, srv:stats().faults_pending)
      print(string.format("# OpenResty (a): 1 worker, upstream 1 s: single call %.3f s,"
        .. " 20 concurrent calls %.3f s in total (%.2f x)", single, total, total / single))
      -- blocking I/O would serialize them: ~20 s
      assert.is_true(total < 4 * single, string.format("%.3f s for 20 vs %.3f s for 1", total, single))
      assert.equal(1, srv:stats().tokens_issued)
    end)

    it("without shared_dict, 50 concurrent first requests in one worker fetch one token", function()
      srv:faults{ { match = "/oauth/token", delay = 0.3, count = 5 } }
      local answers = app:parallel("/t/call?case=vault50&url=" .. enc(srv.url), 50)
      for i, a in ipairs(answers) do
        assert.is_table(a, "answer " .. i)
        assert.is_true(a.ok, "answer " .. i)
      end
      assert.equal(1, srv:stats().tokens_issued)
    end)

    it("a token lock left by a dead worker delays a call by timeout + 1 s, not forever", function()
      local v = app:get("/t/stuck_lock?url=" .. enc(srv.url))
      assert.is_true(v.ok, v.err and v.err.text)
      assert.is_true(v.elapsed >= 1.4 and v.elapsed < 3, v.elapsed)
      assert.is_true(v.still_locked)   -- not ours: left alone
      assert.equal(1, srv:stats().tokens_issued)
    end)

    describe("2 workers", function()
      local app2

      setup(function()
        app2 = launcher.start{
          workers = 2, reuseport = true,
          http = "    lua_shared_dict scalekit 1m;\n    lua_shared_dict app_results 1m;",
          server = "        location = /t/call { content_by_lua_block"
            .. " { require(\"spec.support.app_handlers\").call() } }",
        }
      end)

      teardown(function()
        if app2 then
          app2:stop()
          local bad = unexpected_errors(app2:error_log_text(), {})
          assert.same({}, bad)
          local text = app2:error_log_text()
          assert.is_nil(text:find(SECRET, 1, true))
          assert.is_nil(text:find("skt_", 1, true))
        end
      end)

      it("x 50 concurrent first requests fetch one token; after its lifetime, one more", function()
        srv:configure{ token_ttl = 3 }
        -- a slow token endpoint keeps every request of the wave waiting for the fetch
        srv:faults{ { match = "/oauth/token", delay = 0.3, count = 10 } }
        local q = "/t/call?shared_dict=scalekit&url=" .. enc(srv.url)
        local t0 = clock()
        local answers, wall = app2:parallel(q, 100)
        local workers, n = {}, 0
        for i, a in ipairs(answers) do
          assert.is_table(a, "answer " .. i)
          assert.is_true(a.ok, "answer " .. i)
          if not workers[a.worker] then workers[a.worker], n = true, n + 1 end
        end
        assert.equal(2, n)
        local first = srv:stats().tokens_issued
        assert.equal(1, first)

        -- past the token's lifetime (3 s after it was issued)
        local left = 3.4 - (clock() - t0)
        if left > 0 then sleep(left) end
        answers = app2:parallel(q, 100)
        for i, a in ipairs(answers) do
          assert.is_true(a.ok, "answer " .. i)
        end
        local second = srv:stats().tokens_issued
        print(string.format("# OpenResty (b): 2 workers x 50 concurrent first requests: %d token"
          .. " request(s) (wave %.3f s); after the lifetime: %d more", first, wall, second - first))
        assert.equal(2, second)
      end)
    end)
  end)

  ---------------------------------------------------------------------------
  -- phases
  ---------------------------------------------------------------------------

  describe("phases", function()
    before_each(function()
      srv:reset()
    end)

    local function wait_log(pattern)
      for _ = 1, 100 do
        if app:error_log_text():find(pattern) then return true end
        sleep(0.05)
      end
      return false
    end

    it("a client made in init_by_lua works in a content handler (cosockets)", function()
      local v = app:get("/t/init_client")
      assert.is_true(v.ok)
      assert.equal("cosocket", v.transport)
    end)

    it("init_worker_by_lua uses libcurl, and a timer started there uses cosockets", function()
      local v = app:get("/t/result?key=init_worker")
      assert.is_true(v.ok)
      assert.equal("libcurl", v.transport)
      v = app:get("/t/result?key=timer")
      assert.is_true(v.ok)
      assert.equal("cosocket", v.transport)
    end)

    it("raise the documented error where no I/O is allowed (set)", function()
      local text, status = app:get("/t/set_phase")
      assert.equal(200, status)
      assert.equal("scalekit: no I/O in the set phase; use ngx.timer.at", text)
    end)

    for _, phase in ipairs({ "log", "header_filter", "body_filter" }) do
      it("raise the documented error where no I/O is allowed (" .. phase .. ")", function()
        local msg = "scalekit: no I/O in the " .. phase .. " phase; use ngx.timer.at"
        -- positioned at the caller's line (the app), never inside the library
        local pattern = "failed to run " .. phase .. "_by_lua%*: [^ ]*/app/spec/support/app_handlers%.lua:%d+: "
          .. msg:gsub("%p", "%%%0")
        allowed[#allowed + 1] = pattern
        os.execute("curl -s -o /dev/null --max-time 2 " .. app.url .. "/t/" .. phase .. "_phase")
        assert.is_true(wait_log(pattern), "no '" .. msg .. "' in error.log")
      end)
    end

    it("log_by_lua can hand the call to ngx.timer.at", function()
      os.execute("curl -s -o /dev/null --max-time 5 " .. app.url .. "/t/log_timer")
      local v
      for _ = 1, 100 do
        v = app:get("/t/result?key=log_timer")
        if v ~= nil and v ~= cjson_null then break end
        sleep(0.05)
      end
      assert.is_table(v)
      assert.is_true(v.ok)
      assert.equal("cosocket", v.transport)
    end)
  end)

  ---------------------------------------------------------------------------
  -- TLS through cosockets
  ---------------------------------------------------------------------------

  describe("TLS", function()
    before_each(function()
      srv_tls:reset()
    end)

    local function call(loc, extra)
      return app:get("/t/" .. loc .. "?max_retries=0&url=" .. enc(srv_tls.url) .. (extra or ""))
    end

    it("verifies the server against lua_ssl_trusted_certificate and keeps the connection", function()
      local v = call("tls_good")
      assert.is_true(v.ok, v.err and v.err.text)
      assert.equal("cosocket", v.transport)
      local connects = v.stats.connects
      v = call("tls_good")
      assert.is_true(v.ok)
      assert.equal(connects, v.stats.connects)
      assert.equal(1, srv_tls:stats().connections)
    end)

    -- a pooled connection was verified when it was made: the pool name carries
    -- ca_file, which is meant to name the same file as lua_ssl_trusted_certificate
    it("fails with kind 'tls' against a CA that did not sign the server", function()
      local v = call("tls_wrong", "&ca=" .. enc(rs.ca_file))
      assert.is_false(v.ok)
      assert.equal("tls", v.err.kind)
      assert.truthy(v.err.message:find("lua_ssl_trusted_certificate", 1, true))
    end)

    it("ca_file alone is not enough: cosockets trust lua_ssl_trusted_certificate only", function()
      local v = call("tls_none", "&ca=" .. enc(srv_tls.ca_file))
      assert.is_false(v.ok)
      assert.equal("tls", v.err.kind)
    end)

    allowed[#allowed + 1] = "lua ssl certificate verify error"
    allowed[#allowed + 1] = "SSL_do_handshake%(%) failed"
  end)

  ---------------------------------------------------------------------------
  -- configuration
  ---------------------------------------------------------------------------

  describe("configuration", function()
    it("a missing lua_shared_dict gives nil, err (missing_configuration)", function()
      local v = app:get("/t/new?shared_dict=nope&url=" .. enc(srv.url))
      assert.is_false(v.ok)
      assert.equal("config", v.err.kind)
      assert.equal("missing_configuration", v.err.error_code)
      assert.truthy(v.err.message:find("lua_shared_dict 'nope'", 1, true))
      -- and the message is in the error log: assert(scalekit.new{…}) raises the table,
      -- which ngx_lua could not print
      local pattern = "%[error%].-scalekit: config error: lua_shared_dict 'nope' not found"
      allowed[#allowed + 1] = pattern
      local found = false
      for _ = 1, 100 do
        if app:error_log_text():find(pattern) then found = true break end
        sleep(0.05)
      end
      assert.is_true(found, "the configuration error is not in error.log")
    end)

    it("the JWKS cache lives in the shared dict", function()
      local v = app:get("/t/jwks?shared_dict=scalekit&url=" .. enc("http://127.0.0.1:1"))
      assert.equal('{"keys":[]}', v.after)
      assert.equal('{"keys":[]}', v.shm)
    end)

    -- an access token of the fake that validate_access_token accepts for the next 10 minutes
    local function valid_token(sub)
      local now = os.time()
      return srv:sign_jwt{ iss = srv.url, sub = sub, aud = { scenarios.CLIENT_ID },
                           iat = now - 10, nbf = now - 10, exp = now + 600 }
    end

    it("validate_access_token: the JWKS fetched by one client serves the next ones", function()
      srv:reset()
      local token = valid_token("usr_1")
      local q = "/t/validate?token=" .. enc(token) .. "&url=" .. enc(srv.url)
      for _ = 1, 3 do
        local v = app:get(q .. "&shared_dict=scalekit")
        assert.is_true(v.ok, v.err and v.err.text)
        assert.equal("usr_1", v.sub)
      end
      assert.equal(1, srv:stats().jwks_fetches)
      -- without the shared dict, each new client fetches its own
      assert.is_true(app:get(q).ok)
      assert.equal(2, srv:stats().jwks_fetches)
    end)

    it("validate_access_token: concurrent first validations in a worker fetch the JWKS once", function()
      srv:reset()
      local token = valid_token("usr_2")
      srv:faults{ { match = "/keys", delay = 0.3 } }
      -- a url string no earlier test used: a new client with an empty JWKS cache
      local q = "/t/validate_cached?token=" .. enc(token) .. "&url=" .. enc(srv.url .. "/")
      local answers = app:parallel(q, 20)
      assert.equal(20, #answers)
      for _, v in ipairs(answers) do
        assert.is_true(v.ok, v.err and v.err.text)
        assert.equal("usr_2", v.sub)
      end
      assert.equal(1, srv:stats().jwks_fetches)
    end)

    it("a host name without `resolver` fails as 'network'", function()
      local v = app:get("/t/call?max_retries=0&url=" .. enc("https://scalekit-lua-test.invalid"))
      assert.is_false(v.ok)
      assert.equal("network", v.err.kind)
      assert.truthy(v.err.message:find("no resolver defined", 1, true), v.err.message)
    end)
  end)

  ---------------------------------------------------------------------------
  -- the app's error.log
  ---------------------------------------------------------------------------

  it("error.log has no unexpected [error] and never a secret or a token", function()
    local text = app:error_log_text()
    assert.same({}, unexpected_errors(text, allowed))
    assert.is_nil(text:find(SECRET, 1, true))
    assert.is_nil(text:find("skt_", 1, true))
  end)
end)
