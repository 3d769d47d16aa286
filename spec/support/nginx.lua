-- The one nginx launcher of the test kit: the fake Scalekit (spec/support/fake.lua),
-- the raw fault servers (spec/support/raw.lua), the OpenResty test app
-- (spec/support/app.lua), the README snippets (readme_spec) and the bench data set
-- all start nginx through here.
--
--   local nginx = require "spec.support.nginx"
--   local n = nginx.start{
--     kind = "app",                      -- prefix /tmp/scalekit-app.XXXXXXXX
--     install = function(prefix) … end,  -- copy files into the prefix (once)
--     conf = function(prefix, ports)     -- the whole nginx.conf, e.g.
--       return nginx.conf{ prefix = prefix, http = "…",
--                          servers = { nginx.server{ port = ports.port, body = "…" } } }
--     end,
--     ready = function(n) return … end,  -- true once it answers (n.port is set)
--   }
--   n.prefix, n.pid, n.port, n.ports, n.error_log, n.attempts
--   n:log()   -- error.log text (kept after stop)
--   n:stop()  -- idempotent: signal, then SIGKILL after 3 s; removes the prefix
--
-- Every nginx still running when the Lua state closes is stopped, and a watchdog
-- shell stops it if this process dies without that.
local proc = require "spec.support.proc"

local quote, run, sh, sleep = proc.quote, proc.run, proc.sh, proc.sleep
local read_file, write_file = proc.read_file, proc.write_file

local _M = {}

local Nginx = {}
Nginx.__index = Nginx

local START_ATTEMPTS = 20
local STOP_TIMEOUT = 3

local TEMP_PATHS = { "client_body", "proxy", "fastcgi", "uwsgi", "scgi" }

---------------------------------------------------------------------------
-- nginx.conf from parts
---------------------------------------------------------------------------

local function text(v)
  if type(v) == "table" then
    return table.concat(v, "\n")
  end
  return v or ""
end

