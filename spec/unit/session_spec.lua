-- scalekit.session without sockets: a scripted transport (one answer or transport
-- error per attempt, every request recorded), a sleep that records its delays and
-- the C token vault; built with session.new(cfg, env, secrets) as scalekit.new does.
require "spec.support.client" -- package paths for this runtime
local session = require "scalekit.session"
local config = require "scalekit.config"
local errors = require "scalekit.errors"
local core = require "scalekit.core"

local TOKEN_OK = { 200, '{"access_token":"tok1","expires_in":3600}' }
local function token_ok(name) return { 200, '{"access_token":"' .. name .. '","expires_in":3600}' } end
local OK = { 200, '{"ok":true}' }

-- A session whose transport answers `script` in order; returns it, the request log
-- and the recorded sleeps.
local function new(script, opts)
  local o = { environment_url = "https://acme.example", client_id = "skc_1", client_secret = "s3cret",
              retry_backoff = 0.1, retry_backoff_max = 0.3, max_retries = 3, retry_after_max = 5 }
  for k, v in pairs(opts or {}) do o[k] = v end
  local log, sleeps, n = {}, {}, 0
  local transport = {
    request = function(_, method, url, body, ctype, bearer)
      n = n + 1
      log[n] = { method = method, url = url, body = body, ctype = ctype, bearer = bearer,
                 token = url:find("/oauth/token$") ~= nil }
      local a = assert(script[n], "no scripted answer for attempt " .. n)
      if a.err then return nil, errors.from_transport(a.err, "scripted " .. a.err, a.sent, false) end
      return { status = a[1], body = a[2] or "", retry_after = a.retry_after, request_id = "rid" .. n }
    end,
    stats = function() return { requests = n } end,
    close = function() end,
  }
  local env = { transport = transport, store = core.token_vault(), flight = session.DIRECT,
                sleep = function(s) sleeps[#sleeps + 1] = s end }
  local secrets = { token_form = function() return "grant_type=client_credentials" end,
                    client_form = function() return "" end,
                    redact = function(text) return (text:gsub("s3cret", "[redacted]")) end }
  return session.new(config.validate(o), env, secrets), log, sleeps, env.store
end

local function count(log, token)
  local c = 0
  for _, r in ipairs(log) do if r.token == token then c = c + 1 end end
  return c
end

describe("session (scripted transport)", function()
  it("fetches the token once and reuses it", function()
    local s, log = new({ TOKEN_OK, OK, OK, OK })
    for _ = 1, 3 do assert.same({ ok = true }, s:request("GET", "/api/v1/x", nil, "Op", nil, true)) end
    assert.equal(1, count(log, true))
    assert.equal("POST", log[1].method)
    assert.equal("https://acme.example/oauth/token", log[1].url)
    assert.equal("form", log[1].ctype)
    assert.is_nil(log[1].bearer)
    for i = 2, 4 do assert.equal("tok1", log[i].bearer) end
    local tok, exp = s:token()
    assert.equal("tok1", tok)
    assert.is_true(math.abs(exp - (os.time() + 3600)) < 5)
  end)

  it("retries a GET with backoff inside its bounds, then succeeds", function()
    local s, log, sleeps = new({ TOKEN_OK, { 503 }, { 502 }, { 504 }, OK })
    assert.same({ ok = true }, s:request("GET", "/x", nil, "Op", nil, true))
    assert.equal(4, count(log, false))
    assert.equal(3, #sleeps)
    -- equal jitter over min(max, base * 2^n): [d/2, d]
    local caps = { 0.1, 0.2, 0.3 }
    for i, d in ipairs(caps) do
      assert.is_true(sleeps[i] >= d / 2 and sleeps[i] <= d, i .. ": " .. sleeps[i])
    end
  end)

  it("gives up after max_retries with the last error, retryable", function()
    local s, log, sleeps = new({ TOKEN_OK, { 503 }, { 503 }, { 503 } }, { max_retries = 2 })
    local res, err = s:request("GET", "/x", nil, "Op", nil, true)
    assert.is_nil(res)
    assert.equal(503, err.status)
    assert.is_true(err.retryable)
    assert.equal("Op", err.operation)
    assert.equal("rid4", err.request_id)
    assert.equal(3, count(log, false))
    assert.equal(2, #sleeps)
  end)

  it("honours Retry-After, and returns at once when it exceeds retry_after_max", function()
    local s, _, sleeps = new({ TOKEN_OK, { 429, "", retry_after = "2" }, OK })
    assert.truthy(s:request("GET", "/x", nil, "Op", nil, true))
    assert.same({ 2 }, sleeps)
    local log
    s, log, sleeps = new({ TOKEN_OK, { 429, "", retry_after = "120" } })
    local res, err = s:request("GET", "/x", nil, "Op", nil, true)
    assert.is_nil(res)
    assert.equal(429, err.status)
    assert.equal(120, err.retry_after)
    assert.equal(1, count(log, false))
    assert.same({}, sleeps)
  end)

  -- POST: { scripted failure, attempts }: retried only on 429 or when it never left
  local POST_CASES = {
    { "503", { 503 }, 1 }, { "500", { 500 }, 1 }, { "429", { 429 }, 2 },
    { "a sent network error", { err = "network", sent = true }, 1 },
    { "a sent timeout", { err = "timeout", sent = true }, 1 },
    { "an unsent network error", { err = "network", sent = false }, 2 },
  }
  for _, c in ipairs(POST_CASES) do
    it("retries a POST after " .. c[1] .. ": " .. (c[3] == 2 and "yes" or "no"), function()
      local s, log = new({ TOKEN_OK, c[2], OK })
      local res, err = s:request("POST", "/x", "{}", "Create", nil, true)
      assert.equal(c[3], count(log, false), tostring(err))
      assert.equal(c[3] == 2, res ~= nil)
    end)
  end

  it("retries a GET after a sent network error", function()
    local s, log = new({ TOKEN_OK, { err = "network", sent = true }, OK })
    assert.truthy(s:request("GET", "/x", nil, "Op", nil, true))
    assert.equal(2, count(log, false))
  end)

  it("on a 401 renews the token once and retries at once", function()
    local s, log, sleeps = new({ TOKEN_OK, { 401 }, token_ok("tok2"), OK })
    assert.same({ ok = true }, s:request("GET", "/x", nil, "Op", nil, true))
    assert.equal("tok1", log[2].bearer)
    assert.equal("tok2", log[4].bearer)
    assert.same({}, sleeps)
  end)

  it("never loops on repeated 401s", function()
    local s, log = new({ TOKEN_OK, { 401, '{"code":16,"details":[{"error_code":"UNAUTHENTICATED"}]}' },
                         token_ok("tok2"), { 401, '{"code":16,"details":[{"error_code":"UNAUTHENTICATED"}]}' } })
    local res, err = s:request("GET", "/x", nil, "Op", nil, true)
    assert.is_nil(res)
    assert.equal("http", err.kind)
    assert.equal(401, err.status)
    assert.equal("UNAUTHENTICATED", err.error_code)
    assert.equal(2, count(log, true))
    assert.equal(2, count(log, false))
  end)

  it("turns a refused token request into 'auth' and retries a failing token endpoint", function()
    local s = new({ { 401, '{"error":"invalid_client"}' } })
    local tok, err = s:token()
    assert.is_nil(tok)
    assert.equal("auth", err.kind)
    assert.equal("invalid_client", err.error_code)
    local log, sleeps
    s, log, sleeps = new({ { 503 }, { err = "network", sent = true }, TOKEN_OK })
    assert.equal("tok1", s:token())
    assert.equal(3, #log)
    assert.equal(2, #sleeps)
  end)

  it("keeps a still-valid token when its refresh ahead of expiry fails", function()
    local s, log, _, store = new({ { 503 }, OK }, { max_retries = 0 })
    store:set("old", 100, 99.99) -- due for refresh in 10 ms, valid for 100 s
    core.sleep(0.02)
    assert.same({ ok = true }, s:request("GET", "/x", nil, "Op", nil, true))
    assert.equal(1, count(log, true))
    assert.equal("old", log[2].bearer)
    -- and a refresh that works replaces it
    s, log, _, store = new({ token_ok("new"), OK })
    store:set("old", 100, 99.99)
    core.sleep(0.02)
    assert.truthy(s:request("GET", "/x", nil, "Op", nil, true))
    assert.equal("new", log[2].bearer)
  end)

  it("reports bodies that are not JSON objects as 'decode', an empty 2xx body as {}", function()
    for _, body in ipairs({ "not json", "42", '"s"', "null" }) do
      local s = new({ { 200, body } })
      local res, err = s:request("GET", "/x", nil, "Op")
      assert.is_nil(res)
      assert.equal("decode", err.kind)
      assert.equal(200, err.status)
      assert.equal("rid1", err.request_id)
    end
    assert.same({}, new({ { 200, "" } }):request("GET", "/x", nil, "Op"))
    assert.same({ 1, 2 }, new({ { 200, "[1,2]" } }):request("GET", "/x", nil, "Op"))
    for _, body in ipairs({ "{}", '{"access_token":""}', '{"access_token":"a b"}', "oops" }) do
      local tok, err = new({ { 200, body } }):token()
      assert.is_nil(tok)
      assert.equal("decode", err.kind, body)
    end
  end)

  it("sends no bearer without opts.bearer and fetches no token", function()
    local s, log = new({ OK })
    assert.truthy(s:request("GET", "/keys", nil, "jwks"))
    assert.equal(1, #log)
    assert.is_nil(log[1].bearer)
    assert.equal("https://acme.example/keys", log[1].url)
  end)
end)
