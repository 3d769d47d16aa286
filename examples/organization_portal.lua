-- Create an organization and a link to its admin portal (SSO and directory setup).
--   lua5.4 examples/organization_portal.lua "Acme Inc" acme-123
local scalekit = require "scalekit"

local name, external_id = arg[1] or "Acme Inc", arg[2]
local sk = assert(scalekit.from_env())

local res, err = sk.organizations:create{ display_name = name, external_id = external_id }
if not res then
  io.stderr:write("create failed: ", tostring(err), "\n")
  os.exit(1)
end
local org = res.organization
print("organization", org.id, org.display_name)

local link
link, err = sk.organizations:generate_portal_link(org.id, { features = { "sso", "dir_sync" } })
if not link then
  io.stderr:write("portal link failed: ", tostring(err), "\n")
  os.exit(1)
end
print("portal link", link.link.location, "expires " .. link.link.expire_time)
sk:close()
