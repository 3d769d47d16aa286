--- HTTP/1.1 over ngx_lua cosockets: the transport of scalekit inside OpenResty request
--- handlers and timers (see scalekit/ngx.lua for when it is picked).
--
-- Same contract as the libcurl core (csrc/http.c), so that session.lua drives both:
--   t:request(method, url, body, content_type, bearer)
--     -> status, body, retry_after, request_id, content_type, location
--     -> nil, kind, message, sent, permanent   (kind "network"|"timeout"|"tls"; sent == false
--                                    when the request surely never left)
--
-- One call is one attempt and lasts at most `timeout` seconds in total (connect, TLS,
-- send and the whole answer share one deadline); connecting plus the TLS handshake at
-- most `connect_timeout`. TLS verification is always on: the trusted CAs are nginx's
-- `lua_ssl_trusted_certificate` (ngx_lua has no per-socket CA store, so `ca_file` must
-- name the same file there). A socket is put back into the keep-alive pool only after
-- its answer was read completely and the server did not ask to close; anything else
-- closes it. A socket never outlives the call that opened it.
local _M = {}

local ngx = ngx
local tcp = ngx.socket.tcp
local now = ngx.now
local type = type
local tonumber = tonumber
local tostring = tostring
local setmetatable = setmetatable
local error = error
local floor = math.floor
local min = math.min
local find = string.find
local lower = string.lower
local match = string.match
local sub = string.sub
local concat = table.concat

-- Response headers handed to the Lua layer, as in csrc/http.c (last one wins).
local HVAL_MAX = 512
local MAX_HEADERS = 100           -- header lines per answer
local MAX_LINE = 16384            -- bytes of one status or header line
local CHUNK_READ = 65536          -- bytes per read of a close-delimited body

local CONTENT_TYPES = {
  json = "application/json",
  form = "application/x-www-form-urlencoded",
}
local METHODS = { GET = true, POST = true, PUT = true, PATCH = true, DELETE = true }
local SENDS_LENGTH = { POST = true, PUT = true, PATCH = true }

-- returned by one attempt when a pooled connection turned out to be dead before any
-- byte of the answer: the request is sent once more on a fresh connection
local STALE = {}

local Transport = {}
local mt = { __index = Transport }

function mt.__tostring(self)
  return "scalekit.ngx.Transport (" .. tostring(self.requests) .. " requests)"
end

