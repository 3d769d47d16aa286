--- Iterators over Scalekit's paged list operations.
--
-- Two paging styles exist in the API: `page_token` → `next_page_token` (most lists)
-- and `page_number` (domains). Both are walked one page at a time, so memory stays
-- constant however long the list. A failure in the middle of a loop raises the error
-- table (catch it with pcall); a loop never ends silently on an error.
--
-- What the server sends back to drive the loop is checked, because a loop that never
-- ends is the worst a server can do to a caller (kind "decode", `error_code`):
--   page_token_cycle    a next_page_token seen before in this walk: the pages would
--                       repeat forever. The last SEEN_TOKENS (256) tokens are kept in
--                       a set (a ring evicts the oldest), which catches every cycle up
--                       to that length before any page is fetched twice; longer cycles
--                       are caught by Brent's algorithm (one saved token, compared
--                       with each new one, moved at each power of two), within about
--                       two turns of the cycle. Memory: at most SEEN_TOKENS tokens of
--                       at most MAX_TOKEN_SIZE (8 KiB) bytes each.
--   page_token_invalid  a next_page_token that is not a string, or is longer than
--                       MAX_TOKEN_SIZE.
--   page_count_invalid  page_number paging: `total_size` or `page_size` that is not a
--                       finite non-negative integer (an int64 as a digit string is
--                       fine; page_size must be at least 1).
local errors = require "scalekit.errors"
local operations = require "scalekit.operations"

local _M = {}

local type = type
local pairs = pairs
local tonumber = tonumber
local tostring = tostring
local match = string.match
local error = error
local setmetatable = setmetatable

local json = require "scalekit.json"
local null = json.null
local misuse = errors.misuse

-- Raise a page's error table. ngx_lua logs only string errors (a table shows as
-- "unknown reason"), so inside OpenResty the message is logged first: an error that
-- ends a request handler always says what failed. The table itself is raised, for
-- pcall.
local function raise(err)
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and type(ngx.log) == "function" then
    ngx.log(ngx.ERR, "scalekit: list iterator raised: ", tostring(err))
  end
  error(err, 0)
end

--- Page tokens remembered per walk for cycle detection (see the module header).
_M.SEEN_TOKENS = 256
--- Longest next_page_token accepted, in bytes.
_M.MAX_TOKEN_SIZE = 8192

-- The tokens of one walk: the last SEEN_TOKENS in a set (a ring evicts the oldest)
-- plus Brent's saved token for cycles longer than that. add(t) is true when `t` was
-- seen before.
local function token_memory()
  local set, ring, head = {}, {}, 0
  local saved, power, steps = nil, 1, 0
  local size = _M.SEEN_TOKENS
  return function(t)
    if set[t] or t == saved then return true end
    head = head % size + 1
    local old = ring[head]
    if old ~= nil then set[old] = nil end
    ring[head], set[t] = t, true
    steps = steps + 1
    if steps >= power then saved, power, steps = t, power * 2, 0 end
    return false
  end
end

-- A page count from the server: absent (nil, true), or a non-negative integer
-- (a number, or a digit string as protobuf writes int64) not below `lo`.
local function page_count(v, lo)
  if v == nil or v == null then return nil, true end
  if type(v) == "string" and match(v, "^%d+$") and #v <= 15 then v = tonumber(v) end
  v = json.integer(v, lo, 2 ^ 53)
  return v, v ~= nil
end

local function bad(code, message, op_id)
  return errors.new("decode", message, { operation = op_id, error_code = code })
end

local function copy(t)
  local c = {}
  if t then
    for k, v in pairs(t) do c[k] = v end
  end
  return c
end

local function paged_op(op_id, need_items)
  local op = operations[op_id]
  if not op then misuse("unknown operation '%s'", tostring(op_id)) end
  if not op.paging then misuse("%s is not a paged list operation", op_id) end
  if need_items and not op.items then misuse("%s has no list of items to iterate", op_id) end
  return op
end

local function present(v)
  return v ~= nil and v ~= null and v ~= ""
end

