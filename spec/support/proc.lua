-- Shell and process helpers shared by the test infrastructure that starts real
-- nginx servers (spec/support/nginx.lua and the servers built on it) and the specs.
--
--   local proc = require "spec.support.proc"
--   local out, rc = proc.run("ls")     -- stdout and exit code
--   proc.sh("true")                    -- true when the exit code is 0
--
-- Runs in the busted process (Lua 5.1 / LuaJIT and 5.4), never inside nginx:
-- spec/support/fake/*.lua must not depend on it. os.execute and popen:close return
-- different things on 5.1 and 5.4, so nothing here relies on them: the exit
-- code travels through the command's output.
local _M = {}

-- below the kernel's ephemeral range (32768-60999): outgoing connections never hold these
_M.PORT_MIN, _M.PORT_MAX = 20000, 32000

local NGINX_CANDIDATES = { "/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx" }
local NGINX_MODULES = { "ndk_http_module.so", "ngx_http_lua_module.so" }

local unpack = rawget(table, "unpack") or rawget(_G, "unpack")

---------------------------------------------------------------------------
-- shell, files
---------------------------------------------------------------------------

-- Single-quotes s for sh.
function _M.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
local quote = _M.quote

-- Runs a shell command, returns its stdout and exit code (-1 if unknown).
function _M.run(cmd)
  local p = assert(io.popen(cmd .. '; echo "__rc=$?"', "r"))
  local out = p:read("*a") or ""
  p:close()
  local body, rc = out:match("^(.-)__rc=(%d+)%s*$")
  if not body then
    return out, -1
  end
  return body, tonumber(rc)
end
local run = _M.run

-- Runs a shell command quietly, true when it exits with 0.
function _M.sh(cmd)
  local _, rc = run(cmd .. " >/dev/null 2>&1")
  return rc == 0
end
local sh = _M.sh

function _M.sleep(sec)
  os.execute("sleep " .. tostring(sec)) -- return value differs on 5.1 / 5.4: ignored
end
local sleep = _M.sleep

local util = require "tools.util"

-- The file's bytes, or nil (and io.open's message) when it cannot be opened.
_M.read_file = util.read_file
local read_file = _M.read_file

-- Writes data to path (raises on failure); mode: optional chmod mode ("644").
function _M.write_file(path, data, mode)
  util.write_file(path, data)
  if mode then
    assert(sh("chmod " .. mode .. " " .. quote(path)), "chmod " .. path)
  end
end
local write_file = _M.write_file

-- Working directory of the process, resolved at load time.
_M.CWD = run("pwd"):gsub("%s+$", "")

-- A fresh /tmp/scalekit-<kind>.XXXXXXXX directory: its path (nil on failure)
-- and the output of mktemp.
function _M.mktemp_dir(kind)
  local out, rc = run("mktemp -d /tmp/scalekit-" .. kind .. ".XXXXXXXX")
  local dir = out:match("(%S+)")
  if rc ~= 0 then
    dir = nil
  end
  return dir, out
end

-- rm -rf, only of a directory made by mktemp_dir.
function _M.remove_dir(dir)
  if type(dir) == "string" and dir:match("^/tmp/scalekit%-[%w]+%.[%w]+$") then
    sh("rm -rf " .. quote(dir))
  end
end

---------------------------------------------------------------------------
-- processes
---------------------------------------------------------------------------

-- A zombie counts as gone: nginx daemonizes, so its parent is init, which in
-- a container may reap late.
function _M.pid_alive(pid)
  if not pid then
    return false
  end
  local stat = read_file("/proc/" .. tostring(pid) .. "/stat")
  if stat then
    local state = stat:match("^%d+ %(.*%) (%a)")
    return state ~= "Z" and state ~= "X"
  end
  if read_file("/proc/self/stat") then
    return false -- /proc works and the pid is not there
  end
  return sh("kill -0 " .. tostring(pid))
end
local pid_alive = _M.pid_alive

-- pid of this Lua process.
function _M.own_pid()
  local stat = read_file("/proc/self/stat")
  local pid = stat and stat:match("^(%d+)")
  if pid then
    return tonumber(pid)
  end
  local out = run("echo $PPID")
  return tonumber(out:match("%d+"))
end
local own_pid = _M.own_pid

-- Sends `signal` (default QUIT: graceful) to pid, waits up to `timeout` s
-- (default 3), then SIGKILLs pid and the children it had, and waits up to 1 s
-- more for pid to go.
function _M.kill_tree(pid, signal, timeout)
  if not pid or not pid_alive(pid) then
    return
  end
  local kids = {}
  for k in run("pgrep -P " .. pid .. " 2>/dev/null"):gmatch("%d+") do
    kids[#kids + 1] = tonumber(k)
  end
  sh("kill -" .. (signal or "QUIT") .. " " .. pid)
  local tries = 0
  while pid_alive(pid) and tries < (timeout or 3) * 20 do
    sleep(0.05)
    tries = tries + 1
  end
  local left = {}
  for _, p in ipairs({ pid, unpack(kids) }) do
    if pid_alive(p) then
      left[#left + 1] = tostring(p)
    end
  end
  if #left > 0 then
    sh("kill -KILL " .. table.concat(left, " "))
    tries = 0
    while pid_alive(pid) and tries < 20 do
      sleep(0.05)
      tries = tries + 1
    end
  end
end

-- Background shell that stops nginx `pid` (`signal`, default QUIT, then
-- SIGKILL after 3 s) and removes `dir` if the Lua process `owner_pid` dies
-- without stopping it (crash, SIGKILL, os.exit without close). The script is
-- written to dir/watchdog.sh. Returns the watchdog's pid.
function _M.watchdog(owner_pid, pid, dir, signal)
  local script = table.concat({
    "alive() { s=$(sed -n 's/^[0-9]* (.*) \\([A-Za-z]\\).*/\\1/p' /proc/$1/stat 2>/dev/null);"
      .. " [ -n \"$s\" ] && [ \"$s\" != Z ] && [ \"$s\" != X ]; }",
    "while alive " .. owner_pid .. " && alive " .. pid .. "; do sleep 1; done",
    "if alive " .. pid .. "; then",
    "  kids=$(pgrep -P " .. pid .. ")",
    "  kill -" .. (signal or "QUIT") .. " " .. pid,
    "  i=0; while alive " .. pid .. " && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done",
    "  for p in " .. pid .. " $kids; do alive $p && kill -KILL $p 2>/dev/null; done",
    "fi",
    "rm -rf " .. quote(dir),
  }, "\n")
  write_file(dir .. "/watchdog.sh", script)
  local out = run("sh " .. quote(dir .. "/watchdog.sh") .. " </dev/null >/dev/null 2>&1 & echo $!")
  return tonumber(out:match("(%d+)"))
