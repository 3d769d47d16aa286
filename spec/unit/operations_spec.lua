-- spec/unit/operations_spec.lua: lua/scalekit/operations.lua against Scalekit's OpenAPI
-- description, read here on its own (not through the generator), and against a fresh run
-- of tools/gen_operations.lua so that the committed file cannot drift.
--
-- Run from the repository root: busted --lua=lua5.4 spec/unit/operations_spec.lua
-- The description is the repository's api/openapi.json, or $SCALEKIT_OPENAPI.

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path

local cjson = require "cjson"
local proc = require "spec.support.proc"
local util = require "tools.util"

local OPENAPI = os.getenv("SCALEKIT_OPENAPI") or "api/openapi.json"
local GENERATED = "lua/scalekit/operations.lua"
local GENERATOR = "tools/gen_operations.lua"

local HTTP_METHODS = { "get", "put", "post", "delete", "options", "head", "patch", "trace" }
local FIELDS = {
  method = true, path = true, tag = true, summary = true, path_params = true, query = true,
  required = true, body = true, paging = true, items = true, fields = true, empty = true,
}
local QUERY_TYPES = { string = true, integer = true, number = true, boolean = true, array = true }

local read_file = util.read_file

local function load_openapi()
  local data, err = read_file(OPENAPI)
  if not data then
    return nil, "cannot read Scalekit's OpenAPI description (" .. tostring(err)
      .. "): run busted from the repository root (api/openapi.json),"
      .. " or set SCALEKIT_OPENAPI to its path"
  end
  local ok, doc = pcall(cjson.decode, data)
  if not ok then
    return nil, "cannot decode " .. OPENAPI .. ": " .. tostring(doc)
  end
  if type(doc.paths) ~= "table" then
    return nil, OPENAPI .. " has no paths: not an OpenAPI description"
  end
  return doc
end

local doc, doc_err = load_openapi()
local operations = require "scalekit.operations"

local sorted_keys = util.sorted_keys

local openapi = require "spec.support.openapi"
local function deref(node) return openapi.deref(doc, node) end
local type_of = openapi.schema_type

-- Properties of the success response ("200", else the first 2xx), through $ref and allOf.
local function response_properties(op)
  local response = op.responses["200"]
  if not response then
    for _, code in ipairs(sorted_keys(op.responses)) do
      if code:match("^2%d%d$") then
        response = op.responses[code]
        break
      end
    end
  end
  response = deref(response)
  local props = {}
  local function add(schema)
    schema = deref(schema)
    if type(schema) ~= "table" then
      return
    end
    for _, part in ipairs(schema.allOf or {}) do
      add(part)
    end
    for name, prop in pairs(schema.properties or {}) do
      props[name] = deref(prop)
    end
  end
  local media = response and response.content and response.content["application/json"]
  if media then
    add(media.schema)
  end
  return props
end

