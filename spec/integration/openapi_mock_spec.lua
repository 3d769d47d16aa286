-- Every one of the 111 operations against a mock server built from Scalekit's
-- OpenAPI description (Stoplight Prism, tools/prism/): Prism validates each request
-- (path, query, body against the schemas) and answers from the response schemas; the
-- client must report success for every operation. The parameters are built here from
-- api/openapi.json itself (its examples, enums and formats), not from the client's
-- generated table.
local helpers = require "spec.support.client"
local proc = require "spec.support.proc"
local cjson = require "cjson"

local json = cjson.new()
local quote, run, sh = proc.quote, proc.run, proc.sh

local OPENAPI = "api/openapi.json"
local PRISM_DIR = "tools/prism"
local PRISM = PRISM_DIR .. "/node_modules/.bin/prism"

local doc = json.decode((assert(proc.read_file(OPENAPI))))

local openapi = require "spec.support.openapi"
local function deref(node) return openapi.deref(doc, node) end
local schema_type = openapi.schema_type

local FORMATS = {
  email = "user@example.com", uri = "https://example.com/x", url = "https://example.com/x",
  ["date-time"] = "2026-01-01T00:00:00Z", date = "2026-01-01", uuid = "123e4567-e89b-12d3-a456-426614174000",
}

-- A value that satisfies `schema` (its own example first, required fields only).
local function sample(schema, depth)
  schema = deref(schema) or {}
  depth = depth or 0
  if type(schema.examples) == "table" and schema.examples[1] ~= nil then return schema.examples[1] end
  if schema.example ~= nil then return schema.example end
  if type(schema.enum) == "table" then return schema.enum[1] end
  if schema.allOf then
    local merged = { type = "object", properties = {}, required = {} }
    for _, part in ipairs(schema.allOf) do
      part = deref(part)
      for k, v in pairs(part.properties or {}) do merged.properties[k] = v end
      for _, r in ipairs(part.required or {}) do merged.required[#merged.required + 1] = r end
    end
    return sample(merged, depth)
  end
  local t = schema_type(schema) or (schema.properties and "object")
  if t == "object" then
    local out = {}
    if depth < 6 then
      for _, name in ipairs(schema.required or {}) do
        out[name] = sample((schema.properties or {})[name] or {}, depth + 1)
      end
    end
    return out
  elseif t == "array" then
    local n = schema.minItems or 0
    local out = {}
    for i = 1, n do out[i] = sample(schema.items or {}, depth + 1) end
    return out
  elseif t == "integer" then
    return math.max(schema.minimum or 1, 1)
  elseif t == "number" then
    return schema.minimum or 1.5
  elseif t == "boolean" then
    return true
  end
  local s = FORMATS[schema.format] or "x"
  if schema.minLength and #s < schema.minLength then s = s .. string.rep("x", schema.minLength - #s) end
  return s
end

-- Every operation: id, method, path template, its params for sk:call.
local function operations()
  local list = {}
  for path, item in pairs(doc.paths) do
    for _, method in ipairs({ "get", "post", "put", "patch", "delete" }) do
      local op = item[method]
      if op then
        local params = {}
        for _, p in ipairs(op.parameters or {}) do
          p = deref(p)
          if p["in"] == "path" then
            local v = sample(p.schema or {})
            params[p.name] = type(v) == "string" and v ~= "" and v or "id_1"
          elseif p["in"] == "query" and p.required then
            params[p.name] = sample(p.schema or {})
          end
        end
        local rb = deref(op.requestBody)
        if rb and rb.content and rb.content["application/json"] then
          local schema = rb.content["application/json"].schema or {}
          local body = sample(schema)
          -- OpenAPI 3.1 applies keywords beside a $ref too, and Prism does: two operations
          -- (UserService_CreateMembership, …2) list "required": ["membership"] next to a
          -- $ref whose schema has no such property (an artifact of the gRPC gateway's
          -- generator; the API takes the membership itself as the body). Such a key
          -- is unknown to the client's schema check: it goes out with strict = false.
          for _, name in ipairs(schema.required or {}) do
            if type(body) == "table" and body[name] == nil then
              body[name] = {}
              params.strict = false
            end
          end
          if type(body) == "table" and next(body) ~= nil then params.body = body end
        end
        list[#list + 1] = { id = op.operationId, method = method:upper(), path = path, params = params }
      end
    end
  end
  table.sort(list, function(a, b) return a.id < b.id end)
  return list
end

describe("every operation against a mock server built from the OpenAPI description", function()
  local dir, port, pid

  setup(function()
    if not sh("test -x " .. quote(PRISM)) then
      -- the test tool comes from the npm registry, pinned by tools/prism/package-lock.json
      local out, rc = run("cd " .. quote(PRISM_DIR) .. " && npm ci --no-audit --no-fund 2>&1")
      assert(rc == 0, "npm ci in tools/prism failed:\n" .. out)
    end
    dir = proc.mktemp_dir("prism")
    -- the description plus the token endpoint (not in the spec) that the client needs
    -- (spliced into the text: a decode/encode round trip would turn [] into {})
    local text = assert(proc.read_file(OPENAPI))
    local token_path = '"/oauth/token": {"post": {"operationId": "TokenForTheMock", "security": [],'
      .. ' "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}},'
      .. ' "responses": {"200": {"description": "token", "content": {"application/json": {'
      .. '"schema": {"type": "object"}, "example": {"access_token": "mock_access_token",'
      .. ' "token_type": "Bearer", "expires_in": 3600}}}}}}},'
    local spliced, n = text:gsub('"paths"%s*:%s*{', function(m) return m .. token_path end, 1)
    assert(n == 1, "no paths object in " .. OPENAPI)
    proc.write_file(dir .. "/openapi.json", spliced)
    port = proc.random_port()
    pid = tonumber(run("cd " .. quote(dir) .. " && (" .. quote(proc.CWD .. "/" .. PRISM) .. " mock -h 127.0.0.1 -p "
      .. port .. " openapi.json > prism.log 2>&1 & echo $!)"):match("%d+"))
    local up = false
    for _ = 1, 200 do
      if run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:" .. port .. "/oauth/token -X POST")
        :match("200") then
        up = true
        break
      end
      proc.sleep(0.1)
    end
    assert(up, "prism did not start:\n" .. (proc.read_file(dir .. "/prism.log") or ""))
  end)

  teardown(function()
    if pid then proc.kill_tree(pid, "TERM", 3) end
    if dir then proc.remove_dir(dir) end
  end)

  it("accepts the request of each of the 111 operations, and the client reports success", function()
    local sk = helpers.new_client({ url = "http://127.0.0.1:" .. port }, { max_retries = 0 })
    local ops = operations()
    assert.equal(111, #ops)
    local failures = {}
    for _, o in ipairs(ops) do
      local res, err = sk:call(o.id, o.params)
      if type(res) ~= "table" then
        failures[#failures + 1] = o.id .. " (" .. o.method .. " " .. o.path .. "): " .. tostring(err)
      end
    end
    sk:close()
    assert.same({}, failures)
  end)
end)
