-- scalekit.errors: the error values, from_response / from_transport, the retry rule,
-- the token endpoint's kinds, Retry-After parsing and misuse at the caller's line.
require "spec.support.client" -- package paths for this runtime
local errors = require "scalekit.errors"
local cjson = require "cjson"

describe("scalekit.errors", function()
  it("new, is, __tostring and __concat", function()
    local e = errors.new("http", "not found", { status = 404, error_code = "NOT_FOUND", request_id = "r1",
                                                operation = "Op" })
    assert.is_true(errors.is(e))
    assert.is_true(errors.is(e, "http"))
    assert.is_false(errors.is(e, "network"))
    assert.is_false(errors.is({ kind = "http" }))
    assert.is_false(errors.is("http"))
    assert.is_false(e.retryable)
    assert.equal("scalekit: http error in Op (HTTP 404): not found [NOT_FOUND] request_id=r1", tostring(e))
    assert.equal(tostring(e) .. "!", e .. "!")
    assert.equal("<" .. tostring(e), "<" .. e)
    assert.equal("scalekit: timeout error: slow", tostring(errors.new("timeout", "slow", { retryable = true })))
    assert.is_true(errors.new("timeout", "slow", { retryable = true }).retryable)
  end)

  it("from_response reads Scalekit's error body", function()
    local body = cjson.encode{ code = 5, message = "organization not found",
                               details = { { note = "x" }, { error_code = "NOT_FOUND" } } }
    local e = errors.from_response(404, body, { request_id = "r2", operation = "Get" })
    assert.equal("http", e.kind)
    assert.equal(404, e.status)
    assert.equal(5, e.code)
    assert.equal("NOT_FOUND", e.error_code)
    assert.equal("organization not found", e.message)
    assert.equal(2, #e.details)
    assert.equal("r2", e.request_id)
    assert.equal("Get", e.operation)
    assert.is_false(e.retryable)
  end)

  it("from_response reads the OAuth error body, and falls back on the status", function()
    local e = errors.from_response(401, '{"error":"invalid_client","error_description":"bad client"}')
    assert.equal("invalid_client", e.error_code)
    assert.equal("bad client", e.message)
    assert.equal("invalid_grant", errors.from_response(400, '{"error":"invalid_grant"}').message)
    assert.equal("HTTP 502 (non-JSON body)", errors.from_response(502, "<html>").message)
    assert.equal("HTTP 503", errors.from_response(503, "").message)
    assert.equal("HTTP 500", errors.from_response(500, '{"code":null,"message":null,"details":null}').message)
    assert.is_true(errors.from_response(429, "").retryable)
    assert.is_true(errors.from_response(500, "").retryable)
    assert.is_false(errors.from_response(400, "").retryable)
    assert.equal("auth", errors.from_response(401, "", { kind = "auth" }).kind)
    assert.equal(7, errors.from_response(429, "", { retry_after = 7 }).retry_after)
  end)

  it("from_transport: sent, and retryable unless permanent or tls", function()
    local e = errors.from_transport("network", "refused", false, false)
    assert.equal("network", e.kind)
    assert.is_false(e.sent)
    assert.is_true(e.retryable)
    assert.is_true(errors.from_transport("timeout", "slow", 1, false).sent)
    assert.is_true(errors.from_transport("timeout", "slow", true, false).retryable)
    assert.is_false(errors.from_transport("network", "bad url", false, true).retryable)
    assert.is_false(errors.from_transport("tls", "bad cert", false, false).retryable)
  end)

  local function http(status) return errors.from_response(status, "") end
  local function net(sent) return errors.from_transport("network", "x", sent, false) end
  -- method -> statuses retried, statuses not retried, retried after a sent network error
  local RULES = {
    GET = { { 429, 502, 503, 504 }, { 400, 401, 404, 500 }, true },
    PUT = { { 429, 502, 503, 504 }, { 400, 401, 404, 500 }, true },
    DELETE = { { 429, 502, 503, 504 }, { 400, 401, 404, 500 }, true },
    HEAD = { { 429, 502, 503, 504 }, { 400, 401, 404, 500 }, true },
    POST = { { 429 }, { 400, 401, 500, 502, 503, 504 }, false },
    PATCH = { { 429 }, { 400, 401, 500, 502, 503, 504 }, false },
  }
  for _, m in ipairs({ "GET", "PUT", "DELETE", "HEAD", "POST", "PATCH" }) do
    it("should_retry: " .. m .. " for each status and sent", function()
      local rule = RULES[m]
      for _, st in ipairs(rule[1]) do assert.is_true(errors.should_retry(http(st), m), m .. " " .. st) end
      for _, st in ipairs(rule[2]) do assert.is_false(errors.should_retry(http(st), m), m .. " " .. st) end
      assert.equal(rule[3], errors.should_retry(net(true), m))
      assert.is_true(errors.should_retry(net(false), m))
    end)
  end

  it("should_retry: the idempotent override, and tls never", function()
    -- a POST that creates nothing is retried like a GET, and a GET declared
    -- non-idempotent is not
    assert.is_true(errors.should_retry(http(503), "POST", true))
    assert.is_true(errors.should_retry(net(true), "POST", true))
    assert.is_false(errors.should_retry(http(503), "GET", false))
    assert.is_false(errors.should_retry(errors.from_transport("tls", "x", false, false), "GET"))
  end)

  it("token_endpoint: a 4xx other than 429 is 'auth', the rest keeps its kind", function()
    for _, s in ipairs({ 400, 401, 403 }) do
      assert.equal("auth", errors.token_endpoint(errors.from_response(s, "")).kind)
    end
    for _, s in ipairs({ 429, 500, 503 }) do
      assert.equal("http", errors.token_endpoint(errors.from_response(s, "")).kind)
    end
    local e = errors.from_transport("timeout", "x", true, false)
    assert.equal(e, errors.token_endpoint(e))
    assert.equal("timeout", e.kind)
  end)

  it("parse_retry_after: seconds and HTTP dates", function()
    local now = 784111777 -- Sun, 06 Nov 1994 08:49:37 GMT
    assert.equal(120, errors.parse_retry_after("120"))
    assert.equal(0, errors.parse_retry_after("0"))
    assert.equal(1.5, errors.parse_retry_after("1.5"))
    assert.is_nil(errors.parse_retry_after("-1"))
    assert.is_nil(errors.parse_retry_after(nil))
    assert.is_nil(errors.parse_retry_after("soon"))
    assert.is_nil(errors.parse_retry_after("Sun, 06 Foo 1994 08:49:37 GMT", now))
    assert.equal(10, errors.parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now))
    assert.equal(0, errors.parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now))
    assert.equal(86400, errors.parse_retry_after("Mon, 07 Nov 1994 08:49:37 GMT", now))
    assert.equal(31 * 86400, errors.parse_retry_after("Thu, 01 Feb 2024 00:00:00 GMT", 1704067200))
  end)

  it("misuse raises at the caller's line, and new refuses unknown kinds", function()
    local line = debug.getinfo(1, "l").currentline + 1
    local ok, msg = pcall(function() errors.misuse("bad %s", "thing") end)
    assert.is_false(ok)
    assert.equal("spec/unit/errors_spec.lua:" .. line .. ": scalekit: bad thing", msg:match("spec/unit/.*$"))
    line = debug.getinfo(1, "l").currentline + 1
    ok, msg = pcall(function() errors.new("oops", "x") end)
    assert.is_false(ok)
    assert.truthy(msg:find("errors_spec.lua:" .. line .. ": scalekit: errors.new: unknown error kind oops",
                           1, true), msg)
  end)
end)
