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
local certs = require("spec.support.certs")
local creds = require("spec.support.client")
local nginx = require("spec.support.nginx")
local proc = require("spec.support.proc")

local json = cjson.new()
local quote, run, sh = proc.quote, proc.run, proc.sh
local read_file, write_file = proc.read_file, proc.write_file

local _M = {}

local Server = {}
Server.__index = Server

-- size of the skfake_data shared dict, the records of every kind: ~1.3 KB per
-- organization, so 25 000 fit; the specs seed 2 500 at the most (one server) and the
-- bench generates its large data set itself (bench/pages.lua)
_M.DATA_SIZE = "32m"

-- the options of start, by type
local OPTION_TYPES = {}
for want, names in pairs({
  number = "workers token_ttl port",
  boolean = "tls oidc port_fallback",
  string = "client_id client_secret extra_http extra_server lua_package_path lua_package_cpath data_size",
}) do
  for name in names:gmatch("%S+") do OPTION_TYPES[name] = want end
end


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
-- nginx.conf
---------------------------------------------------------------------------

-- "a/?.lua;/b/?.lua" -> "<prefix>/mod1/?.lua;<prefix>/mod2/?.lua;": the nginx
-- workers run as nobody, elsewhere, and may not read the caller's directories (a
-- checkout in a 0700 `mktemp -d`), so the directory of each entry is copied into the
-- prefix, readable by all. Entries of nginx's own ($prefix…) stay as they are.
local function path_prefix(entries, prefix, tag)
  if not entries or entries == "" then
    return ""
  end
  local out = {}
  for e in entries:gmatch("[^;]+") do
    local q = e:find("?", 1, true)
    if e:sub(1, 1) ~= "$" and q then
      local dir, rest = e:sub(1, q - 1):gsub("/$", ""), e:sub(q)
      if dir:sub(1, 1) ~= "/" then dir = CWD .. "/" .. dir:gsub("^%./", "") end
      local dest = ("%s/%s%d"):format(prefix, tag, #out + 1)
      assert(sh(("rm -rf %s && mkdir -p %s && cp -R %s/. %s/ && chmod -R a+rX %s")
        :format(quote(dest), quote(dest), quote(dir), quote(dest), quote(dest))),
        "fake scalekit: cannot copy " .. dir)
      e = dest .. "/" .. rest
    end
    out[#out + 1] = e
  end
  if #out == 0 then
    return ""
  end
  return table.concat(out, ";") .. ";"
end

local HTTP = [[
    lua_package_path "${LUA_PACKAGE_PATH}${PREFIX}/lua/?.lua;;";
    lua_package_cpath "${LUA_PACKAGE_CPATH};;";

    # records of every kind (fake_store.lua)
    lua_shared_dict skfake_data ${DATA_SIZE};
    # counters, faults, request log, id prefix
    lua_shared_dict skfake_state 32m;
    # issued access tokens
    lua_shared_dict skfake_tokens 8m;
    # connection serial numbers seen since the last reset
    lua_shared_dict skfake_conns 8m;
    # token_ttl, client_id, client_secret, instance (survives reset)
    lua_shared_dict skfake_config 1m;

    keepalive_requests 100000;
    keepalive_timeout 60s;
    client_max_body_size 16m;
    client_body_buffer_size 1m;
    default_type application/json;
    lua_socket_log_errors off;

    init_by_lua_block {
        require("fake_scalekit").init("${PREFIX}/config.json")
    }
    init_worker_by_lua_block {
        require("fake_scalekit").init_worker()
    }
]]

local ROUTES = {
  { "/_admin/", "fake_admin", "handle" },
  { "= /oauth/token", "fake_scalekit", "token" },
  { "= /keys", "fake_oidc", "keys" },
  { "= /oauth/authorize", "fake_oidc", "authorize" },
  { "= /oidc/logout", "fake_oidc", "logout" },
  { "/api/", "fake_scalekit", "api" },
  { "/", "fake_scalekit", "not_found" },
}

local function nginx_conf(self, prefix, port)
  local cpath = self.lua_cpath
  if cpath:sub(-1) == ";" then
    cpath = cpath:sub(1, -2)
  end
  local body = {}
  if self.tls then
    body[1] = "        ssl_session_cache shared:skfake_ssl:1m;"
  end
  for _, r in ipairs(ROUTES) do
    body[#body + 1] = "        location " .. r[1] .. " { content_by_lua_block { require(\"" .. r[2]
      .. "\")." .. r[3] .. "() } }"
  end
  body[#body + 1] = self.opts.extra_server or ""
  return nginx.conf{
    prefix = prefix,
    workers = self.opts.workers,
    http = {
      proc.render(HTTP, {
        PREFIX = prefix,
        LUA_PACKAGE_PATH = self.lua_path,
        LUA_PACKAGE_CPATH = cpath,
        DATA_SIZE = self.opts.data_size or _M.DATA_SIZE,
      }, "fake scalekit: nginx.conf uses"),
      self.opts.extra_http or "",
    },
    servers = nginx.server{ port = port, body = body,
      tls = self.tls and { cert = self.cert_file, key = self.key_file } },
  }
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

-- The server object, options checked, not started yet.
local function new(opts)
  opts = opts or {}
  for k, v in pairs(opts) do
    local want = OPTION_TYPES[k]
    if not want then
      error("fake scalekit: unknown option '" .. tostring(k) .. "'", 3)
    end
    if type(v) ~= want then
      error("fake scalekit: option '" .. k .. "' must be a " .. want, 3)
    end
  end
  return setmetatable({
    opts = opts,
    tls = opts.tls and true or false,
    client_id = opts.client_id or creds.CLIENT_ID,
    client_secret = opts.client_secret or creds.CLIENT_SECRET,
    token_ttl = opts.token_ttl or 3600,
  }, Server)
end

-- Files of the prefix: the server's Lua, config.json, OIDC keys, certificates.
local function install(self, prefix)
  assert(sh("mkdir -p " .. quote(prefix .. "/lua") .. " " .. quote(prefix .. "/logs")))
  assert(sh("cp " .. quote(SERVER_DIR) .. "/*.lua " .. quote(prefix .. "/lua/")),
    "cannot copy " .. SERVER_DIR .. "/*.lua")
  assert(sh("chmod 755 " .. quote(prefix .. "/lua") .. " && chmod 644 " .. quote(prefix .. "/lua") .. "/*.lua"))
  -- copied once here, not per start attempt (nginx_conf runs for each port tried)
  self.lua_path = path_prefix(self.opts.lua_package_path, prefix, "mod")
  self.lua_cpath = path_prefix(self.opts.lua_package_cpath, prefix, "lib")
  self.instance = "fake-" .. prefix:match("[^.]+$") .. "-" .. tostring(os.time())
  local config = {
    token_ttl = self.token_ttl,
    client_id = self.client_id,
    client_secret = self.client_secret,
    instance = self.instance,
  }
  if self.opts.oidc then
    local keys = make_oidc_keys(prefix)
    for k, v in pairs(keys) do config[k] = v end
    self.oidc_key, self.oidc_kid = keys.oidc_key, keys.oidc_kid
  end
  write_file(prefix .. "/config.json", json.encode(config), "644")
  if self.tls then
    local c = certs.make(prefix)
    self.ca_file, self.cert_file, self.key_file = c.ca_file, c.good, c.key_file
  end
end

local function start(self, level)
  local opts = self.opts
  self.nginx = nginx.start({
    kind = "fake", who = "fake scalekit", port = opts.port, port_fallback = opts.port_fallback,
    install = function(prefix) install(self, prefix) end,
    conf = function(prefix, ports) return nginx_conf(self, prefix, ports.port) end,
    ready = function(n)
      self.port, self.url = n.port, base_url(self, n.port)
      return ping(self)
    end,
  }, level + 1)
  local n = self.nginx
  self.prefix, self.error_log, self.pid, self.attempts = n.prefix, n.error_log, n.pid, n.attempts
  self.watchdog_pid = n.watchdog_pid
  return self
end

---@param opts table|nil see the module header
---@return table server
function _M.start(opts)
  return start(new(opts), 2)
end

--- A server for a whole describe block: started by busted's `setup`, stopped by its
--- `teardown` (pass the two). Its fields (url, port, …) are there from setup on.
---   local srv = server.for_suite(setup, teardown, { workers = 1 })
function _M.for_suite(setup, teardown, opts)
  local self = new(opts)
  setup(function() start(self, 2) end)
  teardown(function() self:stop() end)
  return self
end

-- Idempotent: SIGQUIT, wait up to 3 s, then SIGKILL master and workers;
-- removes the temp dir. The error log is kept in memory (error_log_text()).
function Server:stop()
  self.stopped = true
  return not self.nginx or self.nginx:stop()
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
  return self.nginx and self.nginx:log() or ""
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

return _M
