-- Misbehaving HTTP servers on 127.0.0.1 for the fault specs: a bare nginx + ngx_lua
-- whose handlers write raw bytes on the client socket (ngx.req.socket(true)), plus a
-- listener whose accept queue is full (a local connect timeout). Nothing here ever
-- talks to another machine.
--
--   local rawserver = require "spec.support.raw"
--   local rs = rawserver.start{ tls = true }   -- tls: also the certificate variants
--   rs.url                  -- "http://127.0.0.1:PORT"
--   rs.tls_url.good         -- "https://localhost:PORT": certificate signed by rs.ca_file
--   rs.tls_url.expired      --   same CA, validity ended in 2020
--   rs.tls_url.wrong_host   --   same CA, issued for wrong-host.test only
--   rs.tls_url.self_signed  --   self-signed for localhost (trust it with rs.self_signed_file)
--   rs:requests()           -- every request seen: {method, path, authorization = bool, port}
--   rs:clear()              -- forget them
--   rs:stop()               -- idempotent; also done when the Lua state closes
--
--   local bh = rawserver.unaccepted{ seconds = 30 }  -- bh.url: connect() never completes
--   bh:stop()
--
-- Routes: POST /oauth/token answers a fixed client-credentials token so that a client
-- whose environment_url is rs.url can reach the API routes. Any other path picks a
-- scenario by its last segment, so both `GET /raw/<name>` (core.http directly) and
-- `GET /api/v1/organizations/<name>` (sk.organizations:get("<name>")) reach it:
--   ok                  200 {"id":"ok",...} (Content-Length, keep-alive)
--   never               reads the request, never answers (until nginx stops)
--   close_mid_body      Content-Length: 100, 20 bytes of body, close
--   truncated_chunked   chunked, one chunk, close before the last chunk
--   empty_reply         reads the request, closes without a byte
--   http10              HTTP/1.0 200, no Content-Length, body delimited by close
--   http11_close        HTTP/1.1 200 + Connection: close, no length, delimited by close
--   trickle             status line, headers and body one byte every 0.2 s
--   garbage             bytes that are not HTTP
--   big                 200 with a valid 1 MiB JSON body ({"blob":"xxx…"})
--   huge_header         200 with a 200 KiB header line
--   long_request_id     500 with a 5000-byte x-request-id
--   continue            "100 Continue" then 200 JSON (two header blocks)
--   bad_length          two different Content-Length headers
--   ok_https            like ok (on the TLS ports every scenario works the same)
-- The helper talks to the server with the curl CLI only, like spec/support/fake.lua.
local certs = require "spec.support.certs"
local nginx = require "spec.support.nginx"
local proc = require "spec.support.proc"

local _M = {}

local Raw = {}
Raw.__index = Raw

local TOKEN = "raw_token_0123456789abcdef"
_M.TOKEN = TOKEN

local quote, run, sh, sleep = proc.quote, proc.run, proc.sh, proc.sleep
local read_file, write_file, alive = proc.read_file, proc.write_file, proc.pid_alive

---------------------------------------------------------------------------
-- server side (written into the prefix, run by the nginx worker)
---------------------------------------------------------------------------

