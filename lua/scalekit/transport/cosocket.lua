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
--
-- The server is not trusted: every read is bounded before it is buffered (a line at
-- MAX_LINE bytes, MAX_HEADERS lines and MAX_HEADER_BLOCK bytes per header block,
-- MAX_INTERIM 1xx answers, chunk-size lines, trailers, and the body at
-- max_body_size), and the status line must be exactly `HTTP/1.x SP 3DIGIT [SP
-- reason]`. The parser (_M.reader, _M.read_response) works on any object with
-- settimeout/receive/receiveany, so specs and the fuzz target feed it bytes.
--
-- Proxy (cfg.proxy, an http://host:port URL, and cfg.no_proxy, comma-separated hosts
-- or domain suffixes, "*" for all): https goes through an HTTP CONNECT tunnel (TLS to
-- the origin inside it, SNI and certificate check against the origin's name), plain
-- http as an absolute-form request to the proxy. A refused CONNECT is a "network"
-- error that says so ("proxy CONNECT to host:port failed: HTTP 407"). Pool names
-- include the proxy. cfg.extra_headers ("Name: value" lines) go with every request.
local errors = require "scalekit.errors"

local _M = {}

-- the module loads outside nginx too (the parser's specs and fuzz target feed it a
-- fake socket); the I/O functions need ngx
local ngx = rawget(_G, "ngx")
local tcp = ngx and ngx.socket.tcp
local now = ngx and ngx.now or os.time
local type = type
local ipairs = ipairs
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
local gmatch = string.gmatch
local sub = string.sub
local concat = table.concat

--- Limits on what a server may send, checked before anything is buffered beyond them.
-- Response header values handed to the Lua layer are cut at HVAL_MAX, as in csrc/http.c.
local HVAL_MAX = 512
_M.MAX_LINE = 16384           -- bytes of one status, header, trailer or chunk-size line
_M.MAX_HEADERS = 100          -- header lines per header block (and trailer lines)
_M.MAX_HEADER_BLOCK = 65536   -- bytes of one header block (status line included)
_M.MAX_INTERIM = 8            -- 1xx answers before the final one
local READ_CHUNK = 16384      -- bytes asked of the socket per read

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

-- "http://host[:port][/]" of cfg.proxy (validated by scalekit.config) -> host, port
local function parse_proxy(url)
  if url == nil then return nil end
  local authority = match(url, "^[%a]+://([^/]+)/?$")
  local host, port = match(authority or "", "^(%[[^%]]+%]):?(%d*)$")
  if not host then host, port = match(authority or "", "^([^:]+):?(%d*)$") end
  if not host then errors.misuse("cosocket transport: bad proxy URL") end
  -- libcurl's default proxy port
  return host, tonumber(port) or 1080
end

-- the entries of cfg.no_proxy: lower-case host names or domain suffixes
local function parse_no_proxy(text)
  local list = {}
  for entry in gmatch(text or "", "[^,%s]+") do
    entry = lower(entry)
    entry = match(entry, "^%[(.*)%]$") or entry
    list[#list + 1] = match(entry, "^%.?(.-)%.?$")
  end
  return list
end

---@param cfg table validated options (scalekit.config): timeout, connect_timeout,
---                   user_agent, max_body_size, keepalive_timeout, keepalive_pool, ca_file,
---                   proxy, no_proxy, extra_headers
function _M.new(cfg)
  local proxy_host, proxy_port = parse_proxy(cfg.proxy)
  local extra = ""
  if cfg.extra_headers then
    local lines = {}
    for i, line in ipairs(cfg.extra_headers) do lines[i] = line .. "\r\n" end
    extra = concat(lines)
  end
  return setmetatable({
    timeout = cfg.timeout,
    connect_timeout = cfg.connect_timeout,
    user_agent = cfg.user_agent,
    max_body = cfg.max_body_size,
    -- a keepalive_timeout of 0 keeps idle sockets forever (ngx_lua's rule)
    keepalive_ms = floor(cfg.keepalive_timeout * 1000 + 0.5),
    keepalive_pool = cfg.keepalive_pool,
    ca_file = cfg.ca_file or "",
    proxy_host = proxy_host,
    proxy_port = proxy_port,
    proxy_addr = proxy_host and (lower(proxy_host) == "localhost" and "127.0.0.1" or proxy_host),
    no_proxy = parse_no_proxy(cfg.no_proxy),
    extra_headers = extra,  -- "Name: value\r\n" lines sent with every request
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

-- whether `host` is reached without the proxy (cfg.no_proxy, as libcurl reads it:
-- "*", a host name, or a domain suffix with or without its leading dot)
local function bypasses_proxy(self, host)
  host = lower(match(host, "^%[(.*)%]$") or host)
  for _, entry in ipairs(self.no_proxy) do
    if entry == "*" or host == entry then return true end
    if #host > #entry and sub(host, -#entry - 1) == "." .. entry then return true end
  end
  return false
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
  local proxied = self.proxy_host ~= nil and not bypasses_proxy(self, host)
  local pool = "scalekit:" .. host .. ":" .. port .. ":" .. self.ca_file
  if proxied then pool = pool .. ":proxy=" .. self.proxy_host .. ":" .. self.proxy_port end
  local opts = self.pools[pool]
  if not opts then
    opts = { pool = pool, pool_size = self.keepalive_pool }
    self.pools[pool] = opts
  end
  return { host = host, addr = addr, port = port, authority = authority, path = rest, https = https,
           opts = opts, proxied = proxied, url = url }
end

local function ms_until(deadline)
  return floor((deadline - now()) * 1000)
end

-- kind of a cosocket error string
local function kind_of(err)
  if err == "timeout" then return "timeout" end
  return "network"
end

---------------------------------------------------------------------------
-- the response parser: a buffered reader over anything with settimeout(ms),
-- receive(n) and receiveany(max) (a cosocket, or a fake socket in the specs and the
-- fuzz target). Every read is bounded before it is buffered: at most READ_CHUNK bytes
-- past a limit are ever held.
---------------------------------------------------------------------------

local Reader = {}
local Reader_mt = { __index = Reader }

--- A reader of `sock` with a deadline (seconds on `now()`'s clock; math.huge: none).
function _M.reader(sock, deadline)
  return setmetatable({ sock = sock, deadline = deadline, buf = "", pos = 1, got = 0 }, Reader_mt)
end

-- more bytes into the buffer; nil, err on timeout/close
function Reader:fill()
  local ms = ms_until(self.deadline)
  if ms <= 0 then return nil, "timeout" end
  local sock = self.sock
  sock:settimeout(ms)
  local data, err = sock:receiveany(READ_CHUNK)
  if not data then return nil, err end
  self.got = self.got + #data
  if self.pos > #self.buf then
    self.buf, self.pos = data, 1
  else
    self.buf = sub(self.buf, self.pos) .. data
    self.pos = 1
  end
  return true
end

--- One line (without CRLF or LF), at most `limit` bytes; nil, err ("too long",
--- "timeout", "closed", …).
function Reader:line(limit)
  while true do
    local i = find(self.buf, "\n", self.pos, true)
    if i then
      local line = sub(self.buf, self.pos, i - 1)
      self.pos = i + 1
      if sub(line, -1) == "\r" then line = sub(line, 1, -2) end
      if #line > limit then return nil, "too long" end
      return line
    end
    if #self.buf - self.pos + 1 > limit + 1 then return nil, "too long" end
    local ok, err = self:fill()
    if not ok then return nil, err end
  end
end

--- Exactly `n` bytes (n bounded by the caller); nil, err.
function Reader:bytes(n)
  local have = #self.buf - self.pos + 1
  if have >= n then
    local data = sub(self.buf, self.pos, self.pos + n - 1)
    self.pos = self.pos + n
    return data
  end
  local head = sub(self.buf, self.pos)
  self.buf, self.pos = "", 1
  local ms = ms_until(self.deadline)
  if ms <= 0 then return nil, "timeout" end
  self.sock:settimeout(ms)
  local rest, err = self.sock:receive(n - have)
  if not rest then return nil, err end
  self.got = self.got + #rest
  return head .. rest
end

--- Everything until the peer closes, at most `max` bytes: data | nil, err, "large"
function Reader:until_close(max)
  local parts, n = { sub(self.buf, self.pos) }, 1
  local total = #parts[1]
  self.buf, self.pos = "", 1
  if total > max then return nil, "large" end
  while true do
    local ms = ms_until(self.deadline)
    if ms <= 0 then return nil, "timeout" end
    self.sock:settimeout(ms)
    local data, err = self.sock:receiveany(READ_CHUNK)
    if not data then
      if err == "closed" then return concat(parts) end
      return nil, err
    end
    total = total + #data
    if total > max then return nil, "large" end
    n = n + 1
    parts[n] = data
  end
end

--- Bytes read past the end of the answer (a server that sent more than one answer)
function Reader:leftover()
  return #self.buf - self.pos + 1
end

local function too_large(max)
  return "response body larger than max_body_size (" .. tostring(max) .. " bytes)"
end

local function read_failed(what, err)
  if err == "too long" then return nil, "network", what .. " line too long in the answer", "permanent" end
  return nil, kind_of(err), "reading the answer failed: " .. tostring(err)
end

-- Body in chunked transfer coding (RFC 9112 §7.1), trailers read and ignored.
local function read_chunked(r, max)
  local parts, n, total = {}, 0, 0
  while true do
    local line, err = r:line(_M.MAX_LINE)
    if not line then return read_failed("chunk size", err) end
    local hex = match(line, "^(%x+)[ \t]*;") or match(line, "^(%x+)[ \t]*$")
    local size = hex and #hex <= 8 and tonumber(hex, 16)
    if not size then return nil, "network", "invalid chunked encoding in the answer" end
    if size == 0 then break end
    total = total + size
    if total > max then return nil, "network", too_large(max), "permanent" end
    local data
    data, err = r:bytes(size)
    if not data then return read_failed("chunk", err) end
    n = n + 1
    parts[n] = data
    line, err = r:line(0)
    if line ~= "" then
      if not line and err ~= "too long" then return read_failed("chunk", err) end
      return nil, "network", "invalid chunked encoding in the answer"
    end
  end
  local bytes = 0
  for _ = 1, _M.MAX_HEADERS + 1 do
    local line, err = r:line(_M.MAX_LINE)
    if not line then return read_failed("trailer", err) end
    if line == "" then return concat(parts) end
    bytes = bytes + #line
    if bytes > _M.MAX_HEADER_BLOCK then break end
  end
  return nil, "network", "too many trailer lines in the answer", "permanent"
end

--- Status line: "HTTP/1.x SP 3DIGIT [SP reason]" exactly; -> minor version, status.
function _M.parse_status_line(line)
  local minor, code, rest = match(line, "^HTTP/1%.([01]) ([1-5]%d%d)(.*)$")
  if not minor then return nil end
  if rest ~= "" and (sub(rest, 1, 1) ~= " " or find(rest, "[%z\1-\8\10-\31\127]")) then return nil end
  return minor, tonumber(code)
end

--- One header block: the fields we use, or nil, kind, message, flag.
local function read_headers(r)
  local h = { count = 0 }
  local bytes = 0
  while true do
    local line, err = r:line(_M.MAX_LINE)
    if not line then
      if err == "too long" then return nil, "network", "header line too long in the answer", "permanent" end
      return nil, kind_of(err), "reading the answer headers failed: " .. tostring(err)
    end
    if line == "" then return h end
    h.count = h.count + 1
    bytes = bytes + #line + 2
    if h.count > _M.MAX_HEADERS then return nil, "network", "too many headers in the answer", "permanent" end
    if bytes > _M.MAX_HEADER_BLOCK then
      return nil, "network", "header block too large in the answer", "permanent"
    end
    local name, value = match(line, "^([!#$%%&'*+%-.^_`|~%w]+):[ \t]*(.-)[ \t]*$")
    if not name or find(value, "[%z\1-\8\10-\31\127]") then
      return nil, "network", "invalid header line in the answer"
    end
    name = lower(name)
    if #value > HVAL_MAX then value = sub(value, 1, HVAL_MAX) end
    if name == "content-length" then
      local l = match(value, "^%d+$") and #value <= 15 and tonumber(value)
      if not l or (h.length and h.length ~= l) then
        return nil, "network", "invalid Content-Length in the answer"
      end
      h.length = l
    elseif name == "transfer-encoding" then
      h.chunked = find(lower(value), "chunked%s*$") ~= nil
    elseif name == "connection" then
      local v2 = lower(value)
      if find(v2, "close", 1, true) then
        h.close = true
      elseif find(v2, "keep-alive", 1, true) and h.close == nil then
        h.close = false
      end
    elseif name == "retry-after" then
      h.retry_after = value
    elseif name == "x-request-id" then
      h.request_id = value
    elseif name == "content-type" then
      h.content_type = value
    end
  end
end

--- Status line and headers, then the body, from reader `r`. Returns res, keepalive,
--- or nil, kind, message, flag: "stale" when nothing of the answer arrived (a pooled
--- connection the server had closed), "permanent" when the same request would fail the
--- same way. `opts`: max_body (bytes), timeout (for messages), head_only (a CONNECT
--- answer: no body on 2xx).
function _M.read_response(r, method, opts)
  local max = opts.max_body
  for _ = 1, _M.MAX_INTERIM + 1 do
    local line, err = r:line(_M.MAX_LINE)
    if not line then
      if err == "timeout" then
        return nil, "timeout", "timed out waiting for the answer (" .. tostring(opts.timeout) .. " s)"
      end
      if err == "too long" then return nil, "network", "status line too long in the answer", "permanent" end
      return nil, "network", "connection closed before the answer (" .. tostring(err) .. ")",
             r.got == 0 and "stale" or nil
    end
    local minor, status = _M.parse_status_line(line)
    if not minor then return nil, "network", "invalid status line in the answer" end
    local h, kind, msg, flag = read_headers(r)
    if not h then return nil, kind, msg, flag end
    if status >= 200 or status == 101 then
      -- final answer
      local body
      local keepalive = not h.close and (minor == "1" or h.close == false)
      if opts.head_only and status < 300 then
        body = ""
      elseif status == 204 or status == 304 or method == "HEAD" then
        body = ""
      elseif h.chunked then
        body, kind, msg, flag = read_chunked(r, max)
        if not body then return nil, kind, msg, flag end
      elseif h.length then
        if h.length > max then return nil, "network", too_large(max), "permanent" end
        if h.length == 0 then
          body = ""
        else
          body, err = r:bytes(h.length)
          if not body then return read_failed("body", err) end
        end
      else
        body, err = r:until_close(max)
        if not body then
          if err == "large" then return nil, "network", too_large(max), "permanent" end
          return read_failed("body", err)
        end
        keepalive = false
      end
      -- bytes past this answer: the connection is out of step, never reuse it
      if r:leftover() > 0 then keepalive = false end
      return { status = status, body = body, retry_after = h.retry_after, request_id = h.request_id,
               content_type = h.content_type }, keepalive
    end
    -- 1xx interim answer: its headers are dropped, the final one follows
  end
  return nil, "network", "too many interim (1xx) answers", "permanent"
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

-- Through the proxy, a tunnel to u.host:u.port (HTTP CONNECT, RFC 9110 9.3.6) on the
-- fresh socket `sock`: true, or nil, err (said to come from the proxy).
local function connect_tunnel(self, sock, u, deadline)
  local target = u.host .. ":" .. u.port
  local ms = ms_until(deadline)
  if ms <= 0 then return unsent("timeout", "proxy CONNECT to " .. target .. " timed out") end
  sock:settimeout(ms)
  local ok, err = sock:send({ "CONNECT ", target, " HTTP/1.1\r\nHost: ", target,
                              "\r\nUser-Agent: ", self.user_agent, "\r\n\r\n" })
  if not ok then
    return unsent(kind_of(err), "proxy CONNECT to " .. target .. " failed: " .. tostring(err))
  end
  local r = _M.reader(sock, deadline)
  local res, kind, message = _M.read_response(r, "CONNECT", { max_body = 65536, timeout = self.timeout,
                                                               head_only = true })
  if not res then
    return unsent(kind == "timeout" and "timeout" or "network",
                  "proxy CONNECT to " .. target .. " failed: " .. tostring(message))
  end
  if res.status < 200 or res.status > 299 then
    -- 407 (proxy authentication) and the like would fail the same way again
    return nil, from_transport("network", "proxy CONNECT to " .. target .. " failed: HTTP " .. res.status,
                               false, res.status < 500)
  end
  if r:leftover() > 0 then
    return unsent("network", "proxy CONNECT to " .. target .. " failed: data after the proxy's answer")
  end
  return true
end

local function attempt(self, req, method, u, deadline, fresh, timeout)
  local sock = tcp()
  local host, port = u.host, u.port
  local connect_deadline = min(deadline, now() + self.connect_timeout)
  local ms = ms_until(connect_deadline)
  if ms <= 0 then return unsent("timeout", "no time left to connect") end
  sock:settimeout(ms)
  local opts = fresh and fresh_opts(u.opts) or u.opts
  local ok, err
  if u.proxied then
    ok, err = sock:connect(self.proxy_addr, self.proxy_port, opts)
  else
    ok, err = sock:connect(u.addr, port, opts)
  end
  if not ok then
    local where = u.proxied and ("proxy " .. self.proxy_host .. ":" .. self.proxy_port) or (host .. ":" .. port)
    if err == "timeout" then
      return unsent("timeout", "connect to " .. where .. " timed out")
    end
    return unsent("network", "cannot connect to " .. where .. ": " .. tostring(err))
  end
  local reused = sock:getreusedtimes() > 0
  if not reused then
    self.connects = self.connects + 1
    if u.proxied and u.https then
      local res, terr = connect_tunnel(self, sock, u, connect_deadline)
      if not res then
        sock:close()
        return nil, terr
      end
    end
    if u.https then
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

  local r = _M.reader(sock, deadline)
  local res, keepalive, message, flag = _M.read_response(r, method, { max_body = self.max_body,
                                                                      timeout = timeout })
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

local function header_line_ok(line)
  return type(line) == "string" and not find(line, "[%z\r\n]") and find(line, "^[^:%s]+:") ~= nil
end

--- One HTTP attempt; see the module header for the contract.
---@param method string GET|POST|PUT|PATCH|DELETE
---@param url string absolute http(s) URL
---@param body string|nil
---@param ctype string|nil "json" (default) | "form" (never with a token) | "raw" (with `raw`)
---@param bearer string|nil access token for the Authorization header (the session
---                         checked it when it came from the token endpoint)
---@param raw table|nil {content_type =, headers = {"Name: value", …}, timeout =} of a
---                     pass-through call: no Accept of ours, the caller's content type,
---                     headers and timeout, and the answer's content_type in res
---@return table|nil res {status, body, retry_after, request_id, content_type}
---@return scalekit.Error|nil err
function Transport:request(method, url, body, ctype, bearer, raw)
  local u = parse_url(self, url)
  local timeout = self.timeout

  -- the request as a list of pieces: cosocket send() joins them in C
  local target = u.path
  -- plain http through the proxy: the absolute form (RFC 9112 3.2.2)
  if u.proxied and not u.https then target = "http://" .. u.authority .. u.path end
  local req = {
    method, " ", target, " HTTP/1.1\r\nHost: ", u.authority,
    "\r\nUser-Agent: ", self.user_agent, "\r\n", self.extra_headers,
  }
  local n = #req
  if raw then
    if ctype ~= "raw" or type(raw) ~= "table" then url_error("a raw request needs content type \"raw\"") end
    if raw.timeout ~= nil then timeout = raw.timeout end
    if raw.content_type ~= nil then
      if type(raw.content_type) ~= "string" or find(raw.content_type, "[%z\r\n]") then
        url_error("raw content_type must not contain NUL or line breaks")
      end
      req[n + 1], req[n + 2], req[n + 3] = "Content-Type: ", raw.content_type, "\r\n"
      n = n + 3
    end
  else
    local content_type = CONTENT_TYPES[ctype or "json"]
    if not content_type then url_error("unknown content type " .. tostring(ctype)) end
    req[n + 1], req[n + 2], req[n + 3] = "Accept: application/json\r\nContent-Type: ", content_type, "\r\n"
    n = n + 3
  end
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
  if raw and raw.headers then
    for _, line in ipairs(raw.headers) do
      if not header_line_ok(line) then url_error("raw headers must be \"Name: value\" lines") end
      req[n + 1], req[n + 2] = line, "\r\n"
      n = n + 2
    end
  end
  req[n + 1] = "\r\n"
  if body ~= nil and body ~= "" then req[n + 2] = body end

  self.requests = self.requests + 1
  local deadline = now() + timeout
  local res, err = attempt(self, req, method, u, deadline, false, timeout)
  if res == STALE then
    -- like libcurl: a reused connection that died before any byte of the answer
    -- (closed by the server while idle) is not an answer; try once on a new one
    res, err = attempt(self, req, method, u, deadline, true, timeout)
  end
  return res, err
end

--- Close: cosockets belong to their request; nothing is held between calls.
function Transport:close() -- luacheck: ignore 212/self
  return true
end

return _M
