-- Pagination over the fake Scalekit: thousands of records, one page in memory,
-- early break, errors in the middle of a loop.
local helpers = require "spec.support.client"
local server = require "spec.support.fake"
local errors = require "scalekit.errors"

local LIST = "OrganizationService_ListOrganization"
local N = 2500

describe("pagination", function()
  local sk
  local srv = server.for_suite(setup, teardown, { workers = 1 })
  setup(function() srv:seed{ organizations = N } end)
  teardown(function() if sk then sk:close() end end)

  before_each(function()
    srv:clear_faults()
    sk = helpers.new_client(srv)
  end)

  after_each(function()
    sk:close()
  end)

  local function api_requests()
    return srv:stats().api_requests
  end

  it("each walks every item exactly once", function()
    local seen, n = {}, 0
    for org in sk:each(LIST, { page_size = 100 }) do
      assert.is_string(org.id)
      assert.is_nil(seen[org.id], "duplicate " .. org.id)
      seen[org.id] = true
      n = n + 1
    end
    assert.equal(N, n)
  end)

  it("pages gives whole pages with total_size, ending on an empty next_page_token", function()
    local pages, items, last = 0, 0, nil
    for page in sk:pages(LIST, { page_size = 100 }) do
      pages = pages + 1
      items = items + #page.organizations
      assert.equal(N, page.total_size)
      last = page
    end
    assert.equal(25, pages)
    assert.equal(N, items)
    assert.equal("", last.next_page_token)
  end)

  it("honours page_size and a starting page_token", function()
    local first
    for page in sk:pages(LIST, { page_size = 30 }) do -- luacheck: ignore 512
      assert.equal(30, #page.organizations)
      first = page
      break
    end
    local n = 0
    for _ in sk:each(LIST, { page_size = 100, page_token = first.next_page_token }) do
      n = n + 1
    end
    assert.equal(N - 30, n)
  end)

  it("all collects everything, or up to a limit with no extra pages fetched", function()
    local all, err = sk:all(LIST, { page_size = 100 })
    assert.is_nil(err)
    assert.equal(N, #all)
    local before = api_requests()
    local some = assert(sk:all(LIST, { page_size = 100 }, { limit = 250 }))
    assert.equal(250, #some)
    assert.equal(3, api_requests() - before)
  end)

  it("keeps memory constant: one page at a time", function()
    collectgarbage()
    collectgarbage()
    local base = collectgarbage("count")
    local peak = 0
    local n = 0
    for _ in sk:each(LIST, { page_size = 100 }) do
      n = n + 1
      if n % 50 == 0 then
        collectgarbage()
        local used = collectgarbage("count") - base
        if used > peak then peak = used end
      end
    end
    assert.equal(N, n)
    collectgarbage()
    collectgarbage()
    local base2 = collectgarbage("count")
    local all = assert(sk:all(LIST, { page_size = 100 }))
    collectgarbage()
    local whole = collectgarbage("count") - base2
    assert.equal(N, #all)
    -- holding everything costs ~25 pages; iterating must stay within a few pages
    assert.is_true(peak < whole / 5, ("peak %.0f KiB vs whole %.0f KiB"):format(peak, whole))
  end)

  it("stops fetching after an early break", function()
    local before = api_requests()
    local n = 0
    for _ in sk:each(LIST, { page_size = 10 }) do
      n = n + 1
      if n == 15 then break end
    end
    assert.equal(15, n)
    assert.equal(2, api_requests() - before)
  end)

  it("raises the error table from the iterator when a page fails", function()
    local n = 0
    local ok, err = pcall(function()
      for _ in sk:each(LIST, { page_size = 100 }) do
        n = n + 1
        if n == 150 then
          srv:faults{ { match = "/api/v1/organizations", status = 400 } }
        end
      end
    end)
    assert.is_false(ok)
    assert.is_true(errors.is(err, "http"))
    assert.equal(400, err.status)
    assert.equal(200, n)
  end)

  it("pages raises too, and all returns nil, err", function()
    srv:faults{ { match = "/api/v1/organizations", status = 404 } }
    local ok, err = pcall(function() for _ in sk:pages(LIST, {}) do end end)
    assert.is_false(ok)
    assert.equal(404, err.status)
    srv:faults{ { match = "/api/v1/organizations", status = 400 } }
    local res, err2 = sk:all(LIST, { page_size = 100 })
    assert.is_nil(res)
    assert.equal(400, err2.status)
  end)

  it("rejects operations that are not paged lists", function()
    assert.has_error(function() sk:each("OrganizationService_GetOrganization", {}) end,
      "scalekit: OrganizationService_GetOrganization is not a paged list operation")
    assert.has_error(function() sk:pages("Nope", {}) end, "scalekit: unknown operation 'Nope'")
  end)

  it("walks page_number paging (domains) until a short page", function()
    -- the echo route answers every page with no items: one request, then stop
    local before = api_requests()
    local n = 0
    for _ in sk:each("DomainService_ListDomains", { organization_id = "org_1", page_size = 5 }) do
      n = n + 1
    end
    assert.equal(0, n)
    assert.equal(1, api_requests() - before)
  end)
end)