local HANDLER = [=[
local cjson = require "cjson"
local ngx = ngx
local LOG = ngx.shared.rawlog
local TOKEN = "${TOKEN}"
local _M = {}

local function record()
  local h = ngx.req.get_headers(0)
  local n = LOG:incr("n", 1, 0)
  LOG:set("r:" .. n, cjson.encode({
    method = ngx.req.get_method(),
    path = ngx.var.request_uri,
    authorization = h["authorization"] ~= nil,
    port = tonumber(ngx.var.server_port),
  }))
end

local function json_answer(status, doc, extra)
  local body = cjson.encode(doc)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Content-Length"] = #body
  for k, v in pairs(extra or {}) do ngx.header[k] = v end
  ngx.print(body)
  return ngx.exit(status)
end

-- Raw bytes on the client socket, then drop the connection.
local function raw(parts, pause)
  ngx.req.read_body()
  local sock = assert(ngx.req.socket(true))
  for _, s in ipairs(parts) do
    local ok = sock:send(s)
    if not ok then return ngx.exit(444) end
    if pause then ngx.sleep(pause) end
  end
  return ngx.exit(444)
end

local OK_BODY = '{"id":"ok","display_name":"raw"}'

local S = {}
function S.ok() return json_answer(200, { id = "ok", display_name = "raw" }) end
S.ok_https = S.ok
S.landing = S.ok
function S.never()
  ngx.req.read_body()
  local sock = assert(ngx.req.socket(true))
  -- hold the connection open without a byte until nginx stops
  while not ngx.worker.exiting() do ngx.sleep(0.05) end
  sock:send("")
  return ngx.exit(444)
end
function S.close_mid_body()
  return raw({ "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
               '{"id":"ok","displa' })
end
function S.truncated_chunked()
  return raw({ "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
               "10\r\n{\"id\":\"ok\",\"dis\r\n" })
end
function S.empty_reply() return raw({}) end
function S.http10()
  return raw({ "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n", OK_BODY })
end
function S.http11_close()
  return raw({ "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
               OK_BODY })
end
function S.trickle()
  local all = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    .. #OK_BODY .. "\r\n\r\n" .. OK_BODY
  local parts = {}
  for i = 1, #all do parts[i] = all:sub(i, i) end
  return raw(parts, 0.2)
end
function S.garbage() return raw({ "SSH-2.0-OpenSSH_9.2\r\nthis is not HTTP\r\n\r\n" }) end
function S.big()
  local body = '{"blob":"' .. string.rep("x", 1024 * 1024) .. '"}'
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Content-Length"] = #body
  ngx.print(body)
  return ngx.exit(200)
end
function S.huge_header()
  return raw({ "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Huge: "
               .. string.rep("h", 200 * 1024) .. "\r\nContent-Length: " .. #OK_BODY .. "\r\n\r\n",
               OK_BODY })
end
function S.long_request_id()
  return json_answer(500, { code = 13, message = "internal" },
                     { ["x-request-id"] = string.rep("r", 5000) })
end
function S.continue()
  return raw({ "HTTP/1.1 100 Continue\r\nx-request-id: from-100\r\n\r\n",
               "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " .. #OK_BODY
                 .. "\r\n\r\n" .. OK_BODY })
end
function S.bad_length()
  return raw({ "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n"
               .. "Content-Length: 9\r\n\r\n" .. OK_BODY })
end

function _M.handle()
  local uri = ngx.var.uri
  if uri == "/_raw/log" then
    local n = LOG:get("n") or 0
    local out = {}
    for i = 1, n do out[#out + 1] = LOG:get("r:" .. i) end
    ngx.header["Content-Type"] = "application/json"
    ngx.print("[" .. table.concat(out, ",") .. "]")
    return ngx.exit(200)
  elseif uri == "/_raw/clear" then
    LOG:flush_all()
    return ngx.exit(204)
  end
  record()
  if uri == "/oauth/token" then
    ngx.req.read_body()
    return json_answer(200, { access_token = TOKEN, token_type = "Bearer", expires_in = 3600 })
  end
  local name = uri:match("([^/]+)$") or ""
  local f = S[name]
  if not f then return json_answer(404, { code = 5, message = "no scenario " .. name }) end
  return f()
end

return _M
]=]

local TLS_NAMES = { "good", "expired", "wrong_host", "self_signed" }

local function server(port, tls)
  return nginx.server{ port = port, tls = tls,
    body = '        location / { content_by_lua_block { require("raw_handlers").handle() } }' }
end

local function conf(self, prefix, ports)
  local servers = { server(ports.plain) }
  if self.tls then
    for _, name in ipairs(TLS_NAMES) do
      servers[#servers + 1] = server(ports[name], { cert = self.certs[name], key = self.certs.key_file })
    end
  end
  return nginx.conf{ prefix = prefix, worker_connections = 256, servers = servers, http = {
    '    lua_package_path "' .. prefix .. '/?.lua;;";',
    "    lua_shared_dict rawlog 4m;",
    "    lua_socket_log_errors off;",
    "    keepalive_timeout 60s;",
  } }
end

---------------------------------------------------------------------------
-- lifecycle
---------------------------------------------------------------------------

--- Start the raw server. opts: { tls = boolean }
function _M.start(opts)
  opts = opts or {}
  local self = setmetatable({ tls = opts.tls and true or false }, Raw)
  local ports = { "plain" }
  if self.tls then
    for _, name in ipairs(TLS_NAMES) do ports[#ports + 1] = name end
  end
  self.nginx = nginx.start({
    kind = "raw", who = "rawserver", ports = ports,
    signal = "TERM", -- fast shutdown: `never` handlers must not hold it up
    install = function(prefix)
      write_file(prefix .. "/raw_handlers.lua", (HANDLER:gsub("%${TOKEN}", TOKEN)), "644")
      if self.tls then self.certs = certs.make(prefix) end
    end,
    conf = function(prefix, p) return conf(self, prefix, p) end,
    ready = function(n)
      return sh("curl -s --max-time 1 -o /dev/null " .. quote("http://127.0.0.1:" .. n.port .. "/_raw/log"))
    end,
  }, 2)
  local n = self.nginx
  self.prefix, self.pid, self.port = n.prefix, n.pid, n.port
  self.url = "http://127.0.0.1:" .. n.port
  self.tls_url = {}
  if self.tls then
    self.ca_file, self.self_signed_file = self.certs.ca_file, self.certs.self_signed
    for _, name in ipairs(TLS_NAMES) do
      self.tls_url[name] = "https://localhost:" .. n.ports[name]
    end
  end
  return self
end

function Raw:requests()
  local out = run("curl -sS --max-time 5 " .. quote(self.url .. "/_raw/log"))
  local list = require("cjson").decode(out)
  -- the log of a log request is not interesting: /_raw/* are not recorded
  return list
end

function Raw:clear()
  assert(sh("curl -sS --max-time 5 " .. quote(self.url .. "/_raw/clear")))
end

function Raw:error_log_text()
  return self.nginx:log()
end

function Raw:stop()
  return self.nginx:stop()
end

---------------------------------------------------------------------------
-- a listener that never completes a connect()
---------------------------------------------------------------------------

-- LuaJIT FFI: listen(fd, 0) on 127.0.0.1 and fill the accept queue with one
-- connection of our own; Linux then drops every further SYN, so a client's
-- connect() hangs until its connect timeout. Exits by itself after `seconds`.
local UNACCEPTED = [[
local ffi = require "ffi"
ffi.cdef[=[
int socket(int, int, int);
int bind(int, const void *, unsigned int);
int listen(int, int);
int connect(int, const void *, unsigned int);
int getsockname(int, void *, unsigned int *);
unsigned int sleep(unsigned int);
struct sk_sin { uint16_t family; uint16_t port; uint32_t addr; uint8_t zero[8]; };
]=]
local C = ffi.C
local fd = C.socket(2, 1, 0)
local sa = ffi.new("struct sk_sin")
sa.family = 2
sa.addr = 0x0100007f
assert(C.bind(fd, sa, ffi.sizeof(sa)) == 0, "bind")
assert(C.listen(fd, 0) == 0, "listen")
local len = ffi.new("unsigned int[1]", ffi.sizeof(sa))
assert(C.getsockname(fd, sa, len) == 0)
local port = bit.bor(bit.rshift(sa.port, 8), bit.lshift(bit.band(sa.port, 0xff), 8))
for _ = 1, 2 do C.connect(C.socket(2, bit.bor(1, 2048), 0), sa, ffi.sizeof(sa)) end
io.stdout:write(port, "\n")
io.stdout:flush()
C.sleep(tonumber(arg[1]))
]]

local Unaccepted = {}
Unaccepted.__index = Unaccepted

--- opts: { seconds = 30 }: lifetime of the listener (it exits by itself).
function _M.unaccepted(opts)
  local seconds = (opts and opts.seconds) or 30
  local dir = proc.mktemp_dir("raw")
  write_file(dir .. "/unaccepted.lua", UNACCEPTED)
  local out = run("cd " .. quote(dir) .. " && (luajit unaccepted.lua " .. math.floor(seconds)
    .. " > port.txt 2>err.txt & echo $!)")
  local self = setmetatable({ pid = tonumber(out:match("(%d+)")), dir = dir }, Unaccepted)
  for _ = 1, 100 do
    local p = tonumber((read_file(dir .. "/port.txt") or ""):match("(%d+)"))
    if p then
      self.port = p
      self.url = "http://127.0.0.1:" .. p
      return self
    end
    sleep(0.02)
  end
  local err = read_file(dir .. "/err.txt") or ""
  self:stop()
  error("rawserver: unaccepted listener did not start: " .. err, 2)
end

function Unaccepted:stop()
  if self.pid and alive(self.pid) then sh("kill " .. self.pid) end
  self.pid = nil
  if self.dir and self.dir:match("^/tmp/scalekit%-raw%.[%w]+$") then proc.remove_dir(self.dir) end
  self.dir = nil
end

return _M
