-- The client side of bench/callgrind.lua, run under valgrind: a client on URL,
-- WARM calls (the token fetch, the connection, first-use caches), then CALLS more.
--   lua bench/cg_call.lua URL ID WARM CALLS [call|core]
-- "call": sk:call("OrganizationService_GetOrganization", {id = ID}), answer decoded;
-- "core": the C core's http:request alone on the same URL (nothing decoded);
-- "decode": http:request and json.decode of the answer, no client around them.
package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
package.cpath = (rawget(_G, "jit") and "build-luajit/?.so;" or "build/?.so;") .. package.cpath

local url, id, warm, calls, mode = arg[1], arg[2], tonumber(arg[3]), tonumber(arg[4]), arg[5] or "call"
local scalekit = require "scalekit"

local sk = assert(scalekit.new{ environment_url = url, client_id = "skc_test",
                                client_secret = "test_secret_value" })
local params = { id = id }
local n = warm + calls
if mode == "core" or mode == "decode" then
  local token = assert(sk:token())
  local http = sk._s.transport.http
  local full = url .. "/api/v1/organizations/" .. id
  local decode = mode == "decode" and require("scalekit.json").decode
  for _ = 1, n do
    local status, body = http:request("GET", full, nil, "json", token)
    if status ~= 200 then error("request failed") end
    if decode then assert(decode(body)) end
  end
else
  for _ = 1, n do
    if not sk:call("OrganizationService_GetOrganization", params) then error("call failed") end
  end
end
sk:close()
