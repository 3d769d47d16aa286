-- The client against the fake Scalekit over real loopback sockets: the transport
-- scenarios through libcurl, errors, misuse, from_env and lifecycle.
local helpers = require "spec.support.client"
local server = require "spec.support.fake"
local scenarios = require "spec.support.scenarios"
local scalekit = require "scalekit"

local SECRET = helpers.CLIENT_SECRET

describe("scalekit client", function()
  local srv = server.for_suite(setup, teardown, { workers = 1 })

  before_each(function()
    srv:reset()
    srv:configure{ token_ttl = 3600 }
  end)

  local function new(overrides)
    return helpers.new_client(srv, overrides)
  end

  -- token, connections, retries, transport failures and request encoding: the
  -- transport scenarios (spec/support/scenarios.lua) through libcurl; the cosocket
  -- runs of the same scenarios are in nginx_spec.lua
  describe("transport scenarios through libcurl", function()
    for _, sc in ipairs(scenarios.list) do
      it(sc.group .. " " .. sc.name, function()
        local sk
        local r, ctx = scenarios.drive(sc, srv, function(_, step)
          sk = sk or new(sc.client)
          return scenarios.roundtrip(scenarios.client_step(sk, step))
        end)
        if sk then sk:close() end
        sc.check(assert, r, ctx)
      end)
    end
  end)

  describe("errors", function()
    it("carry status, code, error_code, details and request_id", function()
      local sk = new()
      local res, err = sk:call("OrganizationService_GetOrganization", { id = "org_missing" })
      assert.is_nil(res)
      assert.equal("http", err.kind)
      assert.equal(404, err.status)
      assert.equal(5, err.code)
      assert.equal("NOT_FOUND", err.error_code)
      assert.is_table(err.details)
      assert.is_string(err.request_id)
      assert.equal("OrganizationService_GetOrganization", err.operation)
      assert.is_false(err.retryable)
      local s = tostring(err)
      assert.truthy(s:find("HTTP 404", 1, true))
      assert.truthy(s:find("NOT_FOUND", 1, true))
      assert.equal(s .. "!", err .. "!")
      sk:close()
    end)
  end)

  describe("misuse", function()
    local sk
    before_each(function() sk = new() end)
    after_each(function() sk:close() end)

    local function raises(pattern, fn)
      local ok, msg = pcall(fn)
      assert.is_false(ok)
      assert.is_string(msg)
      assert.truthy(msg:find(pattern), msg)
    end

    it("raises on unknown operations and parameters", function()
      raises("unknown operation 'Nope'", function() sk:call("Nope", {}) end)
      raises("unknown parameter 'ids'", function()
        sk:call("OrganizationService_GetOrganization", { ids = "x" })
      end)
    end)

    it("raises on a missing or empty path parameter", function()
      raises("missing required path parameter 'id'", function()
        sk:call("OrganizationService_GetOrganization", {})
      end)
      raises("must not be empty", function()
        sk:call("OrganizationService_GetOrganization", { id = "" })
      end)
    end)

    it("raises on a missing required query parameter", function()
      raises("missing required parameter 'query'", function() sk:call("UserService_SearchUsers", {}) end)
    end)

    it("raises on wrong types", function()
      raises("'page_size' must be an integer", function()
        sk:call("OrganizationService_ListOrganization", { page_size = "ten" })
      end)
      raises("'page_size' must be an integer", function()
        sk:call("OrganizationService_ListOrganization", { page_size = 1.5 })
      end)
      raises("'include_detail' must be a boolean", function()
        sk:call("DirectoryService_ListDirectoryUsers",
                { organization_id = "o", directory_id = "d", include_detail = "yes" })
      end)
      raises("'id' must be a string", function()
        sk:call("OrganizationService_GetOrganization", { id = {} })
      end)
      raises("params must be a table", function()
        sk:call("OrganizationService_GetOrganization", "org_1")
      end)
      raises("body must be a table", function()
        sk:call("OrganizationService_CreateOrganization", { body = "x" })
      end)
      raises("takes no body", function()
        sk:call("OrganizationService_GetOrganization", { id = "x", body = {} })
      end)
    end)

    it("raises on bad options", function()
      local base = { environment_url = "https://x.example", client_id = "a", client_secret = "b" }
      local function with(k, v)
        local o = {}
        for kk, vv in pairs(base) do o[kk] = vv end
        o[k] = v
        return o
      end
      raises("unknown option 'timeot'", function() scalekit.new(with("timeot", 1)) end)
      raises("client_secret is required", function() scalekit.new(with("client_secret", nil)) end)
      raises("must use https", function() scalekit.new(with("environment_url", "http://acme.scalekit.dev")) end)
      raises("must use https", function() scalekit.new(with("environment_url", "ftp://acme")) end)
      raises("must not contain credentials", function()
        scalekit.new(with("environment_url", "https://u:p@acme.example"))
      end)
      raises("'timeout' must be a number", function() scalekit.new(with("timeout", "5")) end)
      raises("max_retries must be an integer", function() scalekit.new(with("max_retries", -1)) end)
      raises("options must be a table", function() scalekit.new("x") end)
    end)

    it("accepts loopback http, custom domains and trailing slashes", function()
      local c1 = scalekit.new{ environment_url = "https://auth.example.com///", client_id = "a", client_secret = "b" }
      assert.equal("https://auth.example.com", c1.environment_url)
      local c2 = scalekit.new{ environment_url = "http://localhost:8080/", client_id = "a", client_secret = "b" }
      assert.equal("http://localhost:8080", c2.environment_url)
      c1:close()
      c2:close()
    end)
  end)

  describe("from_env", function()
    it("returns an error naming the missing variables", function()
      -- the test runs without SCALEKIT_* set unless a live run is wanted
      if os.getenv("SCALEKIT_CLIENT_SECRET") then return end
      local sk, err = scalekit.from_env()
      assert.is_nil(sk)
      assert.equal("config", err.kind)
      assert.truthy(err.message:find("SCALEKIT_ENVIRONMENT_URL", 1, true))
      assert.truthy(err.message:find("SCALEKIT_CLIENT_SECRET", 1, true))
    end)

    it("lets options fill what the environment lacks", function()
      if os.getenv("SCALEKIT_CLIENT_SECRET") then return end
      local sk = assert(scalekit.from_env{
        environment_url = srv.url, client_id = helpers.CLIENT_ID, client_secret = SECRET,
      })
      assert.truthy(sk:call("OrganizationService_ListOrganization", {}))
      sk:close()
    end)
  end)

  describe("lifecycle", function()
    it("close is idempotent and a closed client raises a clear error", function()
      local sk = new()
      assert.truthy(sk:token())
      sk:close()
      sk:close()
      collectgarbage()
      collectgarbage()
      local ok, msg = pcall(sk.call, sk, "OrganizationService_ListOrganization", {})
      assert.is_false(ok)
      assert.truthy(msg:find("client is closed", 1, true))
      ok, msg = pcall(sk.token, sk)
      assert.is_false(ok)
      assert.truthy(msg:find("client is closed", 1, true))
      assert.truthy(tostring(sk):find("closed", 1, true))
    end)

    it("the core userdata close twice and survive garbage collection", function()
      local core = require "scalekit.core"
      local h = core.http{}
      h:close()
      h:close()
      assert.has_error(function() h:request("GET", "http://127.0.0.1:1/") end, "scalekit: HTTP client is closed")
      local v = core.token_vault()
      v:set("abc", 10, 1)
      v:close()
      v:close()
      assert.has_error(function() v:get() end, "scalekit: token vault is closed")
      for _ = 1, 50 do core.http{}; core.token_vault() end
      collectgarbage()
      collectgarbage()
    end)

    it("closes at the end of a <close> scope on Lua 5.4", function()
      if _VERSION ~= "Lua 5.4" then return end -- LuaJIT: no to-be-closed variables
      local chunk = assert(load([[
        local new = ...
        local sk <close> = new()
        assert(sk:token())
        return sk
      ]]))
      local sk = chunk(new)
      assert.truthy(tostring(sk):find("closed", 1, true))
      assert.has_error(function() sk:token() end)
    end)

    it("a client dropped without close is collected", function()
      local weak = setmetatable({}, { __mode = "v" })
      do
        local sk = new()
        assert.truthy(sk:token())
        weak[1] = sk
      end
      collectgarbage()
      collectgarbage()
      assert.is_nil(weak[1])
    end)
  end)
end)
