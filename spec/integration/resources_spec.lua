-- Resource methods against the fake: every method sends the request its operation
-- describes, and the common jobs work.
local helpers = require "spec.support.client"
local server = require "spec.support.fake"
local operations = require "scalekit.operations"

local unpack = table.unpack or unpack -- luacheck: ignore 113 143

local each_method = helpers.each_method

describe("resource methods against the fake Scalekit", function()
  local sk
  local srv = server.for_suite(setup, teardown, { workers = 1 })
  setup(function() sk = helpers.new_client(srv) end)
  teardown(function() if sk then sk:close() end end)

  before_each(function()
    srv:clear_faults()
  end)

  local function last_request()
    local reqs = srv:requests()
    return reqs[#reqs]
  end

  it("send each method's request to its operation's route", function()
    local checked = 0
    each_method(function(r, v, spec)
      local op = operations[spec[1]]
      local args, expected = {}, op.path
      for i = 2, #spec do
        local val = "v" .. (i - 1) .. "/x"
        args[#args + 1] = val
        expected = expected:gsub("{" .. spec[i] .. "}", (val:gsub("/", "%%%%2F")))
      end
      local rest = {}
      for _, q in ipairs(op.required) do
        if op.query[q] then rest[q] = "q" end
      end
      if next(rest) then args[#args + 1] = rest end
      local method = sk[r][v]
      assert.is_function(method, r .. ":" .. v)
      method(sk[r], unpack(args))
      local req = last_request()
      assert.equal(op.method, req.method, r .. ":" .. v)
      assert.equal(expected, req.path, r .. ":" .. v)
      checked = checked + 1
    end)
    assert.equal(111, checked)
  end)

  it("organizations: create, get, update, portal link, each, delete", function()
    local res = assert(sk.organizations:create{ display_name = "Acme", external_id = "acme-rs" })
    local id = res.organization.id
    assert.equal("Acme", assert(sk.organizations:get(id)).organization.display_name)
    assert.equal(id, assert(sk.organizations:get{ id = id }).organization.id)
    assert.equal(id, assert(sk.organizations:get_by_external_id("acme-rs")).organization.id)
    assert.equal("Acme 2", assert(sk.organizations:update(id, { display_name = "Acme 2" })).organization.display_name)
    assert.truthy(sk.organizations:generate_portal_link(id, { features = { "sso", "dir_sync" } }))
    assert.equal("features=sso&features=dir_sync", last_request().query)
    local n = 0
    for org in sk.organizations:each{ page_size = 50 } do
      n = n + 1
      assert.is_string(org.id)
    end
    assert.is_true(n >= 1)
    assert.truthy(sk.organizations:delete(id))
    local gone, err = sk.organizations:get(id)
    assert.is_nil(gone)
    assert.equal(404, err.status)
  end)

  it("users: search with a required query, create in an organization, list by organization", function()
    local org = assert(sk.organizations:create{ display_name = "Users Inc" }).organization
    local u = assert(sk.users:create(org.id, { email = "a@b.c", send_invitation_email = false }))
    assert.equal("send_invitation_email=false", last_request().query)
    assert.is_table(u.user)
    local found = assert(sk.users:search{ query = "a@b.c" })
    assert.equal("query=a%40b.c", last_request().query)
    assert.is_table(found.users)
    local all = assert(sk.users:all_by_organization(org.id, { page_size = 10 }, { limit = 5 }))
    assert.is_table(all)
    assert.has_error(function() sk.users:search{} end)
  end)

  it("connections: enable/disable with ids in the route and literal colons", function()
    local res = assert(sk.connections:enable("org_1", "conn_1"))
    assert.equal("/api/v1/organizations/org_1/connections/conn_1:enable", res.echo.path)
    res = assert(sk.connections:disable("org_1", "conn_1"))
    assert.equal("PATCH", res.echo.method)
    assert.equal("/api/v1/organizations/org_1/connections/conn_1:disable", res.echo.path)
  end)

  it("roles: add_permissions takes a plain list", function()
    local res = assert(sk.roles:add_permissions("admin", { "read", "write" }))
    assert.same({ permission_names = { "read", "write" } }, res.echo.body)
    assert.equal("/api/v1/roles/admin/permissions", res.echo.path)
  end)

  it("memberships: positional ids, query and body fields from one table", function()
    local res = assert(sk.memberships:create("org_1", "usr_1", {
      roles = { { name = "admin" } }, send_invitation_email = true,
    }))
    assert.equal("POST", res.echo.method)
    assert.equal("/api/v1/memberships/organizations/org_1/users/usr_1", res.echo.path)
    assert.equal("send_invitation_email=true", res.echo.query)
    assert.same({ roles = { { name = "admin" } } }, res.echo.body)
  end)

  it("passwordless: send and verify an OTP", function()
    local res = assert(sk.passwordless:send{ email = "a@b.c", template = "SIGNIN", expires_in = 300 })
    assert.same({ email = "a@b.c", template = "SIGNIN", expires_in = 300 }, res.echo.body)
    res = assert(sk.passwordless:verify{ code = "123456", auth_request_id = "ar_1" })
    assert.equal("/api/v1/passwordless/email/verify", res.echo.path)
    assert.same({ code = "123456", auth_request_id = "ar_1" }, res.echo.body)
  end)

  it("raise clear errors on misuse", function()
    local ok, msg = pcall(sk.organizations.get, sk.organizations)
    assert.is_false(ok)
    assert.truthy(msg:find("organizations:get: missing argument #1 %(id%)"), msg)
    ok, msg = pcall(sk.organizations.get, sk.organizations, "a", {}, {})
    assert.is_false(ok)
    assert.truthy(msg:find("too many arguments"), msg)
    ok, msg = pcall(sk.organizations.list, sk.organizations, "x")
    assert.is_false(ok)
    assert.truthy(msg:find("last argument must be a table"), msg)
    ok, msg = pcall(sk.organizations.list, sk.organizations, { nope = 1 })
    assert.is_false(ok)
    assert.truthy(msg:find("unknown parameter 'nope'"), msg)
    -- a misspelt resource or method is named, with the nearest real ones
    ok, msg = pcall(function() return sk.nonexistent_resource end)
    assert.is_false(ok)
    assert.truthy(msg:find("no resource or method 'nonexistent_resource'", 1, true), msg)
    assert.is_nil(rawget(sk, "nonexistent_resource"))
  end)
end)
