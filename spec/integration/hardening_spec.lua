-- What a broken server and a careless caller still got through (issue 15), each
-- reproduced against the fake Scalekit: non-finite numbers from the server, large
-- integers, echoed secrets and tokens, control characters in tostring.
local helpers = require "spec.support.client"
local server = require "spec.support.fake"
local errors = require "scalekit.errors"

local mtype = rawget(math, "type")

describe("hardening", function()
  local srv = server.for_suite(setup, teardown, { workers = 1 })
  before_each(function() srv:clear_faults() end)

  local function last_request(pattern)
    local last
    for _, r in ipairs(srv:requests()) do
      if r.path:find(pattern) then last = r end
    end
    return last
  end

  describe("non-finite and non-JSON numbers from the server", function()
    for _, case in ipairs({
      { "NaN", '{"access_token":"tok_nan","expires_in":NaN}' },
      { "Infinity", '{"access_token":"tok_inf","expires_in":Infinity}' },
      { "hex", '{"access_token":"tok_hex","expires_in":0x7fffffff}' },
    }) do
      it("a token endpoint answering expires_in " .. case[1] .. " gives nil, err (decode), never a raise", function()
        local sk = helpers.new_client(srv, { max_retries = 0 })
        srv:faults{ { match = "/oauth/token", status = 200, body = case[2], count = 3 } }
        local ok, token, err = pcall(sk.token, sk)
        assert.is_true(ok, tostring(token))
        assert.is_nil(token)
        assert.equal("decode", err.kind)
        local ok2, res, err2 = pcall(sk.call, sk, "OrganizationService_ListOrganization", {})
        assert.is_true(ok2, tostring(res))
        assert.is_nil(res)
        assert.is_true(errors.is(err2, "decode"))
        sk:close()
      end)
    end

    it("a JSON lifetime that is not a usable number (1e999, -5, 10 years) falls back to an hour", function()
      for _, v in ipairs({ "1e999", "-5", "315360000" }) do
        local sk = helpers.new_client(srv)
        srv:faults{ { match = "/oauth/token", status = 200,
                      body = '{"access_token":"tok_x","expires_in":' .. v .. '}' } }
        local token, expires_at = sk:token()
        assert.equal("tok_x", token, v)
        assert.truthy(math.abs(expires_at - (os.time() + 3600)) <= 5, v)
        sk:close()
      end
    end)

    it("API answers with NaN or hex numbers are decode errors", function()
      local sk = helpers.new_client(srv)
      srv:faults{ { match = "/api/v1/organizations", status = 200, body = '{"organizations":[],"total_size":NaN}' } }
      local res, err = sk.organizations:list{}
      assert.is_nil(res)
      assert.equal("decode", err.kind)
      sk:close()
    end)
  end)

  describe("large integers and non-finite values in requests", function()
    it("writes Lua integers exactly in paths, queries and bodies (5.3+), refuses NaN and inf", function()
      local sk = helpers.new_client(srv)
      if mtype then
        local big = 9007199254740993 -- an integer literal on 5.3+
        sk:call("OrganizationService_GetOrganization", { id = big })
        assert.equal("/api/v1/organizations/9007199254740993", last_request("^/api/v1/organizations/").path)
        sk:call("OrganizationService_ListOrganization", { page_size = 1234567890123456789 })
        assert.equal("page_size=1234567890123456789", last_request("^/api/v1/organizations").query)
        -- a body integer keeps all its digits (lua-cjson alone prints 14)
        sk:call("OrganizationService_CreateOrganization",
                { body = { display_name = "Big", big_number = 1234567890123456789 }, strict = false })
        local r = last_request("^/api/v1/organizations")
        assert.truthy(r.body:find('"big_number":1234567890123456789', 1, true), r.body)
        local json_text = require("scalekit.json").encode({ n = 1234567890123456789, m = { 9007199254740993 } })
        assert.truthy(json_text:find('"n":1234567890123456789', 1, true), json_text)
        assert.truthy(json_text:find('[9007199254740993]', 1, true), json_text)
      end
      for _, v in ipairs({ 0 / 0, math.huge, -math.huge }) do
        assert.has_error(function() sk:call("OrganizationService_GetOrganization", { id = v }) end)
        assert.has_error(function() sk:call("OrganizationService_ListOrganization", { external_id = v }) end)
      end
      -- an integral double past 2^53 is not the number the caller wrote: refused, not rounded
      local ok, msg = pcall(sk.call, sk, "OrganizationService_GetOrganization", { id = 2 ^ 60 + 0.0 })
      assert.is_false(ok)
      assert.truthy(tostring(msg):find("cannot be sent exactly", 1, true), msg)
      sk:close()
    end)
  end)

  describe("secrets echoed by a server", function()
    it("never reach err.message, err.details or tostring(err)", function()
      local sk = helpers.new_client(srv, { max_retries = 0 })
      local secret = helpers.CLIENT_SECRET
      -- a token endpoint whose 400 repeats the form it was sent
      srv:faults{ { match = "/oauth/token", status = 400, body = '{"error":"invalid_request","error_description":'
        .. '"bad form: grant_type=client_credentials&client_secret=' .. secret .. '","details":[{"echo":"'
        .. secret .. '"}]}' } }
      local token, err = sk:token()
      assert.is_nil(token)
      assert.equal("auth", err.kind)
      local text = tostring(err) .. (err.message or "") .. require("cjson").encode(err.details or {})
      assert.is_nil(text:find(secret, 1, true), text)
      assert.truthy(text:find("[redacted]", 1, true), text)
      -- an API error that repeats the Authorization header
      local tok = assert(sk:token())
      srv:faults{ { match = "/api/v1/organizations", status = 403, body = '{"code":7,"message":"denied for Bearer '
        .. tok .. '","details":[{"error_code":"PERMISSION_DENIED","header":"Authorization: Bearer ' .. tok .. '"}]}' } }
      local res
      res, err = sk.organizations:list{}
      assert.is_nil(res)
      text = tostring(err) .. require("cjson").encode(err.details or {})
      assert.is_nil(text:find(tok, 1, true), text)
      assert.truthy(text:find("denied for Bearer [redacted]", 1, true), text)
      sk:close()
    end)

    it("tostring of a client escapes control characters of its configuration", function()
      local sk = helpers.new_client(srv, { client_id = "skc_a\r\nX-Injected: 1" })
      local s = tostring(sk)
      assert.is_nil(s:find("[\r\n]"), s)
      assert.truthy(s:find("skc_a\\013\\010X-Injected: 1", 1, true), s)
      sk:close()
    end)
  end)
end)
