-- The client against the fake Scalekit over real loopback sockets: token cache,
-- retries, errors, keep-alive, request encoding, misuse and lifecycle.
local helpers = require "spec.support.client"
local server = require "spec.support.fake"
local scalekit = require "scalekit"
local errors = require "scalekit.errors"

local SECRET = helpers.CLIENT_SECRET

describe("scalekit client", function()
  local srv

  setup(function()
    srv = server.start{ workers = 1 }
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  before_each(function()
    srv:reset()
    srv:configure{ token_ttl = 3600 }
  end)

  local function new(overrides)
    return helpers.new_client(srv, overrides)
  end

  local function api_requests()
    return srv:stats().api_requests
  end

  describe("token", function()
    it("is fetched once for many calls", function()
      local sk = new()
      for i = 1, 25 do
        local res, err = sk:call("OrganizationService_ListOrganization", { page_size = 10 })
        assert.is_nil(err, "call " .. i)
        assert.is_table(res.organizations)
      end
      assert.equal(1, srv:stats().tokens_issued)
      sk:close()
    end)

    it("is returned by sk:token() with its expiry, and cached", function()
      local sk = new()
      local t1, exp = sk:token()
      assert.is_string(t1)
      assert.is_true(#t1 >= 20)
      assert.is_true(math.abs(exp - (os.time() + 3600)) < 5)
      local t2 = sk:token()
      assert.equal(t1, t2)
      assert.equal(1, srv:stats().tokens_issued)
      sk:invalidate_token()
      local t3 = sk:token()
      assert.not_equal(t1, t3)
      assert.equal(2, srv:stats().tokens_issued)
      sk:close()
    end)

    it("is refreshed ahead of its expiry", function()
      srv:configure{ token_ttl = 2 }
      local sk = new()
      local t1 = sk:token()
      assert.truthy(sk:call("OrganizationService_ListOrganization", {}))
      -- margin is 10% of a 2 s lifetime: at 1.85 s the token is due for refresh
      -- while the server would still accept it
      require("scalekit.core").sleep(1.85)
      assert.truthy(sk:call("OrganizationService_ListOrganization", {}))
      local t2 = sk:token()
      assert.not_equal(t1, t2)
      assert.equal(2, srv:stats().tokens_issued)
      sk:close()
    end)

    it("keeps using a still-valid token when the refresh fails", function()
      -- a 4 s token is due for refresh at 3.6 s and dead at 4 s: the call lands between
      srv:configure{ token_ttl = 4 }
      local sk = new({ max_retries = 0 })
      local t1 = sk:token()
      srv:faults{ { match = "/oauth/token", status = 503 } }
      require("scalekit.core").sleep(3.65)
      local res, err = sk:call("OrganizationService_ListOrganization", {})
      assert.is_nil(err)
      assert.truthy(res)
      local reqs = srv:requests()
      assert.equal("Bearer " .. t1, reqs[#reqs].headers["authorization"])
      assert.equal(1, srv:stats().tokens_issued)
      sk:close()
    end)

    it("on a 401 is dropped, fetched again and the call retried once", function()
      local sk = new()
      assert.truthy(sk:call("OrganizationService_ListOrganization", {}))
      srv:faults{ { match = "/api/", revoke = true } }
      local res, err = sk:call("OrganizationService_ListOrganization", {})
      assert.is_nil(err)
      assert.is_table(res.organizations)
      assert.equal(2, srv:stats().tokens_issued)
      sk:close()
    end)

    it("never loops on repeated 401s", function()
      local sk = new()
      assert.truthy(sk:token())
      srv:faults{ { match = "/api/", revoke = true, count = 5 } }
      local before = api_requests()
      local res, err = sk:call("OrganizationService_ListOrganization", {})
      assert.is_nil(res)
      assert.equal("http", err.kind)
      assert.equal(401, err.status)
      assert.equal("UNAUTHENTICATED", err.error_code)
      assert.equal(2, api_requests() - before)
      assert.equal(2, srv:stats().tokens_issued)
      sk:close()
    end)

    it("with wrong credentials gives an auth error without the secret", function()
      local sk = new({ client_secret = "wrong-" .. SECRET })
      local res, err = sk:call("OrganizationService_ListOrganization", {})
      assert.is_nil(res)
      assert.is_true(errors.is(err, "auth"))
      assert.equal(401, err.status)
      assert.equal("invalid_client", err.error_code)
      assert.is_false(err.retryable)
      local text = tostring(err)
      assert.is_nil(text:find(SECRET, 1, true))
      assert.is_nil(text:find("wrong-", 1, true))
      assert.is_nil(tostring(sk):find(SECRET, 1, true))
      -- no field of the client or of the error holds the secret either
      local function scan(t, seen)
        seen = seen or {}
        if seen[t] then return end
        seen[t] = true
        for k, v in pairs(t) do
          assert.is_nil(tostring(k):find(SECRET, 1, true))
          if type(v) == "string" then
            assert.is_nil(v:find(SECRET, 1, true), "field " .. tostring(k))
          elseif type(v) == "table" then
            scan(v, seen)
          end
        end
      end
      scan(err)
      scan(sk)
      sk:close()
    end)
  end)

  describe("connections", function()
    it("are kept alive across token and API calls", function()
      local sk = new()
      for _ = 1, 30 do
        assert.truthy(sk:call("OrganizationService_ListOrganization", {}))
      end
      assert.equal(1, srv:stats().connections)
      assert.equal(31, sk:stats().requests)
      assert.equal(1, sk:stats().connects)
      sk:close()
    end)
  end)

  describe("retries", function()
    it("retry 503, 502 and 504 on GET and then succeed", function()
      local sk = new()
      assert.truthy(sk:token())
      srv:faults{ { match = "/api/", status = 503 }, { match = "/api/", status = 502 },
                  { match = "/api/", status = 504 } }
      local before = api_requests()
      local res, err = sk:call("OrganizationService_ListOrganization", {})
      assert.is_nil(err)
      assert.is_table(res.organizations)
      assert.equal(4, api_requests() - before)
      sk:close()
    end)

    it("give up after max_retries with a retryable error", function()
      local sk = new({ max_retries = 2 })
      assert.truthy(sk:token())
      srv:faults{ { match = "/api/", status = 503, count = 10 } }
      local before = api_requests()
      local res, err = sk:call("OrganizationService_ListOrganization", {})
      assert.is_nil(res)
      assert.equal(503, err.status)
      assert.equal("UNAVAILABLE", err.error_code)
      assert.is_true(err.retryable)
      assert.equal(3, api_requests() - before)
      sk:close()
    end)

    it("do not retry a POST on 503, but do on 429", function()
      local sk = new()
      assert.truthy(sk:token())
      srv:faults{ { match = "/api/", status = 503 } }
      local before = api_requests()
      local res, err = sk:call("OrganizationService_CreateOrganization", { body = { display_name = "A" } })
      assert.is_nil(res)
      assert.equal(503, err.status)
      assert.equal(1, api_requests() - before)

      srv:faults{ { match = "/api/", status = 429 } }
      before = api_requests()
      res, err = sk:call("OrganizationService_CreateOrganization", { body = { display_name = "B" } })
      assert.is_nil(err)
      assert.equal("B", res.organization.display_name)
      assert.equal(2, api_requests() - before)
      sk:close()
    end)

    it("do not retry a 500 but mark it retryable", function()
      local sk = new()
      assert.truthy(sk:token())
      srv:faults{ { match = "/api/", status = 500 } }
      local before = api_requests()
      local res, err = sk:call("OrganizationService_ListOrganization", {})
      assert.is_nil(res)
      assert.equal(500, err.status)
      assert.is_true(err.retryable)
      assert.equal(1, api_requests() - before)
      sk:close()
    end)

    it("honour Retry-After in seconds", function()
      local sk = new({ retry_backoff = 0.001 })
      assert.truthy(sk:token())
      srv:faults{ { match = "/api/", status = 429, retry_after = "1" } }
      local t0 = helpers.clock()
      local res, err = sk:call("OrganizationService_ListOrganization", {})
      assert.is_nil(err)
      assert.truthy(res)
      assert.is_true(helpers.clock() - t0 >= 0.95)
      sk:close()
    end)

    it("honour Retry-After as an HTTP date", function()
      local sk = new({ retry_backoff = 0.001 })
      assert.truthy(sk:token())
      local when = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 2)
      srv:faults{ { match = "/api/", status = 503, retry_after = when } }
      local t0 = helpers.clock()
      assert.truthy(sk:call("OrganizationService_ListOrganization", {}))
      -- the date has one-second resolution: at least one second must have passed
      assert.is_true(helpers.clock() - t0 >= 0.9)
      sk:close()
    end)

    it("return at once when Retry-After exceeds retry_after_max", function()
      local sk = new({ retry_after_max = 5 })
      assert.truthy(sk:token())
      srv:faults{ { match = "/api/", status = 429, retry_after = "120" } }
      local t0 = helpers.clock()
      local res, err = sk:call("OrganizationService_ListOrganization", {})
      assert.is_nil(res)
      assert.equal(429, err.status)
      assert.equal(120, err.retry_after)
      assert.is_true(err.retryable)
      assert.is_true(helpers.clock() - t0 < 5)
      sk:close()
    end)

    it("retry the token request too", function()
      local sk = new()
      srv:faults{ { match = "/oauth/token", status = 503 } }
      local tok, expires_at = sk:token()
      assert.is_string(tok)
      assert.is_number(expires_at)
      assert.equal(1, srv:stats().tokens_issued)
      sk:close()
    end)
  end)

  describe("transport failures", function()
    it("time out with kind 'timeout'", function()
      local sk = new({ timeout = 0.3, max_retries = 0 })
      assert.truthy(sk:token())
      srv:faults{ { match = "/api/", delay = 1.5 } }
      local t0 = helpers.clock()
      local res, err = sk:call("OrganizationService_ListOrganization", {})
      assert.is_nil(res)
      assert.equal("timeout", err.kind)
      assert.is_true(err.retryable)
      assert.is_true(helpers.clock() - t0 < 1.4)
      -- the client stays usable
      assert.truthy(sk:call("OrganizationService_ListOrganization", {}))
      sk:close()
    end)

    it("report a refused connection as 'network' after retrying", function()
      local sk = helpers.new_client({ url = "http://127.0.0.1:9" }, { max_retries = 2 })
      local res, err = sk:call("OrganizationService_ListOrganization", {})
      assert.is_nil(res)
      assert.equal("network", err.kind)
      assert.is_true(err.retryable)
      assert.truthy(err.message:find("onnect"))
      assert.equal(3, sk:stats().requests)
      sk:close()
    end)

    it("report a closed connection without an answer as 'network'", function()
      local sk = new({ max_retries = 0 })
      assert.truthy(sk:token())
      -- libcurl itself retries once when a reused connection dies before any byte
      -- of the answer (a stale keep-alive); the second close is what we see
      srv:faults{ { match = "/api/", close = true, count = 2 } }
      local res, err = sk:call("OrganizationService_ListOrganization", {})
      assert.is_nil(res)
      assert.equal("network", err.kind)
      assert.truthy(sk:call("OrganizationService_ListOrganization", {}))
      sk:close()
    end)

    it("report invalid JSON as 'decode' with the status", function()
      local sk = new()
      assert.truthy(sk:token())
      srv:faults{ { match = "/api/", invalid_json = true } }
      local res, err = sk:call("OrganizationService_ListOrganization", {})
      assert.is_nil(res)
      assert.equal("decode", err.kind)
      assert.equal(200, err.status)
      assert.is_string(err.request_id)
      sk:close()
    end)

    it("turn an empty 2xx body into an empty table", function()
      local sk = new()
      assert.truthy(sk:token())
      srv:faults{ { match = "/api/", empty_body = true } }
      local res, err = sk:call("OrganizationService_ListOrganization", {})
      assert.is_nil(err)
      assert.same({}, res)
      sk:close()
    end)
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

    it("never contain the access token", function()
      local sk = new()
      local tok = sk:token()
      srv:faults{ { match = "/api/", status = 400 } }
      local _, err = sk:call("OrganizationService_ListOrganization", {})
      assert.is_nil(tostring(err):find(tok, 1, true))
      assert.is_nil(tostring(sk):find(tok, 1, true))
      assert.is_nil(tostring(sk._s.transport):find(tok, 1, true))
      assert.is_nil(tostring(sk._s.store):find(tok, 1, true))
      sk:close()
    end)
  end)

  describe("requests", function()
    local function echo(sk, op, params)
      local res, err = sk:call(op, params)
      assert.is_nil(err)
      assert.is_table(res.echo, "no echo for " .. op)
      return res.echo
    end

    it("encode path parameters as one segment, keeping literal colons", function()
      local sk = new()
      local e = echo(sk, "ConnectionService_EnableConnection",
                     { organization_id = "org/../x?y#z", id = "c 1%" })
      assert.equal("PATCH", e.method)
      assert.equal("/api/v1/organizations/org%2F..%2Fx%3Fy%23z/connections/c%201%25:enable", e.path)
      sk:close()
    end)

    it("encode query values, arrays as repeated keys and booleans as words", function()
      local sk = new()
      local e = echo(sk, "DirectoryService_ListDirectoryUsers", {
        organization_id = "org_1", directory_id = "dir_1",
        include_detail = true, page_size = 50, directory_group_id = "a&b=c d",
      })
      assert.equal("GET", e.method)
      assert.equal("directory_group_id=a%26b%3Dc%20d&include_detail=true&page_size=50", e.query)
      e = echo(sk, "SessionService_GetUserSessions", {
        user_id = "usr_1", ["filter.status"] = { "ACTIVE", "EXPIRED" },
      })
      assert.equal("filter.status=ACTIVE&filter.status=EXPIRED", e.query)
      e = echo(sk, "DirectoryService_ListDirectoryUsers", {
        organization_id = "o", directory_id = "d", include_detail = false, page_size = 20.0,
      })
      assert.equal("include_detail=false&page_size=20", e.query)
      sk:close()
    end)

    it("send the body as JSON with the content type, and {} for a required empty body", function()
      local sk = new()
      local e = echo(sk, "OrganizationService_GeneratePortalLink", { id = "org_1", features = { "sso" } })
      assert.equal("PUT", e.method)
      assert.equal("features=sso", e.query)
      e = echo(sk, "RolesService_CreateRole", { body = { name = "admin", display_name = "Admin" } })
      assert.equal("POST", e.method)
      assert.truthy(e.content_type:find("application/json", 1, true))
      assert.same({ name = "admin", display_name = "Admin" }, e.body)
      e = echo(sk, "RolesService_CreateRole", {})
      assert.same({}, e.body)
      sk:close()
    end)

    it("send a User-Agent naming the module, Lua and libcurl", function()
      local sk = new({ user_agent = "myapp/1.2" })
      assert.truthy(sk:call("OrganizationService_ListOrganization", {}))
      local reqs = srv:requests()
      local ua = reqs[#reqs].headers["user-agent"]
      assert.truthy(ua:find("^scalekit%-lua/%d+%.%d+%.%d+ %(.+; libcurl/[%d.]+%) myapp/1%.2$"), ua)
      assert.truthy(reqs[#reqs].headers["authorization"]:find("^Bearer "))
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
