-- Quick start: a client from the environment, a client-credentials token, then every
-- organization through the pagination iterator.
--
--   SCALEKIT_ENVIRONMENT_URL=https://acme.scalekit.dev SCALEKIT_CLIENT_ID=skc_… \
--   SCALEKIT_CLIENT_SECRET=… lua5.4 examples/quickstart.lua
local scalekit = require "scalekit"

local sk, err = scalekit.from_env()
if not sk then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end

local token, expires_at = sk:token()
if not token then
  io.stderr:write("cannot get a token: ", tostring(expires_at), "\n")
  os.exit(1)
end
print(("token ok, valid until %s"):format(os.date("!%Y-%m-%d %H:%M:%SZ", math.floor(expires_at))))

-- The iterator fetches one page at a time and raises the error table if a page
-- fails: pcall turns that back into a value.
local count = 0
local ok, perr = pcall(function()
  for org in sk.organizations:each{ page_size = 100 } do
    count = count + 1
    print(("%4d  %-24s %s"):format(count, org.id, org.display_name or ""))
  end
end)
sk:close()
if not ok then
  io.stderr:write("listing failed: ", tostring(perr), "\n")
  os.exit(1)
end
print(("%d organization(s)"):format(count))
