-- Send a one-time code by email, then verify the code the user typed.
--   lua5.4 examples/passwordless_otp.lua user@example.com [code]
local scalekit = require "scalekit"

local email, code = assert(arg[1], "usage: passwordless_otp.lua <email> [code]"), arg[2]
local sk = assert(scalekit.from_env())

local sent, err = sk.passwordless:send{ email = email, template = "SIGNIN", expires_in = 300 }
if not sent then
  io.stderr:write("send failed: ", tostring(err), "\n")
  os.exit(1)
end
local auth_request_id = sent.auth_request_id or "(from the send answer)"
print("code sent; auth_request_id", auth_request_id)

if code then
  local ok
  ok, err = sk.passwordless:verify{ code = code, auth_request_id = sent.auth_request_id }
  if not ok then
    io.stderr:write("verify failed: ", tostring(err), "\n")
    os.exit(1)
  end
  print("verified", ok.email or "")
end
sk:close()
