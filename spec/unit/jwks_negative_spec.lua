-- scalekit.auth.jwks, issue 15: a failing /keys is fetched once per window (negative
-- cache), in one attempt, never re-fetched by the callers that waited for the failed
-- fetch, and a JWKS that is not strict JSON is never cached. The session is a stub.
require "spec.support.client" -- package paths for this runtime

local core = require "scalekit.core"
local errors = require "scalekit.errors"
local jwks = require "scalekit.auth.jwks"
local session_mod = require "scalekit.session"

-- a stub session: request() answers from `script` (a function of the call number)
local function stub(script)
  local s = { calls = 0, args = {}, jwks_cache = jwks.memory_cache(), flight = session_mod.DIRECT }
  function s:request(...)
    self.calls = self.calls + 1
    self.args[self.calls] = { n = select("#", ...), ... }
    return script(self.calls, ...)
  end
  return s
end

local function failing() return nil, errors.new("http", "HTTP 503", { status = 503, retryable = true }) end
local GOOD = { keys = {} }

local function new(s, over)
  local cfg = { jwks_ttl = 3600, jwks_refresh_interval = 30 }
  for k, v in pairs(over or {}) do cfg[k] = v end
  return jwks.new(s, cfg)
end

describe("scalekit.auth.jwks (negative cache)", function()
  it("one failure is not held against the next validation (a blip)", function()
    local s = stub(function(n) if n == 1 then return failing() end return GOOD end)
    local j = new(s)
    local key, err = j:key("k1")
    assert.is_nil(key)
    assert.are.equal(503, err.status)
    -- the next one fetches again and works
    key, err = j:key("k1")
    assert.is_nil(key)
    assert.is_nil(err)
    assert.are.equal(2, s.calls)
  end)

  it("an outage: after two failures in a row, validations fail fast (network, jwks_unavailable)", function()
    local s = stub(failing)
    local j = new(s)
    assert.is_nil((j:key("forged_1")))
    assert.is_nil((j:key("forged_2")))
    assert.are.equal(2, s.calls)
    for i = 3, 100 do
      local key, err = j:key("forged_" .. i)
      assert.is_nil(key)
      assert.is_true(errors.is(err, "network"), tostring(err))
      assert.are.equal("jwks_unavailable", err.error_code)
      assert.is_true(err.retryable)
      assert.is_true(err.retry_after >= 1)
      assert.truthy(err.message:find("HTTP 503", 1, true))
    end
    assert.are.equal(2, s.calls)
    -- the window (1 s after the second failure) ends: one more attempt, then 2 s
    core.sleep(jwks.NEGATIVE_BASE + 0.1)
    assert.is_nil((j:key("again")))
    assert.are.equal(3, s.calls)
    assert.is_nil((j:key("again")))
    assert.are.equal(3, s.calls)
  end)

  it("the window never exceeds min(NEGATIVE_MAX, jwks_refresh_interval) and a success resets the count",
     function()
    local ok_now = false
    local s = stub(function() if ok_now then return GOOD end return failing() end)
    local j = new(s, { jwks_refresh_interval = 1 })
    for _ = 1, 2 do j:key("x") end
    for _ = 1, 3 do core.sleep(1.05); j:key("x") end   -- windows capped at 1 s
    assert.are.equal(5, s.calls)
    core.sleep(1.05)
    ok_now = true
    local _, err = j:key("x")
    assert.is_nil(err)
    assert.are.equal(6, s.calls)
  end)

  it("fetches /keys in one attempt (asks the session for max_retries = 0)", function()
    local s = stub(failing)
    new(s):key("k")
    local a = s.args[1]
    assert.are.equal("GET", a[1])
    assert.are.equal("/keys", a[2])
    assert.are.same({ max_retries = 0 }, a[8])
  end)

  it("waiters of a failed fetch get its failure, they do not fetch again", function()
    -- a flight whose waiter peeks after the winner's fetch failed
    local s = stub(failing)
    s.flight = {
      run = function(_, _, fetch, peek)
        local v, e = fetch()
        assert.is_nil(v)
        -- a second caller that was waiting: peek sees the failure recorded meanwhile
        local pv, pe, fresh = peek()
        assert.is_nil(pv)
        assert.is_true(fresh)
        assert.are.equal("jwks_unavailable", pe.error_code)
        return nil, e
      end,
    }
    local _, err = new(s):key("k")
    assert.are.equal(503, err.status)
    assert.are.equal(1, s.calls)
  end)

  it("a JWKS with NaN or Infinity is a decode error and is not cached", function()
    local s = stub(function() return { keys = { { kty = "RSA", n = 0 / 0, e = math.huge } } } end)
    local j = new(s)
    local key, err = j:key("k")
    assert.is_nil(key)
    assert.is_true(errors.is(err, "decode"), tostring(err))
    local text = s.jwks_cache:get()
    assert.is_true(text == nil or text:sub(1, 1) == "\0")
  end)

  it("a failed refetch for an unknown kid keeps the JWKS we have", function()
    local s = stub(function(n) if n == 1 then return GOOD end return failing() end)
    local j = new(s, { jwks_refresh_interval = 0.1 })
    assert.is_nil(select(2, j:key("k")))
    core.sleep(0.15)
    local _, err = j:key("unknown")
    assert.are.equal(503, err.status)
    assert.are.equal('{"keys":{}}', s.jwks_cache:get():gsub("%[%]", "{}"))
  end)
end)
