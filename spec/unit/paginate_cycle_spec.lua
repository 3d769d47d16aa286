-- scalekit.paginate, issue 15: a server whose page tokens cycle, non-string tokens
-- and non-finite page counts end the loop with a decode error (never a loop forever,
-- never a plain string). The client is a stub whose call() serves scripted pages.
require "spec.support.client" -- package paths for this runtime

local errors = require "scalekit.errors"
local paginate = require "scalekit.paginate"

local LIST = "OrganizationService_ListOrganization"
local DOMAINS = "DomainService_ListDomains"

-- A stub client: `serve(params, n)` gives the page for the n-th call. Calls are
-- counted; past `max_calls` it raises (a loop that would not end).
local function stub(serve, max_calls)
  local c = { calls = 0, tokens = {} }
  function c:call(op, params) -- luacheck: ignore 212/op
    self.calls = self.calls + 1
    assert(self.calls <= (max_calls or 100000), "the iterator does not stop")
    self.tokens[self.calls] = params.page_token
    return serve(params, self.calls)
  end
  return c
end

-- pages whose next_page_token walks `seq` (after the last one: "")
local function token_seq(seq)
  return function(params, n)
    return { organizations = { { id = "org_" .. n, from = params.page_token } }, next_page_token = seq[n] or "" }
  end
end

-- a cycle: tokens t1 .. t<len>, then t1 again, forever
local function cycle_of(len, prefix)
  return function(_, n)
    return { organizations = { { id = "org_" .. n } },
             next_page_token = (prefix or "t") .. ((n - 1) % len + 1) }
  end
end

local function decode_err(err, code)
  assert.is_true(errors.is(err, "decode"), tostring(err))
  assert.are.equal(code, err.error_code, tostring(err))
  assert.are.equal(LIST, err.operation)
end

local function raised(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected the loop to raise")
  assert.is_true(errors.is(err), "raised a plain value: " .. tostring(err))
  return err
end

describe("scalekit.paginate (hostile servers)", function()
  it("a normal token walk still ends on an empty token", function()
    local c = stub(token_seq({ "a", "b", "c" }))
    local out = assert(paginate.all(c, LIST, {}))
    assert.are.equal(4, #out)
    assert.are.same({ nil, "a", "b", "c" }, c.tokens)
  end)

  it("A -> B -> A: all returns nil, page_token_cycle, before fetching A twice", function()
    local c = stub(token_seq({ "A", "B", "A", "B", "A" }), 1000)
    local out, err = paginate.all(c, LIST, {})
    assert.is_nil(out)
    decode_err(err, "page_token_cycle")
    assert.are.equal(3, c.calls)
  end)

  it("a cycle back to the caller's own starting token is a cycle", function()
    local c = stub(token_seq({ "B", "start" }), 1000)
    local out, err = paginate.all(c, LIST, { page_token = "start" })
    assert.is_nil(out)
    decode_err(err, "page_token_cycle")
  end)

  it("with limit, a cycle is an error, not duplicates", function()
    local c = stub(cycle_of(3), 1000)
    local out, err = paginate.all(c, LIST, {}, { limit = 50 })
    assert.is_nil(out)
    decode_err(err, "page_token_cycle")
    assert.are.equal(4, c.calls)
  end)

  it("each and pages raise the error table on a cycle", function()
    local c = stub(cycle_of(2), 1000)
    local err = raised(function() for _ in paginate.each(c, LIST, {}) do end end)
    decode_err(err, "page_token_cycle")
    c = stub(cycle_of(5), 1000)
    err = raised(function() for _ in paginate.pages(c, LIST, {}) do end end)
    decode_err(err, "page_token_cycle")
  end)

  it("the immediately repeated token is still detected", function()
    local c = stub(token_seq({ "x", "x" }), 1000)
    local out, err = paginate.all(c, LIST, {})
    assert.is_nil(out)
    assert.is_true(errors.is(err, "decode"))
  end)

  it("cycles longer than the window of remembered tokens end too (bounded memory)", function()
    local len = paginate.SEEN_TOKENS * 3 + 7
    local c = stub(cycle_of(len, "long"), len * 10)
    local out, err = paginate.all(c, LIST, {})
    assert.is_nil(out)
    decode_err(err, "page_token_cycle")
    -- found within a few turns of the cycle
    assert.is_true(c.calls <= len * 4, c.calls)
  end)

  it("a long walk of distinct tokens is not a cycle", function()
    local n = paginate.SEEN_TOKENS * 4
    local seq = {}
    for i = 1, n do seq[i] = "p" .. i end
    local out = assert(paginate.all(stub(token_seq(seq)), LIST, {}))
    assert.are.equal(n + 1, #out)
  end)

  it("a non-string next_page_token is a decode error table, not a misuse string", function()
    for _, bad in ipairs({ 42, true, { "a" }, 0 / 0 }) do
      local c = stub(function() return { organizations = { {} }, next_page_token = bad } end, 10)
      local out, err = paginate.all(c, LIST, {})
      assert.is_nil(out)
      decode_err(err, "page_token_invalid")
      local rerr = raised(function() for _ in paginate.each(c, LIST, {}) do end end)
      decode_err(rerr, "page_token_invalid")
      rerr = raised(function() for _ in paginate.pages(c, LIST, {}) do end end)
      decode_err(rerr, "page_token_invalid")
    end
  end)

  it("an oversized next_page_token is a decode error", function()
    local c = stub(function() return { organizations = {}, next_page_token = string.rep("t", 100000) } end, 10)
    local out, err = paginate.all(c, LIST, {})
    assert.is_nil(out)
    decode_err(err, "page_token_invalid")
  end)

  describe("page_number paging (domains)", function()
    local function domain_pages(total, size)
      return function(_, n)
        return { domains = { { id = "d" .. n }, { id = "e" .. n } }, total_size = total, page_size = size }
      end
    end

    it("stops on total_size (a number, or an int64 as a digit string)", function()
      for _, total in ipairs({ 6, "6" }) do
        local c = stub(domain_pages(total), 100)
        local out = assert(paginate.all(c, DOMAINS, { organization_id = "org_1" }))
        assert.are.equal(6, #out)
      end
    end)

    it("a caller's page_size of 0 falls back to the page's own", function()
      local c = stub(function(_, n)
        return { domains = n < 3 and { { id = "a" }, { id = "b" } } or { { id = "c" } }, page_size = 2 }
      end, 100)
      local out = assert(paginate.all(c, DOMAINS, { organization_id = "org_1", page_size = 0 }))
      assert.are.equal(5, #out)
    end)

    for _, case in ipairs({
      { "total_size NaN", 0 / 0, nil }, { "total_size inf", math.huge, nil },
      { "total_size negative", -1, nil }, { "total_size fractional", 2.5, nil },
      { "page_size NaN", nil, 0 / 0 }, { "page_size inf", nil, math.huge }, { "page_size 0", nil, 0 },
      { "total_size not a digit string", "6x", nil },
    }) do
      it(case[1] .. ": decode error, not an endless loop", function()
        local c = stub(domain_pages(case[2], case[3]), 100)
        local out, err = paginate.all(c, DOMAINS, { organization_id = "org_1" })
        assert.is_nil(out)
        assert.is_true(errors.is(err, "decode"), tostring(err))
        assert.are.equal("page_count_invalid", err.error_code)
        assert.are.equal(1, c.calls)
        local rerr = raised(function() for _ in paginate.each(c, DOMAINS, { organization_id = "org_1" }) do end end)
        assert.are.equal("page_count_invalid", rerr.error_code)
      end)
    end
  end)
end)
