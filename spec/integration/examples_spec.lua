-- Every script of examples/ runs to success against the fake Scalekit.
local helpers = require "spec.support.client"
local server = require "spec.support.fake"

local LUA = helpers.LUA
local CPATH = helpers.BUILD .. "/?.so;;"

describe("examples", function()
  local srv = server.for_suite(setup, teardown, { workers = 1 })

  local function run(script, args)
    local cmd = ("SCALEKIT_ENVIRONMENT_URL=%s SCALEKIT_CLIENT_ID=%s SCALEKIT_CLIENT_SECRET=%s "
      .. "LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='%s' %s examples/%s %s 2>&1; echo \"rc=$?\"")
      :format(srv.url, helpers.CLIENT_ID, helpers.CLIENT_SECRET, CPATH, LUA, script, args or "")
    local p = assert(io.popen(cmd))
    local out = p:read("*a")
    p:close()
    return out, tonumber(out:match("rc=(%d+)%s*$"))
  end

  it("quickstart lists the organizations", function()
    local sk = helpers.new_client(srv)
    assert(sk.organizations:create{ display_name = "Example Org" })
    sk:close()
    local out, rc = run("quickstart.lua")
    assert.equal(0, rc, out)
    assert.truthy(out:find("Example Org", 1, true), out)
    assert.truthy(out:find("organization%(s%)"), out)
  end)

  it("organization_portal creates an organization and a portal link", function()
    local out, rc = run("organization_portal.lua", "'Portal Co' portal-co")
    assert.equal(0, rc, out)
    assert.truthy(out:find("organization%s+org_%d+%s+Portal Co"), out)
    local url = out:match("portal link%s+(%S+)")
    assert.matches("^" .. srv.url:gsub("%p", "%%%0") .. "/magicLink/lnk_%x+%?features=sso&features=dir_sync$",
      url or "", out)
    assert.truthy(out:find("expires %d%d%d%d%-%d%d%-%d%dT"), out)
  end)

  it("list_org_users lists the users of an organization", function()
    local sk = helpers.new_client(srv)
    local org = assert(sk.organizations:create{ display_name = "Team" }).organization
    for i = 1, 3 do assert(sk.users:create(org.id, { email = ("u%d@team.test"):format(i) })) end
    sk:close()
    local out, rc = run("list_org_users.lua", org.id)
    assert.equal(0, rc, out)
    assert.truthy(out:find("u3@team.test", 1, true), out)
    assert.truthy(out:find("3 user(s)", 1, true), out)
  end)

  it("manage_roles creates a permission and a role", function()
    local out, rc = run("manage_roles.lua")
    assert.equal(0, rc, out)
    assert.truthy(out:find("role billing ready", 1, true), out)
  end)

  it("passwordless_otp sends and verifies a code", function()
    local out, rc = run("passwordless_otp.lua", "user@example.com 123456")
    assert.equal(0, rc, out)
    assert.truthy(out:find("code sent", 1, true), out)
    assert.truthy(out:find("verified", 1, true), out)
  end)

  it("fail cleanly with a readable error when the server refuses", function()
    srv:faults{ { match = "/api/", status = 403, count = 10 } }
    local out, rc = run("organization_portal.lua", "'X'")
    srv:clear_faults()
    assert.equal(1, rc, out)
    assert.truthy(out:find("create failed: scalekit: http error", 1, true), out)
    assert.truthy(out:find("HTTP 403", 1, true), out)
  end)
end)
