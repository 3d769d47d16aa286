-- Create a permission and a role, grant the permission, make the role the default.
--   lua5.4 examples/manage_roles.lua
local scalekit = require "scalekit"

local sk = assert(scalekit.from_env())
local function check(res, err, what)
  if not res then
    io.stderr:write(what, " failed: ", tostring(err), "\n")
    os.exit(1)
  end
  return res
end

check(sk.permissions:create{ name = "invoices:read", description = "Read invoices" }, nil, "create permission")
check(sk.roles:create{ name = "billing", display_name = "Billing", description = "Billing team" }, nil, "create role")
check(sk.roles:add_permissions("billing", { "invoices:read" }), nil, "add permission")
check(sk.roles:set_defaults{ default_member_role = "billing" }, nil, "set defaults")
print("role billing ready")
sk:close()
