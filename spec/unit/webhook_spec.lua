-- scalekit.webhook: Standard Webhooks verification, signatures from the openssl CLI.
require "spec.support.client" -- package paths for this runtime

local core = require "scalekit.core"
local errors = require "scalekit.errors"
local webhook = require "scalekit.auth.webhook"

-- The Standard Webhooks example vector.
local SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
local SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
local SW_TS = "1614265330"
local SW_BODY = '{"test": 2432232314}'
local SW_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

local util = require "spec.support.crypto_util"
local hex, readfile, writefile, run = util.hex, util.readfile, util.writefile, util.run

describe("scalekit.webhook", function()
  local dir = util.dir_for_suite(teardown)
  local key = "super secret key bytes \0\1\2\255 for hmac"
  local secret = "whsec_" .. core.b64encode(key)
  local NOW = 1700000000

  -- v1 signature of id.timestamp.body computed by the openssl CLI.
  local function cli_sign(id, ts, body, k)
    writefile(dir .. "/content", id .. "." .. ts .. "." .. body)
    run("openssl dgst -sha256 -mac HMAC -macopt hexkey:" .. hex(k or key) .. " -binary -out "
        .. dir .. "/mac " .. dir .. "/content")
    run("openssl base64 -A -in " .. dir .. "/mac -out " .. dir .. "/mac.b64")
    return "v1," .. readfile(dir .. "/mac.b64"):gsub("%s+$", "")
  end

  local function request(body, over)
    local ts = tostring(NOW)
    local h = {
      ["webhook-id"] = "msg_1",
      ["webhook-timestamp"] = ts,
      ["webhook-signature"] = cli_sign("msg_1", ts, body),
    }
    for k, v in pairs(over or {}) do
      if v == false then h[k] = nil else h[k] = v end
    end
    return h
  end

  local function rejects(code, body, headers, sec, opts)
    local event, err = webhook.verify(body, headers, sec or secret, opts or { now = NOW })
    assert.is_nil(event, "expected " .. code)
    assert.is_true(errors.is(err, "auth"), tostring(err))
    assert.are.equal(code, err.error_code)
    local s = tostring(err)
    assert.is_nil(s:find(core.b64encode(key), 1, true), "error leaks the secret")
    if #(sec or secret) >= 8 then
      assert.is_nil(s:find((sec or secret), 1, true), "error leaks the secret")
    end
    return err
  end

  it("verifies the Standard Webhooks example vector (tolerance disabled)", function()
    local headers = { ["webhook-id"] = SW_ID, ["webhook-timestamp"] = SW_TS, ["webhook-signature"] = SW_SIG }
    local event, err = webhook.verify(SW_BODY, headers, SW_SECRET, { tolerance = false })
    assert.is_nil(err)
    assert.are.equal(2432232314, event.test)
    assert.is_truthy(webhook.verify(SW_BODY, headers, SW_SECRET, { tolerance = 0 }))
    -- without the prefix too
    assert.is_truthy(webhook.verify(SW_BODY, headers, SW_SECRET:sub(7), { tolerance = false }))
    -- and the openssl CLI computes the same signature
    local k = core.b64decode(SW_SECRET:sub(7))
    assert.are.equal(SW_SIG, cli_sign(SW_ID, SW_TS, SW_BODY, k))
    -- with the default tolerance the 2021 timestamp is too old
    rejects("webhook_timestamp_out_of_tolerance", SW_BODY, headers, SW_SECRET, {})
    -- one changed byte of the body breaks it
    rejects("webhook_bad_signature", '{"test": 2432232315}', headers, SW_SECRET, { tolerance = false })
  end)

  it("verifies signatures computed with the openssl CLI", function()
    local body = '{"type":"organization.created","data":{"id":"org_1"}}'
    local event = assert(webhook.verify(body, request(body), secret, { now = NOW }))
    assert.are.equal("organization.created", event.type)
    assert.are.equal("org_1", event.data.id)
  end)

  it("accepts any matching v1 entry among several and ignores other versions", function()
    local body = '{"a":1}'
    local good = cli_sign("msg_1", tostring(NOW), body)
    local other = cli_sign("msg_1", tostring(NOW), body, "another key")
    local sig64 = good:sub(4)
    local lists = {
      other .. " " .. good,
      good .. " " .. other,
      "v2," .. sig64 .. "  " .. good,
      "v1a," .. sig64 .. " garbage " .. good .. " v1,",
    }
    for _, l in ipairs(lists) do
      assert.is_truthy(webhook.verify(body, request(body, { ["webhook-signature"] = l }), secret, { now = NOW }), l)
    end
    -- the right signature under another version, or none at all, is not enough
    for _, l in ipairs({ "v2," .. sig64, other, "v1" .. sig64, sig64, other .. " v0," .. sig64, "v1, " .. sig64 }) do
      rejects("webhook_bad_signature", body, request(body, { ["webhook-signature"] = l }))
    end
  end)

  it("finds headers in any case, with list values", function()
    local body = '{"a":2}'
    local h = request(body)
    local mixed = {
      ["Webhook-Id"] = h["webhook-id"],
      ["WEBHOOK-TIMESTAMP"] = { h["webhook-timestamp"] },
      ["webhook-Signature"] = { h["webhook-signature"], h["webhook-signature"] },
      ["Content-Type"] = "application/json",
    }
    assert.is_truthy(webhook.verify(body, mixed, secret, { now = NOW }))
    -- the same header twice under different case, agreeing
    mixed["webhook-id"] = h["webhook-id"]
    assert.is_truthy(webhook.verify(body, mixed, secret, { now = NOW }))
  end)

  it("rejects a header given twice with different values", function()
    local body = '{"a":3}'
    local h = request(body)
    local err = rejects("webhook_missing_header", body, request(body, { ["webhook-id"] = { "msg_1", "msg_2" } }))
    assert.matches("different values", err.message)
    h["Webhook-Timestamp"] = tostring(NOW + 1)
    rejects("webhook_missing_header", body, h)
  end)

  it("rejects missing or empty headers", function()
    local body = '{"a":4}'
    for _, name in ipairs({ "webhook-id", "webhook-timestamp", "webhook-signature" }) do
      local err = rejects("webhook_missing_header", body, request(body, { [name] = false }))
      assert.matches(name, err.message, 1, true)
      rejects("webhook_missing_header", body, request(body, { [name] = "" }))
      rejects("webhook_missing_header", body, request(body, { [name] = {} }))
      rejects("webhook_missing_header", body, request(body, { [name] = { 5 } }))
    end
    rejects("webhook_missing_header", body, {})
  end)

  it("enforces the timestamp tolerance on both sides", function()
    local body = '{"a":5}'
    local h = request(body)
    assert.is_truthy(webhook.verify(body, h, secret, { now = NOW + 300 }))
    assert.is_truthy(webhook.verify(body, h, secret, { now = NOW - 300 }))
    rejects("webhook_timestamp_out_of_tolerance", body, h, secret, { now = NOW + 301 })
    rejects("webhook_timestamp_out_of_tolerance", body, h, secret, { now = NOW - 301 })
    assert.is_truthy(webhook.verify(body, h, secret, { now = NOW + 1000, tolerance = 1000 }))
    rejects("webhook_timestamp_out_of_tolerance", body, h, secret, { now = NOW + 11, tolerance = 10 })
    assert.is_truthy(webhook.verify(body, h, secret, { now = NOW + 10 ^ 6, tolerance = false }))
    -- the real clock: a fresh timestamp passes, NOW (2023) is out of tolerance
    local fresh = tostring(os.time())
    local h2 = request(body, {
      ["webhook-timestamp"] = fresh,
      ["webhook-signature"] = cli_sign("msg_1", fresh, body),
    })
    assert.is_truthy(webhook.verify(body, h2, secret))
    rejects("webhook_timestamp_out_of_tolerance", body, h, secret, {})
  end)

  it("rejects timestamps that are not integers", function()
    local body = '{"a":6}'
    local bad = { "abc", "1700000000.5", "-1700000000", "+1700000000", " 1700000000", "1e9", "0x10",
                  "1234567890123456" }
    for _, ts in ipairs(bad) do
      local h = request(body, { ["webhook-timestamp"] = ts, ["webhook-signature"] = cli_sign("msg_1", ts, body) })
      rejects("webhook_bad_timestamp", body, h, secret, { now = NOW, tolerance = false })
    end
  end)

  it("rejects a signature made for another timestamp or id", function()
    local body = '{"a":7}'
    local h = request(body, { ["webhook-timestamp"] = tostring(NOW + 5) })
    rejects("webhook_bad_signature", body, h)
    h = request(body, { ["webhook-id"] = "msg_2" })
    rejects("webhook_bad_signature", body, h)
  end)

  it("rejects a tampered body", function()
    local body = '{"amount":100}'
    local h = request(body)
    rejects("webhook_bad_signature", '{"amount":1000}', h)
    rejects("webhook_bad_signature", body .. "\n", h)
    rejects("webhook_bad_signature", "", h)
  end)

  it("rejects a wrong or invalid secret without quoting it", function()
    local body = '{"a":8}'
    local h = request(body)
    rejects("webhook_bad_signature", body, h, "whsec_" .. core.b64encode("other key"))
    local bad = { "whsec_not base64!", "whsec_", "", "whsec_abc", "whsec_" .. core.b64url_encode("\255\254\253\252") }
    for _, s in ipairs(bad) do
      rejects("webhook_bad_secret", body, h, s)
    end
  end)

  it("returns a decode error for a validly signed non-JSON body", function()
    for _, body in ipairs({ "not json", "", "[1,2]", "42", "{broken" }) do
      local event, err = webhook.verify(body, request(body), secret, { now = NOW })
      assert.is_nil(event)
      assert.is_true(errors.is(err, "decode"), tostring(err))
      assert.is_nil(tostring(err):find(body ~= "" and body or "\0", 1, true))
    end
  end)

  it("raises on misuse", function()
    local body = '{"a":9}'
    local h = request(body)
    assert.has_error(function() webhook.verify(nil, h, secret) end)
    assert.has_error(function() webhook.verify({}, h, secret) end)
    assert.has_error(function() webhook.verify(body, nil, secret) end)
    assert.has_error(function() webhook.verify(body, h, nil) end)
    assert.has_error(function() webhook.verify(body, h, secret, "x") end)
    assert.has_error(function() webhook.verify(body, h, secret, { tolerence = 5 }) end)
    assert.has_error(function() webhook.verify(body, h, secret, { tolerance = "5" }) end)
    assert.has_error(function() webhook.verify(body, h, secret, { tolerance = true }) end)
    assert.has_error(function() webhook.verify(body, h, secret, { now = "now" }) end)
  end)

  describe("verify_interceptor_payload", function()
    it("verifies like a webhook and returns the payload", function()
      local body = '{"interceptor_context":{"trigger_point":"PRE_SIGNUP"},"data":{"user":{"email":"a@b.c"}}}'
      local payload = assert(webhook.verify_interceptor_payload(body, request(body), secret, { now = NOW }))
      assert.are.equal("PRE_SIGNUP", payload.interceptor_context.trigger_point)
      local p, err = webhook.verify_interceptor_payload(body .. " ", request(body), secret, { now = NOW })
      assert.is_nil(p)
      assert.are.equal("webhook_bad_signature", err.error_code)
      p, err = webhook.verify_interceptor_payload(body, request(body), secret, { now = NOW + 301 })
      assert.is_nil(p)
      assert.are.equal("webhook_timestamp_out_of_tolerance", err.error_code)
      assert.has_error(function() webhook.verify_interceptor_payload(1, {}, secret) end)
    end)

    -- Scalekit signs interceptor calls with interceptor-* headers (the scheme computed
    -- here by the openssl CLI, not by the code under test)
    local function interceptor_request(body, ts, over)
      ts = tostring(ts or NOW)
      local h = {
        ["Interceptor-Id"] = "icp_1",
        ["interceptor-timestamp"] = ts,
        ["interceptor-signature"] = cli_sign("icp_1", ts, body),
      }
      for k, v in pairs(over or {}) do h[k] = v end
      return h
    end

    it("verifies a request signed with the interceptor-* headers", function()
      local body = '{"trigger_point":"PRE_SESSION_CREATION","interceptor_context":{"user_email":"a@b.c"}}'
      local payload = assert(webhook.verify_interceptor_payload(body, interceptor_request(body), secret,
                                                                { now = NOW }))
      assert.are.equal("PRE_SESSION_CREATION", payload.trigger_point)
      -- the webhook verifier does not take interceptor headers for its own
      local ev, err = webhook.verify(body, interceptor_request(body), secret, { now = NOW })
      assert.is_nil(ev)
      assert.are.equal("webhook_missing_header", err.error_code)
    end)

    it("refuses a tampered, re-signed with another key, stale or unsigned interceptor request", function()
      local body = '{"trigger_point":"PRE_SIGNUP"}'
      local cases = {
        { body .. " ", interceptor_request(body), "webhook_bad_signature" },
        { body, interceptor_request(body, NOW, { ["interceptor-signature"] =
            cli_sign("icp_1", tostring(NOW), body, "another key") }), "webhook_bad_signature" },
        { body, interceptor_request(body, NOW - 301), "webhook_timestamp_out_of_tolerance" },
        { body, interceptor_request(body, NOW, { ["interceptor-signature"] = false }), "webhook_missing_header" },
      }
      for i, c in ipairs(cases) do
        local h = c[2]
        for k, v in pairs(h) do if v == false then h[k] = nil end end
        local p, err = webhook.verify_interceptor_payload(c[1], h, secret, { now = NOW })
        assert.is_nil(p, "case " .. i)
        assert.are.equal(c[3], err.error_code, "case " .. i)
      end
    end)

    it("refuses a NaN clock (it would turn the timestamp check off)", function()
      local body = '{"a":1}'
      assert.has_error(function() webhook.verify(body, request(body), secret, { now = 0 / 0 }) end)
      assert.has_error(function() webhook.verify(body, request(body), secret, { now = math.huge }) end)
    end)
  end)

  describe("interceptor_response", function()
    local json = require("cjson").new()
    it("builds the decision Scalekit expects", function()
      assert.same({ decision = "ALLOW" }, json.decode(webhook.interceptor_response("ALLOW")))
      assert.same({ decision = "DENY", error = { message = "signups closed" } },
                  json.decode(webhook.interceptor_response("DENY", { message = "signups closed" })))
      assert.same({ decision = "ALLOW", response = { claims = { tier = "gold" } } },
                  json.decode(webhook.interceptor_response("ALLOW", { response = { claims = { tier = "gold" } } })))
      assert.are.equal(require("scalekit").interceptor_response, webhook.interceptor_response)
    end)
    it("raises on a decision that is neither ALLOW nor DENY", function()
      assert.has_error(function() webhook.interceptor_response("allow") end)
      assert.has_error(function() webhook.interceptor_response("DENY", { message = 1 }) end)
    end)
  end)
end)