-- What the description says about one operation, in the generated file's terms.
local function expected_entry(path, item, method, op)
  local e = {
    method = method:upper(),
    path = path,
    tag = op.tags and op.tags[1] or "",
    summary = type(op.summary) == "string"
      and op.summary:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "") or "",
    path_params = {},
    query = {},
    required = {},
    body = false,
  }
  for name in path:gmatch("{([^}]+)}") do
    e.path_params[#e.path_params + 1] = name
    e.required[#e.required + 1] = name
  end
  local declared_path = {}
  local params = {}
  for _, p in ipairs(item.parameters or {}) do
    params[#params + 1] = deref(p)
  end
  for _, p in ipairs(op.parameters or {}) do
    params[#params + 1] = deref(p)
  end
  for _, p in ipairs(params) do
    if p["in"] == "path" then
      declared_path[#declared_path + 1] = p.name
    elseif p["in"] == "query" then
      local schema = deref(p.schema)
      local t = type_of(schema)
      if t == nil and schema.enum then
        t = "string"
      end
      e.query[p.name] = t
      if p.required == true then
        e.required[#e.required + 1] = p.name
      end
    end
  end
  table.sort(e.required)
  local rb = deref(op.requestBody)
  if rb then
    e.body = rb.required == true and "required" or "optional"
  end
  return e, declared_path
end

local function each_operation(fn)
  for _, path in ipairs(sorted_keys(doc.paths)) do
    local item = deref(doc.paths[path])
    for _, method in ipairs(HTTP_METHODS) do
      if type(item[method]) == "table" then
        fn(path, item, method, item[method])
      end
    end
  end
end

local function run_generator()
  return (proc.run("lua5.4 " .. proc.quote(GENERATOR) .. " " .. proc.quote(OPENAPI) .. " 2>&1"))
end

-- First differing line, so that a drift shows up as one readable line, not 100 KB.
local function first_difference(a, b)
  local n = 1
  local la, lb = a:gmatch("([^\n]*)\n?"), b:gmatch("([^\n]*)\n?")
  while true do
    local x, y = la(), lb()
    if x ~= y then
      return string.format("line %d:\n  committed: %s\n  generated: %s", n, tostring(x), tostring(y))
    end
    if x == nil then
      return "same lines, different bytes"
    end
    n = n + 1
  end
end

describe("scalekit.operations", function()
  it("reads Scalekit's OpenAPI description", function()
    assert(doc, doc_err)
  end)

  it("is a table of operations with only known fields and values", function()
    assert.is_table(operations)
    local count = 0
    for id, e in pairs(operations) do
      count = count + 1
      local where = "operation " .. tostring(id)
      assert.is_string(id, where)
      assert.is_table(e, where)
      for field in pairs(e) do
        assert.is_true(FIELDS[field] ~= nil, where .. ": unknown field " .. tostring(field))
      end
      assert.is_truthy(e.method:match("^%u+$"), where .. ": method " .. e.method)
      assert.is_truthy(e.path:match("^/api/v1/"), where .. ": path " .. e.path)
      assert.is_string(e.tag, where)
      assert.is_string(e.summary, where)
      assert.is_nil(e.summary:find("\n"), where .. ": summary on one line")
      assert.is_table(e.path_params, where)
      assert.is_table(e.query, where)
      for name, t in pairs(e.query) do
        assert.is_true(QUERY_TYPES[t] ~= nil, where .. ": query " .. name .. " has type " .. tostring(t))
      end
      assert.is_table(e.required, where)
      local sorted = {}
      for i, name in ipairs(e.required) do
        sorted[i] = name
      end
      table.sort(sorted)
      assert.are.same(sorted, e.required, where .. ": required is sorted")
      assert.is_true(e.body == false or e.body == "optional" or e.body == "required", where .. ": body")
      assert.is_true(e.paging == nil or e.paging == "token" or e.paging == "number", where .. ": paging")
      assert.is_true(e.items == nil or type(e.items) == "string", where .. ": items")
      if e.paging then
        assert.is_string(e.items, where .. ": a paged operation names its items")
      end
      if e.paging == "token" then
        assert.are.equal("string", e.query.page_token, where .. ": token paging takes page_token")
      elseif e.paging == "number" then
        assert.are.equal("integer", e.query.page_number, where .. ": number paging takes page_number")
      end
    end
    assert.is_true(count > 0, "no operations")
  end)

  it("has every operation of the description and no other", function()
    assert(doc, doc_err)
    local expected = {}
    each_operation(function(path, _, method, op)
      local id = op.operationId
      assert.is_string(id, method:upper() .. " " .. path .. " has no operationId")
      assert.is_nil(expected[id], "operationId " .. id .. " is used twice")
      expected[id] = true
    end)
    local actual = {}
    for id in pairs(operations) do
      actual[id] = true
    end
    assert.are.same(sorted_keys(expected), sorted_keys(actual))
  end)

  if doc then
    each_operation(function(path, item, method, op)
      local id = op.operationId
      it(tostring(id) .. " matches the description", function()
        local actual = operations[id]
        assert.is_table(actual, "missing operation " .. tostring(id))
        local expected, declared_path = expected_entry(path, item, method, op)

        local compared = {}
        for field in pairs(expected) do
          compared[field] = actual[field]
        end
        assert.are.same(expected, compared)

        -- Each {name} of the template, in order, is in path_params and declared in the spec.
        local i = 0
        for name in actual.path:gmatch("{([^}]+)}") do
          i = i + 1
          assert.are.equal(name, actual.path_params[i], "path parameter " .. i)
        end
        assert.are.equal(i, #actual.path_params)
        table.sort(declared_path)
        local from_template = {}
        for k, name in ipairs(actual.path_params) do
          from_template[k] = name
        end
        table.sort(from_template)
        assert.are.same(from_template, declared_path, "path parameters declared in the spec")

        -- Paging and items against the response.
        local props = response_properties(op)
        local paging
        if actual.query.page_token and props.next_page_token then
          paging = "token"
        elseif actual.query.page_number then
          paging = "number"
        end
        assert.are.equal(paging, actual.paging, "paging")
        if actual.items then
          local prop = props[actual.items]
          assert.is_table(prop, "items " .. actual.items .. " is not in the response")
          assert.are.equal("array", type_of(prop), "items " .. actual.items .. " is an array")
        end
        if paging then
          assert.is_string(actual.items, "a paged operation names its items")
        end

        -- Body fields: exactly the properties of the request body schema (when it
        -- lists any), and `empty` exactly when the success answer has no properties.
        local rb = deref(op.requestBody)
        local media = rb and rb.content and rb.content["application/json"]
        local bschema = media and deref(media.schema)
        local bprops = {}
        if bschema then
          for _, part in ipairs(bschema.allOf or {}) do
            for name in pairs(deref(part).properties or {}) do bprops[name] = true end
          end
          for name in pairs(bschema.properties or {}) do bprops[name] = true end
        end
        if actual.fields then
          assert.are.same(sorted_keys(bprops), sorted_keys(actual.fields), "body fields")
        elseif bschema and not bschema.additionalProperties then
          assert.are.same({}, sorted_keys(bprops), "a body with properties has fields")
        end
        assert.are.equal(next(props) == nil or nil, actual.empty, "empty")
      end)
    end)
  end

  it("is exactly what the generator makes of the description", function()
    assert(doc, doc_err)
    local committed = assert(read_file(GENERATED))
    local generated = run_generator()
    if generated ~= committed then
      assert.is_true(false, GENERATED .. " differs from `lua5.4 " .. GENERATOR .. " " .. OPENAPI
        .. "`; run `make operations`. First difference at " .. first_difference(committed, generated))
    end
    assert.are.equal(generated, run_generator(), "two runs of the generator differ")
    assert.is_truthy(committed:match("^%-%- Generated by tools/gen_operations%.lua .-Do not edit%."))
  end)
end)
