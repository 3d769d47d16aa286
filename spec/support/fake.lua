-- Local fake Scalekit for the specs, the demo and the benchmark: a real nginx
-- + ngx_lua server on 127.0.0.1, started and stopped from Lua.
--
--   local server = require "spec.support.fake"
--   local srv = server.start{ workers = 1, token_ttl = 3600, tls = false }
--   srv.url                   -- "http://127.0.0.1:PORT" / "https://localhost:PORT"
--   srv:admin("GET", "/_admin/stats")
--   srv:stop()
--
-- The helper talks to the server with the curl CLI only (never with the
-- project's own HTTP code, which is what is being tested). Works on Lua 5.1 /
-- LuaJIT and 5.4. See spec/support/fake/*.lua for the server side.
local cjson = require("cjson")
local proc = require("spec.support.proc")

local json = cjson.new()
local quote, run, sh, sleep = proc.quote, proc.run, proc.sh, proc.sleep
local read_file, write_file = proc.read_file, proc.write_file
local own_pid = proc.own_pid

local _M = {}

local Server = {}
Server.__index = Server

local START_ATTEMPTS = 20
local READY_TIMEOUT = 5
local STOP_TIMEOUT = 3

local OPTION_TYPES = {
  workers = "number",
  token_ttl = "number",
  client_id = "string",
  client_secret = "string",
  tls = "boolean",
  extra_http = "string",
  extra_server = "string",
  lua_package_path = "string",
  lua_package_cpath = "string",
  oidc = "boolean",
  port = "number",
  port_fallback = "boolean",
}


-- Working directory and absolute directory of this file, resolved at load time.
local CWD = proc.CWD
local HELPER_DIR
do
  local src = debug.getinfo(1, "S").source
  local dir = src:match("^@(.*)/[^/]*$") or "."
  if dir:sub(1, 1) ~= "/" then
    dir = CWD .. "/" .. dir:gsub("^%./", "")
  end
  HELPER_DIR = dir
end
local SERVER_DIR = HELPER_DIR .. "/fake"

-- Convert integral floats back to integers on 5.3+ (cjson 2.1.0 decodes every
-- number as a float there).
local tointeger = rawget(math, "tointeger")
local function normalize(v)
  if type(v) == "table" then
    for k, x in pairs(v) do
      v[k] = normalize(x)
    end
    return v
  end
  if tointeger and type(v) == "number" then
    return tointeger(v) or v
  end
  return v
end

---------------------------------------------------------------------------
-- ports, certificates
---------------------------------------------------------------------------


local OPENSSL_CA_CONF = [[
[ req ]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[ dn ]
CN = scalekit-lua fake Scalekit test CA
[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
]]

local OPENSSL_SERVER_EXT = [[
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
]]

-- Throwaway CA (RSA 2048, 1 day) + a server certificate for localhost and
-- 127.0.0.1 signed by it, written into `dir`. The one place certificates are
-- made (expired / self-signed / wrong-host variants can grow here).
local function make_certs(dir)
  local ca_conf, ext = dir .. "/ca.cnf", dir .. "/server.ext"
  write_file(ca_conf, OPENSSL_CA_CONF)
  write_file(ext, OPENSSL_SERVER_EXT)
  local q = function(name) return quote(dir .. "/" .. name) end
  local cmds = {
    "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -sha256 -config " .. quote(ca_conf)
      .. " -keyout " .. q("ca.key") .. " -out " .. q("ca.pem"),
    "openssl req -new -newkey rsa:2048 -nodes -sha256 -subj /CN=localhost"
      .. " -keyout " .. q("server.key") .. " -out " .. q("server.csr"),
    "openssl x509 -req -days 1 -sha256 -in " .. q("server.csr") .. " -CA " .. q("ca.pem")
      .. " -CAkey " .. q("ca.key") .. " -CAcreateserial -extfile " .. quote(ext)
      .. " -out " .. q("server.pem"),
  }
  for _, cmd in ipairs(cmds) do
    local out, rc = run(cmd .. " 2>&1")
    if rc ~= 0 then
      error("fake scalekit: openssl failed: " .. cmd .. "\n" .. out, 0)
    end
  end
  sh("chmod 644 " .. q("ca.pem") .. " " .. q("server.pem"))
  sh("chmod 600 " .. q("ca.key") .. " " .. q("server.key"))
  return {
    ca_file = dir .. "/ca.pem",
    cert_file = dir .. "/server.pem",
    key_file = dir .. "/server.key",
  }
end

-- base64url of a file's bytes, by the openssl CLI (not the library under test).
local function b64url_file(path)
  local out, rc = run("openssl base64 -A -in " .. quote(path))
  assert(rc == 0, "openssl base64 failed")
  return (out:gsub("%s", ""):gsub("[+/=]", { ["+"] = "-", ["/"] = "_", ["="] = "" }))
end

local function b64url_string(dir, s)
  local path = dir .. "/b64.in"
  write_file(path, s)
  local out = b64url_file(path)
  os.remove(path)
  return out
end

local OIDC_KID = "snk_fake_1"

-- RSA key pair for the fake's id/access tokens and its JWKS, made with the openssl
-- CLI. The private key is readable by the workers (nobody): it is a test key.
local function make_oidc_keys(dir)
  local key = dir .. "/oidc.key"
  local out, rc = run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "
    .. quote(key) .. " 2>&1")
  if rc ~= 0 then error("fake scalekit: openssl genpkey failed: " .. out, 0) end
  sh("chmod 644 " .. quote(key))
  local mod = run("openssl rsa -in " .. quote(key) .. " -noout -modulus"):match("Modulus=(%x+)")
  assert(mod, "cannot read the RSA modulus")
  local bytes = mod:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
  local jwks = {
    keys = { { kty = "RSA", kid = OIDC_KID, use = "sig", alg = "RS256",
               n = b64url_string(dir, bytes), e = "AQAB" } },
  }
  local jwks_path = dir .. "/jwks.json"
  write_file(jwks_path, json.encode(jwks), "644")
  return { oidc_key = key, oidc_jwks = jwks_path, oidc_kid = OIDC_KID }
end

---------------------------------------------------------------------------
-- registry: stop every server when the Lua state closes or is collected
---------------------------------------------------------------------------

local live = {}

local function stop_all()
  for srv in pairs(live) do
    pcall(srv.stop, srv)
  end
end

_M._sentinel = proc.on_close(stop_all)

---------------------------------------------------------------------------
-- nginx.conf
---------------------------------------------------------------------------

local function render(tpl, vars)
  return proc.render(tpl, vars, "fake scalekit: nginx.conf.tpl uses")
end

-- "a/?.lua;/b/?.lua" -> "<cwd>/a/?.lua;/b/?.lua;": the nginx workers do not
-- run in our working directory, so relative entries are made absolute.
local function path_prefix(entries)
  if not entries or entries == "" then
    return ""
  end
  local out = {}
  for e in entries:gmatch("[^;]+") do
    if e:sub(1, 1) ~= "/" and e:sub(1, 1) ~= "$" then
      e = CWD .. "/" .. e:gsub("^%./", "")
    end
    out[#out + 1] = e
  end
  if #out == 0 then
    return ""
  end
  return table.concat(out, ";") .. ";"
end

local function nginx_conf(self, port)
  local tpl = assert(read_file(SERVER_DIR .. "/nginx.conf.tpl"), "cannot read nginx.conf.tpl")
  local tls_conf = ""
  if self.tls then
    tls_conf = table.concat({
      "        ssl_certificate " .. self.cert_file .. ";",
      "        ssl_certificate_key " .. self.key_file .. ";",
      "        ssl_protocols TLSv1.2 TLSv1.3;",
      "        ssl_session_cache shared:skfake_ssl:1m;",
    }, "\n")
  end
  local cpath = path_prefix(self.opts.lua_package_cpath)
  if cpath:sub(-1) == ";" then
    cpath = cpath:sub(1, -2)
  end
  return render(tpl, {
    PREFIX = self.prefix,
    PORT = port,
    WORKERS = self.opts.workers or 1,
    LOAD_MODULES = proc.load_modules(),
    LUA_PACKAGE_PATH = path_prefix(self.opts.lua_package_path),
    LUA_PACKAGE_CPATH = cpath,
    LISTEN_SSL = self.tls and " ssl" or "",
    TLS_CONF = tls_conf,
    EXTRA_HTTP = self.opts.extra_http or "",
    EXTRA_SERVER = self.opts.extra_server or "",
  })
end

---------------------------------------------------------------------------
-- start / stop
---------------------------------------------------------------------------

local function base_url(self, port)
  if self.tls then
    return "https://localhost:" .. port
  end
  return "http://127.0.0.1:" .. port
end

-- curl options shared by every admin call (TLS trust, fixed resolution).
local function curl_common(self)
  local parts = { "curl -sS --max-time 10" }
  if self.tls then
    parts[#parts + 1] = "--cacert " .. quote(self.ca_file)
    parts[#parts + 1] = "--resolve " .. quote("localhost:" .. self.port .. ":127.0.0.1")
  end
  return table.concat(parts, " ")
end

local function ping(self)
  local out, rc = run(curl_common(self) .. " --max-time 1 "
    .. quote(self.url .. "/_admin/ping") .. " 2>/dev/null")
  if rc ~= 0 then
    return false
  end
  local ok, v = pcall(json.decode, out)
  return ok and type(v) == "table" and v.instance == self.instance
end

local function cleanup_prefix(prefix)
  if prefix and prefix:match("^/tmp/scalekit%-fake%.[%w]+$") then
    proc.remove_dir(prefix)
  end
end

-- SIGQUIT (graceful), wait up to STOP_TIMEOUT, then SIGKILL the master and
-- the workers it had.
local function kill_nginx(pid)
  proc.kill_tree(pid, "QUIT", STOP_TIMEOUT)
end

-- Background shell that stops nginx and removes the prefix if this Lua
-- process dies without calling stop (crash, SIGKILL, os.exit without close).
local function start_watchdog(self)
  self.watchdog_pid = proc.watchdog(self.owner_pid, self.pid, self.prefix, "QUIT")
end

---@param opts table|nil see the module header
---@return table server
function _M.start(opts)
  opts = opts or {}
  for k, v in pairs(opts) do
    local want = OPTION_TYPES[k]
    if not want then
      error("fake scalekit: unknown option '" .. tostring(k) .. "'", 2)
    end
    if type(v) ~= want then
      error("fake scalekit: option '" .. k .. "' must be a " .. want, 2)
    end
  end

  local self = setmetatable({
    opts = opts,
    tls = opts.tls and true or false,
    client_id = opts.client_id or "skc_test",
    client_secret = opts.client_secret or "test_secret_value",
    token_ttl = opts.token_ttl or 3600,
    owner_pid = own_pid(),
  }, Server)

  local prefix, out = proc.mktemp_dir("fake")
  if not prefix then
    error("fake scalekit: mktemp failed: " .. out, 2)
  end
  self.prefix = prefix
  self.error_log = prefix .. "/error.log"

  local ok, err = pcall(function()
    assert(sh("chmod 755 " .. quote(prefix)))
    assert(sh("mkdir -p " .. quote(prefix .. "/lua") .. " " .. quote(prefix .. "/logs")))
    assert(sh("cp " .. quote(SERVER_DIR) .. "/*.lua " .. quote(prefix .. "/lua/")),
      "cannot copy " .. SERVER_DIR .. "/*.lua")
    assert(sh("chmod 755 " .. quote(prefix .. "/lua") .. " && chmod 644 " .. quote(prefix .. "/lua") .. "/*.lua"))

    self.instance = "fake-" .. prefix:match("[^.]+$") .. "-" .. tostring(os.time())
    local config = {
      token_ttl = self.token_ttl,
      client_id = self.client_id,
      client_secret = self.client_secret,
      instance = self.instance,
    }
    if opts.oidc then
      local keys = make_oidc_keys(prefix)
      for k, v in pairs(keys) do config[k] = v end
      self.oidc_key, self.oidc_kid = keys.oidc_key, keys.oidc_kid
    end
    write_file(prefix .. "/config.json", json.encode(config), "644")

    if self.tls then
      local certs = make_certs(prefix)
      self.ca_file, self.cert_file, self.key_file = certs.ca_file, certs.cert_file, certs.key_file
    end

    local nginx = proc.find_nginx()
    local last_log = ""
    for attempt = 1, START_ATTEMPTS do
      -- opts.port first (only it, unless port_fallback), then proc.random_port
      local port = attempt == 1 and opts.port or proc.random_port()
      self.port, self.attempts = port, attempt
      self.url = base_url(self, port)
      write_file(prefix .. "/nginx.conf", nginx_conf(self, port), "644")
      local src, log = proc.start_nginx(nginx, prefix, self.error_log)
      if src == 0 then
        local deadline = os.time() + READY_TIMEOUT + 1
        local ready = false
        local tries = 0
        repeat
          if ping(self) then
            ready = true
            break
          end
          tries = tries + 1
          sleep(0.05)
        until tries >= READY_TIMEOUT * 20 or os.time() > deadline
        self.pid = tonumber((read_file(prefix .. "/nginx.pid") or ""):match("(%d+)"))
        if ready and self.pid then
          return
        end
        -- started but not answering: stop it, report
        kill_nginx(self.pid)
        error("fake scalekit: nginx did not answer /_admin/ping within "
          .. READY_TIMEOUT .. " s\n" .. (read_file(self.error_log) or ""), 0)
      end
      last_log = log
      if opts.port and not opts.port_fallback and log:find("Address already in use", 1, true) then
        error("fake scalekit: port " .. port .. " is busy", 0)
      end
      if not log:find("Address already in use", 1, true) then
        error("fake scalekit: nginx failed to start (exit " .. tostring(src) .. ") in "
          .. prefix .. "\n" .. log, 0)
      end
    end
    error("fake scalekit: no free port after " .. START_ATTEMPTS .. " attempts\n" .. last_log, 0)
  end)
  if not ok then
    cleanup_prefix(prefix)
    error(err, 2)
  end

  live[self] = true
  start_watchdog(self)
  return self
end

-- Idempotent: SIGQUIT, wait up to 3 s, then SIGKILL master and workers;
-- removes the temp dir. The error log is kept in memory (error_log_text()).
function Server:stop()
  if self.stopped then
    return true
  end
  self.stopped = true
  live[self] = nil
  if self.watchdog_pid then
    sh("kill " .. self.watchdog_pid)
  end
  kill_nginx(self.pid)
  self.final_error_log = read_file(self.error_log)
  cleanup_prefix(self.prefix)
  return true
end

---------------------------------------------------------------------------
-- admin API (curl CLI)
---------------------------------------------------------------------------

-- Calls an admin (or any) endpoint, returns the decoded JSON answer; raises
-- on a transport failure or a non-2xx status.
function Server:admin(method, path, body)
  if self.stopped then
    error("fake scalekit: server is stopped", 2)
  end
  local cmd = { curl_common(self), "-X", quote(method),
    "-H", quote("Content-Type: application/json"),
    "-o", quote(self.prefix .. "/admin_resp.json"),
    "-w", quote("%{http_code}") }
  if body ~= nil then
    write_file(self.prefix .. "/admin_req.json", json.encode(body))
    cmd[#cmd + 1] = "--data-binary " .. quote("@" .. self.prefix .. "/admin_req.json")
  end
  cmd[#cmd + 1] = quote(self.url .. path)
  local out, rc = run(table.concat(cmd, " ") .. " 2>&1")
  if rc ~= 0 then
    error("fake scalekit: curl " .. method .. " " .. path .. " failed (" .. rc .. "): " .. out, 2)
  end
  local status = tonumber(out:match("(%d%d%d)%s*$"))
  local text = read_file(self.prefix .. "/admin_resp.json") or ""
  if not status or status < 200 or status > 299 then
    error("fake scalekit: " .. method .. " " .. path .. " answered "
      .. tostring(status) .. ": " .. text, 2)
  end
  if text == "" then
    return {}
  end
  local ok, v = pcall(json.decode, text)
  if not ok then
    error("fake scalekit: " .. method .. " " .. path .. " answered invalid JSON: " .. text, 2)
  end
  return normalize(v)
end

---@param opts table|nil {keep_tokens = true} keeps issued tokens valid
function Server:reset(opts)
  self:admin("POST", "/_admin/reset", opts or {})
  return true
end

function Server:configure(conf)
  local res = self:admin("POST", "/_admin/config", conf or {})
  if res.token_ttl then
    self.token_ttl = res.token_ttl
  end
  if res.client_id then
    self.client_id, self.client_secret = res.client_id, res.client_secret
  end
  return res
end

function Server:seed(spec)
  return self:admin("POST", "/_admin/seed", spec or {})
end

function Server:faults(list)
  return self:admin("POST", "/_admin/faults", list)
end

function Server:clear_faults()
  return self:admin("DELETE", "/_admin/faults")
end

--- A compact JWS made with the openssl CLI: `header` defaults to RS256 with the
--- fake's kid; `opts.key` signs with another PEM key, `opts.digest` picks the hash,
--- `opts.raw_signature` replaces the signature bytes.
function Server:sign_jwt(claims, header, opts)
  opts = opts or {}
  local key = opts.key or self.oidc_key
  assert(key, "start the server with oidc = true")
  header = header or { alg = "RS256", typ = "JWT", kid = self.oidc_kid }
  local input = b64url_string(self.prefix, json.encode(header)) .. "."
    .. b64url_string(self.prefix, json.encode(claims))
  if opts.raw_signature then
    return input .. "." .. b64url_string(self.prefix, opts.raw_signature)
  end
  local path, sig = self.prefix .. "/jws.in", self.prefix .. "/jws.sig"
  write_file(path, input)
  local out, rc = run("openssl dgst -" .. (opts.digest or "sha256") .. " -sign " .. quote(key)
    .. " -out " .. quote(sig) .. " " .. quote(path) .. " 2>&1")
  assert(rc == 0, "openssl dgst -sign failed: " .. out)
  local encoded = b64url_file(sig)
  os.remove(path)
  os.remove(sig)
  return input .. "." .. encoded
end

function Server:revoke_tokens()
  return self:admin("POST", "/_admin/revoke")
end

function Server:stats()
  return self:admin("GET", "/_admin/stats")
end

function Server:requests()
  local list = self:admin("GET", "/_admin/requests")
  if list[1] == nil then
    return {}
  end
  return list
end

function Server:error_log_text()
  if self.stopped then
    return self.final_error_log or ""
  end
  return read_file(self.error_log) or ""
end

-- Issues a token with the configured credentials through curl (handy for
-- specs that want to call /api routes with curl).
function Server:token()
  local out, rc = run(curl_common(self) .. " -X POST"
    .. " --data-urlencode grant_type=client_credentials"
    .. " --data-urlencode " .. quote("client_id=" .. self.client_id)
    .. " --data-urlencode " .. quote("client_secret=" .. self.client_secret)
    .. " " .. quote(self.url .. "/oauth/token") .. " 2>&1")
  if rc ~= 0 then
    error("fake scalekit: token request failed: " .. out, 2)
  end
  local ok, v = pcall(json.decode, out)
  if not ok or type(v) ~= "table" or not v.access_token then
    error("fake scalekit: token request answered: " .. out, 2)
  end
  return v.access_token
end

function Server:__tostring()
  return "fake scalekit " .. tostring(self.url)
end

_M.Server = Server

return _M
