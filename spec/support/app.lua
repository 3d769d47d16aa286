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
local nginx = require "spec.support.nginx"
local proc = require "spec.support.proc"

local json = cjson.new()
local run, quote, sh = proc.run, proc.quote, proc.sh
local read_file = proc.read_file

local _M = {}

local App = {}
App.__index = App

local CWD = proc.CWD

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
  local self = setmetatable({}, App)
  self.nginx = nginx.start({
    kind = "app", who = "app", install = install,
    conf = function(prefix, ports)
      self.instance = "app-" .. prefix:match("[^.]+$")
      local vars = { PREFIX = prefix, PORT = tostring(ports.port) }
      local function fill(text) return ((text or ""):gsub("%${([%w_]+)}", vars)) end
      return nginx.conf{ prefix = prefix, workers = opts.workers, log_level = "info", http = {
        '    lua_package_path "' .. prefix .. "/lua/?.lua;" .. prefix .. "/lua/?/init.lua;"
          .. prefix .. '/app/?.lua;;";',
        '    lua_package_cpath "' .. prefix .. '/lib/?.so;;";',
        fill(opts.http),
      }, servers = nginx.server{ port = ports.port, listen = opts.reuseport and " reuseport",
        body = { '        location = /_ping { return 200 "' .. self.instance .. '"; }', fill(opts.server) } } }
    end,
    ready = function(n)
      local body, rc = run(curl("http://127.0.0.1:" .. n.port .. "/_ping", "--max-time 1") .. " 2>/dev/null")
      return rc == 0 and body == self.instance
    end,
    ready_timeout = 10,
  }, 2)
  local n = self.nginx
  self.prefix, self.error_log, self.pid, self.port = n.prefix, n.error_log, n.pid, n.port
  self.url = "http://127.0.0.1:" .. n.port
  return self
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
  return self.nginx:log()
end

function App:stop()
  self.nginx:stop()
end

_M.CWD = CWD

return _M
