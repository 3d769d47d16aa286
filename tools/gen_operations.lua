-- tools/gen_operations.lua: generate lua/scalekit/operations.lua from Scalekit's
-- OpenAPI 3.1 description.
--
--   lua5.4 tools/gen_operations.lua api/openapi.json > lua/scalekit/operations.lua
--
-- (`make operations` runs exactly that.) The output is data only, keyed by operationId
-- and sorted, so that running the script twice gives the same bytes.
--
-- Each entry:
--   method       upper-case HTTP method
--   path         the path template as in the spec (literal colons kept: "/api/v1/users:search")
--   tag          the first tag, or ""
--   summary      the summary on one line (whitespace runs folded, trimmed), or ""
--   path_params  the `{name}`s of the template, in template order
--   query        query parameter name -> "string" | "integer" | "number" | "boolean" | "array"
--                (enums are "string", int32/int64 are "integer")
--   required     names of the path parameters and of the required query parameters, sorted
--   body         false (no request body), "optional" or "required" (requestBody.required)
--   paging       "token": takes page_token and answers next_page_token;
--                "number": takes page_number (domains); absent: not paged
--   items        list operations only: the key of the array in the success response
--   fields       operations with a JSON body whose schema lists properties: field name ->
--                "string" | "integer" | "number" | "boolean" | "array" | "object" | "any",
--                or, for an object with known properties, a table of its fields (3 levels
--                at most; free-form maps are "object")
--   empty        true when the success response has an empty schema (deletes): an
--                empty, `null` or `{}` answer is a success
--
-- Rules for `items`:
--   * A list operation is a paged operation (paging set) or one whose verb, the part of
--     the operationId after "Service_", starts with "List" or "Search"
--     (McpService_ListMcpConnectedAccounts is a POST and still a list). Other operations
--     that happen to answer arrays (SessionService_GetSession,
--     SessionService_RevokeAllUserSessions, RolesService_AddPermissionsToRole) get no
--     `items`: their response is one object, not a page.
--   * The success response is "200", else the lowest 2xx with a JSON body. Its schema is
--     resolved through `$ref` chains and `allOf` (properties merged).
--   * If it has exactly one array property, that is `items`.
--   * If it has several, the arrays of scalars are auxiliary (ToolService_ListTools has
--     `tools`, objects, and `tool_names`, strings, answered only with filter.summary=true):
--     `items` is the only array of objects. If that still leaves zero or several
--     candidates, `items` is absent, and a paged operation without `items` is an error.
--
-- The script fails (exit 1, message on stderr) on anything it does not understand, rather
-- than write a table the library would misuse.

-- tools/util.lua from the checkout this script is in, whatever the working directory
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/../?.lua;" .. package.path

local cjson = require "cjson"
local util = require "tools.util"

local HTTP_METHODS = { "get", "put", "post", "delete", "options", "head", "patch", "trace" }

local QUERY_TYPES = {
  string = "string",
  integer = "integer",
  number = "number",
  boolean = "boolean",
  array = "array",
}

local LUA_KEYWORDS = {}
for word in ([[and break do else elseif end false for function goto if in local nil not
  or repeat return then true until while]]):gmatch("%a+") do
  LUA_KEYWORDS[word] = true
end

local MAX_LINE = 100
local MAX_REF_DEPTH = 64

local function fail(fmt, ...)
  error(string.format(fmt, ...), 0)
end

local function read_file(path)
  local data, err = util.read_file(path)
  if not data then
    fail("cannot open %s", err)
  end
  return data
end

local function is_string(v)
  return type(v) == "string"
end

-- JSON pointer, local references only ("#/components/schemas/Foo").
local function lookup_ref(doc, ref)
  if not is_string(ref) or ref:sub(1, 2) ~= "#/" then
    fail("unsupported $ref %s", tostring(ref))
  end
  local node = doc
  for token in ref:sub(3):gmatch("[^/]+") do
    token = token:gsub("~1", "/"):gsub("~0", "~")
    if type(node) ~= "table" then
      break
    end
    node = node[token]
  end
  if type(node) ~= "table" then
    fail("dangling $ref %s", ref)
  end
  return node
end

