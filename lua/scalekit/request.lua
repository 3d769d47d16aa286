--- Turns (operation, params) into the path-and-query of an HTTP request.
--
-- Rules (README "Parameters"): path and query parameters by their spec names at the
-- top level of `params`, the JSON body under `params.body`. Path values are
-- percent-encoded as one segment (so "/", "..", "?" and "#" can never change the
-- route); query values are encoded per RFC 3986, arrays as repeated keys, booleans
-- as true/false. Anything the operation does not know is a misuse and raises.
local _M = {}

local type = type
local pairs = pairs
local next = next
local tostring = tostring
local concat = table.concat
local sort = table.sort
local format = string.format
local find = string.find
local floor = math.floor

local HUGE = math.huge

--- Percent-encode everything but RFC 3986 unreserved characters (in C: this runs for
--- every path and query value of every call).
---@param s string
---@return string
local encode = require("scalekit.core").url_encode
_M.encode = encode

--- Form encoding (application/x-www-form-urlencoded) of a flat table, keys sorted.
---@param t table<string, string|number|boolean>
---@return string
function _M.form(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  sort(keys)
  local parts = {}
  for i = 1, #keys do
    local k = keys[i]
    parts[i] = encode(k) .. "=" .. encode(tostring(t[k]))
  end
  return concat(parts, "&")
end

local errors = require "scalekit.errors"
local errors_misuse = errors.misuse
local did_you_mean = errors.did_you_mean
local null = require("scalekit.json").null

-- Misuse names the operation; errors.misuse positions it at the caller's line.
local function misuse(op_id, fmt, ...)
  errors_misuse("%s: " .. fmt, op_id, ...)
end

local mtype = rawget(math, "type")

local function is_integral(v)
  return v == v and v ~= HUGE and v ~= -HUGE and floor(v) == v
end

-- A number as parameter text, or nil when it cannot be sent faithfully: Lua
-- integers are written exactly (all 19 digits), integral floats without a fraction
-- (lua-cjson and arithmetic give 10.0 on 5.4) while they are exact (below 2^53),
-- other finite floats so that they read back the same; NaN, ±inf and integral
-- floats from 2^53 on (9007199254740993 is not a double) are refused.
local function number_text(v)
  if mtype and mtype(v) == "integer" then return format("%d", v) end
  if is_integral(v) then
    if v > -2^53 and v < 2^53 then return format("%d", v) end
    return nil
  end
  if v ~= v or v == HUGE or v == -HUGE then return nil end
  return format("%.17g", v)
end
_M.number_text = number_text

local function scalar_text(op_id, name, ptype, v)
  local t = type(v)
  local text
  if ptype == "string" then
    if t == "string" then return v end
    if t == "number" then text = number_text(v) end
  elseif ptype == "integer" then
    if t == "number" and (is_integral(v) or (mtype and mtype(v) == "integer")) then text = number_text(v) end
    if t == "string" and find(v, "^%-?%d+$") then return v end
  elseif ptype == "number" then
    if t == "number" then text = number_text(v) end
  elseif ptype == "boolean" then
    if t == "boolean" then return v and "true" or "false" end
  end
  if text then return text end
  if t == "number" and is_integral(v) and ptype ~= "boolean" then
    misuse(op_id, "parameter '%s' cannot be sent exactly: %s is not an exact double (pass ids of "
           .. "2^53 and more as strings)", name, tostring(v))
  end
  local what = ptype == "integer" and "an integer" or ptype == "number" and "a number (finite)"
    or ptype == "string" and "a string (or a finite number)" or "a " .. ptype
  misuse(op_id, "parameter '%s' must be %s, got %s", name, what, t == "number" and tostring(v) or t)
end

-- One path parameter as an encoded segment.
local function path_value(op_id, name, v)
  if v == nil then misuse(op_id, "missing required path parameter '%s'", name) end
  v = scalar_text(op_id, name, "string", v)
  if v == "" then misuse(op_id, "path parameter '%s' must not be empty", name) end
  -- "." and ".." segments are removed by URL normalization (libcurl, proxies,
  -- servers), whatever their encoding: they would change the route
  if v == "." or v == ".." then misuse(op_id, "path parameter '%s' must not be '.' or '..'", name) end
  return encode(v)
end

-- Per-operation data derived once: path pieces and sorted query names (keyed by the
-- entries of scalekit.operations, which live as long as the module).
local compiled = {}

local function compile(op)
  local c = compiled[op]
  if c then return c end
  local pieces, names = {}, {}
  local pos = 1
  local path = op.path
  while true do
    local a, b, name = find(path, "{([%w_]+)}", pos)
    if not a then break end
    pieces[#pieces + 1] = path:sub(pos, a - 1)
    pieces[#pieces + 1] = false -- placeholder, filled per call
    names[#pieces] = name
    pos = b + 1
  end
  pieces[#pieces + 1] = path:sub(pos)
  -- `strict = false` is the per-call escape hatch of the body check (below)
  local known = { body = op.body and true or nil, strict = true }
  local qnames = {}
  for i = 1, #op.path_params do known[op.path_params[i]] = true end
  for q in pairs(op.query) do
    qnames[#qnames + 1] = q
    known[q] = true
  end
  sort(qnames)
  local required = {}
  for i = 1, #op.required do required[op.required[i]] = true end
  c = { pieces = pieces, names = names, qnames = qnames, known = known, required = required }
  -- the direct shape of sk:call (client.lua): one path parameter and nothing else that
  -- must be given (no required query parameter, no required body)
  if #pieces == 3 and #op.path_params == 1 and op.body ~= "required" then
    local any_required = false
    for i = 1, #qnames do
      if required[qnames[i]] then any_required = true end
    end
    if not any_required then c.id_name, c.prefix, c.suffix = names[2], pieces[1], pieces[3] end
  end
  compiled[op] = c
  return c
end
_M.compile = compile

local function expected_list(c)
  local names = {}
  for k in pairs(c.known) do
    if k ~= "strict" then names[#names + 1] = k end
  end
  sort(names)
  return #names > 0 and concat(names, ", ") or "none"
end

local function unknown_parameter(op_id, op, c, k)
  if k == "body" then misuse(op_id, "takes no body") end
  local fields = op.fields
  if type(k) == "string" and fields and fields[k] ~= nil then
    misuse(op_id, "'%s' is a body field: pass it under 'body' (or as a loose key of a resource method)", k)
  end
  misuse(op_id, "unknown parameter '%s'%s (expected: %s)", tostring(k), did_you_mean(k, c.known),
         expected_list(c))
end

-- JSON types of the body schema (operations.lua `fields`) and what a Lua value must be
local TYPE_CHECKS = {
  string = function(v) return type(v) == "string" end,
  integer = function(v) return type(v) == "number" and is_integral(v) end,
  number = function(v) return type(v) == "number" and v == v and v ~= HUGE and v ~= -HUGE end,
  boolean = function(v) return type(v) == "boolean" end,
  array = function(v) return type(v) == "table" and (next(v) == nil or v[1] ~= nil) end,
  object = function(v) return type(v) == "table" end,
  any = function() return true end,
}

-- Body fields against the schema: unknown keys (with the nearest known names) and
-- wrong types raise; cjson.null (an explicit JSON null) passes for any field.
-- names people carry over from other APIs
local FIELD_SYNONYMS = { first_name = "given_name", last_name = "family_name", surname = "family_name",
                         firstname = "given_name", lastname = "family_name" }

local function check_fields(op_id, op, fields, body, where)
  for k, v in pairs(body) do
    local want = type(k) == "string" and fields[k]
    if want == nil or want == false then
      local names = {}
      for name in pairs(fields) do names[#names + 1] = name end
      sort(names)
      local hint = FIELD_SYNONYMS[k] and fields[FIELD_SYNONYMS[k]] and " (did you mean '" .. FIELD_SYNONYMS[k] .. "'?)"
        or did_you_mean(k, fields)
      if hint == "" and where == "" then
        -- a mistyped query parameter lands among the body fields of a resource method
        local q = did_you_mean(k, op.query)
        if q ~= "" then hint = q:gsub("did you mean", "did you mean the query parameter") end
      end
      misuse(op_id, "unknown body field '%s%s'%s (known: %s; strict = false sends it anyway)",
             where, tostring(k), hint, concat(names, ", "))
    end
    if v ~= null then
      if type(want) == "table" then
        if type(v) ~= "table" then
          misuse(op_id, "body field '%s%s' must be an object, got %s", where, k, type(v))
        end
        check_fields(op_id, op, want, v, where .. k .. ".")
      elseif not TYPE_CHECKS[want](v) then
        misuse(op_id, "body field '%s%s' must be %s %s, got %s", where, k,
               (want == "integer" or want == "array" or want == "object" or want == "any") and "an" or "a",
               want, type(v))
      end
    end
  end
end

--- Build the path (with query string) and the body table for one call.
--- Raises on misuse: unknown parameter, missing required one, wrong type.
---@param op_id string
---@param op table entry of scalekit.operations
---@param params table?
---@param strict boolean? check body fields against the schema (the client's `strict`;
---                       `params.strict = false` turns it off for one call)
---@return string path_and_query
---@return table|nil body
function _M.build(op_id, op, params, strict)
  if params == nil then
    params = {}
  elseif type(params) ~= "table" then
    misuse(op_id, "params must be a table, got %s", type(params))
  end
  local c = compile(op)
  for k in pairs(params) do
    if not c.known[k] then unknown_parameter(op_id, op, c, k) end
  end

  local pieces, names = c.pieces, c.names
  local path
  local npieces = #pieces
  if npieces == 1 then
    path = pieces[1]
  elseif npieces == 3 then
    -- the common one-id route: one concatenation, no scratch table
    path = pieces[1] .. path_value(op_id, names[2], params[names[2]]) .. pieces[3]
  else
    local out = {}
    for i = 1, #pieces do
      local name = names[i]
      if name then
        out[i] = path_value(op_id, name, params[name])
      else
        out[i] = pieces[i]
      end
    end
    path = concat(out)
  end

  local qnames = c.qnames
  local query
  for i = 1, #qnames do
    local name = qnames[i]
    local v = params[name]
    if v == nil then
      if c.required[name] then misuse(op_id, "missing required parameter '%s'", name) end
    else
      query = query or {}
      local ptype = op.query[name]
      if ptype == "array" then
        if type(v) ~= "table" then v = { v } end
        for j = 1, #v do
          query[#query + 1] = name .. "=" .. encode(scalar_text(op_id, name, "string", v[j]))
        end
      else
        query[#query + 1] = name .. "=" .. encode(scalar_text(op_id, name, ptype, v))
      end
    end
  end
  if query and #query > 0 then
    path = path .. "?" .. concat(query, "&")
  end

  local body = params.body
  if body ~= nil then
    if not op.body then
      misuse(op_id, "takes no body")
    elseif type(body) ~= "table" then
      misuse(op_id, "body must be a table, got %s", type(body))
    end
    local check = params.strict
    if check == nil then
      check = strict
    elseif type(check) ~= "boolean" then
      misuse(op_id, "strict must be a boolean, got %s", type(check))
    end
    if check ~= false and op.fields then check_fields(op_id, op, op.fields, body, "") end
  end
  return path, body
end

return _M