end

-- Calls fn when the Lua state closes or the returned sentinel is collected:
-- keep the sentinel referenced (e.g. in the module table).
function _M.on_close(fn)
  local newproxy = rawget(_G, "newproxy")
  if newproxy then -- 5.1 / LuaJIT: no __gc on tables
    local proxy = newproxy(true)
    getmetatable(proxy).__gc = fn
    return proxy
  end
  return setmetatable({}, { __gc = fn })
end

---------------------------------------------------------------------------
-- ports, nginx
---------------------------------------------------------------------------

-- Park–Miller generator, exact with doubles (LuaJIT) and integers (5.4);
-- seeded from the clock, our pid and a table address so that parallel runs
-- (lua5.4 and luajit busted at once) pick different ports.
local rng_state

-- A port in PORT_MIN..PORT_MAX. hook (optional, for specs): a function whose
-- non-nil answer is used instead (e.g. to force a busy port).
function _M.random_port(hook)
  if hook then
    local p = hook()
    if p then
      return p
    end
  end
  if not rng_state then
    local addr = tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0
    local clk = math.floor((os.clock() * 1e6) % 1e6)
    rng_state = (os.time() % 1000003 + (own_pid() or 0) * 7919 + addr % 999983 + clk) % 2147483646 + 1
  end
  rng_state = (rng_state * 16807) % 2147483647
  return _M.PORT_MIN + rng_state % (_M.PORT_MAX - _M.PORT_MIN + 1)
end

-- $SCALEKIT_FAKE_NGINX, else the first executable of the usual places.
function _M.find_nginx()
  local env = os.getenv("SCALEKIT_FAKE_NGINX")
  if env and env ~= "" then
    return env
  end
  for _, p in ipairs(NGINX_CANDIDATES) do
    if sh("test -x " .. quote(p)) then
      return p
    end
  end
  return "nginx"
end

-- The `load_module …;` lines of nginx.conf for ngx_lua (and NDK) when they are
-- dynamic modules ($SCALEKIT_FAKE_NGINX_MODULES, default Debian's directory).
function _M.load_modules()
  local dir = os.getenv("SCALEKIT_FAKE_NGINX_MODULES") or "/usr/share/nginx/modules"
  local lines = {}
  for _, m in ipairs(NGINX_MODULES) do
    local p = dir .. "/" .. m
    if sh("test -f " .. quote(p)) then
      lines[#lines + 1] = "load_module " .. p .. ";"
    end
  end
  return table.concat(lines, "\n")
end

-- Replaces every ${NAME} of tpl by tostring(vars.NAME); an unknown name raises
-- "<who> unknown ${NAME}".
function _M.render(tpl, vars, who)
  return (tpl:gsub("%${([%w_]+)}", function(name)
    local v = vars[name]
    if v == nil then
      error(who .. " unknown ${" .. name .. "}", 0)
    end
    return tostring(v)
  end))
end

return _M
