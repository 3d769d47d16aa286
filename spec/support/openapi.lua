-- Reading api/openapi.json in the specs (operations_spec checks the generated table
-- against it, openapi_mock_spec builds every request from it): local $refs and the
-- schema type, independent of tools/gen_operations.lua.
local _M = {}

--- The node a `$ref` chain ends at, in `doc` (local references only).
function _M.deref(doc, node)
  local depth = 0
  while type(node) == "table" and node["$ref"] do
    depth = depth + 1
    assert(depth < 64, "$ref cycle")
    local target = doc
    for token in node["$ref"]:gsub("^#/", ""):gmatch("[^/]+") do
      target = target[(token:gsub("~1", "/"):gsub("~0", "~"))]
    end
    node = target
  end
  return node
end

--- A schema's type: the string, or the first non-"null" member of a 3.1 type list.
function _M.schema_type(schema)
  local t = schema.type
  if type(t) == "table" then
    for _, member in ipairs(t) do
      if member ~= "null" then return member end
    end
    return nil
  end
  return t
end

return _M
