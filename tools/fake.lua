-- `make fake [PORT=8088]`: the local fake Scalekit (nginx + ngx_lua, spec/support/fake/) on
-- 127.0.0.1:PORT for your own code, seeded with a few records, until Ctrl-C or SIGTERM.
-- Needs lua5.4 (or luajit), lua-cjson, nginx + libnginx-mod-http-lua and the curl CLI;
-- not the C core.
--   lua5.4 tools/fake.lua [port]          (or PORT=… in the environment)
local root = (arg and arg[0] or ""):match("^(.*)/tools/[^/]*$") or "."
package.path = root .. "/?.lua;" .. package.path

local server = require("spec.support.fake")
local proc = require("spec.support.proc")
local cjson = require("cjson")

local json = cjson.new()
local quote, run = proc.quote, proc.run

io.stdout:setvbuf("line")

local port = tonumber(arg[1] or os.getenv("PORT") or "8088")
if not port or port < 1 or port > 65535 or port % 1 ~= 0 then
  io.stderr:write("fake: PORT must be a TCP port number\n")
  os.exit(2)
end

-- a chosen port: no retry on another one when it is busy
local ok_start, srv = pcall(server.start, { workers = 1, port = port, oidc = proc.sh("command -v openssl") })
if not ok_start then
  local busy = tostring(srv):find("is busy", 1, true)
  io.stderr:write(tostring(srv), busy and " (pick another: make fake PORT=…)" or "", "\n")
  os.exit(1)
end

-- the public API, through the curl CLI
local token = srv:token()
local function api(method, path, body)
  local out, rc = run("curl -sS --max-time 10 -X " .. method .. " -H " .. quote("Authorization: Bearer " .. token)
    .. " -H 'Content-Type: application/json' --data-binary " .. quote(json.encode(body or {}))
    .. " " .. quote(srv.url .. path) .. " 2>&1")
  local okd, v = pcall(json.decode, out)
  if rc ~= 0 or not okd or type(v) ~= "table" or v.code then
    error("fake: seeding " .. method .. " " .. path .. " failed: " .. out, 0)
  end
  return v
end

local ok_seed, err = pcall(function()
  assert(api("POST", "/api/v1/permissions", { name = "invoices:read", description = "Read invoices" }))
  assert(api("POST", "/api/v1/roles", { name = "member", display_name = "Member", permissions = { "invoices:read" } }))
  local lines = {}
  for _, o in ipairs({ { "Acme Inc", "acme" }, { "Globex", "globex" }, { "Initech", "initech" } }) do
    local org = api("POST", "/api/v1/organizations", { display_name = o[1], external_id = o[2] }).organization
    api("POST", "/api/v1/organizations/" .. org.id .. "/domains", { domain = o[2] .. ".example.com" })
    local user = api("POST", "/api/v1/organizations/" .. org.id .. "/users",
      { email = "admin@" .. o[2] .. ".example.com", user_profile = { given_name = "Admin", family_name = o[1] } }).user
    srv:seed({ connections = 1, organization_id = org.id })
    srv:seed({ sessions = 1, user_id = user.id })
    lines[#lines + 1] = ("  %s  %-9s external_id %-8s user %s  %s"):format(org.id, o[1], o[2], user.id, user.email)
  end
  print(("fake Scalekit at %s (127.0.0.1 only); Ctrl-C stops it"):format(srv.url))
  print("")
  print("  client id      " .. srv.client_id)
  print("  client secret  " .. srv.client_secret)
  print("")
  print("  export SCALEKIT_ENVIRONMENT_URL=" .. srv.url)
  print("  export SCALEKIT_CLIENT_ID=" .. srv.client_id)
  print("  export SCALEKIT_CLIENT_SECRET=" .. srv.client_secret)
  print("")
  print("seeded (each organization has a domain, an SSO connection and a user with a session;")
  print("role 'member' with permission 'invoices:read'):")
  print(table.concat(lines, "\n"))
  print("")
  print("admin: curl " .. srv.url .. "/_admin/stats | /_admin/requests; "
    .. "curl -X POST " .. srv.url .. "/_admin/reset empties it")
end)

if ok_seed then
  -- Wait. SIGINT (Ctrl-C, or kill -INT to this process) makes lua5.4 raise
  -- "interrupted!" at the next instruction: at once when the terminal's Ctrl-C also
  -- ends the `sleep`, else within a second. pcall turns it into a clean stop.
  -- SIGTERM ends this process; the server's watchdog then stops nginx and removes
  -- its directory (spec/support/proc.lua).
  ok_seed, err = pcall(function()
    while true do
      local p = io.popen("sleep 1")
      p:read("*a")
      p:close()
      if not proc.pid_alive(srv.pid) then
        error("fake: nginx exited\n" .. srv:error_log_text(), 0)
      end
    end
  end)
  if tostring(err):find("interrupted!", 1, true) then
    ok_seed = true
  end
end

srv:stop()
if not ok_seed then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
print("fake: stopped")
