-- Faults of the network and of the server, against the fake Scalekit (its fault queue)
-- and against raw misbehaving servers (spec/support/raw.lua): for each, the
-- documented err.kind, no crash, no secret in the error, and the same client (or the
-- same core.http handle, when the fault is the address itself) working afterwards.
-- Everything stays on 127.0.0.1: the DNS failure uses a name the resolver refuses
-- before sending any query, the connect timeout a local listener with a full backlog.
local helpers = require "spec.support.client"
local server = require "spec.support.fake"
local rawserver = require "spec.support.raw"
local scalekit = require "scalekit"
local errors = require "scalekit.errors"
local core = require "scalekit.core"

local SECRET = helpers.CLIENT_SECRET
-- a 64-byte label: glibc refuses the name locally (labels are at most 63 bytes), so
-- no DNS query ever leaves the machine, unlike a plain "x.invalid"
local UNRESOLVABLE = "https://" .. string.rep("a", 64) .. ".invalid"

local LIST = "OrganizationService_ListOrganization"

local function clock() return core.monotonic() end

describe("faults", function()
  local srv, rs

  setup(function()
    srv = server.start{ workers = 1 }
    rs = rawserver.start{ tls = true }
  end)

  teardown(function()
    if srv then srv:stop() end
    if rs then rs:stop() end
  end)

  before_each(function()
    srv:reset()
    rs:clear()
  end)

  -- a client of the fake Scalekit
  local function fake_client(overrides)
    return helpers.new_client(srv, overrides)
  end

  -- a client whose environment is the raw server: sk.organizations:get(<scenario>)
  local function raw_client(overrides)
    local opts = {
      environment_url = rs.url, client_id = "skc_raw", client_secret = SECRET,
      retry_backoff = 0.01, retry_backoff_max = 0.02, timeout = 2,
    }
    for k, v in pairs(overrides or {}) do opts[k] = v end
    return assert(scalekit.new(opts))
  end

  local function fails(kind, res, err)
    assert.is_nil(res)
    assert.is_true(errors.is(err, kind), "expected a " .. kind .. " error, got " .. tostring(err))
    local text = tostring(err)
    assert.is_nil(text:find(SECRET, 1, true), "secret in error")
    assert.is_nil(text:find(rawserver.TOKEN, 1, true), "token in error")
    assert.is_nil(text:find("skt_", 1, true), "fake token in error")
    return err
  end

  local function fake_usable(sk)
    srv:clear_faults()
    local res, err = sk:call(LIST, { page_size = 1 })
    assert.is_nil(err, tostring(err))
    assert.is_table(res)
  end

  local function raw_usable(sk)
    local res, err = sk.organizations:get("ok")
    assert.is_nil(err, tostring(err))
    assert.equal("ok", res.id)
  end

  local function raw_count(path_pattern)
    local n = 0
    for _, r in ipairs(rs:requests()) do
      if r.path:find(path_pattern) then n = n + 1 end
    end
    return n
  end

  local function api_count()
    return helpers.count_requests(srv, "^/api/")
  end

  -- A core.http handle made with opts refuses `url` with `kind` before sending anything,
  -- then fetches from the raw server all the same. Returns the refusal's message.
  local function handle_refuses(opts, url, kind)
    local h = core.http(opts)
    local st, got, msg, sent = h:request("GET", url)
    assert.is_nil(st)
    assert.equal(kind, got)
    assert.is_false(sent)
    assert.equal(200, (h:request("GET", rs.url .. "/raw/ok")))
    h:close()
    return msg
  end

  -- fn(sk) on a client of the fake that holds a token and whose next requests meet
  -- `faults`; the same client must work afterwards.
  local function with_fake_faults(overrides, faults, fn)
    local sk = fake_client(overrides)
    assert(sk:token())
    srv:faults(faults)
    fn(sk)
    fake_usable(sk)
    sk:close()
  end

  -- fn(sk) on a client of the raw server; the same client must work afterwards.
  local function with_raw(overrides, fn)
    local sk = raw_client(overrides)
    fn(sk)
    raw_usable(sk)
    sk:close()
  end

  -- The raw server's `scenario` fails with `kind` on a client that does not retry.
  local function raw_fails(kind, scenario)
    local err
    with_raw({ max_retries = 0 }, function(sk) err = fails(kind, sk.organizations:get(scenario)) end)
    return err
  end

  describe("connecting", function()
    it("connection refused: network, not sent, and the client recovers when the server is back", function()
      local port_srv = server.start{ workers = 1 }
      local port = port_srv.port
      local sk = helpers.new_client(port_srv, { max_retries = 1 })
      fake_usable(sk)
      port_srv:stop()
      local err = fails("network", sk:call(LIST, {}))
      assert.is_true(err.retryable)
      assert.is_nil(err.status)
      -- the same port again: the same client reconnects (the old token is unknown to
      -- the new instance: one 401, one new token, the call retried)
      local again = server.start{ workers = 1, port = port }
      local ok, e = pcall(function()
        assert.equal(port, again.port)
        local res, err2 = sk:call(LIST, {})
        assert.is_nil(err2, tostring(err2))
        assert.is_table(res)
      end)
      again:stop()
      sk:close()
      assert(ok, e)
    end)

    it("connection refused on core.http: nil, 'network', msg, sent = false; the handle goes on", function()
      assert.matches("connect", handle_refuses({ timeout = 2 }, "http://127.0.0.1:1/raw/ok", "network"))
    end)

    it("DNS failure: network, retried because nothing was sent, no query leaves the machine", function()
      local sk = assert(scalekit.new{ environment_url = UNRESOLVABLE, client_id = "a", client_secret = SECRET,
                                      max_retries = 2, retry_backoff = 0.01, retry_backoff_max = 0.01 })
      local err = fails("network", sk:token())
      assert.equal("oauth/token", err.operation)
      assert.matches("resolve", err.message)
      -- POST (not idempotent) is retried too: the request surely never left
      fails("network", sk.organizations:create{ display_name = "x" })
      sk:close()
      handle_refuses({ timeout = 2 }, UNRESOLVABLE .. "/raw/ok", "network")
    end)

    it("connect timeout: 'timeout' after connect_timeout, not after timeout", function()
      local bh = rawserver.unaccepted{ seconds = 20 }
      local ok, e = pcall(function()
        local sk = assert(scalekit.new{ environment_url = bh.url, client_id = "a", client_secret = SECRET,
                                        connect_timeout = 0.3, timeout = 5, max_retries = 0 })
        local t0 = clock()
        local err = fails("timeout", sk:token())
        local took = clock() - t0
        assert.is_true(took >= 0.25 and took < 2, "took " .. took)
        assert.is_true(err.retryable)
        sk:close()
        assert.matches("[Cc]onnect", handle_refuses({ connect_timeout = 0.3, timeout = 5 }, bh.url .. "/raw/ok",
                                                    "timeout"))
      end)
      bh:stop()
      assert(ok, e)
    end)
  end)

  describe("servers that stall", function()
    it("accepts and never answers: timeout; GET retried, PATCH not", function()
      with_raw({ timeout = 0.4, max_retries = 1 }, function(sk)
        local t0 = clock()
        local err = fails("timeout", sk.organizations:get("never"))
        assert.is_true(clock() - t0 < 3)
        assert.is_true(err.retryable)
        assert.equal(2, raw_count("/never$"))
        raw_usable(sk)
        rs:clear()
        fails("timeout", sk.organizations:update("never", { display_name = "x" }))
        assert.equal(1, raw_count("/never$"))
      end)
    end)

    it("slowloris-style trickle (a byte every 0.2 s): timeout after `timeout`", function()
      with_raw({ timeout = 0.5, max_retries = 0 }, function(sk)
        local t0 = clock()
        fails("timeout", sk.organizations:get("trickle"))
        local took = clock() - t0
        assert.is_true(took >= 0.45 and took < 2, "took " .. took)
      end)
    end)

    it("a slow fake answer (delay) beyond timeout: timeout", function()
      with_fake_faults({ timeout = 0.3, max_retries = 0 }, { { match = "/api/", delay = 1 } }, function(sk)
        fails("timeout", sk:call(LIST, {}))
      end)
    end)

    it("a slow chunked answer (chunk_delay) beyond timeout: timeout", function()
      srv:seed{ organizations = 3 }
      with_fake_faults({ timeout = 0.4, max_retries = 0 },
                       { { match = "/api/", chunked = true, chunk_size = 8, chunk_delay = 0.1 } }, function(sk)
        fails("timeout", sk:call(LIST, {}))
      end)
    end)
  end)

  describe("broken answers", function()
    it("closes mid-body: network, retried for GET", function()
      with_raw({ max_retries = 2 }, function(sk)
        local err = fails("network", sk.organizations:get("close_mid_body"))
        assert.matches("remaining", err.message)
        assert.equal(3, raw_count("/close_mid_body$"))
      end)
    end)

    it("truncated chunked body: network", function()
      raw_fails("network", "truncated_chunked")
    end)

    it("closes without answering (fake `close`, raw empty reply): network", function()
      -- two: libcurl re-sends once by itself when a reused connection was dead
      with_fake_faults({ max_retries = 0 }, { { match = "/api/", close = true, count = 2 } }, function(sk)
        fails("network", sk:call(LIST, {}))
      end)
      assert.matches("[Ee]mpty reply", raw_fails("network", "empty_reply").message)
    end)

    it("bytes that are not HTTP: network", function()
      raw_fails("network", "garbage")
    end)

    it("a 200 KiB header line: network (libcurl's header limit)", function()
      raw_fails("network", "huge_header")
    end)

    it("conflicting Content-Length headers: never a success", function()
      with_raw({ max_retries = 0 }, function(sk)
        -- libcurl 7.88 keeps the last length (a truncated body: decode); newer versions
        -- refuse the answer (network). Either way, not a result.
        local res, err = sk.organizations:get("bad_length")
        assert.is_nil(res)
        assert.is_true(errors.is(err, "decode") or errors.is(err, "network"), tostring(err))
      end)
    end)

    it("a 5000-byte x-request-id is cut to 512 bytes", function()
      local err = raw_fails("http", "long_request_id")
      assert.equal(500, err.status)
      assert.equal(string.rep("r", 512), err.request_id)
    end)

    it("100 Continue then 200: the headers of the 1xx block are forgotten", function()
      local h = core.http{ timeout = 2 }
      local st, body, retry_after, request_id = h:request("GET", rs.url .. "/raw/continue")
      assert.equal(200, st)
      assert.equal('{"id":"ok","display_name":"raw"}', body)
      assert.is_nil(retry_after)
      assert.is_nil(request_id)
      h:close()
      local sk = raw_client{ max_retries = 0 }
      assert.equal("ok", assert(sk.organizations:get("continue")).id)
      sk:close()
    end)

    it("HTTP/1.0 and HTTP/1.1 close-delimited answers are read to the end", function()
      local sk = raw_client{ max_retries = 0 }
      for _, name in ipairs({ "http10", "http11_close", "http10" }) do
        local res, err = sk.organizations:get(name)
        assert.is_nil(err, name .. ": " .. tostring(err))
        assert.same({ id = "ok", display_name = "raw" }, res)
        raw_usable(sk)
      end
      sk:close()
    end)
  end)

  describe("bodies", function()
    it("a 1 MiB JSON answer is accepted (fake and raw)", function()
      local blob = string.rep("y", 1024 * 1024)
      with_fake_faults({ max_retries = 0 },
        { { match = "/api/", body = '{"organizations":[],"blob":"' .. blob .. '"}' } }, function(sk)
        local res, err = sk:call(LIST, {})
        assert.is_nil(err, tostring(err))
        assert.equal(blob, res.blob)
      end)
      local rk = raw_client{ max_retries = 0 }
      local r2 = assert(rk.organizations:get("big"))
      assert.equal(1024 * 1024, #r2.blob)
      rk:close()
    end)

    it("an answer over max_body_size: network, and the client goes on", function()
      local sk = raw_client{ max_body_size = 64 * 1024, max_retries = 0 }
      local err = fails("network", sk.organizations:get("big"))
      assert.matches("max_body_size", err.message)
      raw_usable(sk)
      sk:close()
      local h = core.http{ max_body_size = 4096 }
      local st, kind, msg = h:request("GET", rs.url .. "/raw/big")
      assert.is_nil(st)
      assert.equal("network", kind)
      assert.equal("response body larger than max_body_size (4096 bytes)", msg)
      assert.equal(200, (h:request("GET", rs.url .. "/raw/ok")))
      h:close()
    end)

    local BODIES = {
      { "invalid JSON", { invalid_json = true } },
      { "HTML", { body = "<html><body>502 Bad Gateway</body></html>" } },
      { "truncated JSON", { body = '{"organizations": [' } },
    }
    for _, case in ipairs(BODIES) do
      it("200 with " .. case[1] .. ": decode, with the status", function()
        local f = { match = "/api/" }
        for k, v in pairs(case[2]) do f[k] = v end
        with_fake_faults({ max_retries = 0 }, { f }, function(sk)
          local err = fails("decode", sk:call(LIST, {}))
          assert.equal(200, err.status)
          assert.is_false(err.retryable)
        end)
      end)
    end

    it("200 with an empty body: {} (README: an empty answer gives {})", function()
      with_fake_faults({ max_retries = 0 }, { { match = "/api/", empty_body = true } }, function(sk)
        local res, err = sk:call(LIST, {})
        assert.is_nil(err)
        assert.same({}, res)
      end)
    end)

    -- Scalekit answers JSON objects only; a scalar or null must not come back as a
    -- "result" (cjson.null is truthy: `if res then res.id` would raise).
    for _, text in ipairs({ "null", "42", '"text"' }) do
      it("200 with the JSON value " .. text .. ": decode, not a result", function()
        with_fake_faults({ max_retries = 0 }, { { match = "/api/", body = text } }, function(sk)
          local res, err = sk:call("OrganizationService_GetOrganization", { id = "org_x" })
          assert.is_nil(res, "got a " .. type(res) .. " as the result")
          assert.is_true(errors.is(err, "decode"), tostring(err))
        end)
      end)
    end

    local ERROR_BODIES = {
      { "invalid JSON", "{\"code\": 13, \"message\": <oops" },
      { "an empty body", "" },
      { "HTML", "<html>Internal Server Error</html>" },
    }
    for _, case in ipairs(ERROR_BODIES) do
      it("500 with " .. case[1] .. ": http 500, retryable, not retried automatically", function()
        with_fake_faults({ max_retries = 3 },
          { { match = "/api/", status = 500, body = case[2], count = 5 } }, function(sk)
          local err = fails("http", sk:call(LIST, {}))
          assert.equal(500, err.status)
          assert.is_true(err.retryable)
          assert.is_nil(err.code)
          assert.matches("^HTTP 500", err.message)
          assert.equal(1, api_count())
        end)
      end)
    end

    it("503 with a non-JSON body: retried max_retries times, then http 503", function()
      with_fake_faults({ max_retries = 2 },
        { { match = "/api/", status = 503, body = "upstream down", count = 10 } }, function(sk)
        local err = fails("http", sk:call(LIST, {}))
        assert.equal(503, err.status)
        assert.equal(3, api_count())
      end)
    end)
  end)

  describe("redirects", function()
    for _, status in ipairs({ 301, 302, 303, 307, 308 }) do
      it(status .. " is returned as an http error, never followed, the Bearer never sent elsewhere", function()
        local target = rs.url .. "/api/v1/organizations/landing"
        with_fake_faults({ max_retries = 3 },
          { { match = "/api/", status = status, body = "", headers = { Location = target } } }, function(sk)
          local err = fails("http", sk:call("OrganizationService_GetOrganization", { id = "org_1" }))
          assert.equal(status, err.status)
          assert.is_false(err.retryable)
          assert.equal(1, api_count())
          assert.same({}, rs:requests())
        end)
      end)
    end

    it("a redirect of the token endpoint never carries the client secret away", function()
      local sk = fake_client{ max_retries = 3 }
      srv:faults{ { match = "/oauth/token", status = 307, body = "",
                    headers = { Location = rs.url .. "/oauth/token" } } }
      local err = fails("auth", sk:token())
      assert.equal(307, err.status)
      assert.same({}, rs:requests())
      fake_usable(sk)
      sk:close()
    end)

    it("a redirect to the same host is not followed either", function()
      with_fake_faults({ max_retries = 0 }, { { match = "/api/", status = 302, body = "",
                                                headers = { Location = "/api/v1/organizations?page_size=1" } } },
                       function(sk)
        local err = fails("http", sk:call("OrganizationService_GetOrganization", { id = "org_1" }))
        assert.equal(302, err.status)
        assert.equal(1, api_count())
      end)
    end)
  end)

  describe("TLS", function()
    local function tls_client(name, ca_file)
      return assert(scalekit.new{
        environment_url = rs.tls_url[name], client_id = "skc_raw", client_secret = SECRET,
        ca_file = ca_file, max_retries = 1, retry_backoff = 0.01, retry_backoff_max = 0.01,
        timeout = 3,
      })
    end

    local function port_of(url) return tonumber(url:match(":(%d+)$")) end

    local function requests_on(name)
      local n, port = 0, port_of(rs.tls_url[name])
      for _, r in ipairs(rs:requests()) do
        if r.port == port then n = n + 1 end
      end
      return n
    end

    it("a certificate from a CA given in ca_file is accepted", function()
      local sk = tls_client("good", rs.ca_file)
      assert.equal("ok", assert(sk.organizations:get("ok_https")).id)
      sk:close()
    end)

    it("an unknown CA (system bundle only) is rejected: tls, nothing sent", function()
      local sk = tls_client("good", nil)
      local err = fails("tls", sk:token())
      assert.matches("certificate", err.message)
      assert.equal(0, requests_on("good"))
      sk:close()
    end)

    it("a self-signed certificate: tls, unless ca_file trusts it", function()
      local sk = tls_client("self_signed", nil)
      fails("tls", sk:token())
      fails("tls", sk.organizations:create{ display_name = "x" })
      sk:close()
      sk = tls_client("self_signed", rs.ca_file)
      fails("tls", sk:token())
      sk:close()
      assert.equal(0, requests_on("self_signed"))
      sk = tls_client("self_signed", rs.self_signed_file)
      assert.equal("ok", assert(sk.organizations:get("ok_https")).id)
      sk:close()
    end)

    -- server name, title, what the message says once the CA is trusted
    for _, case in ipairs({
      { "expired", "an expired certificate: tls, even when its CA is trusted", "expired" },
      { "wrong_host", "a certificate for another host: always tls", "host" },
    }) do
      it(case[2], function()
        for _, ca in ipairs({ false, rs.ca_file }) do
          local sk = tls_client(case[1], ca or nil)
          local err = fails("tls", sk:token())
          if ca then assert.matches(case[3], err.message) end
          sk:close()
        end
        assert.equal(0, requests_on(case[1]))
      end)
    end

    it("one core.http handle: refusals, then a good server", function()
      local h = core.http{ ca_file = rs.ca_file, timeout = 3 }
      for _, name in ipairs({ "expired", "wrong_host", "self_signed" }) do
        local st, kind, _, sent = h:request("GET", rs.tls_url[name] .. "/raw/ok", nil, "json", "tok")
        assert.is_nil(st)
        assert.equal("tls", kind)
        assert.is_false(sent)
      end
      assert.equal(200, (h:request("GET", rs.tls_url.good .. "/raw/ok", nil, "json", "tok")))
      h:close()
    end)
  end)

  describe("429 storms", function()
    it("without Retry-After: max_retries + 1 attempts, then http 429", function()
      with_fake_faults({ max_retries = 3 }, { { match = "/api/", status = 429, count = 100 } }, function(sk)
        local err = fails("http", sk:call(LIST, {}))
        assert.equal(429, err.status)
        assert.is_true(err.retryable)
        assert.is_nil(err.retry_after)
        assert.equal(4, api_count())
      end)
    end)

    it("with Retry-After: honoured, max_retries + 1 attempts, err.retry_after", function()
      with_fake_faults({ max_retries = 2 },
        { { match = "/api/", status = 429, retry_after = "0.2", count = 100 } }, function(sk)
        local t0 = clock()
        local err = fails("http", sk:call(LIST, {}))
        local took = clock() - t0
        assert.equal(429, err.status)
        assert.equal(0.2, err.retry_after)
        assert.equal(3, api_count())
        assert.is_true(took >= 0.38, "took " .. took)
      end)
    end)

    it("POST is retried on 429 too (the server refused before doing anything)", function()
      with_fake_faults({ max_retries = 2 }, { { match = "/api/", status = 429, count = 100 } }, function(sk)
        fails("http", sk.organizations:create{ display_name = "storm" })
        assert.equal(3, api_count())
      end)
    end)

    -- Retry-After: 0 is what many rate limiters send; it must count as a retry like
    -- any other (session.lua used 0 as its "401 renewal" marker: unbounded retries).
    for _, op in ipairs({ "GET", "POST" }) do
      it("Retry-After: 0 storm (" .. op .. "): still max_retries + 1 attempts", function()
        with_fake_faults({ max_retries = 2 },
          { { match = "/api/", status = 429, retry_after = 0, count = 50 } }, function(sk)
          local before = srv:stats().api_requests
          if op == "GET" then
            fails("http", sk:call(LIST, {}))
          else
            fails("http", sk.organizations:create{ display_name = "storm" })
          end
          assert.equal(3, srv:stats().api_requests - before)
        end)
      end)
    end

    it("a Retry-After longer than retry_after_max: one attempt, err.retry_after", function()
      with_fake_faults({ max_retries = 3, retry_after_max = 5 },
        { { match = "/api/", status = 429, retry_after = 3600, count = 100 } }, function(sk)
        local t0 = clock()
        local err = fails("http", sk:call(LIST, {}))
        assert.is_true(clock() - t0 < 1)
        assert.equal(3600, err.retry_after)
        assert.equal(1, api_count())
      end)
    end)

    it("on the token endpoint: max_retries + 1 attempts, http 429 (not auth)", function()
      local sk = fake_client{ max_retries = 2 }
      srv:faults{ { match = "/oauth/token", status = 429, count = 100 } }
      local err = fails("http", sk:token())
      assert.equal(429, err.status)
      assert.equal(3, helpers.count_requests(srv, "^/oauth/token"))
      fake_usable(sk)
      sk:close()
    end)

    it("a storm that ends within the retries: success", function()
      local sk = fake_client{ max_retries = 3 }
      assert(sk:token())
      srv:faults{ { match = "/api/", status = 429, retry_after = 0, count = 3 } }
      local res, err = sk:call(LIST, {})
      assert.is_nil(err, tostring(err))
      assert.is_table(res)
      assert.equal(4, api_count())
      sk:close()
    end)
  end)
end)
