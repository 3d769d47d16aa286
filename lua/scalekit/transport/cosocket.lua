--- HTTP/1.1 over ngx_lua cosockets: the transport of scalekit inside OpenResty request
--- handlers and timers (scalekit/ngx/phase.lua picks it).
--
-- Same contract as transport/curl.lua, so that session.lua drives both:
--   res, err = t:request(method, url, body, content_type, bearer)
--   res = { status =, body =, retry_after =, request_id = }
--   err = errors.from_transport(kind, message, sent, permanent)
--
-- One call is one attempt and lasts at most `timeout` seconds in total (connect, TLS,
-- send and the whole answer share one deadline); connecting plus the TLS handshake at
-- most `connect_timeout`. TLS verification is always on: the trusted CAs are nginx's
-- `lua_ssl_trusted_certificate` (ngx_lua has no per-socket CA store, so `ca_file` must
-- name the same file there). A socket is put back into the keep-alive pool only after
-- its answer was read completely and the server did not ask to close; anything else
-- closes it. A socket never outlives the call that opened it.
local errors = require "scalekit.errors"

local _M = {}

local ngx = ngx
local tcp = ngx.socket.tcp
local now = ngx.now
local type = type
local tonumber = tonumber
local tostring = tostring
local setmetatable = setmetatable
local error = error
local from_transport = errors.from_transport
local floor = math.floor
local min = math.min
local find = string.find
local lower = string.lower
local match = string.match
local sub = string.sub
local concat = table.concat

-- Response header values handed to the Lua layer are cut here, as in csrc/http.c.
local HVAL_MAX = 512
local MAX_HEADERS = 100           -- header lines per answer
local MAX_LINE = 16384            -- bytes of one status or header line
local CHUNK_READ = 65536          -- bytes per read of a close-delimited body

local CONTENT_TYPES = {
  json = "application/json",
  form = "application/x-www-form-urlencoded",
}
local SENDS_LENGTH = { POST = true, PUT = true, PATCH = true }

-- returned by one attempt when a pooled connection turned out to be dead before any
-- byte of the answer: the request is sent once more on a fresh connection
local STALE = {}

local Transport = {}
local mt = { __index = Transport }

function mt.__tostring(self)
  return "scalekit.ngx.Transport (" .. tostring(self.requests) .. " requests)"
end

