-- Starts the test application's nginx (OpenResty-style: ngx_lua + scalekit) for
-- spec/integration/nginx_spec.lua, beside the fake Scalekit of spec/support/fake.lua.
--
--   local launcher = require "spec.support.app"
--   local app = launcher.start{ workers = 1, http = "…", server = "…" }
--   app.url, app:get("/t/call?…"), app:parallel("/t/call?…", 50), app:stop()
--
-- A separate nginx because the app needs its own init_by_lua / init_worker_by_lua
-- (the fake uses both, and nginx refuses a second one in the same http block).
-- The module (lua/, build-luajit/scalekit/core.so) and the app files are copied into
-- the prefix, world-readable: the workers run as `nobody` and the checkout need not
-- be readable by them.
local cjson = require "cjson"
local proc = require "spec.support.proc"

local json = cjson.new()
local run, quote, sh = proc.run, proc.quote, proc.sh
local read_file, write_file = proc.read_file, proc.write_file

local _M = {}

local App = {}
App.__index = App

local CWD = proc.CWD

local CONF = [[
daemon on;
master_process on;
worker_processes ${WORKERS};
pid ${PREFIX}/nginx.pid;
error_log ${PREFIX}/error.log info;
${MODULES}
events { worker_connections 1024; }
http {
    access_log off;
    server_tokens off;
    client_body_temp_path ${PREFIX}/tmp_body;
    proxy_temp_path ${PREFIX}/tmp_proxy;
    fastcgi_temp_path ${PREFIX}/tmp_fastcgi;
    uwsgi_temp_path ${PREFIX}/tmp_uwsgi;
    scgi_temp_path ${PREFIX}/tmp_scgi;
    lua_package_path "${PREFIX}/lua/?.lua;${PREFIX}/lua/?/init.lua;${PREFIX}/app/?.lua;;";
    lua_package_cpath "${PREFIX}/lib/?.so;;";
${HTTP}
    server {
        listen 127.0.0.1:${PORT}${LISTEN};
        location = /_ping { return 200 "${INSTANCE}"; }
${SERVER}
    }
}
]]

local function render(vars)
  return proc.render(CONF, vars, "launcher:")
end

-- copies the module and the app files into prefix, readable by the workers
local function install(prefix)
  local core = CWD .. "/build-luajit/scalekit/core.so"
  assert(sh("test -f " .. quote(core)), "build-luajit/scalekit/core.so is missing: run make LUA=luajit")
  local cmds = {
    "mkdir -p " .. quote(prefix .. "/lib/scalekit") .. " " .. quote(prefix .. "/app/spec/support"),
    "cp -R " .. quote(CWD .. "/lua") .. " " .. quote(prefix .. "/lua"),
    "cp " .. quote(core) .. " " .. quote(prefix .. "/lib/scalekit/"),
    "cd " .. quote(CWD .. "/spec/support") .. " && cp scenarios.lua client.lua app_handlers.lua "
      .. quote(prefix .. "/app/spec/support/"),
    "chmod -R a+rX " .. quote(prefix),
  }
  for _, c in ipairs(cmds) do assert(sh(c), c) end
end

local function curl(url, extra)
  return "curl -sS --max-time 30 " .. (extra or "") .. " " .. quote(url)
end

--- Start an app nginx. opts: workers, http (http-block text, may use ${PREFIX} and
--- ${PORT}), server (server-block text), reuseport (spread connections over workers).
function _M.start(opts)
  local prefix = assert(proc.mktemp_dir("app"), "mktemp failed")
  assert(sh("chmod 755 " .. quote(prefix)))
  install(prefix)
  local self = setmetatable({ prefix = prefix, error_log = prefix .. "/error.log",
                              instance = "app-" .. prefix:match("[^.]+$") }, App)
  local modules = proc.load_modules()
  local nginx = proc.find_nginx()
  local last = ""
  for _ = 1, 20 do
    local port = proc.random_port()
    local vars = { PREFIX = prefix, PORT = tostring(port) }
    local function fill(text) return ((text or ""):gsub("%${([%w_]+)}", vars)) end
    write_file(prefix .. "/nginx.conf", render({
      WORKERS = tostring(opts.workers or 1), PREFIX = prefix, PORT = tostring(port),
      MODULES = modules, HTTP = fill(opts.http), SERVER = fill(opts.server),
      LISTEN = opts.reuseport and " reuseport" or "", INSTANCE = self.instance,
    }))
    local rc, log = proc.start_nginx(nginx, prefix, self.error_log)
    if rc == 0 then
      self.port, self.url = port, "http://127.0.0.1:" .. port
      for _ = 1, 200 do
        local body, prc = run(curl(self.url .. "/_ping", "--max-time 1") .. " 2>/dev/null")
        if prc == 0 and body == self.instance then break end
        proc.sleep(0.05)
      end
      self.pid = tonumber((read_file(prefix .. "/nginx.pid") or ""):match("%d+"))
      assert(self.pid, "app nginx did not start:\n" .. (read_file(self.error_log) or ""))
      self:watchdog()
      return self
    end
    last = log
    if not last:find("Address already in use", 1, true) then break end
  end
  proc.remove_dir(prefix)
  error("app nginx failed to start:\n" .. last, 2)
end

-- stops nginx and removes the prefix if the test process dies without stop()
function App:watchdog()
  self.watchdog_pid = proc.watchdog(proc.own_pid(), self.pid, self.prefix, "QUIT")
end

--- GET path; returns the decoded JSON answer (or the raw text) and the status.
function App:get(path)
  local out, rc = run(curl(self.url .. path, "-w '\\n%{http_code}'") .. " 2>&1")
  assert(rc == 0, "curl " .. path .. " failed: " .. out)
  local body, status = out:match("^(.*)\n(%d%d%d)$")
  local ok, v = pcall(json.decode, body)
  return ok and v or body, tonumber(status)
end

--- `n` concurrent GETs of path (curl --parallel); returns the decoded answers and the
--- wall time in seconds.
function App:parallel(path, n)
  local dir = self.prefix .. "/par"
  sh("rm -rf " .. quote(dir) .. " && mkdir -p " .. quote(dir))
  local sep = path:find("?", 1, true) and "&" or "?"
  local clock = require("scalekit.core").monotonic
  local t0 = clock()
  local out, rc = run("curl -sS --max-time 60 --parallel --parallel-immediate --parallel-max " .. n
    .. " -o " .. quote(dir .. "/out_#1") .. " " .. quote(self.url .. path .. sep .. "i=[1-" .. n .. "]")
    .. " 2>&1")
  local wall = clock() - t0
  assert(rc == 0, "curl --parallel failed: " .. out)
  local answers = {}
  for i = 1, n do
    local text = read_file(dir .. "/out_" .. i) or ""
    local ok, v = pcall(json.decode, text)
    answers[i] = ok and v or text
  end
  return answers, wall
end

function App:error_log_text()
  return self.final_log or read_file(self.error_log) or ""
end

function App:stop()
  if self.stopped then return end
  self.stopped = true
  if self.watchdog_pid then sh("kill " .. self.watchdog_pid) end
  proc.kill_tree(self.pid, "QUIT", 3)
  self.final_log = read_file(self.error_log) or ""
  proc.remove_dir(self.prefix)
end

_M.CWD = CWD

return _M