local function deref(doc, node)
  local depth = 0
  while type(node) == "table" and node["$ref"] ~= nil do
    depth = depth + 1
    if depth > MAX_REF_DEPTH then
      fail("$ref cycle at %s", tostring(node["$ref"]))
    end
    node = lookup_ref(doc, node["$ref"])
  end
  return node
end

-- The schema's type: a string, or the first non-"null" member of a 3.1 type array.
local function schema_type(schema)
  local t = schema.type
  if type(t) == "table" then
    for _, member in ipairs(t) do
      if member ~= "null" then
        return member
      end
    end
    return nil
  end
  if is_string(t) then
    return t
  end
  return nil
end

-- Properties of a schema, following $ref and merging allOf. name -> resolved schema.
local function collect_properties(doc, schema, into, depth)
  depth = depth or 0
  if depth > MAX_REF_DEPTH then
    fail("allOf nesting too deep")
  end
  schema = deref(doc, schema)
  if type(schema) ~= "table" then
    return into
  end
  if type(schema.allOf) == "table" then
    for _, part in ipairs(schema.allOf) do
      collect_properties(doc, part, into, depth + 1)
    end
  end
  if type(schema.properties) == "table" then
    for name, prop in pairs(schema.properties) do
      into[name] = deref(doc, prop)
    end
  end
  return into
end