---@param opts table {timeout=, connect_timeout=, user_agent=, max_body_size=,
---                   keepalive_timeout=, keepalive_pool=, ca_file=}
function _M.new(opts)
  return setmetatable({
    timeout = opts.timeout,
    connect_timeout = opts.connect_timeout,
    user_agent = opts.user_agent,
    max_body = opts.max_body_size,
    -- ngx_lua refuses a pool size below 1; a timeout of 0 keeps idle sockets forever
    keepalive_ms = floor(opts.keepalive_timeout * 1000 + 0.5),
    keepalive_pool = opts.keepalive_pool >= 1 and floor(opts.keepalive_pool) or 1,
    ca_file = opts.ca_file or "",
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
  error("scalekit: cosocket transport: " .. msg, 3)
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

local TOO_LARGE = "response body larger than max_body_size"
local function too_large(max)
  return TOO_LARGE .. " (" .. tostring(max) .. " bytes)"
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
    if total > max then return nil, "network", too_large(max) end
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
    if total > max then return nil, "network", too_large(max) end
    n = n + 1
    parts[n] = data
  end
end

-- Status line and headers, then the body. Returns
--   status, body, retry_after, request_id, content_type, location, keepalive
-- or nil, kind, message, stale (stale: nothing of the answer arrived).
local function read_response(self, sock, method, deadline)
  local status, version, line, err, partial
  repeat
    line, err, partial = read_line(sock, deadline)
    if not line then
      if err == "timeout" then
        return nil, "timeout", "timed out waiting for the answer (" .. self.timeout .. " s)"
      end
      return nil, "network", "connection closed before the answer (" .. err .. ")",
             (partial == nil or partial == "") and status == nil
    end
    local v, code = match(line, "^HTTP/(%d%.%d) (%d%d%d)")
    if not v then return nil, "network", "invalid status line in the answer" end
    version, status = v, tonumber(code)
    local retry_after, request_id, ctype, location, length, chunked, close
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
      elseif name == "content-type" then
        ctype = value
      elseif name == "location" then
        location = value
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
        body, err, partial = read_chunked(sock, deadline, max)
        if not body then return nil, err, partial end
      elseif length then
        if length > max then return nil, "network", too_large(max) end
        if length == 0 then
          body = ""
        else
          body, err = read_bytes(sock, length, deadline)
          if not body then return nil, kind_of(err), "reading the answer failed: " .. err end
        end
      else
        body, err, partial = read_until_close(sock, deadline, max)
        if not body then return nil, err, partial end
        keepalive = false
      end
      return status, body, retry_after, request_id, ctype, location, keepalive
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

local function attempt(self, req, method, host, addr, port, https, opts, deadline, fresh)
  local sock = tcp()
  local connect_deadline = min(deadline, now() + self.connect_timeout)
  local ms = ms_until(connect_deadline)
  if ms <= 0 then return nil, "timeout", "no time left to connect", false end
  sock:settimeout(ms)
  local ok, err = sock:connect(addr, port, fresh and fresh_opts(opts) or opts)
  if not ok then
    if err == "timeout" then
      return nil, "timeout", "connect to " .. host .. ":" .. port .. " timed out", false
    end
    return nil, "network", "cannot connect to " .. host .. ":" .. port .. ": " .. tostring(err), false
  end
  local reused = sock:getreusedtimes() > 0
  if not reused then
    self.connects = self.connects + 1
    if https then
      ms = ms_until(connect_deadline)
      if ms <= 0 then
        sock:close()
        return nil, "timeout", "connect to " .. host .. ":" .. port .. " timed out", false
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
          return nil, "timeout", "TLS handshake with " .. host .. " timed out", false
        end
        return nil, "tls", "TLS handshake with " .. host .. " failed: " .. tostring(err)
          .. " (trusted CAs come from lua_ssl_trusted_certificate)", false
      end
    end
  end

  ms = ms_until(deadline)
  if ms <= 0 then
    sock:close()
    return nil, "timeout", "no time left to send the request", false
  end
  sock:settimeout(ms)
  local sent
  sent, err = sock:send(req)
  if not sent then
    sock:close()
    if reused and err ~= "timeout" then return STALE end
    return nil, kind_of(err), "sending the request failed: " .. tostring(err), true
  end

  local status, body, retry_after, request_id, ctype, location, keepalive =
    read_response(self, sock, method, deadline)
  if not status then
    sock:close()
    -- body, retry_after, request_id = kind, message, stale
    if request_id and reused then return STALE end
    -- permanent (5th): an answer over max_body_size will be too large next time too
    return nil, body, retry_after, true, type(retry_after) == "string" and find(retry_after, TOO_LARGE, 1, true) == 1
  end
  if keepalive and not fresh then
    sock:setkeepalive(self.keepalive_ms, self.keepalive_pool)
  else
    sock:close()
  end
  return status, body, retry_after, request_id, ctype, location
end

--- One HTTP attempt; see the module header for the contract.
---@param method string GET|POST|PUT|PATCH|DELETE
---@param url string absolute http(s) URL
---@param body string|nil
---@param ctype string|nil "json" (default) | "form" (only without a token)
---@param bearer string|nil access token for the Authorization header
function Transport:request(method, url, body, ctype, bearer)
  if not METHODS[method] then error("scalekit: cosocket transport: bad method", 2) end
  if method == "GET" and body ~= nil then error("scalekit: cosocket transport: GET takes no body", 2) end
  ctype = ctype or "json"
  local content_type = CONTENT_TYPES[ctype]
  if not content_type or (ctype == "form" and bearer ~= nil) then
    error('scalekit: cosocket transport: content type must be "json", or "form" without a token', 2)
  end
  if bearer ~= nil and (type(bearer) ~= "string" or bearer == "" or find(bearer, "[%z\r\n]")) then
    error("scalekit: cosocket transport: token must not be empty or contain NUL or line breaks", 2)
  end
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
  local status, b, ra, rid, ct, loc = attempt(self, req, method, host, addr, port, https, opts, deadline, false)
  if status == STALE then
    -- like libcurl: a reused connection that died before any byte of the answer
    -- (closed by the server while idle) is not an answer; try once on a new one
    status, b, ra, rid, ct, loc = attempt(self, req, method, host, addr, port, https, opts, deadline, true)
  end
  -- on failure: nil, kind, message, sent, permanent
  return status, b, ra, rid, ct, loc
end

return _M
