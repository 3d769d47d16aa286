-- Resource methods: the map covers every operation exactly once, every method sends
-- the request its operation describes, the common jobs work against the fake, and the
-- generated docs/annotations are current.
local helpers = require "spec.helpers.client"
local server = require "spec.helpers.server"
local operations = require "scalekit.operations"
local resources = require "scalekit.resources"

local MAP = resources.MAP
local unpack = table.unpack or unpack -- luacheck: ignore 113 143

local function each_method(fn)
  local names = {}
  for r in pairs(MAP) do names[#names + 1] = r end
  table.sort(names)
  for _, r in ipairs(names) do
    local verbs = {}
    for v in pairs(MAP[r]) do verbs[#verbs + 1] = v end
    table.sort(verbs)
    for _, v in ipairs(verbs) do fn(r, v, MAP[r][v]) end
  end
end

describe("resource map", function()
  it("gives every one of the 111 operations exactly one method", function()
    local seen, n = {}, 0
    each_method(function(r, v, spec)
      assert.is_not_nil(operations[spec[1]], r .. ":" .. v .. " → " .. spec[1])
      assert.is_nil(seen[spec[1]], spec[1] .. " mapped twice (" .. tostring(seen[spec[1]]) .. ")")
      seen[spec[1]] = r .. ":" .. v
      n = n + 1
    end)
    local total = 0
    for id in pairs(operations) do
      total = total + 1
      assert.is_not_nil(seen[id], "no resource method for " .. id)
    end
    assert.equal(111, total)
    assert.equal(111, n)
  end)

  it("names positional ids that are path parameters of the operation, in route order", function()
    each_method(function(r, v, spec)
      local op = operations[spec[1]]
      local pos = 0
      for i = 2, #spec do
        local found
        for j = 1, #op.path_params do
          if op.path_params[j] == spec[i] then found = j end
        end
        assert.is_not_nil(found, r .. ":" .. v .. " positional " .. spec[i] .. " is not a path param")
        assert.is_true(found > pos, r .. ":" .. v .. " ids out of route order")
        pos = found
      end
      -- every path param of the route is positional: a call cannot go without it
      assert.equal(#op.path_params, #spec - 1, r .. ":" .. v)
    end)
  end)

  it("derives iterators for every paged list", function()
    assert.same({ "each", "pages", "all" }, { resources.iterator_names("list") })
    assert.same({ "each_users", "pages_users", "all_users" }, { resources.iterator_names("list_users") })
    assert.same({ "each_search", "pages_search", "all_search" }, { resources.iterator_names("search") })
  end)
end)

describe("resource methods against the fake Scalekit", function()
  local srv, sk

  setup(function()
    srv = server.start{ workers = 1 }
    sk = helpers.new_client(srv)
  end)

  teardown(function()
    if sk then sk:close() end
    if srv then srv:stop() end
  end)

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
    assert.is_nil(sk.nonexistent_resource)
  end)
end)

describe("generated docs and annotations", function()
  it("README's method reference and types/scalekit.lua are up to date", function()
    local p = assert(io.popen("lua5.4 tools/gen_docs.lua --check 2>&1; echo rc=$?"))
    local out = p:read("*a")
    p:close()
    assert.truthy(out:find("rc=0", 1, true), out)
  end)

  it("every public function of the client carries LuaLS annotations", function()
    local src = ""
    for _, path in ipairs({ "lua/scalekit/init.lua", "lua/scalekit/client.lua", "lua/scalekit/auth/init.lua" }) do
      local f = assert(io.open(path))
      src = src .. f:read("*a") .. "\n"
      f:close()
    end
    local n = 0
    local prev = {}
    for line in src:gmatch("[^\n]*") do
      local name = line:match("^function Client:([%w_]+)") or line:match("^function _M%.([%w_]+)")
        or line:match("^function Auth:([%w_]+)")
      if name then
        n = n + 1
        local doc = table.concat(prev, "\n")
        assert.truthy(doc:find("%-%-%-"), name .. " has no doc comment")
        assert.truthy(doc:find("@return") or name == "invalidate_token" or name == "close",
                      name .. " has no ---@return")
      end
      if line:match("^%-%-%-") then prev[#prev + 1] = line elseif line ~= "" then prev = {} end
    end
    assert.is_true(n >= 18)
    local t = assert(io.open("types/scalekit.lua")):read("*a")
    each_method(function(r, v)
      assert.truthy(t:find("function " .. r .. ":" .. v .. "(", 1, true), r .. ":" .. v .. " not annotated")
    end)
  end)
end)
