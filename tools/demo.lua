-- `make demo`: run examples/quickstart.lua against SCALEKIT_ENVIRONMENT_URL when it is
-- set, else against the local fake Scalekit, started here and stopped afterwards.
package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local function run(env)
  local cmd = env .. 'LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/?.so;;" lua5.4 examples/quickstart.lua'
  local a, _, c = os.execute(cmd)
  return a == true or a == 0, c
end

if os.getenv("SCALEKIT_ENVIRONMENT_URL") then
  print("demo: using " .. os.getenv("SCALEKIT_ENVIRONMENT_URL"))
  local ok = run("")
  os.exit(ok and 0 or 1)
end

local server = require "spec.support.fake"
local helpers = require "spec.support.client"
local srv = server.start{ workers = 1 }
print("demo: no SCALEKIT_ENVIRONMENT_URL, using the local fake Scalekit at " .. srv.url)
local ok, err = pcall(function()
  local sk = helpers.new_client(srv)
  for _, name in ipairs({ "Looney Corp", "Acme Inc", "Globex", "Initech", "Umbrella" }) do
    assert(sk.organizations:create{ display_name = name, external_id = name:lower():gsub("%W", "-") })
  end
  sk:close()
  assert(run(("SCALEKIT_ENVIRONMENT_URL=%s SCALEKIT_CLIENT_ID=%s SCALEKIT_CLIENT_SECRET=%s ")
    :format(srv.url, helpers.CLIENT_ID, helpers.CLIENT_SECRET)), "quickstart failed")
end)
srv:stop()
if not ok then
  io.stderr:write("demo: ", tostring(err), "\n")
  os.exit(1)
end