local function success_schema(doc, op)
  local responses = op.responses
  if type(responses) ~= "table" then
    return nil
  end
  local response = responses["200"]
  if response == nil then
    local codes = {}
    for code in pairs(responses) do
      if is_string(code) and code:match("^2%d%d$") then
        codes[#codes + 1] = code
      end
    end
    table.sort(codes)
    response = responses[codes[1]]
  end
  response = deref(doc, response)
  if type(response) ~= "table" or type(response.content) ~= "table" then
    return nil
  end
  local media = response.content["application/json"]
  if type(media) ~= "table" then
    return nil
  end
  return media.schema
end

local function is_array_of_scalars(doc, schema)
  local item = deref(doc, schema.items)
  if type(item) ~= "table" then
    return false
  end
  local t = schema_type(item)
  return t ~= nil and t ~= "object" and t ~= "array"
end

-- See "Rules for `items`" at the top.
local function find_items(doc, properties)
  local arrays, objects = {}, {}
  for name, prop in pairs(properties) do
    if schema_type(prop) == "array" then
      arrays[#arrays + 1] = name
      if not is_array_of_scalars(doc, prop) then
        objects[#objects + 1] = name
      end
    end
  end
  if #arrays == 1 then
    return arrays[1]
  end
  if #objects == 1 then
    return objects[1]
  end
  return nil
end

-- The field table of a body schema (see `fields` at the top), nil for a free-form one.
local FIELD_TYPES = { string = true, integer = true, number = true, boolean = true, array = true }

local field_type

local function fields_of(doc, schema, depth)
  schema = deref(doc, schema)
  if type(schema) ~= "table" then return nil end
  local extra = schema.additionalProperties
  if extra ~= nil and extra ~= false then return nil end -- a map: any key goes
  local props = collect_properties(doc, schema, {})
  if next(props) == nil then return nil end
  local fields = {}
  for name, prop in pairs(props) do fields[name] = field_type(doc, prop, depth + 1) end
  return fields
end

function field_type(doc, schema, depth)
  schema = deref(doc, schema)
  if type(schema) ~= "table" then return "any" end
  local t = schema_type(schema)
  if t == nil and schema.enum ~= nil then t = "string" end
  if t == nil and (schema.properties ~= nil or schema.allOf ~= nil) then t = "object" end
  if t == "object" then
    return depth < 3 and fields_of(doc, schema, depth) or "object"
  end
  return FIELD_TYPES[t] and t or "any"
end

local function is_empty_schema(doc, schema)
  schema = deref(doc, schema)
  if type(schema) ~= "table" then return false end
  local t = schema_type(schema)
  return (t == nil or t == "object") and schema.properties == nil and schema.allOf == nil
    and schema.additionalProperties == nil and schema.items == nil
end

local function param_type(doc, op_id, param)
  local schema = deref(doc, param.schema)
  if type(schema) ~= "table" then
    fail("%s: query parameter %s has no schema", op_id, tostring(param.name))
  end
  local t = schema_type(schema)
  if t == nil and schema.enum ~= nil then
    t = "string"
  end
  local mapped = QUERY_TYPES[t]
  if not mapped then
    fail("%s: query parameter %s has unsupported type %s", op_id, param.name, tostring(t))
  end
  return mapped
end

-- Path-item parameters, overridden by operation parameters with the same name and `in`.
local function merged_parameters(doc, item, op)
  local list, index = {}, {}
  for _, source in ipairs({ item.parameters or {}, op.parameters or {} }) do
    for _, param in ipairs(source) do
      param = deref(doc, param)
      local key = tostring(param["in"]) .. ":" .. tostring(param.name)
      if index[key] then
        list[index[key]] = param
      else
        list[#list + 1] = param
        index[key] = #list
      end
    end
  end
  return list
end

local function one_line(s)
  if not is_string(s) then
    return ""
  end
  return (s:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""))
end

local function build_operation(doc, path, item, method, op)
  local op_id = op.operationId
  local entry = {
    method = method:upper(),
    path = path,
    tag = type(op.tags) == "table" and is_string(op.tags[1]) and op.tags[1] or "",
    summary = one_line(op.summary),
    path_params = {},
    query = {},
    required = {},
    body = false,
  }

  local in_template = {}
  for name in path:gmatch("{([^}]*)}") do
    if name == "" or in_template[name] then
      fail("%s: bad or repeated path parameter {%s} in %s", op_id, name, path)
    end
    in_template[name] = true
    entry.path_params[#entry.path_params + 1] = name
    entry.required[#entry.required + 1] = name
  end

  local declared = {}
  for _, param in ipairs(merged_parameters(doc, item, op)) do
    local name, where = param.name, param["in"]
    if not is_string(name) then
      fail("%s: parameter without a name", op_id)
    end
    if where == "path" then
      if not in_template[name] then
        fail("%s: path parameter %s is not in %s", op_id, name, path)
      end
      declared[name] = true
    elseif where == "query" then
      if entry.query[name] then
        fail("%s: repeated query parameter %s", op_id, name)
      end
      if in_template[name] then
        fail("%s: %s is both a path and a query parameter", op_id, name)
      end
      entry.query[name] = param_type(doc, op_id, param)
      if param.required == true then
        entry.required[#entry.required + 1] = name
      end
    end
    -- header and cookie parameters: the library sets its own headers.
  end
  for _, name in ipairs(entry.path_params) do
    if not declared[name] then
      fail("%s: {%s} in %s is not declared", op_id, name, path)
    end
  end
  table.sort(entry.required)

  local request_body = deref(doc, op.requestBody)
  if type(request_body) == "table" then
    entry.body = request_body.required == true and "required" or "optional"
    local media = type(request_body.content) == "table" and request_body.content["application/json"]
    if type(media) == "table" then entry.fields = fields_of(doc, media.schema, 0) end
  end

  local schema = success_schema(doc, op)
  entry.empty = schema ~= nil and is_empty_schema(doc, schema) or nil
  local properties = schema and collect_properties(doc, schema, {}) or {}

  if entry.query.page_token and properties.next_page_token then
    entry.paging = "token"
  elseif entry.query.page_number then
    entry.paging = "number"
  end

  local verb = op_id:match("Service_(%u%l*)") or op_id:match("^(%u%l*)")
  if entry.paging or verb == "List" or verb == "Search" then
    entry.items = find_items(doc, properties)
    if entry.paging and not entry.items then
      fail("%s: paged, but no single array in its response", op_id)
    end
  end

  return op_id, entry
end

local function collect_operations(doc)
  if type(doc) ~= "table" or type(doc.paths) ~= "table" then
    fail("not an OpenAPI description: no paths")
  end
  local ops, sources = {}, {}
  for path, item in pairs(doc.paths) do
    item = deref(doc, item)
    for _, method in ipairs(HTTP_METHODS) do
      local op = item[method]
      if type(op) == "table" then
        local source = method:upper() .. " " .. path
        if not is_string(op.operationId) or op.operationId == "" then
          fail("%s has no operationId", source)
        end
        if sources[op.operationId] then
          fail("operationId %s used by %s and %s", op.operationId, sources[op.operationId], source)
        end
        sources[op.operationId] = source
        local id, entry = build_operation(doc, path, item, method, op)
        ops[id] = entry
      end
    end
  end
  return ops
end

-- Output ------------------------------------------------------------------------------

-- A double-quoted literal that every Lua from 5.1 up reads back as the same bytes.
local ESCAPES = { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESCAPES[c] or string.format("\\%03d", c:byte())
  end) .. '"'
end

local function key(name)
  if name:match("^[%a_][%w_]*$") and not LUA_KEYWORDS[name] then
    return name
  end
  return "[" .. quote(name) .. "]"
end

local fields_literal

local sorted_keys = util.sorted_keys

-- `name = { a, b },` on one line if it fits, else one element per line.
local function emit_table(out, indent, name, elements)
  if #elements == 0 then
    out[#out + 1] = indent .. name .. " = {},"
    return
  end
  local line = indent .. name .. " = { " .. table.concat(elements, ", ") .. " },"
  if #line <= MAX_LINE then
    out[#out + 1] = line
    return
  end
  out[#out + 1] = indent .. name .. " = {"
  for _, element in ipairs(elements) do
    out[#out + 1] = indent .. "  " .. element .. ","
  end
  out[#out + 1] = indent .. "},"
end

-- `{ a = "string", b = { c = "integer" } }`, keys sorted
function fields_literal(fields)
  local parts = {}
  for _, name in ipairs(sorted_keys(fields)) do
    local v = fields[name]
    parts[#parts + 1] = key(name) .. " = " .. (type(v) == "table" and fields_literal(v) or quote(v))
  end
  return "{ " .. table.concat(parts, ", ") .. " }"
end

local function emit(ops)
  local out = {
    "-- Generated by tools/gen_operations.lua from Scalekit's openapi.json. Do not edit.",
    "-- Regenerate with `make operations`.",
    "return {",
  }
  local indent = "    "
  for _, id in ipairs(sorted_keys(ops)) do
    local e = ops[id]
    out[#out + 1] = "  [" .. quote(id) .. "] = {"
    out[#out + 1] = indent .. "method = " .. quote(e.method) .. ","
    out[#out + 1] = indent .. "path = " .. quote(e.path) .. ","
    out[#out + 1] = indent .. "tag = " .. quote(e.tag) .. ","
    out[#out + 1] = indent .. "summary = " .. quote(e.summary) .. ","

    local list = {}
    for i, name in ipairs(e.path_params) do
      list[i] = quote(name)
    end
    emit_table(out, indent, "path_params", list)

    list = {}
    for _, name in ipairs(sorted_keys(e.query)) do
      list[#list + 1] = key(name) .. " = " .. quote(e.query[name])
    end
    emit_table(out, indent, "query", list)

    list = {}
    for i, name in ipairs(e.required) do
      list[i] = quote(name)
    end
    emit_table(out, indent, "required", list)

    out[#out + 1] = indent .. "body = " .. (e.body and quote(e.body) or "false") .. ","
    if e.paging then
      out[#out + 1] = indent .. "paging = " .. quote(e.paging) .. ","
    end
    if e.items then
      out[#out + 1] = indent .. "items = " .. quote(e.items) .. ","
    end
    if e.empty then
      out[#out + 1] = indent .. "empty = true,"
    end
    if e.fields then
      out[#out + 1] = indent .. "fields = " .. fields_literal(e.fields) .. ","
    end
    out[#out + 1] = "  },"
  end
  out[#out + 1] = "}"
  return table.concat(out, "\n") .. "\n"
end

local function main(argv)
  local path = argv[1]
  if not path or argv[2] then
    io.stderr:write("usage: lua5.4 tools/gen_operations.lua path/to/openapi.json > lua/scalekit/operations.lua\n")
    return 2
  end
  local ok, doc = pcall(cjson.decode, read_file(path))
  if not ok then
    fail("%s: %s", path, tostring(doc))
  end
  io.stdout:write(emit(collect_operations(doc)))
  return 0
end

local ok, result = pcall(main, arg)
if not ok then
  io.stderr:write("gen_operations: ", tostring(result), "\n")
  os.exit(1)
end
os.exit(result)