-- A page walker: returns a function that gives the next page, nil at the end, or
-- nil, err on failure. `state.done` stops it (early break, close).
local function walker(client, op_id, op, params)
  if params ~= nil and type(params) ~= "table" then
    misuse("%s: params must be a table, got %s", op_id, type(params))
  end
  local state = { done = false }
  local p = copy(params)
  if p.body ~= nil then misuse("%s: list operations take no body", op_id) end
  local seen = 0
  local tokens = token_memory()
  if type(p.page_token) == "string" and p.page_token ~= "" then tokens(p.page_token) end
  local function next_page()
    if state.done then return nil end
    local page, err = client:call(op_id, p)
    if not page then
      state.done = true
      return nil, err
    end
    if type(page) ~= "table" then
      state.done = true
      return nil, errors.new("decode", "page is not a JSON object", { operation = op_id })
    end
    local items = op.items and page[op.items]
    if items == null then items = nil end
    if op.paging == "token" then
      local nxt = page.next_page_token
      if not present(nxt) then
        state.done = true
      elseif type(nxt) ~= "string" or #nxt > _M.MAX_TOKEN_SIZE then
        state.done = true
        return nil, bad("page_token_invalid", type(nxt) ~= "string"
          and "next_page_token is a " .. type(nxt) .. ", not a string"
          or "next_page_token longer than " .. _M.MAX_TOKEN_SIZE .. " bytes", op_id)
      elseif tokens(nxt) then
        -- a server that hands back a token of this walk again would loop forever
        state.done = true
        return nil, bad("page_token_cycle", nxt == p.page_token
          and "server repeated the same next_page_token"
          or "server's next_page_token cycles back to an earlier page", op_id)
      else
        p.page_token = nxt
      end
    else -- "number"
      local n = items and #items or 0
      seen = seen + n
      -- domains answer no total and no token: a short page is the last one
      local total, total_ok = page_count(page.total_size, 0)
      local size, size_ok = page_count(page.page_size, 1)
      local mine = p.page_size
      if type(mine) == "number" and mine >= 1 then size, size_ok = mine, true end
      if not total_ok or not size_ok then
        state.done = true
        return nil, bad("page_count_invalid", (total_ok and "page_size" or "total_size")
          .. " of the page is not a valid count", op_id)
      end
      if n == 0 or (total and seen >= total) or (size and n < size) then
        state.done = true
      else
        p.page_number = (p.page_number or 0) + 1
      end
    end
    return page
  end
  return next_page, state
end

-- On 5.4 the generic for closes its 4th value when the loop ends in any way
-- (break, error, return): that is where an iterator gives up its page.
local closer_mt = { __close = function(c) c.state.done = true end }

local function closer(state)
  return setmetatable({ state = state }, closer_mt)
end

--- Iterate pages: `for page in sk:pages(op, params) do … end`.
---@param client scalekit.Client
---@param op_id string
---@param params table?
function _M.pages(client, op_id, params)
  local op = paged_op(op_id, false)
  local next_page, state = walker(client, op_id, op, params)
  local function iter()
    local page, err = next_page()
    if err then raise(err) end
    return page
  end
  return iter, nil, nil, closer(state)
end

--- Iterate items: `for item in sk:each(op, params) do … end`.
---@param client scalekit.Client
---@param op_id string
---@param params table?
function _M.each(client, op_id, params)
  local op = paged_op(op_id, true)
  local next_page, state = walker(client, op_id, op, params)
  local items, i = nil, 0
  local function iter()
    while true do
      if items then
        i = i + 1
        local item = items[i]
        if item ~= nil then return item end
        items = nil
      end
      if state.done then return nil end
      local page, err = next_page()
      if err then raise(err) end
      if not page then return nil end
      items, i = page[op.items], 0
      if items == null or type(items) ~= "table" then items = nil end
    end
  end
  return iter, nil, nil, closer(state)
end

--- Collect every item into one list. Returns nil, err on failure (never raises for I/O).
---@param client scalekit.Client
---@param op_id string
---@param params table?
---@param opts {limit: integer?}?
---@return table|nil items
---@return scalekit.Error|nil err
function _M.all(client, op_id, params, opts)
  local op = paged_op(op_id, true)
  local limit = opts and opts.limit
  if limit ~= nil and (type(limit) ~= "number" or limit < 0) then
    misuse("all(): opts.limit must be a non-negative number")
  end
  local next_page, state = walker(client, op_id, op, params)
  local out, n = {}, 0
  while not state.done do
    if limit and n >= limit then break end
    local page, err = next_page()
    if err then return nil, err end
    if not page then break end
    local items = page[op.items]
    if type(items) == "table" then
      for k = 1, #items do
        if limit and n >= limit then break end
        n = n + 1
        out[n] = items[k]
      end
    end
  end
  state.done = true
  return out
end

return _M
