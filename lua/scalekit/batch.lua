--- Many independent calls at once: `sk:batch(calls, opts)` and `sk:get_many(resource,
--- ids, opts)` (client methods through client.lua's MIXINS).
--
--   local results, errs = sk:batch({ { "OrganizationService_GetOrganization", { id = "org_1" } },
--                                    { "UserService_GetUser", { id = "usr_1" } } },
--                                  { concurrency = 16 })
--
-- Each call is built exactly as sk:call builds it (_M.prepare) and keeps the whole
-- policy of the session: one token for the batch, fetched once; retries with backoff
-- (errors.should_retry) and Retry-After; a 401 renews the token once for every call
-- in flight; a 429 (or any retryable answer with Retry-After) pauses the whole
-- batch: no new request starts before that instant.
--
-- Two engines, one result shape:
--   * plain Lua and nginx's init phases: one libcurl multi handle of the C core
--     (csrc/multi.c) per batch: at most `concurrency` connections, or one HTTP/2
--     connection multiplexing every call when the server offers h2 by ALPN. The
--     handle and its connections live as long as the batch;
--   * OpenResty request handlers and timers: up to `concurrency` ngx.thread light
--     threads pulling calls from one queue, each through the session's normal
--     request path on cosockets (the session's own retry/401 logic; the token's
--     single flight makes the renewal happen once), behind a gate that holds every
--     thread while a 429 pause lasts. The worker is never blocked.
--
-- Memory: a call's request and answer are dropped once it is done; only the
-- results asked for are kept (none with `on_result`), so 10,000 calls cost the
-- results plus a few tables per call in flight.
local core = require "scalekit.core"
local errors = require "scalekit.errors"
local operations = require "scalekit.operations"
local resources = require "scalekit.resources"
local session_mod = require "scalekit.session"

local _M = {}

local type = type
local pairs = pairs
local rawget = rawget
local tostring = tostring
local setmetatable = setmetatable
local pcall = pcall
local error = error
local min = math.min
local max = math.max
local monotonic = core.monotonic
local misuse = errors.misuse
local should_retry = errors.should_retry
local from_response = errors.from_response
local from_transport = errors.from_transport
local parse_retry_after = errors.parse_retry_after


_M.DEFAULT_CONCURRENCY = 8
_M.MAX_CONCURRENCY = core.MULTI_MAX_CONCURRENCY -- 64

local OPTION_TYPES = { concurrency = "number", on_result = "function", http2 = "boolean", stats = "table" }

--- Method, path-and-query and JSON body text of one call, built as sk:call does
--- (client.prepare), and whether it is a paged list (Accept-Encoding). Raises on misuse.
---@return string method
---@return string path
---@return string|nil body
---@return boolean compressed
function _M.prepare(client, operation_id, params)
  -- required here, not at the top: client.lua loads this module among its mixins
  local op, path, text = require("scalekit.client").prepare(client, operation_id, params)
  return op.method, path, text, op.paging ~= nil
end
local prepare = _M.prepare

-- The decoded answer of a 2xx, as Session:request decodes it.
local function decode(res, opname)
  local op = operations[opname]
  return session_mod.decode(res, opname, op and op.empty)
end

local function backoff(s, attempt)
  return s:backoff(attempt)
end

local function closed_error(opname)
  return errors.new("network", "client closed during the batch", {
    operation = opname, error_code = "client_closed", retryable = false,
  })
end

local function is_closed(client)
  return rawget(client, "_closed") == true
end

-- The outcome of the batch: results[i] / errs[i], or handed to on_result.
local function new_sink(on_result)
  local sink = { results = {}, errs = nil }
  function sink.put(i, res, err)
    if err then
      local errs = sink.errs
      if not errs then
        errs = {}
        sink.errs = errs
      end
      errs[i] = err
    end
    if on_result then
      on_result(i, res, err)
    elseif res ~= nil then
      sink.results[i] = res
    end
  end
  return sink
end

---------------------------------------------------------------------------
-- plain Lua (and init phases): the libcurl multi handle
---------------------------------------------------------------------------

local function run_multi(client, s, n, get_call, conc, sink, http2, stats)
  local o = s.http_options
  local m = core.multi{
    timeout = o.timeout, connect_timeout = o.connect_timeout, ca_file = o.ca_file,
    user_agent = o.user_agent, max_body_size = o.max_body_size, concurrency = conc,
    http2 = http2 ~= false,
  }
  local base = s.base_url
  local max_retries, retry_after_max = s.max_retries, s.retry_after_max
  local inflight, active = {}, 0
  local retries, nretries = {}, 0      -- calls waiting for their backoff instant
  local nxt = 1                        -- next call never started
  local pause_until = 0                -- no new request before this instant (429)
  local final_stats                    -- of the multi handle, when closed early
  -- the batch's API calls go through the multi handle: what the session's own
  -- transport sends meanwhile are token requests
  local easy_before = s.transport:stats().requests
  local token, terr = s:token()
  local renewed = false                -- the batch renews its token once
  local put = sink.put

  local function fail(st, err) put(st.i, nil, err) end

  local function start(st)
    if not token then return fail(st, terr) end
    st.token = token
    local ok, kind, msg, sent, permanent = m:add(st.i, st.method, st.url, st.body, "json", token,
                                                 st.compressed)
    if ok then
      inflight[st.i] = st
      active = active + 1
      return
    end
    local err = from_transport(kind, msg, sent, permanent)
    err.operation = st.op
    fail(st, err)
  end

  local function retry_later(st, wait, now, pauses)
    st.attempt = st.attempt + 1
    st.ready_at = now + wait
    nretries = nretries + 1
    retries[nretries] = st
    if pauses then pause_until = max(pause_until, now + wait) end
  end

  local function take_retry(now)
    for k = 1, nretries do
      local st = retries[k]
      if st.ready_at <= now then
        retries[k] = retries[nretries]
        retries[nretries] = nil
        nretries = nretries - 1
        return st
      end
    end
  end

  local function next_call()
    if nxt > n then return nil end
    local i = nxt
    nxt = i + 1
    local op_id, params = get_call(i)
    local method, path, body, compressed = prepare(client, op_id, params)
    return { i = i, op = op_id, method = method, url = base .. path, body = body, compressed = compressed,
             attempt = 0 }
  end

  local function on_done(c, now)
    local st = inflight[c.id]
    inflight[c.id] = nil
    active = active - 1
    local status = c.status
    if status then
      if status >= 200 and status < 300 then
        local doc, err = decode(c, st.op)
        return put(st.i, doc, err)
      end
      if status == 401 and not st.renewed and (st.token ~= token or not renewed) then
        -- once for the whole batch: the first 401 of the current token renews it,
        -- the calls that were in flight with the old one just go again
        st.renewed = true
        if st.token == token then
          renewed = true
          s.store:clear(token)
          token, terr = s:token()
        end
        st.ready_at = 0
        nretries = nretries + 1
        retries[nretries] = st
        return
      end
      local ra = parse_retry_after(c.retry_after)
      local err = from_response(status, c.body, { request_id = c.request_id, retry_after = ra,
                                                  operation = st.op })
      if should_retry(err, st.method) and st.attempt < max_retries
         and not (ra and ra > retry_after_max) then
        return retry_later(st, ra or backoff(s, st.attempt), now, status == 429 or ra ~= nil)
      end
      return fail(st, err)
    end
    local err = from_transport(c.kind, c.message, c.sent, c.permanent)
    err.operation = st.op
    if should_retry(err, st.method) and st.attempt < max_retries then
      return retry_later(st, backoff(s, st.attempt), now, false)
    end
    return fail(st, err)
  end

  -- every call not finished yet, after the client was closed
  local function abort_all()
    final_stats = m:stats()
    m:close()
    for i, st in pairs(inflight) do put(i, nil, closed_error(st.op)) end
    for k = 1, nretries do put(retries[k].i, nil, closed_error(retries[k].op)) end
    inflight, active, retries, nretries = {}, 0, {}, 0
    for i = nxt, n do put(i, nil, closed_error((get_call(i)))) end
    nxt = n + 1
  end

  local function loop()
    while true do
      if is_closed(client) then return abort_all() end
      local now = monotonic()
      if now >= pause_until then
        while active < conc do
          local st = (nretries > 0 and take_retry(now)) or next_call()
          if not st then break end
          start(st)
          if is_closed(client) then return abort_all() end
        end
      end
      if active == 0 and nretries == 0 and nxt > n then return end
      -- the next instant something may start: end of the pause, a retry's backoff
      local wake = now + 1
      if active < conc then
        if pause_until > now then wake = pause_until end
        for k = 1, nretries do
          local at = max(retries[k].ready_at, pause_until)
          if at < wake then wake = at end
        end
      end
      if active > 0 then
        local done = m:run(max(0, wake - now))
        now = monotonic()
        for k = 1, #done do
          on_done(done[k], now)
          if is_closed(client) then return abort_all() end
        end
      elseif wake > now then
        s.sleep(wake - now)
      end
    end
  end

  local ok, e = pcall(loop)
  if stats then
    local ms = final_stats or m:stats()
    stats.engine, stats.requests, stats.connects, stats.http2 =
      "multi", ms.requests, ms.connects, ms.http2
    stats.tokens = is_closed(client) and 0 or s.transport:stats().requests - easy_before
  end
  m:close()
  if not ok then error(e, 0) end
end

---------------------------------------------------------------------------
-- OpenResty request handlers: light threads on cosockets
---------------------------------------------------------------------------

-- The session's transport behind a gate: no request leaves while a 429 pause lasts,
-- and a 429 (or a retryable answer with Retry-After) starts one for every thread.
local Gate = {}
local Gate_mt = { __index = Gate }

function Gate:request(method, url, body, ctype, bearer)
  local ngx = _G.ngx
  local wait = self.pause_until - ngx.now()
  while wait > 0 do
    ngx.sleep(wait)
    wait = self.pause_until - ngx.now()
  end
  local is_token = url == self.s.token_url
  if is_token then self.tokens = self.tokens + 1 else self.requests = self.requests + 1 end
  local res, err = self.inner:request(method, url, body, ctype, bearer)
  if res then
    local status = res.status
    if status == 429 or (res.retry_after and (status == 503 or status == 502 or status == 504)) then
      local ra = parse_retry_after(res.retry_after)
      if not (ra and ra > self.s.retry_after_max) then
        ngx.update_time()
        self.pause_until = max(self.pause_until, ngx.now() + (ra or self.s.retry_backoff / 2))
      end
    end
  end
  return res, err
end

function Gate:stats() return self.inner:stats() end
function Gate.close() end

local function run_threads(client, s, n, get_call, conc, sink, stats)
  local ngx = _G.ngx
  local spawn, wait = ngx.thread.spawn, ngx.thread.wait
  local gate = setmetatable({ inner = s.transport, s = s, pause_until = 0, requests = 0, tokens = 0 },
                            Gate_mt)
  -- the session with the gated transport (the session's methods through __index)
  local view = setmetatable({ transport = gate }, { __index = s })
  local before = s.transport:stats()
  local put = sink.put
  local token, terr = view:token()
  local nxt = 0
  local failure

  local function worker()
    while not failure do
      if is_closed(client) then return end
      nxt = nxt + 1
      local i = nxt
      if i > n then return end
      local op_id, params = get_call(i)
      if not token then
        put(i, nil, terr)
      else
        local method, path, body = prepare(client, op_id, params)
        local ok, res, err = pcall(view.request, view, method, path, body, op_id, "json", true)
        if not ok then
          if not is_closed(client) then
            failure = failure or res
            return
          end
          res, err = nil, closed_error(op_id)
        elseif is_closed(client) and not res then
          err = closed_error(op_id)
        end
        local pok, perr = pcall(put, i, res, err)
        if not pok then
          failure = failure or perr
          return
        end
      end
    end
  end

  local threads = {}
  for k = 1, min(conc, n) do
    local th, err = spawn(worker)
    if not th then error("scalekit: batch: ngx.thread.spawn failed: " .. tostring(err), 0) end
    threads[k] = th
  end
  for k = 1, #threads do
    local ok, err = wait(threads[k])
    if not ok then failure = failure or err end
  end
  if failure then error(failure, 0) end
  if is_closed(client) then
    for i = nxt > n and n + 1 or nxt, n do put(i, nil, closed_error((get_call(i)))) end
  end
  if stats then
    local after = is_closed(client) and before or s.transport:stats()
    stats.engine, stats.requests, stats.connects, stats.http2, stats.tokens =
      "cosocket", gate.requests, (after.connects or 0) - (before.connects or 0), 0, gate.tokens
  end
end

---------------------------------------------------------------------------
-- entry points
---------------------------------------------------------------------------

-- true: light threads on cosockets; false: the multi handle (plain Lua, init
-- phases); raises in phases without I/O.
local function use_threads()
  local ngx = rawget(_G, "ngx")
  if type(ngx) ~= "table" or type(ngx.get_phase) ~= "function" or type(ngx.thread) ~= "table" then
    return false
  end
  return require("scalekit.ngx.phase").can_yield()
end

local function check_opts(opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then misuse("batch: opts must be a table, got %s", type(opts)) end
  for k, v in pairs(opts) do
    local want = OPTION_TYPES[k]
    if not want then misuse("batch: unknown option '%s'", tostring(k)) end
    if type(v) ~= want then misuse("batch: option '%s' must be a %s, got %s", k, want, type(v)) end
  end
  local c = opts.concurrency
  if c ~= nil and (c < 1 or c % 1 ~= 0 or c > _M.MAX_CONCURRENCY) then
    misuse("batch: concurrency must be an integer in [1, %d], got %s", _M.MAX_CONCURRENCY, tostring(c))
  end
  return opts
end

-- n calls given by get_call(i) -> operation_id, params; validated before any I/O.
local function run(client, n, get_call, opts)
  opts = check_opts(opts)
  for i = 1, n do
    local op_id, params = get_call(i)
    prepare(client, op_id, params)
  end
  local sink = new_sink(opts.on_result)
  if n > 0 then
    local s = client._s
    local conc = min(opts.concurrency or _M.DEFAULT_CONCURRENCY, n)
    if use_threads() then
      run_threads(client, s, n, get_call, conc, sink, opts.stats)
    else
      run_multi(client, s, n, get_call, conc, sink, opts.http2, opts.stats)
    end
  end
  return sink.results, sink.errs
end

local methods = {}
_M.methods = methods

--- Run many independent calls concurrently; order kept, one failure fails only its call.
---@param calls table[] `{ {operation_id, params}, … }`
---@param opts {concurrency: integer?, http2: boolean?, stats: table?,
---             on_result: fun(i: integer, result: table?, err: scalekit.Error?)?}?
---@return table results results[i] is the decoded answer of call i, or nil
---@return table<integer, scalekit.Error>|nil errs nil when every call succeeded
function methods.batch(client, calls, opts)
  if type(calls) ~= "table" then misuse("batch: calls must be a table, got %s", type(calls)) end
  local n = #calls
  for i = 1, n do
    local c = calls[i]
    if type(c) ~= "table" or type(c[1]) ~= "string" then
      misuse("batch: calls[%d] must be a table { operation_id, params }", i)
    end
  end
  return run(client, n, function(i)
    local c = calls[i]
    return c[1], c[2]
  end, opts)
end

--- The `get` of a resource for many ids at once: `sk:get_many("organizations",
--- { "org_1", "org_2" })`; for two-id resources each id is a list of the positional
--- ids (`{ "org_1", "conn_1" }`) or a table of named params. Same options and
--- results as batch.
---@param resource string e.g. "organizations", "users", "connections"
---@param ids table
---@param opts table?
---@return table results
---@return table|nil errs
function methods.get_many(client, resource, ids, opts)
  local entries = resources.MAP[resource]
  local spec = type(entries) == "table" and entries.get
  if not spec then misuse("get_many: no resource '%s' with a get method", tostring(resource)) end
  if type(ids) ~= "table" then misuse("get_many: ids must be a table, got %s", type(ids)) end
  local op_id, npos = spec[1], #spec - 1
  local n = #ids
  for i = 1, n do
    local id = ids[i]
    local t = type(id)
    if t == "table" then
      if id[1] ~= nil and #id ~= npos then
        misuse("get_many: ids[%d] must list %d ids", i, npos)
      end
    elseif (t ~= "string" and t ~= "number") or npos ~= 1 then
      misuse("get_many: ids[%d] must be %s", i, npos == 1 and "a string id" or "a list of " .. npos .. " ids")
    end
  end
  return run(client, n, function(i)
    local id = ids[i]
    if type(id) ~= "table" then return op_id, { [spec[2]] = id } end
    if id[1] == nil then return op_id, id end
    local params = {}
    for k = 1, npos do params[spec[k + 1]] = id[k] end
    return op_id, params
  end, opts)
end

return _M
