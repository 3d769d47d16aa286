-- Request building for all 111 operations, checked against the OpenAPI file itself
-- (not against the generated table), and the encoding rules one by one.
require "spec.support.client"
local request = require "scalekit.request"
local operations = require "scalekit.operations"
local cjson = require "cjson"

local OPENAPI = os.getenv("SCALEKIT_OPENAPI") or "api/openapi.json"

local function load_spec()
  local f = io.open(OPENAPI, "rb")
  assert(f, "cannot read " .. OPENAPI .. " (run from the repository root or set SCALEKIT_OPENAPI)")
  local doc = cjson.decode(f:read("*a"))
  f:close()
  return doc
end

describe("request.build against the OpenAPI description", function()
  it("builds the method and path of every operation", function()
    local doc = load_spec()
    local n = 0
    for path, item in pairs(doc.paths) do
      for method, op in pairs(item) do
        if type(op) == "table" and op.operationId then
          n = n + 1
          local params, expected = {}, path
          local i = 0
          for _, p in ipairs(op.parameters or {}) do
            if p["in"] == "path" then
              i = i + 1
              local v = "id" .. i .. " /?#"
              params[p.name] = v
              expected = expected:gsub("{" .. p.name .. "}", "id" .. i .. "%%20%%2F%%3F%%23")
            elseif p["in"] == "query" and p.required then
              params[p.name] = "q"
            end
          end
          local built = request.build(op.operationId, operations[op.operationId], params)
          local got_path = built:match("^[^?]*")
          assert.equal(expected, got_path, op.operationId)
          assert.equal(method:upper(), operations[op.operationId].method, op.operationId)
          assert.is_nil(got_path:find("{", 1, true), op.operationId)
        end
      end
    end
    assert.equal(111, n)
  end)
end)

describe("request encoding rules", function()
  local op = {
    method = "GET", path = "/api/v1/things/{id}:act", path_params = { "id" },
    query = { s = "string", i = "integer", n = "number", b = "boolean", a = "array" },
    required = { "id" }, body = false,
  }
  local function build(params) return request.build("Test_Op", op, params) end

  it("encodes reserved and non-ASCII bytes in path and query", function()
    assert.equal("/api/v1/things/a%2Fb..:act", build{ id = "a/b.." })
    assert.equal("/api/v1/things/%C3%A9%00x:act?s=%26%3D%2B%20%C3%A9",
                 build{ id = "\195\169\0x", s = "&=+ \195\169" })
    assert.equal("/api/v1/things/x..y:act", build{ id = "x..y" })
  end)

  it("sorts query keys and writes types per the spec", function()
    assert.equal("/api/v1/things/1:act?a=x&a=y&b=true&i=42&n=1.5&s=7",
                 build{ id = 1, a = { "x", "y" }, b = true, i = 42.0, n = 1.5, s = 7 })
    assert.equal("/api/v1/things/1:act?a=solo&b=false", build{ id = "1", a = "solo", b = false })
    assert.equal("/api/v1/things/1:act?i=-3", build{ id = "1", i = "-3" })
  end)

  it("raises naming the problem", function()
    local function raises(pat, params)
      local ok, msg = pcall(build, params)
      assert.is_false(ok)
      assert.truthy(msg:find(pat), msg)
      assert.truthy(msg:find("Test_Op", 1, true), msg)
    end
    raises("missing required path parameter 'id'", {})
    raises("must not be empty", { id = "" })
    -- a whole segment of dots would be squashed by URL normalization (route change)
    raises("must not be '.' or '..'", { id = ".." })
    raises("must not be '.' or '..'", { id = "." })
    raises("'i' must be an integer", { id = "x", i = 1.25 })
    raises("'i' must be an integer", { id = "x", i = "12a" })
    raises("'n' must be a number", { id = "x", n = 0 / 0 })
    raises("'b' must be a boolean", { id = "x", b = "true" })
    raises("'s' must be a string", { id = "x", s = {} })
    raises("unknown parameter 'zz'", { id = "x", zz = 1 })
    raises("takes no body", { id = "x", body = {} })
  end)

  it("form-encodes with sorted keys", function()
    assert.equal("a=1&b=x%20y&c=%26", request.form{ b = "x y", a = 1, c = "&" })
  end)
end)
