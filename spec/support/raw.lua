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
local proc = require "spec.support.proc"

local _M = {}

local Raw = {}
Raw.__index = Raw

local START_ATTEMPTS = 20

local TOKEN = "raw_token_0123456789abcdef"
_M.TOKEN = TOKEN

local quote, run, sh, sleep = proc.quote, proc.run, proc.sh, proc.sleep
local read_file, write_file, alive = proc.read_file, proc.write_file, proc.pid_alive

local random_port = proc.random_port

---------------------------------------------------------------------------
-- certificates (openssl CLI)
---------------------------------------------------------------------------

local CA_CONF = [[
[ ca ]
default_ca = sk
[ sk ]
dir = ${DIR}
database = ${DIR}/index.txt
serial = ${DIR}/serial
new_certs_dir = ${DIR}
certificate = ${DIR}/ca.pem
private_key = ${DIR}/ca.key
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[ any ]
commonName = supplied
[ req ]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[ dn ]
CN = scalekit-lua raw test CA
[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ leaf_localhost ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
[ leaf_wrong ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:wrong-host.test
[ self_signed ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, digitalSignature, keyEncipherment, keyCertSign
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
]]

-- A CA (P-256, 2 days) and four leaf certificates for one server key: good, expired
-- (notAfter in 2020, via `openssl ca -startdate/-enddate`), wrong host, self-signed.
local function make_certs(dir)
  write_file(dir .. "/ca.cnf", (CA_CONF:gsub("%${DIR}", dir)))
  write_file(dir .. "/index.txt", "")
  write_file(dir .. "/serial", "1000\n")
  local function p(name) return quote(dir .. "/" .. name) end
  local conf = " -config " .. p("ca.cnf")
  local ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  local sign = "openssl ca -batch -notext" .. conf .. " -in " .. p("leaf.csr")
  local cmds = {
    "openssl req -x509" .. ec .. " -days 2 -sha256" .. conf .. " -keyout " .. p("ca.key")
      .. " -out " .. p("ca.pem"),
    "openssl req -new" .. ec .. " -subj /CN=localhost -keyout " .. p("leaf.key")
      .. " -out " .. p("leaf.csr"),
    sign .. " -days 2 -extensions leaf_localhost -out " .. p("good.pem"),
    sign .. " -startdate 200101000000Z -enddate 200102000000Z -extensions leaf_localhost -out "
      .. p("expired.pem"),
    sign .. " -days 2 -extensions leaf_wrong -subj /CN=wrong-host.test -out " .. p("wrong_host.pem"),
    "openssl req -x509 -new -key " .. p("leaf.key") .. " -days 2 -sha256 -subj /CN=localhost"
      .. conf .. " -extensions self_signed -out " .. p("self_signed.pem"),
  }
  for _, cmd in ipairs(cmds) do
    local out, rc = run(cmd .. " 2>&1")
    if rc ~= 0 then error("rawserver: openssl failed: " .. cmd .. "\n" .. out, 0) end
  end
  sh("chmod 644 " .. p("*.pem") .. " " .. p("*.key"))
end

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

local CONF = [[
daemon on;
master_process on;
worker_processes 1;
pid ${PREFIX}/nginx.pid;
error_log ${PREFIX}/error.log warn;
${LOAD_MODULES}
events { worker_connections 256; }
http {
    access_log off;
    server_tokens off;
    client_body_temp_path ${PREFIX}/tmp;
    proxy_temp_path ${PREFIX}/tmp;
    fastcgi_temp_path ${PREFIX}/tmp;
    uwsgi_temp_path ${PREFIX}/tmp;
    scgi_temp_path ${PREFIX}/tmp;
    lua_package_path "${PREFIX}/?.lua;;";
    lua_shared_dict rawlog 4m;
    lua_socket_log_errors off;
    keepalive_timeout 60s;
    ${SERVERS}
}
]]

local SERVER = [[
    server {
        listen 127.0.0.1:${PORT}${SSL};
        server_name localhost;
        ${TLS}
        location / { content_by_lua_block { require("raw_handlers").handle() } }
    }
]]

local function render(tpl, vars)
  return proc.render(tpl, vars, "rawserver:")
end

local TLS_NAMES = { "good", "expired", "wrong_host", "self_signed" }

local function conf(self, ports)
  local servers = { render(SERVER, { PORT = ports.plain, SSL = "", TLS = "" }) }
  if self.tls then
    for _, name in ipairs(TLS_NAMES) do
      servers[#servers + 1] = render(SERVER, {
        PORT = ports[name], SSL = " ssl",
        TLS = "ssl_certificate " .. self.prefix .. "/" .. name .. ".pem; ssl_certificate_key "
          .. self.prefix .. "/leaf.key; ssl_protocols TLSv1.2 TLSv1.3;",
      })
    end
  end
  return render(CONF, { PREFIX = self.prefix, LOAD_MODULES = proc.load_modules(),
                        SERVERS = table.concat(servers, "\n") })
end

---------------------------------------------------------------------------
-- lifecycle
---------------------------------------------------------------------------

local live = {}
local function stop_all()
  for s in pairs(live) do pcall(s.stop, s) end
end
_M._sentinel = proc.on_close(stop_all)

-- fast shutdown (SIGTERM): `never` handlers must not hold it up
local function kill(pid)
  proc.kill_tree(pid, "TERM", 3)
end

--- Start the raw server. opts: { tls = boolean }
function _M.start(opts)
  opts = opts or {}
  local self = setmetatable({ tls = opts.tls and true or false, owner_pid = proc.own_pid() }, Raw)
  self.prefix = proc.mktemp_dir("raw")
  assert(self.prefix, "rawserver: mktemp failed")
  local ok, err = pcall(function()
    assert(sh("chmod 755 " .. quote(self.prefix) .. " && mkdir -p " .. quote(self.prefix .. "/tmp")))
    write_file(self.prefix .. "/raw_handlers.lua", (HANDLER:gsub("%${TOKEN}", TOKEN)))
    sh("chmod 644 " .. quote(self.prefix .. "/raw_handlers.lua"))
    if self.tls then
      make_certs(self.prefix)
      self.ca_file = self.prefix .. "/ca.pem"
      self.self_signed_file = self.prefix .. "/self_signed.pem"
    end
    local log = ""
    local nginx = proc.find_nginx()
    for _ = 1, START_ATTEMPTS do
      local ports = { plain = random_port() }
      if self.tls then
        for _, name in ipairs(TLS_NAMES) do ports[name] = random_port() end
      end
      write_file(self.prefix .. "/nginx.conf", conf(self, ports))
      local src
      src, log = proc.start_nginx(nginx, self.prefix, self.prefix .. "/error.log")
      if src == 0 then
        self.pid = tonumber((read_file(self.prefix .. "/nginx.pid") or ""):match("(%d+)"))
        self.port = ports.plain
        self.url = "http://127.0.0.1:" .. ports.plain
        self.tls_url = {}
        if self.tls then
          for _, name in ipairs(TLS_NAMES) do
            self.tls_url[name] = "https://localhost:" .. ports[name]
          end
        end
        for _ = 1, 100 do
          if sh("curl -s --max-time 1 -o /dev/null " .. quote(self.url .. "/_raw/log")) then return end
          sleep(0.05)
        end
        error("rawserver: nginx does not answer\n" .. (read_file(self.prefix .. "/error.log") or ""), 0)
      end
      if not log:find("Address already in use", 1, true) then break end
    end
    error("rawserver: nginx failed to start\n" .. log, 0)
  end)
  if not ok then
    kill(self.pid)
    proc.remove_dir(self.prefix)
    error(err, 2)
  end
  live[self] = true
  self.watchdog_pid = proc.watchdog(self.owner_pid, self.pid, self.prefix, "KILL")
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
  return self.final_error_log or read_file(self.prefix .. "/error.log") or ""
end

function Raw:stop()
  if self.stopped then return true end
  self.stopped = true
  live[self] = nil
  if self.watchdog_pid then sh("kill " .. self.watchdog_pid) end
  kill(self.pid)
  self.final_error_log = read_file(self.prefix .. "/error.log")
  if self.prefix:match("^/tmp/scalekit%-raw%.[%w]+$") then proc.remove_dir(self.prefix) end
  return true
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
