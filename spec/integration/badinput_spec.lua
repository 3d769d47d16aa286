-- Bad input from callers: every public function given wrong types, nil, huge strings
-- (10 MB), embedded NUL bytes, invalid UTF-8, CR/LF in values that end up in headers,
-- and path parameters that try to change the route. The outcome is always a clear Lua
-- error or a value encoded safely (asserted on the fake's raw request log), never a
-- crash (a crash ends the busted process: no TAP plan, a failed suite).
local helpers = require "spec.support.client"
local server = require "spec.support.fake"
local scalekit = require "scalekit"
local errors = require "scalekit.errors"
local request = require "scalekit.request"
local core = require "scalekit.core"

local SECRET = helpers.CLIENT_SECRET
local HUGE = string.rep("A", 10 * 1024 * 1024)      -- 10 MB
local NUL = "a\0b"
local CRLF = "a\r\nX-Injected: 1"
local BAD_UTF8 = "\255\254\195\040\226\130" -- decimal escapes: PUC 5.1 has no \x
local NAN = 0 / 0
local INF = math.huge

-- pcall(f, ...) must fail with a message matching `pattern` (a plain string error or
-- a scalekit error table)
local function raises(pattern, f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected a Lua error matching '" .. tostring(pattern) .. "'")
  local msg = tostring(err)
  if pattern then assert.matches(pattern, msg) end
  return msg
end

-- I/O failure: nil plus a scalekit error (of `kind` when given)
local function fails(kind, res, err)
  assert.is_nil(res)
  assert.is_true(errors.is(err, kind), tostring(err))
  return err
end

describe("bad input", function()
  local srv = server.for_suite(setup, teardown, { workers = 1 })

  before_each(function()
    srv:reset{ keep_tokens = true }
  end)

  local function new(overrides)
    return helpers.new_client(srv, overrides)
  end

  local function base(over)
    local o = { environment_url = srv.url, client_id = helpers.CLIENT_ID, client_secret = SECRET }
    for k, v in pairs(over or {}) do o[k] = v end
    return o
  end

  -- raw request targets (path and query, undecoded) of the API requests the fake
  -- received; none of them may carry a header injected through a value
  local function api_paths()
    local out = {}
    for _, r in ipairs(srv:requests()) do
      for k in pairs(r.headers or {}) do
        assert.is_nil(k:lower():find("injected"), "header injected: " .. k)
      end
      if r.path:find("^/api/") then out[#out + 1] = r.uri end
    end
    return out
  end

  local function usable(sk)
    local res, err = sk:call("OrganizationService_ListOrganization", { page_size = 1 })
    assert.is_nil(err, tostring(err))
    assert.is_table(res)
  end

  describe("scalekit.new", function()
    it("options that are not a table raise", function()
      for _, v in ipairs({ "x", 42, true, print }) do
        raises("options must be a table", scalekit.new, v)
      end
      raises("options must be a table", scalekit.new)
    end)

    it("unknown options, wrong types and missing values raise, naming the option", function()
      raises("unknown option 'timeot'", scalekit.new, base{ timeot = 1 })
      raises("unknown option '1'", scalekit.new, base{ "positional" })
      raises("option 'timeout' must be a number, got string", scalekit.new, base{ timeout = "10" })
      raises("option 'client_id' must be a string, got table", scalekit.new, base{ client_id = {} })
      raises("option 'ca_file' must be a string, got boolean", scalekit.new, base{ ca_file = true })
      raises("client_secret is required", scalekit.new, base{ client_secret = "" })
      raises("environment_url is required",
             scalekit.new, { client_id = "a", client_secret = "b" })
    end)

    it("out-of-range numbers raise (NaN, infinity, negative, fractional)", function()
      for _, k in ipairs({ "timeout", "connect_timeout" }) do
        for _, v in ipairs({ 0, -1, 86401 }) do
          raises(k .. " must be in", scalekit.new, base{ [k] = v })
        end
        for _, v in ipairs({ NAN, INF, -INF }) do
          raises("option '" .. k .. "' must be a finite number", scalekit.new, base{ [k] = v })
        end
      end
      for _, v in ipairs({ -1, 1.5, 21 }) do
        raises("max_retries must be an integer", scalekit.new, base{ max_retries = v })
      end
      raises("option 'max_retries' must be a finite number", scalekit.new, base{ max_retries = NAN })
      raises("max_body_size must be between 1024 and", scalekit.new, base{ max_body_size = 10 })
    end)

    -- NaN slips through `x < 0` checks; found by this suite (see the report): a NaN
    -- retry_backoff_max made sk:call raise from core.sleep at the first retry, a NaN
    -- token_refresh_margin made every token fetch raise.
    it("a NaN in any numeric option raises at new()", function()
      local accepted = {}
      for _, k in ipairs({ "retry_backoff", "retry_backoff_max", "retry_after_max",
                           "token_refresh_margin", "max_body_size", "jwks_ttl", "jwks_refresh_interval" }) do
        local ok, sk = pcall(scalekit.new, base{ [k] = NAN })
        if ok then
          accepted[#accepted + 1] = k
          sk:close()
        else
          assert.matches(k, sk)
        end
      end
      assert.same({}, accepted)
    end)

    it("an infinite max_body_size raises or works (it rejected every answer: '0 bytes')", function()
      local ok, sk = pcall(scalekit.new, base{ max_body_size = INF })
      if ok then
        usable(sk)
        sk:close()
      else
        assert.matches("max_body_size", sk)
      end
    end)

    it("environment_url: not https, credentials, query, fragment, spaces, controls raise", function()
      local cases = {
        { "ftp://h.test", "must use https" },
        { "http://api.example.com", "http is allowed only for loopback" },
        { "https://u:p@h.test", "credentials" },
        { "https://h.test/?q=1", "query or fragment" },
        { "https://h.test/#f", "query or fragment" },
        { "https://h.test\r\nX-Injected: 1", "control characters" },
        { "https://h.test/a\0b", "control characters" },
        { "https://h\0.test", "control characters" },
        { "https://h.test/a b", "spaces" },
        { "not a url", "not a URL" },
        { "", "environment_url is required" },
      }
      for _, c in ipairs(cases) do
        raises(c[2], scalekit.new, base{ environment_url = c[1] })
      end
    end)

    it("a 10 MB or non-UTF-8 environment_url is refused at new() or fails as network", function()
      -- names the resolver refuses locally (label > 63 bytes): no DNS query leaves
      local long = string.rep("a", 64)
      for _, url in ipairs({ "https://" .. HUGE .. ".invalid", "https://" .. BAD_UTF8 .. long .. ".invalid" }) do
        local ok, sk = pcall(scalekit.new, base{ environment_url = url, max_retries = 0 })
        if ok then
          fails("network", sk:token())
          sk:close()
        else
          assert.matches("environment_url", sk)
        end
      end
    end)

    it("user_agent with CR, LF, NUL or other controls raises (header injection)", function()
      for _, v in ipairs({ CRLF, "a\nb", "a\rb", NUL, "a\tb", "a\127b" }) do
        raises("user_agent must not contain control characters", scalekit.new, base{ user_agent = v })
      end
    end)

    it("user_agent of 10 MB: a clear error", function()
      raises("option user_agent is longer than 4096 bytes", scalekit.new, base{ user_agent = HUGE })
    end)

    it("user_agent with non-UTF-8 bytes is sent as is (obs-text), the call works", function()
      local sk = new{ user_agent = "app/1 " .. BAD_UTF8 }
      usable(sk)
      sk:close()
    end)

    it("ca_file with NUL or line breaks raises; a 10 MB one is a clear error", function()
      raises("ca_file has NUL or line breaks", scalekit.new, base{ ca_file = "/etc/ssl\0/x.pem" })
      raises("ca_file has NUL or line breaks", scalekit.new, base{ ca_file = "/x.pem\r\nX: 1" })
      raises("libcurl", scalekit.new, base{ ca_file = HUGE })
    end)

    it("client_id / client_secret / scope with CR/LF, NUL, bad UTF-8 are form-encoded", function()
      for _, v in ipairs({ CRLF, NUL, BAD_UTF8 }) do
        srv:reset()
        local sk = new{ client_id = v, scope = v, max_retries = 0 }
        local err = fails("auth", sk:token())
        assert.equal(401, err.status)
        local seen
        for _, r in ipairs(srv:requests()) do
          if r.path == "/oauth/token" then seen = r end
        end
        assert.is_table(seen)
        assert.is_nil(seen.body:find("[\r\n%z]"), "raw control byte in the form body")
        assert.is_truthy(seen.body:find("client_id=" .. request.encode(v), 1, true))
        sk:close()
      end
    end)

    it("a 10 MB client_secret: the token endpoint refuses it, nothing leaks", function()
      local sk = new{ client_secret = HUGE, max_retries = 0 }
      local err = fails("auth", sk:token())
      assert.is_nil(tostring(err):find("AAAAAAAA", 1, true))
      sk:close()
    end)

    it("from_env: wrong opts type raises", function()
      raises(nil, scalekit.from_env, "x")
    end)
  end)

  describe("sk:call", function()
    local sk
    before_each(function() sk = sk or new{ max_retries = 0 } end)
    teardown(function() if sk then sk:close() end end)

    it("operation ids that are not known raise", function()
      for _, v in ipairs({ "NoSuchOp", "", NUL, HUGE }) do
        raises("unknown operation", sk.call, sk, v, {})
      end
      raises("unknown operation 'nil'", sk.call, sk, nil)
      raises("unknown operation", sk.call, sk, 42)
      raises("unknown operation", sk.call, sk, {})
    end)

    it("params that are not a table, unknown or of the wrong type raise", function()
      local op = "OrganizationService_GetOrganization"
      raises("params must be a table, got string", sk.call, sk, op, "org_1")
      raises("unknown parameter 'idd'", sk.call, sk, op, { idd = "x" })
      raises("missing required path parameter 'id'", sk.call, sk, op, {})
      for _, v in ipairs({ {}, true, print }) do
        raises("parameter 'id' must be a string", sk.call, sk, op, { id = v })
      end
      raises("must not be empty", sk.call, sk, op, { id = "" })
      raises("must not be '.' or '..'", sk.call, sk, op, { id = ".." })
      raises("must not be '.' or '..'", sk.call, sk, op, { id = "." })
      local list = "OrganizationService_ListOrganization"
      for _, v in ipairs({ "ten", "10; DROP", 1.5, NAN, INF, -INF, {} }) do
        raises("parameter 'page_size' must be an integer", sk.call, sk, list, { page_size = v })
      end
      raises("takes no body", sk.call, sk, op, { id = "x", body = {} })
      local create = "OrganizationService_CreateOrganization"
      raises("body must be a table, got string", sk.call, sk, create, { body = "{}" })
      -- unknown body fields are refused by the schema check first; strict = false gets
      -- them to the JSON encoder, which refuses what JSON cannot hold
      raises("unknown body field 'f'", sk.call, sk, create, { body = { f = print } })
      raises("cannot be encoded as JSON", sk.call, sk, create, { body = { f = print }, strict = false })
      local cyclic = {}
      cyclic.self = cyclic
      raises("cannot be encoded as JSON", sk.call, sk, create, { body = cyclic, strict = false })
      raises("cannot be encoded as JSON", sk.call, sk, create, { body = { [1] = 1, [1000] = 2 }, strict = false })
      raises("cannot be encoded as JSON", sk.call, sk, create, { body = { metadata = { n = 0 / 0 } } })
      usable(sk)
    end)

    local PATH_CASES = {
      { "a/b", "a%2Fb" },
      { "../../oauth/token", "..%2F..%2Foauth%2Ftoken" },
      { "..%2F", "..%252F" },
      { "?admin=1", "%3Fadmin%3D1" },
      { "#frag", "%23frag" },
      { "%", "%25" },
      { "%00", "%2500" },
      { " x", "%20x" },
      { CRLF, "a%0D%0AX-Injected%3A%201" },
      { "é", "%C3%A9" },
      { BAD_UTF8, "%FF%FE%C3%28%E2%82" },
      { "...", "..." },
      { "org_1;drop", "org_1%3Bdrop" },
    }
    for _, c in ipairs(PATH_CASES) do
      it(("path value %q is one encoded segment of the same route"):format(c[1]), function()
        local res, err = sk.organizations:get(c[1])
        assert.is_true(res ~= nil or errors.is(err, "http"), tostring(err))
        assert.same({ "/api/v1/organizations/" .. c[2] }, api_paths())
      end)
    end

    it("a NUL in a path value is sent as %00 (nginx refuses it before routing: 400)", function()
      assert.equal("/api/v1/organizations/a%00b",
                   (request.build("OrganizationService_GetOrganization",
                                  require("scalekit.operations").OrganizationService_GetOrganization,
                                  { id = NUL })))
      local err = fails("http", sk.organizations:get(NUL))
      assert.equal(400, err.status)
      assert.same({}, api_paths())
      usable(sk)
    end)

    it("several path values: each stays in its own segment", function()
      sk:call("ConnectionService_EnableConnection", { organization_id = "o/../x", id = "c?#" })
      assert.same({ "/api/v1/organizations/o%2F..%2Fx/connections/c%3F%23:enable" }, api_paths())
    end)

    it("query values are encoded: no extra parameter, no fragment", function()
      sk:call("OrganizationService_ListOrganization",
              { page_token = "x&page_size=1000#f\r\n", page_size = 5 })
      assert.same({ "/api/v1/organizations?page_size=5&page_token=x%26page_size%3D1000%23f%0D%0A" },
                  api_paths())
    end)

    it("a 10 MB path value: a network error (libcurl's URL limit), the client goes on", function()
      local res, err = sk.organizations:get(HUGE)
      assert.is_nil(res)
      assert.is_true(errors.is(err, "network") or errors.is(err, "http"), tostring(err))
      usable(sk)
    end)

    it("body strings with NUL, CR/LF, bad UTF-8 are JSON-escaped or sent as bytes", function()
      for _, v in ipairs({ NUL, CRLF, BAD_UTF8 }) do
        srv:reset{ keep_tokens = true }
        local res, err = sk:call("OrganizationService_CreateOrganization", { body = { display_name = v } })
        assert.is_true(res ~= nil or errors.is(err, "http"), tostring(err))
        assert.same({ "/api/v1/organizations" }, api_paths())
        local log = srv:requests()
        local body = log[#log].body
        assert.is_nil(body:find("[%z\r\n]"), "raw control byte in the JSON body")
      end
      usable(sk)
    end)

    it("a 10 MB body string is sent, the client goes on", function()
      local res, err = sk:call("OrganizationService_CreateOrganization", { body = { display_name = HUGE } })
      assert.is_true(res ~= nil or errors.is(err, "http"), tostring(err))
      usable(sk)
    end)
  end)

  describe("iterators", function()
    it("wrong operation, params or options raise", function()
      local sk = new{ max_retries = 0 }
      for _, name in ipairs({ "each", "pages", "all" }) do
        raises("unknown operation", sk[name], sk, "NoSuchOp", {})
        raises("not a paged list operation", sk[name], sk, "OrganizationService_GetOrganization", { id = "x" })
      end
      raises("list operations take no body", sk.each, sk, "OrganizationService_ListOrganization", { body = {} })
      raises("opts.limit must be a non%-negative number", sk.all, sk, "OrganizationService_ListOrganization",
             {}, { limit = "10" })
      raises("opts.limit must be a non%-negative number", sk.all, sk, "OrganizationService_ListOrganization",
             {}, { limit = -1 })
      -- a bad parameter raises from the first iteration, not silently ends the loop
      raises("page_size", function()
        for _ in sk:each("OrganizationService_ListOrganization", { page_size = {} }) do end
      end)
      raises("page_size", function()
        for _ in sk:pages("OrganizationService_ListOrganization", { page_size = "x" }) do end
      end)
      usable(sk)
      sk:close()
    end)

    it("params that are not a table raise a named error", function()
      local sk = new{ max_retries = 0 }
      -- not "bad argument #1 to 'for iterator'" from paginate.lua's copy()
      for _, name in ipairs({ "each", "pages", "all" }) do
        raises("params must be a table", sk[name], sk, "OrganizationService_ListOrganization", "x")
      end
      sk:close()
    end)
  end)

  describe("resource methods", function()
    it("nil, empty, dot-segment and non-scalar ids raise; the rest are encoded", function()
      local sk = new{ max_retries = 0 }
      raises("missing argument #1 %(id%)", sk.organizations.get, sk.organizations)
      raises("must not be empty", sk.organizations.get, sk.organizations, "")
      raises("must not be '.' or '..'", sk.organizations.get, sk.organizations, "..")
      -- a table in the id's place is the options table: the id is then missing
      raises("missing required path parameter 'id'", sk.organizations.get, sk.organizations, {})
      raises("must be a string", sk.organizations.get, sk.organizations, true)
      raises(nil, sk.organizations.update, sk.organizations, "org_1", "not a table")
      raises(nil, sk.organizations.list, sk.organizations, 42)
      -- integers are path values too
      sk.organizations:get(12345)
      assert.same({ "/api/v1/organizations/12345" }, api_paths())
      usable(sk)
      sk:close()
    end)
  end)

  describe("token and close", function()
    it("a closed client raises on every call; close is idempotent", function()
      local sk = new()
      assert(sk:token())
      sk:close()
      sk:close()
      raises("client is closed", sk.token, sk)
      raises("client is closed", sk.call, sk, "OrganizationService_ListOrganization", {})
      raises("client is closed", sk.each, sk, "OrganizationService_ListOrganization", {})
      raises("client is closed", sk.invalidate_token, sk)
      raises("client is closed", sk.organizations.get, sk.organizations, "x")
      assert.matches("closed", tostring(sk))
      collectgarbage()
      collectgarbage()
    end)

    it("methods called without a client raise", function()
      local sk = new()
      raises(nil, sk.token)
      raises(nil, sk.call, nil, "OrganizationService_ListOrganization")
      raises(nil, sk.close, "x")
      sk:close()
    end)
  end)

  describe("core.http", function()
    it("constructor: wrong types and values raise", function()
      raises("table expected", core.http)
      raises("table expected", core.http, "x")
      raises("option timeout must be a number", core.http, { timeout = "1" })
      for _, v in ipairs({ 0, -1, NAN, INF, 86401 }) do
        raises("option timeout must be in", core.http, { timeout = v })
        raises("option connect_timeout must be in", core.http, { connect_timeout = v })
      end
      raises("option ca_file must be a string", core.http, { ca_file = 1 })
      raises("NUL or line breaks", core.http, { ca_file = NUL })
      raises("NUL or line breaks", core.http, { user_agent = CRLF })
      raises("NUL or line breaks", core.http, { user_agent = "a\nb" })
      raises("option max_body_size must be in %[1024,", core.http, { max_body_size = "big" })
      raises("option user_agent is longer than 4096 bytes", core.http, { user_agent = HUGE })
    end)

    -- (size_t) of a negative, NaN or too large double is undefined behaviour: -1 and
    -- NaN turned the limit off, infinity made it 0 (see the report)
    it("max_body_size that is negative, NaN, infinite or beyond size_t raises", function()
      local accepted = {}
      for _, v in ipairs({ -1, NAN, INF, -INF, 2 ^ 64 }) do
        local ok, h = pcall(core.http, { max_body_size = v })
        if ok then
          accepted[#accepted + 1] = tostring(v)
          h:close()
        else
          assert.matches("max_body_size", h)
        end
      end
      assert.same({}, accepted)
    end)

    it("request: bad method, URL, body, content type and token raise", function()
      local h = core.http{ timeout = 2 }
      local url = srv.url .. "/_admin/ping"
      raises("must be GET, POST, PUT, PATCH or DELETE", h.request, h, "BREW", url)
      raises("must be GET, POST, PUT, PATCH or DELETE", h.request, h, "get", url)
      raises("string expected", h.request, h, nil, url)
      raises("string expected", h.request, h, "GET", nil)
      raises("URL must not contain", h.request, h, "GET", url .. "\r\nX-Injected: 1")
      raises("URL must not contain", h.request, h, "GET", url .. " HTTP/1.1")
      raises("URL must not contain", h.request, h, "GET", url .. "\0.evil")
      raises("URL must not contain", h.request, h, "GET", url .. "\tx")
      raises("GET takes no body", h.request, h, "GET", url, "body")
      raises("string expected", h.request, h, "POST", url, {})
      raises("must be \"json\", or \"form\"", h.request, h, "POST", url, "", "xml")
      raises("must be \"json\", or \"form\"", h.request, h, "POST", url, "", "form", "tok")
      for _, tok in ipairs({ "", CRLF, "a\nb", NUL }) do
        raises("token must not", h.request, h, "GET", url, nil, "json", tok)
      end
      raises("string expected", h.request, h, "GET", url, nil, "json", {})
      raises("scalekit.core.Http expected", h.request, {}, "GET", url)
      raises("scalekit.core.Http expected", h.stats, "x")
      assert.equal(200, (h:request("GET", url)))
      h:close()
    end)

    it("request: URLs libcurl refuses are network errors, never sent; the handle goes on", function()
      local h = core.http{ timeout = 2 }
      for _, url in ipairs({ "file:///etc/passwd", "ftp://127.0.0.1/", "dict://127.0.0.1:1/",
                             "gopher://127.0.0.1:1/", "", "http://", "http://127.0.0.1:99999/",
                             srv.url .. "/" .. HUGE }) do
        local st, kind, msg, sent = h:request("GET", url)
        assert.is_nil(st, url:sub(1, 40))
        assert.equal("network", kind)
        assert.is_string(msg)
        assert.is_false(sent)
      end
      assert.equal(200, (h:request("GET", srv.url .. "/_admin/ping")))
      h:close()
    end)

    it("request: a 10 MB bearer or body does not crash", function()
      local h = core.http{ timeout = 5 }
      local st, kind = h:request("GET", srv.url .. "/api/v1/organizations", nil, "json", HUGE)
      assert.is_true(st ~= nil or kind == "network", tostring(kind))
      st = h:request("POST", srv.url .. "/api/v1/organizations", '{"display_name":"' .. HUGE .. '"}',
                     "json", "nope")
      assert.equal(401, st)
      assert.equal(200, (h:request("GET", srv.url .. "/_admin/ping")))
      h:close()
    end)

    it("a closed handle raises; close and __gc are idempotent", function()
      local h = core.http{}
      h:close()
      h:close()
      raises("HTTP client is closed", h.request, h, "GET", srv.url)
      raises("HTTP client is closed", h.stats, h)
      assert.matches("closed", tostring(h))
      h = nil -- luacheck: ignore 311
      collectgarbage()
    end)
  end)

  describe("core.token_vault", function()
    it("set: wrong types and values raise", function()
      local v = core.token_vault()
      raises("string expected", v.set, v, nil, 10)
      raises("string expected", v.set, v, {}, 10)
      raises("must be a non%-empty string without NUL", v.set, v, "", 10)
      raises("must be a non%-empty string without NUL", v.set, v, NUL, 10)
      raises("number expected", v.set, v, "t", "ten")
      raises("must be positive", v.set, v, "t", 0)
      raises("must be positive", v.set, v, "t", -5)
      raises("must be positive", v.set, v, "t", NAN)
      raises("must be in %[0, expires_in%)", v.set, v, "t", 10, 10)
      raises("must be in %[0, expires_in%)", v.set, v, "t", 10, -1)
      raises("must be in %[0, expires_in%)", v.set, v, "t", 10, NAN)
      raises("scalekit.core.Token expected", v.set, "x", "t", 10)
      assert.is_nil((v:get()))
      v:close()
    end)

    it("holds a 10 MB token and never shows it", function()
      local v = core.token_vault()
      v:set(HUGE, 60, 1)
      assert.equal(HUGE, (v:get()))
      assert.is_nil(tostring(v):find("AAAA", 1, true))
      assert.is_false(v:clear("other"))
      assert.is_false(v:clear(12345))
      raises("string expected", v.clear, v, {})
      assert.is_true(v:clear(HUGE))
      assert.is_nil((v:get()))
      v:close()
      v:close()
      raises("token vault is closed", v.get, v)
      raises("token vault is closed", v.set, v, "t", 1)
      raises("token vault is closed", v.clear, v)
    end)
  end)

  describe("crypto", function()
    it("base64 codecs: wrong types raise; NUL, bad UTF-8 and junk are nil, msg", function()
      for _, name in ipairs({ "b64decode", "b64url_decode", "b64encode", "b64url_encode" }) do
        raises("string expected", core[name])
        raises("string expected", core[name], {})
      end
      for _, s in ipairs({ NUL, BAD_UTF8, "====", "A===", "AB\0=", "AB=C", "\r\n", "QUJD\n" }) do
        local v, msg = core.b64decode(s)
        assert.is_nil(v, ("%q"):format(s))
        assert.equal("invalid base64", msg)
        v, msg = core.b64url_decode(s)
        assert.is_nil(v)
        assert.equal("invalid base64url", msg)
      end
      assert.equal("", core.b64decode(""))
    end)

    it("base64 codecs: 10 MB round-trips", function()
      local enc = core.b64encode(HUGE)
      assert.equal(HUGE, core.b64decode(enc))
      assert.equal(HUGE, core.b64url_decode(core.b64url_encode(HUGE)))
      assert.is_nil(core.b64decode(enc:sub(1, -2)))
    end)

    it("sha256 / hmac_sha256 / constant_eq: wrong types raise; NUL and 10 MB work", function()
      raises("string expected", core.sha256)
      raises("string expected", core.hmac_sha256, nil, "x")
      raises("string expected", core.hmac_sha256, "k")
      raises("string expected", core.constant_eq, "a")
      assert.equal(32, #core.sha256(HUGE))
      assert.equal(32, #core.hmac_sha256(HUGE, HUGE))
      assert.equal(32, #core.hmac_sha256(NUL, NUL))
      assert.equal("f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8",
                   (core.hmac_sha256("key", "The quick brown fox jumps over the lazy dog"):gsub(".", function(c)
                     return ("%02x"):format(c:byte())
                   end)))
      assert.is_false(core.constant_eq("a\0b", "a\0c"))
      assert.is_true(core.constant_eq(NUL, NUL))
      assert.is_false(core.constant_eq(HUGE, HUGE .. "A"))
    end)

    it("random_bytes: out of range raises", function()
      for _, v in ipairs({ 0, -1, 4097, NAN, INF, 2 ^ 63 }) do
        raises(nil, core.random_bytes, v)
      end
      raises("number expected", core.random_bytes, "many")
      assert.equal(4096, #core.random_bytes(4096))
    end)

    it("public_key: not a table raises; bad members are nil, msg", function()
      raises("table expected", core.public_key)
      raises("table expected", core.public_key, "{}")
      local cases = {
        { {}, "missing kty" },
        { { kty = 1 }, "missing kty" },
        { { kty = "RSA\0" }, "unsupported key type" },
        { { kty = "oct", k = "AAAA" }, "unsupported key type" },
        { { kty = "RSA", n = "AQAB" }, "missing n or e" },
        { { kty = "RSA", n = HUGE, e = "AQAB" }, "invalid RSA key" },
        { { kty = "RSA", n = NUL, e = "AQAB" }, "invalid RSA key" },
        { { kty = "RSA", n = BAD_UTF8, e = "AQAB" }, "invalid RSA key" },
        { { kty = "RSA", n = string.rep("A", 342) .. "B", e = HUGE }, "invalid RSA key" },
        { { kty = "EC", crv = "P-256\0" }, "unsupported EC curve" },
        { { kty = "EC", crv = "P-256" }, "missing x or y" },
        { { kty = "EC", crv = "P-999", x = "AA", y = "AA" }, "unsupported EC curve" },
        { { kty = "EC", crv = "P-256", x = HUGE, y = HUGE }, "invalid EC key" },
        { { kty = "EC", crv = "P-256", x = string.rep("A", 43), y = string.rep("A", 43) },
          "invalid EC key" },
        { { kty = "EC", crv = "P-256", x = NUL, y = CRLF }, "invalid EC key" },
      }
      for _, c in ipairs(cases) do
        local k, msg = core.public_key(c[1])
        assert.is_nil(k)
        assert.matches(c[2], msg)
      end
    end)

    it("public_key: a JWK whose __index raises propagates the error, no leak or crash", function()
      local jwk = setmetatable({}, { __index = function() error("boom") end })
      raises("boom", core.public_key, jwk)
    end)

    it("PublicKey:verify: wrong types raise, junk is false, closed raises", function()
      -- P-256 generator point: a valid public key
      local key = assert(core.public_key{
        kty = "EC", crv = "P-256",
        x = "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY",
        y = "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU",
      })
      raises("string expected", key.verify, key, nil, "in", "sig")
      raises("string expected", key.verify, key, "ES256", {}, "sig")
      raises("scalekit.core.PublicKey expected", key.verify, {}, "ES256", "in", "sig")
      for _, c in ipairs({
        { "ES256", HUGE, string.rep("\0", 64) },
        { "ES256", NUL, HUGE },
        { "ES256\0", "in", string.rep("\1", 64) },
        { "none", "in", "" },
        { "RS256", "in", string.rep("\1", 64) },
        { "ES384", "in", string.rep("\1", 96) },
      }) do
        local ok, why = key:verify(c[1], c[2], c[3])
        assert.is_false(ok)
        assert.is_string(why)
      end
      key:close()
      key:close()
      raises("the key is closed", key.verify, key, "ES256", "in", "sig")
      assert.matches("closed", tostring(key))
    end)
  end)

  describe("auth helpers", function()
    it("authorization_url / logout_url: CR/LF, NUL, bad UTF-8 are percent-encoded", function()
      local sk = new()
      for _, v in ipairs({ CRLF, NUL, BAD_UTF8, HUGE }) do
        local url = sk:authorization_url("https://app.test/cb?x=" .. v, { state = v, login_hint = v })
        assert.is_nil(url:find("[%z\r\n\128-\255 ]"), "raw byte in the URL")
        url = sk:logout_url{ state = v, post_logout_redirect_uri = v }
        assert.is_nil(url:find("[%z\r\n\128-\255 ]"))
      end
      raises("redirect_uri must be a non%-empty string", sk.authorization_url, sk, nil)
      raises("opts must be a table", sk.authorization_url, sk, "https://app.test/cb", "x")
      raises("unknown option", sk.authorization_url, sk, "https://app.test/cb", { stat = "x" })
      raises("must be a string", sk.authorization_url, sk, "https://app.test/cb", { state = 1 })
      sk:close()
    end)

    it("validate_access_token: junk tokens are nil, auth error", function()
      local sk = new()
      for _, t in ipairs({ 42, "", NUL, CRLF, BAD_UTF8, HUGE, "a.b.c", "..", "e30.e30.", string.rep(".", 20000) }) do
        local claims, err = sk:validate_access_token(t)
        assert.is_nil(claims)
        assert.is_true(errors.is(err, "auth"), tostring(err))
      end
      raises("opts must be a table", sk.validate_access_token, sk, "a.b.c", "x")
      sk:close()
    end)

    it("verify_webhook: wrong types raise; junk headers and huge bodies are nil, auth error", function()
      local sk = new()
      raises("raw_body must be a string", sk.verify_webhook, sk, nil, {}, "whsec_AAAA")
      raises("headers must be a table", sk.verify_webhook, sk, "{}", "h", "whsec_AAAA")
      raises("secret must be a string", sk.verify_webhook, sk, "{}", {}, nil)
      local headers = { ["webhook-id"] = CRLF, ["webhook-timestamp"] = tostring(os.time()),
                        ["webhook-signature"] = "v1," .. BAD_UTF8 }
      for _, body in ipairs({ HUGE, NUL, BAD_UTF8 }) do
        for _, secret in ipairs({ "whsec_" .. core.b64encode("k"), "whsec_" .. NUL, HUGE, "" }) do
          local ok, event, err = pcall(sk.verify_webhook, sk, body, headers, secret)
          if ok then
            assert.is_nil(event)
            assert.is_true(errors.is(err, "auth"), tostring(err))
          else
            assert.matches("secret", tostring(event))
          end
        end
      end
      sk:close()
    end)
  end)
end)
