-- The resource map covers every operation exactly once, with positional ids in route
-- order and iterators for every paged list; the generated docs and annotations are current.
local helpers = require "spec.support.client"
local operations = require "scalekit.operations"
local resources = require "scalekit.resources"


local each_method = helpers.each_method

describe("resource map", function()
  it("gives every one of the 111 operations exactly one method", function()
    local seen, n = {}, 0
    each_method(function(r, v, spec)
      assert.is_not_nil(operations[spec[1]], r .. ":" .. v .. " → " .. spec[1])
      assert.is_nil(seen[spec[1]], spec[1] .. " mapped twice (" .. tostring(seen[spec[1]]) .. ")")
      seen[spec[1]] = r .. ":" .. v
      n = n + 1
    end)
    local total = 0
    for id in pairs(operations) do
      total = total + 1
      assert.is_not_nil(seen[id], "no resource method for " .. id)
    end
    assert.equal(111, total)
    assert.equal(111, n)
  end)

  it("names positional ids that are path parameters of the operation, in route order", function()
    each_method(function(r, v, spec)
      local op = operations[spec[1]]
      local pos = 0
      for i = 2, #spec do
        local found
        for j = 1, #op.path_params do
          if op.path_params[j] == spec[i] then found = j end
        end
        assert.is_not_nil(found, r .. ":" .. v .. " positional " .. spec[i] .. " is not a path param")
        assert.is_true(found > pos, r .. ":" .. v .. " ids out of route order")
        pos = found
      end
      -- every path param of the route is positional: a call cannot go without it
      assert.equal(#op.path_params, #spec - 1, r .. ":" .. v)
    end)
  end)

  it("derives iterators for every paged list", function()
    assert.same({ "each", "pages", "all" }, { resources.iterator_names("list") })
    assert.same({ "each_users", "pages_users", "all_users" }, { resources.iterator_names("list_users") })
    assert.same({ "each_search", "pages_search", "all_search" }, { resources.iterator_names("search") })
  end)
end)

describe("generated docs and annotations", function()
  it("README's method reference and types/scalekit.lua are up to date", function()
    local p = assert(io.popen("lua5.4 tools/gen_docs.lua --check 2>&1; echo rc=$?"))
    local out = p:read("*a")
    p:close()
    assert.truthy(out:find("rc=0", 1, true), out)
  end)

  it("every public function of the client carries LuaLS annotations", function()
    local src = ""
    for _, path in ipairs({ "lua/scalekit/init.lua", "lua/scalekit/client.lua", "lua/scalekit/auth/init.lua" }) do
      local f = assert(io.open(path))
      src = src .. f:read("*a") .. "\n"
      f:close()
    end
    local n = 0
    local prev = {}
    for line in src:gmatch("[^\n]*") do
      local name = line:match("^function Client:([%w_]+)") or line:match("^function _M%.([%w_]+)")
        or line:match("^function Auth:([%w_]+)")
      if name then
        n = n + 1
        local doc = table.concat(prev, "\n")
        assert.truthy(doc:find("%-%-%-"), name .. " has no doc comment")
        assert.truthy(doc:find("@return") or name == "invalidate_token" or name == "close",
                      name .. " has no ---@return")
      end
      if line:match("^%-%-%-") then prev[#prev + 1] = line elseif line ~= "" then prev = {} end
    end
    assert.is_true(n >= 18)
    local t = assert(io.open("types/scalekit.lua")):read("*a")
    each_method(function(r, v)
      assert.truthy(t:find("function " .. r .. ":" .. v .. "(", 1, true), r .. ":" .. v .. " not annotated")
    end)
  end)
end)