---@param cfg table validated options (scalekit.config): timeout, connect_timeout,
---                   user_agent, max_body_size, keepalive_timeout, keepalive_pool, ca_file
function _M.new(cfg)
  return setmetatable({
    timeout = cfg.timeout,
    connect_timeout = cfg.connect_timeout,
    user_agent = cfg.user_agent,
    max_body = cfg.max_body_size,
    -- a keepalive_timeout of 0 keeps idle sockets forever (ngx_lua's rule)
    keepalive_ms = floor(cfg.keepalive_timeout * 1000 + 0.5),
    keepalive_pool = cfg.keepalive_pool,
    ca_file = cfg.ca_file or "",
    pools = {},            -- pool name -> connect options table (built once)
    requests = 0,
    connects = 0,
  }, mt)
end

--- {requests = n, connects = n}, like the libcurl core's http:stats(): connects
--- counts new connections, so keep-alive shows as connects staying low.
function Transport:stats()
  return { requests = self.requests, connects = self.connects }
end

local function url_error(msg)
  errors.misuse("cosocket transport: %s", msg)
end

-- "https://host:port/path?q" -> parts; raises on what the C core refuses too.
local function parse_url(self, url)
  if type(url) ~= "string" or find(url, "[%z%s]") then
    url_error("URL must not contain NUL, spaces or line breaks")
  end
  local scheme, authority, rest = match(url, "^(https?)://([^/?#]+)(.*)$")
  if not scheme then url_error("URL must be http or https") end
  local host, port = match(authority, "^(%[[^%]]+%]):?(%d*)$")
  if not host then host, port = match(authority, "^([^:]+):?(%d*)$") end
  if not host then url_error("bad host in URL") end
  local https = scheme == "https"
  port = tonumber(port) or (https and 443 or 80)
  -- nginx's resolver does not read /etc/hosts: "localhost" is loopback by definition
  -- (RFC 6761), the name still goes into SNI and the certificate check
  local addr = host
  if lower(host) == "localhost" then addr = "127.0.0.1" end
  if rest == "" then
    rest = "/"
  elseif sub(rest, 1, 1) ~= "/" then
    rest = "/" .. rest
  end
  local pool = "scalekit:" .. host .. ":" .. port .. ":" .. self.ca_file
  local opts = self.pools[pool]
  if not opts then
    opts = { pool = pool, pool_size = self.keepalive_pool }
    self.pools[pool] = opts
  end
  return host, addr, port, authority, rest, https, opts
end

local function ms_until(deadline)
  return floor((deadline - now()) * 1000)
end

-- kind of a cosocket error string
local function kind_of(err)
  if err == "timeout" then return "timeout" end
  return "network"
end

-- Reads one line within the deadline. Returns line or nil, err, partial.
local function read_line(sock, deadline)
  local ms = ms_until(deadline)
  if ms <= 0 then return nil, "timeout", "" end
  sock:settimeout(ms)
  local line, err, partial = sock:receive("*l")
  if line and #line > MAX_LINE then return nil, "line too long", "" end
  return line, err, partial
end

local function read_bytes(sock, n, deadline)
  local ms = ms_until(deadline)
  if ms <= 0 then return nil, "timeout" end
  sock:settimeout(ms)
  return sock:receive(n)
end

local function too_large(max)
  return "response body larger than max_body_size (" .. tostring(max) .. " bytes)"
end

-- Body in chunked transfer coding (RFC 9112 §7.1), trailers read and ignored.
local function read_chunked(sock, deadline, max)
  local parts, n, total = {}, 0, 0
  while true do
    local line, err = read_line(sock, deadline)
    if not line then return nil, kind_of(err), "reading the answer failed: " .. err end
    local hex = match(line, "^%s*(%x+)%s*[;]?")
    local size = hex and #hex <= 8 and tonumber(hex, 16)
    if not size then return nil, "network", "invalid chunked encoding in the answer" end
    if size == 0 then break end
    total = total + size
    if total > max then return nil, "network", too_large(max), "permanent" end
    local data
    data, err = read_bytes(sock, size, deadline)
    if not data then return nil, kind_of(err), "reading the answer failed: " .. err end
    n = n + 1
    parts[n] = data
    line, err = read_line(sock, deadline)
    if line ~= "" then
      if not line then return nil, kind_of(err), "reading the answer failed: " .. err end
      return nil, "network", "invalid chunked encoding in the answer"
    end
  end
  for _ = 1, MAX_HEADERS do
    local line, err = read_line(sock, deadline)
    if not line then return nil, kind_of(err), "reading the answer failed: " .. err end
    if line == "" then return concat(parts) end
  end
  return nil, "network", "too many trailer lines in the answer"
end

-- Body delimited by the end of the connection (no length, not chunked).
local function read_until_close(sock, deadline, max)
  local parts, n, total = {}, 0, 0
  while true do
    local ms = ms_until(deadline)
    if ms <= 0 then return nil, "timeout", "reading the answer failed: timeout" end
    sock:settimeout(ms)
    local data, err = sock:receiveany(CHUNK_READ)
    if not data then
      if err == "closed" then return concat(parts) end
      return nil, kind_of(err), "reading the answer failed: " .. err
    end
    total = total + #data
    if total > max then return nil, "network", too_large(max), "permanent" end
    n = n + 1
    parts[n] = data
  end
end

-- Status line and headers, then the body. Returns res, keepalive, or nil, kind,
-- message, flag: "stale" when nothing of the answer arrived (a pooled connection the
-- server had closed), "permanent" when the same request would fail the same way.
local function read_response(self, sock, method, deadline)
  local status, version, line, err, partial
  repeat
    line, err, partial = read_line(sock, deadline)
    if not line then
      if err == "timeout" then
        return nil, "timeout", "timed out waiting for the answer (" .. self.timeout .. " s)"
      end
      return nil, "network", "connection closed before the answer (" .. err .. ")",
             (partial == nil or partial == "") and status == nil and "stale" or nil
    end
    local v, code = match(line, "^HTTP/(%d%.%d) (%d%d%d)")
    if not v then return nil, "network", "invalid status line in the answer" end
    version, status = v, tonumber(code)
    local retry_after, request_id, length, chunked, close
    local count = 0
    while true do
      line, err = read_line(sock, deadline)
      if not line then return nil, kind_of(err), "reading the answer headers failed: " .. err end
      if line == "" then break end
      count = count + 1
      if count > MAX_HEADERS then return nil, "network", "too many headers in the answer" end
      local name, value = match(line, "^([^:%s]+)%s*:%s*(.-)%s*$")
      if not name then return nil, "network", "invalid header line in the answer" end
      name = lower(name)
      if #value > HVAL_MAX then value = sub(value, 1, HVAL_MAX) end
      if name == "content-length" then
        local l = match(value, "^%d+$") and tonumber(value)
        if not l or (length and length ~= l) then
          return nil, "network", "invalid Content-Length in the answer"
        end
        length = l
      elseif name == "transfer-encoding" then
        chunked = find(lower(value), "chunked%s*$") ~= nil
      elseif name == "connection" then
        local v2 = lower(value)
        if find(v2, "close", 1, true) then
          close = true
        elseif find(v2, "keep-alive", 1, true) and close == nil then
          close = false
        end
      elseif name == "retry-after" then
        retry_after = value
      elseif name == "x-request-id" then
        request_id = value
      end
    end
    if status >= 200 or status == 101 then
      -- final answer
      local body
      local keepalive = not close and (version == "1.1" or close == false)
      local max = self.max_body
      if status == 204 or status == 304 or method == "HEAD" then
        body = ""
      elseif chunked then
        local msg, flag
        body, err, msg, flag = read_chunked(sock, deadline, max)
        if not body then return nil, err, msg, flag end
      elseif length then
        if length > max then return nil, "network", too_large(max), "permanent" end
        if length == 0 then
          body = ""
        else
          body, err = read_bytes(sock, length, deadline)
          if not body then return nil, kind_of(err), "reading the answer failed: " .. err end
        end
      else
        local msg, flag
        body, err, msg, flag = read_until_close(sock, deadline, max)
        if not body then return nil, err, msg, flag end
        keepalive = false
      end
      return { status = status, body = body, retry_after = retry_after, request_id = request_id },
             keepalive
    end
    -- 1xx interim answer: its headers are dropped, the final one follows
  until false
end

-- connect options for the fresh connection of a stale retry: a pool name that never
-- keeps anything, so that the connection cannot come out of a pool
local function fresh_opts(opts)
  local f = opts.fresh
  if not f then
    f = { pool = opts.pool .. ":fresh" }
    opts.fresh = f
  end
  return f
end

-- A failure before anything was sent.
local function unsent(kind, message)
  return nil, from_transport(kind, message, false, false)
end

local function attempt(self, req, method, host, addr, port, https, opts, deadline, fresh)
  local sock = tcp()
  local connect_deadline = min(deadline, now() + self.connect_timeout)
  local ms = ms_until(connect_deadline)
  if ms <= 0 then return unsent("timeout", "no time left to connect") end
  sock:settimeout(ms)
  local ok, err = sock:connect(addr, port, fresh and fresh_opts(opts) or opts)
  if not ok then
    if err == "timeout" then
      return unsent("timeout", "connect to " .. host .. ":" .. port .. " timed out")
    end
    return unsent("network", "cannot connect to " .. host .. ":" .. port .. ": " .. tostring(err))
  end
  local reused = sock:getreusedtimes() > 0
  if not reused then
    self.connects = self.connects + 1
    if https then
      ms = ms_until(connect_deadline)
      if ms <= 0 then
        sock:close()
        return unsent("timeout", "connect to " .. host .. ":" .. port .. " timed out")
      end
      sock:settimeout(ms)
      local sni = match(host, "^%[(.*)%]$") or host
      -- pcall: lua-resty-core before openresty/lua-resty-core#500 (Debian 12 has
      -- 0.1.25) raises "assertion failed!" instead of returning the error when a
      -- failing handshake completes without yielding (a verify error on a fast,
      -- local peer: openresty/lua-resty-core#499)
      local done, session, herr = pcall(sock.sslhandshake, sock, nil, sni, true)
      if not done then
        if not find(tostring(session), "assertion failed", 1, true) then
          sock:close()
          error(session, 0)
        end
        session, err = nil, "certificate verification failed"
      else
        err = herr
      end
      if not session then
        sock:close()
        if err == "timeout" then
          return unsent("timeout", "TLS handshake with " .. host .. " timed out")
        end
        return unsent("tls", "TLS handshake with " .. host .. " failed: " .. tostring(err)
          .. " (trusted CAs come from lua_ssl_trusted_certificate)")
      end
    end
  end

  ms = ms_until(deadline)
  if ms <= 0 then
    sock:close()
    return unsent("timeout", "no time left to send the request")
  end
  sock:settimeout(ms)
  local sent
  sent, err = sock:send(req)
  if not sent then
    sock:close()
    if reused and err ~= "timeout" then return STALE end
    return nil, from_transport(kind_of(err), "sending the request failed: " .. tostring(err), true, false)
  end

  local res, keepalive, message, flag = read_response(self, sock, method, deadline)
  if not res then
    sock:close()
    if flag == "stale" and reused then return STALE end
    return nil, from_transport(keepalive, message, true, flag == "permanent")
  end
  if keepalive and not fresh then
    sock:setkeepalive(self.keepalive_ms, self.keepalive_pool)
  else
    sock:close()
  end
  return res
end

--- One HTTP attempt; see the module header for the contract.
---@param method string GET|POST|PUT|PATCH|DELETE
---@param url string absolute http(s) URL
---@param body string|nil
---@param ctype string|nil "json" (default) | "form" (never with a token)
---@param bearer string|nil access token for the Authorization header (the session
---                         checked it when it came from the token endpoint)
---@return table|nil res {status, body, retry_after, request_id}
---@return scalekit.Error|nil err
function Transport:request(method, url, body, ctype, bearer)
  local content_type = CONTENT_TYPES[ctype or "json"]
  local host, addr, port, authority, path, https, opts = parse_url(self, url)

  -- the request as a list of pieces: cosocket send() joins them in C
  local req = {
    method, " ", path, " HTTP/1.1\r\nHost: ", authority,
    "\r\nUser-Agent: ", self.user_agent,
    "\r\nAccept: application/json\r\nContent-Type: ", content_type, "\r\n",
  }
  local n = #req
  if body ~= nil or SENDS_LENGTH[method] then
    req[n + 1] = "Content-Length: "
    req[n + 2] = tostring(body and #body or 0)
    req[n + 3] = "\r\n"
    n = n + 3
  end
  if bearer ~= nil then
    req[n + 1] = "Authorization: Bearer "
    req[n + 2] = bearer
    req[n + 3] = "\r\n"
    n = n + 3
  end
  req[n + 1] = "\r\n"
  if body ~= nil and body ~= "" then req[n + 2] = body end

  self.requests = self.requests + 1
  local deadline = now() + self.timeout
  local res, err = attempt(self, req, method, host, addr, port, https, opts, deadline, false)
  if res == STALE then
    -- like libcurl: a reused connection that died before any byte of the answer
    -- (closed by the server while idle) is not an answer; try once on a new one
    res, err = attempt(self, req, method, host, addr, port, https, opts, deadline, true)
  end
  return res, err
end

return _M