--- The text of an nginx.conf. p: prefix (pid, error_log and temp paths under it),
--- workers (1), log_level ("warn"), worker_connections (1024), main (lines before
--- `events`), http (http-level lines), servers (server blocks); text or lists of lines.
function _M.conf(p)
  local prefix = p.prefix
  local lines = {
    "daemon on;",
    "master_process on;",
    "worker_processes " .. (p.workers or 1) .. ";",
    "pid " .. prefix .. "/nginx.pid;",
    "error_log " .. prefix .. "/error.log " .. (p.log_level or "warn") .. ";",
    proc.load_modules(),
    text(p.main),
    "events { worker_connections " .. (p.worker_connections or 1024) .. "; }",
    "http {",
    "    access_log off;",
    "    server_tokens off;",
  }
  for _, t in ipairs(TEMP_PATHS) do
    lines[#lines + 1] = "    " .. t .. "_temp_path " .. prefix .. "/tmp_" .. t .. ";"
  end
  lines[#lines + 1] = text(p.http)
  lines[#lines + 1] = text(p.servers)
  lines[#lines + 1] = "}"
  return table.concat(lines, "\n") .. "\n"
end

--- One server block on 127.0.0.1. s: port, body (text or lines), tls ({cert =, key =}:
--- listen ssl), listen (more listen flags, e.g. " reuseport").
function _M.server(s)
  local lines = {
    "    server {",
    "        listen 127.0.0.1:" .. s.port .. (s.tls and " ssl" or "") .. (s.listen or "") .. ";",
    "        server_name localhost;",
  }
  if s.tls then
    lines[#lines + 1] = "        ssl_certificate " .. s.tls.cert .. ";"
    lines[#lines + 1] = "        ssl_certificate_key " .. s.tls.key .. ";"
    lines[#lines + 1] = "        ssl_protocols TLSv1.2 TLSv1.3;"
  end
  lines[#lines + 1] = text(s.body)
  lines[#lines + 1] = "    }"
  return table.concat(lines, "\n")
end

---------------------------------------------------------------------------
-- registry: stop every nginx when the Lua state closes or is collected
---------------------------------------------------------------------------

local live = {}

_M._sentinel = proc.on_close(function()
  for n in pairs(live) do
    pcall(n.stop, n)
  end
end)

---------------------------------------------------------------------------
-- start / stop
---------------------------------------------------------------------------

local function busy(log)
  return log:find("Address already in use", 1, true) ~= nil
end

-- One attempt: write the conf, run nginx. Returns the exit code and the log.
local function launch(self, opts, ports)
  write_file(self.prefix .. "/nginx.conf", opts.conf(self.prefix, ports), "644")
  write_file(self.error_log, "")
  local out, rc = run((opts.env or "") .. " " .. quote(proc.find_nginx()) .. " -p " .. quote(self.prefix)
    .. " -c " .. quote(self.prefix .. "/nginx.conf") .. " -e " .. quote(self.error_log) .. " 2>&1")
  return rc, (read_file(self.error_log) or "") .. out
end

local function wait_ready(self, opts)
  local timeout = opts.ready_timeout or 5
  local deadline = os.time() + timeout + 1
  for _ = 1, timeout * 20 do
    if opts.ready(self) then return true end
    if os.time() > deadline then break end
    sleep(0.05)
  end
  return false
end

local function try_start(self, opts)
  local names = opts.ports or { "port" }
  local who = opts.who or "nginx"
  local last = ""
  for attempt = 1, START_ATTEMPTS do
    local ports, taken = {}, {}
    for i, name in ipairs(names) do
      -- opts.port first (only it, unless port_fallback), then random ones, all different
      local port = attempt == 1 and i == 1 and opts.port
      while not port or taken[port] do port = proc.random_port() end
      ports[name], taken[port] = port, true
    end
    self.ports, self.port, self.attempts = ports, ports[names[1]], attempt
    local rc, log = launch(self, opts, ports)
    if rc == 0 then
      self.pid = tonumber((read_file(self.prefix .. "/nginx.pid") or ""):match("(%d+)"))
      if not self.pid then
        error(who .. ": nginx wrote no pid\n" .. log, 0)
      end
      if not opts.ready or wait_ready(self, opts) then return end
      proc.kill_tree(self.pid, self.signal, STOP_TIMEOUT)
      error(who .. ": nginx did not answer within " .. (opts.ready_timeout or 5) .. " s\n"
        .. (read_file(self.error_log) or ""), 0)
    end
    last = log
    if not busy(log) then
      error(who .. ": nginx failed to start (exit " .. tostring(rc) .. ") in " .. self.prefix
        .. "\n" .. log .. "\n--- nginx.conf:\n" .. (read_file(self.prefix .. "/nginx.conf") or ""), 0)
    end
    if attempt == 1 and opts.port and not opts.port_fallback then
      error(who .. ": port " .. opts.port .. " is busy", 0)
    end
  end
  error(who .. ": no free port after " .. START_ATTEMPTS .. " attempts\n" .. last, 0)
end

--- Starts nginx; raises (at `level`, default 2) with the error log when it cannot.
--- opts: kind, conf, install, ready, ready_timeout (5 s), ports (names, default
--- {"port"}), port (first try), port_fallback, signal (stop signal, "QUIT"),
--- env (prefix of the nginx command line), who (prefix of error messages).
function _M.start(opts, level)
  local prefix, out = proc.mktemp_dir(opts.kind or "nginx")
  if not prefix then
    error((opts.who or "nginx") .. ": mktemp failed: " .. out, (level or 1) + 1)
  end
  local self = setmetatable({ prefix = prefix, error_log = prefix .. "/error.log",
                              signal = opts.signal or "QUIT" }, Nginx)
  local ok, err = pcall(function()
    assert(sh("chmod 755 " .. quote(prefix)))
    if opts.install then opts.install(prefix) end
    try_start(self, opts)
  end)
  if not ok then
    proc.remove_dir(prefix)
    error(err, (level or 1) + 1)
  end
  live[self] = true
  self.watchdog_pid = proc.watchdog(proc.own_pid(), self.pid, prefix, self.signal)
  return self
end

--- The error log (what it was at stop, once stopped).
function Nginx:log()
  return self.final_log or read_file(self.error_log) or ""
end

--- Idempotent: the stop signal, SIGKILL after 3 s (master and workers), the
--- watchdog killed, the error log kept in memory, the prefix removed.
function Nginx:stop()
  if self.stopped then return true end
  self.stopped = true
  live[self] = nil
  if self.watchdog_pid then sh("kill " .. self.watchdog_pid) end
  proc.kill_tree(self.pid, self.signal, STOP_TIMEOUT)
  self.final_log = read_file(self.error_log) or ""
  proc.remove_dir(self.prefix)
  return true
end

return _M
