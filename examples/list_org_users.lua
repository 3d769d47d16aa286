-- List the users of an organization, one page at a time.
--   lua5.4 examples/list_org_users.lua org_123
local scalekit = require "scalekit"

local org_id = assert(arg[1], "usage: list_org_users.lua <organization_id>")
local sk = assert(scalekit.from_env())

local n = 0
local ok, err = pcall(function()
  for user in sk.users:each_by_organization(org_id, { page_size = 100 }) do
    n = n + 1
    print(user.id, user.email)
  end
end)
sk:close()
if not ok then
  io.stderr:write("listing failed: ", tostring(err), "\n")
  os.exit(1)
end
print(n .. " user(s)")
