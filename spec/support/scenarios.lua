-- Transport-level scenarios shared by the libcurl and the cosocket transports, so that
-- "they behave identically" is checked by literally the same code.
--
-- A scenario is a list of steps plus a check:
--   { server = function(srv, ctx) … end }      runs in the test process (faults, sleeps,
--                                              counters into ctx)
--   { client = "call", op = …, params = … }    runs next to the client: in the busted
--                                              process (libcurl) or inside an nginx
--                                              handler (cosockets), through client_step()
--   check(assert, r, ctx)                      r = the client steps' results, in order
--
-- Results cross a JSON round trip in both runners, so the check sees the same shapes.
-- This file is loaded by busted and by nginx workers: no busted, no io at load time.
local cjson = require("cjson")

local _M = {}

local json = cjson.new()

local client = require("spec.support.client")
_M.CLIENT_ID, _M.CLIENT_SECRET = client.CLIENT_ID, client.CLIENT_SECRET

local function monotonic()
  return require("scalekit.core").monotonic()
end

-- true when no string reachable from `t` (keys and values, through tables) contains `needle`
local function clean_of(t, needle, seen)
  seen = seen or {}
  if seen[t] then return true end
  seen[t] = true
  for k, v in pairs(t) do
    if tostring(k):find(needle, 1, true) then return false end
    if type(v) == "string" and v:find(needle, 1, true) then return false end
    if type(v) == "table" and not clean_of(v, needle, seen) then return false end
  end
  return true
end

local ERR_FIELDS = { "kind", "status", "code", "error_code", "message", "details", "request_id",
                     "retryable", "retry_after", "operation" }

local function err_table(err)
  if err == nil then return nil end
  if type(err) ~= "table" then return { text = tostring(err) } end
  local t = { text = tostring(err), is_error = require("scalekit.errors").is(err) }
  t.secret_clean = clean_of(err, _M.CLIENT_SECRET)
  for _, k in ipairs(ERR_FIELDS) do t[k] = err[k] end
  return t
end

--- Run one client step; the result is a JSON-able table.
function _M.client_step(sk, step)
  local kind = step.client
  local t0 = monotonic()
  local out
  if kind == "call" then
    local res, err = sk:call(step.op, step.params or {})
    out = { ok = res ~= nil, res = res, err = err_table(err) }
  elseif kind == "calls" then
    local n, lists, first_err = 0, 0, nil
    for _ = 1, step.n do
      local res, err = sk:call(step.op, step.params or {})
      if res then n = n + 1 elseif not first_err then first_err = err end
      if res and type(res.organizations) == "table" then lists = lists + 1 end
    end
    out = { ok_count = n, lists = lists, err = err_table(first_err) }
  elseif kind == "token" then
    local token, expires_at = sk:token()
    out = { token = token, expires_at = token and expires_at or nil,
            err = not token and err_table(expires_at) or nil }
  elseif kind == "invalidate" then
    sk:invalidate_token()
    out = {}
  elseif kind == "raw" then
    -- one attempt through the transport of this context, as session.lua makes it
    local s = sk._s
    local res, err = s.transport:request(step.method, step.url or (s.base_url .. step.path),
                                         step.body, "json", step.bearer)
    if res then
      local a = res.body
      out = { status = res.status, body = #a <= 256 and a or nil, body_len = #a, body_head = a:sub(1, 32),
              retry_after = res.retry_after, request_id = res.request_id }
    else
      out = { kind = err.kind, message = err.message, sent = err.sent }
    end
  elseif kind == "stats" then
    out = sk:stats()
    out.cosocket = rawget(_G, "ngx") ~= nil
  elseif kind == "inspect" then
    -- neither the secret nor the current token in tostring() or any field
    local token = sk:token()
    local s = sk._s
    local texts = { tostring(sk), tostring(s.transport), tostring(s.store) }
    out = { secret_clean = clean_of(sk, _M.CLIENT_SECRET) and clean_of(texts, _M.CLIENT_SECRET),
            token_clean = token == nil or clean_of(texts, token) }
  else
    error("unknown client step " .. tostring(kind))
  end
  out.elapsed = monotonic() - t0
  return out
end

--- JSON round trip (both runners pass their results through it).
function _M.roundtrip(v)
  return json.decode(json.encode(v))
end

--- Drive a scenario from the test process. `exec(index, step)` runs a client step
--- somewhere and returns its decoded result. Returns the results and ctx.
function _M.drive(sc, srv, exec)
  local ctx, r = {}, {}
  for i, step in ipairs(sc.steps) do
    if step.server then
      step.server(srv, ctx)
    else
      r[#r + 1] = exec(i, step)
    end
  end
  return r, ctx
end

local function api_requests(srv) return srv:stats().api_requests end
local function tokens(srv) return srv:stats().tokens_issued end
local function mark(srv, ctx) ctx.before = api_requests(srv) end
local function sleep(sec) return { server = function() require("scalekit.core").sleep(sec) end } end
local function faults(list) return { server = function(srv) srv:faults(list) end } end

local LIST = "OrganizationService_ListOrganization"
local CALL = { client = "call", op = LIST }
local TOKEN = { client = "token" }

-- group, name, client overrides, steps, check
local list = {
  -- token ------------------------------------------------------------------------------
  { group = "token", name = "is fetched once for many calls",
    steps = { { client = "calls", op = LIST, params = { page_size = 10 }, n = 25 },
              { server = function(srv, ctx) ctx.tokens = tokens(srv) end } },
    check = function(assert, r, ctx)
      assert.is_nil(r[1].err)
      assert.equal(25, r[1].ok_count)
      assert.equal(25, r[1].lists)
      assert.equal(1, ctx.tokens)
    end },

  { group = "token", name = "is returned by sk:token() with its expiry, and cached",
    steps = { TOKEN, TOKEN,
              { server = function(srv, ctx) ctx.tokens1 = tokens(srv) end },
              { client = "invalidate" }, TOKEN,
              { server = function(srv, ctx) ctx.tokens2 = tokens(srv) end } },
    check = function(assert, r, ctx)
      assert.is_string(r[1].token)
      assert.is_true(#r[1].token >= 20)
      assert.is_true(math.abs(r[1].expires_at - (os.time() + 3600)) < 5)
      assert.equal(r[1].token, r[2].token)
      assert.equal(1, ctx.tokens1)
      assert.not_equal(r[1].token, r[4].token)
      assert.equal(2, ctx.tokens2)
    end },

  { group = "token", name = "is refreshed ahead of its expiry",
    steps = { { server = function(srv) srv:configure{ token_ttl = 2 } end },
              TOKEN, CALL,
              -- the margin is 10% of a 2 s lifetime: at 1.85 s the token is due for
              -- refresh while the server would still accept it
              sleep(1.85),
              CALL, TOKEN,
              { server = function(srv, ctx) ctx.tokens = tokens(srv) end } },
    check = function(assert, r, ctx)
      assert.is_true(r[2].ok)
      assert.is_true(r[3].ok)
      assert.not_equal(r[1].token, r[4].token)
      assert.equal(2, ctx.tokens)
    end },

  { group = "token", name = "keeps using a still-valid token when the refresh fails",
    client = { max_retries = 0 },
    -- a 4 s token is due for refresh at 3.6 s and dead at 4 s: the call lands between
    -- (timed from the fetch, not from after the fault setup, which a loaded machine
    -- can make slow)
    steps = { { server = function(srv) srv:configure{ token_ttl = 4 } end },
              TOKEN,
              { server = function(_, ctx) ctx.fetched = require("scalekit.core").monotonic() end },
              faults{ { match = "/oauth/token", status = 503 } },
              { server = function(_, ctx)
                  local core = require("scalekit.core")
                  core.sleep(math.max(0, ctx.fetched + 3.66 - core.monotonic()))
                end },
              CALL,
              { server = function(srv, ctx)
                  local reqs = srv:requests()
                  ctx.auth = reqs[#reqs].headers["authorization"]
                  ctx.tokens = tokens(srv)
                end } },
    check = function(assert, r, ctx)
      assert.is_nil(r[2].err)
      assert.is_true(r[2].ok)
      assert.equal("Bearer " .. r[1].token, ctx.auth)
      assert.equal(1, ctx.tokens)
    end },

  { group = "token", name = "on a 401 is dropped, fetched again and the call retried once",
    steps = { CALL, faults{ { match = "/api/", revoke = true } }, CALL,
              { server = function(srv, ctx) ctx.tokens = tokens(srv) end } },
    check = function(assert, r, ctx)
      assert.is_true(r[1].ok)
      assert.is_nil(r[2].err)
      assert.is_table(r[2].res.organizations)
      assert.equal(2, ctx.tokens)
    end },

  { group = "token", name = "never loops on repeated 401s",
    steps = { TOKEN, faults{ { match = "/api/", revoke = true, count = 5 } },
              { server = mark }, CALL,
              { server = function(srv, ctx)
                  ctx.attempts = api_requests(srv) - ctx.before
                  ctx.tokens = tokens(srv)
                end } },
    check = function(assert, r, ctx)
      assert.is_false(r[2].ok)
      assert.equal("http", r[2].err.kind)
      assert.equal(401, r[2].err.status)
      assert.equal("UNAUTHENTICATED", r[2].err.error_code)
      assert.equal(2, ctx.attempts)
      assert.equal(2, ctx.tokens)
    end },

  { group = "token", name = "with wrong credentials gives an auth error without the secret",
    client = { client_secret = "wrong-" .. _M.CLIENT_SECRET },
    steps = { CALL, { client = "inspect" } },
    check = function(assert, r)
      local err = r[1].err
      assert.is_false(r[1].ok)
      assert.is_true(err.is_error)
      assert.equal("auth", err.kind)
      assert.equal(401, err.status)
      assert.equal("invalid_client", err.error_code)
      assert.is_false(err.retryable)
      for k, v in pairs(err) do
        if type(v) == "string" then
          assert.is_nil(v:find(_M.CLIENT_SECRET, 1, true), k)
          assert.is_nil(v:find("wrong-", 1, true), k)
        end
      end
      assert.is_true(err.secret_clean)
      assert.is_true(r[2].secret_clean)
    end },

  -- connections ------------------------------------------------------------------------
  { group = "connections", name = "are kept alive across token and API calls",
    steps = { { client = "calls", op = LIST, n = 30 }, { client = "stats" },
              { server = function(srv, ctx) ctx.connections = srv:stats().connections end } },
    check = function(assert, r, ctx)
      assert.equal(30, r[1].ok_count)
      assert.equal(1, ctx.connections)
      assert.equal(31, r[2].requests)
      -- libcurl: the client's own connection; cosockets: the worker's pool, which may
      -- already hold a connection to this server from an earlier client
      assert.is_true(r[2].connects <= 1)
      if not r[2].cosocket then assert.equal(1, r[2].connects) end
    end },

  -- retries ----------------------------------------------------------------------------
  { group = "retries", name = "retry 503, 502 and 504 on GET and then succeed",
    steps = { TOKEN,
              faults{ { match = "/api/", status = 503 }, { match = "/api/", status = 502 },
                      { match = "/api/", status = 504 } },
              { server = mark }, CALL,
              { server = function(srv, ctx) ctx.attempts = api_requests(srv) - ctx.before end } },
    check = function(assert, r, ctx)
      assert.is_nil(r[2].err)
      assert.is_table(r[2].res.organizations)
      assert.equal(4, ctx.attempts)
    end },

  { group = "retries", name = "give up after max_retries with a retryable error",
    client = { max_retries = 2 },
    steps = { TOKEN, faults{ { match = "/api/", status = 503, count = 10 } },
              { server = mark }, CALL,
              { server = function(srv, ctx)
                  ctx.attempts = api_requests(srv) - ctx.before
                  srv:clear_faults()
                end } },
    check = function(assert, r, ctx)
      assert.is_false(r[2].ok)
      assert.equal(503, r[2].err.status)
      assert.equal("UNAVAILABLE", r[2].err.error_code)
      assert.is_true(r[2].err.retryable)
      assert.equal(3, ctx.attempts)
    end },

  { group = "retries", name = "do not retry a POST on 503, but do on 429",
    steps = { TOKEN, faults{ { match = "/api/", status = 503 } }, { server = mark },
              { client = "call", op = "OrganizationService_CreateOrganization",
                params = { body = { display_name = "A" } } },
              { server = function(srv, ctx)
                  ctx.attempts1 = api_requests(srv) - ctx.before
                  srv:faults{ { match = "/api/", status = 429 } }
                  ctx.before = api_requests(srv)
                end },
              { client = "call", op = "OrganizationService_CreateOrganization",
                params = { body = { display_name = "B" } } },
              { server = function(srv, ctx) ctx.attempts2 = api_requests(srv) - ctx.before end } },
    check = function(assert, r, ctx)
      assert.is_false(r[2].ok)
      assert.equal(503, r[2].err.status)
      assert.equal(1, ctx.attempts1)
      assert.is_nil(r[3].err)
      assert.equal("B", r[3].res.organization.display_name)
      assert.equal(2, ctx.attempts2)
    end },

  { group = "retries", name = "do not retry a 500 but mark it retryable",
    steps = { TOKEN, faults{ { match = "/api/", status = 500 } }, { server = mark }, CALL,
              { server = function(srv, ctx) ctx.attempts = api_requests(srv) - ctx.before end } },
    check = function(assert, r, ctx)
      assert.is_false(r[2].ok)
      assert.equal(500, r[2].err.status)
      assert.is_true(r[2].err.retryable)
      assert.equal(1, ctx.attempts)
    end },

  { group = "retries", name = "honour Retry-After in seconds",
    client = { retry_backoff = 0.001 },
    steps = { TOKEN, faults{ { match = "/api/", status = 429, retry_after = "1" } }, CALL },
    check = function(assert, r)
      assert.is_nil(r[2].err)
      assert.is_true(r[2].ok)
      assert.is_true(r[2].elapsed >= 0.95, r[2].elapsed)
    end },

  { group = "retries", name = "honour Retry-After as an HTTP date",
    client = { retry_backoff = 0.001 },
    steps = { TOKEN,
              { server = function(srv)
                  local when = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 2)
                  srv:faults{ { match = "/api/", status = 503, retry_after = when } }
                end },
              CALL },
    check = function(assert, r)
      assert.is_true(r[2].ok)
      -- the date has one-second resolution: at least one second must have passed
      assert.is_true(r[2].elapsed >= 0.9, r[2].elapsed)
    end },

  { group = "retries", name = "return at once when Retry-After exceeds retry_after_max",
    client = { retry_after_max = 5 },
    steps = { TOKEN, faults{ { match = "/api/", status = 429, retry_after = "120" } }, CALL },
    check = function(assert, r)
      assert.is_false(r[2].ok)
      assert.equal(429, r[2].err.status)
      assert.equal(120, r[2].err.retry_after)
      assert.is_true(r[2].err.retryable)
      assert.is_true(r[2].elapsed < 5)
    end },

  { group = "retries", name = "retry the token request too",
    steps = { faults{ { match = "/oauth/token", status = 503 } }, TOKEN,
              { server = function(srv, ctx) ctx.tokens = tokens(srv) end } },
    check = function(assert, r, ctx)
      assert.is_string(r[1].token)
      assert.is_number(r[1].expires_at)
      assert.equal(1, ctx.tokens)
    end },

  -- transport failures -----------------------------------------------------------------
  { group = "transport failures", name = "time out with kind 'timeout'",
    client = { timeout = 0.3, max_retries = 0 },
    steps = { TOKEN, faults{ { match = "/api/", delay = 1.5 } }, CALL, CALL },
    check = function(assert, r)
      assert.is_false(r[2].ok)
      assert.equal("timeout", r[2].err.kind)
      assert.is_true(r[2].err.retryable)
      assert.is_true(r[2].elapsed < 1.4, r[2].elapsed)
      assert.is_true(r[2].elapsed >= 0.25, r[2].elapsed)
      -- the client stays usable
      assert.is_true(r[3].ok)
    end },

  { group = "transport failures", name = "report a refused connection as 'network' after retrying",
    client = { environment_url = "http://127.0.0.1:9", max_retries = 2 },
    steps = { CALL, { client = "stats" } },
    check = function(assert, r)
      assert.is_false(r[1].ok)
      assert.equal("network", r[1].err.kind)
      assert.is_true(r[1].err.retryable)
      assert.truthy(r[1].err.message:find("onnect"), r[1].err.message)
      assert.equal(3, r[2].requests)
    end },

  { group = "transport failures", name = "say whether a failed request may have left (sent)",
    client = { max_retries = 0 },
    steps = { { client = "raw", method = "POST", url = "http://127.0.0.1:9/api/v1/organizations", body = "{}" },
              faults{ { match = "/api/", close = true, count = 2 } },
              { client = "raw", method = "POST", path = "/api/v1/organizations", body = "{}" } },
    check = function(assert, r)
      -- refused: the request surely never left, so even a POST may be retried
      assert.is_nil(r[1].status)
      assert.equal("network", r[1].kind)
      assert.is_false(r[1].sent)
      -- closed after the request was written: it may have been acted upon
      assert.is_nil(r[2].status)
      assert.equal("network", r[2].kind)
      assert.is_true(r[2].sent)
    end },

  { group = "transport failures", name = "report a closed connection without an answer as 'network'",
    client = { max_retries = 0 },
    -- a reused connection that dies before any byte of the answer (a stale keep-alive)
    -- is tried once more on a new one by the transport itself; the second close is
    -- what the caller sees
    steps = { TOKEN, faults{ { match = "/api/", close = true, count = 2 } }, CALL, CALL },
    check = function(assert, r)
      assert.is_false(r[2].ok)
      assert.equal("network", r[2].err.kind)
      assert.is_true(r[3].ok)
    end },

  { group = "transport failures", name = "report invalid JSON as 'decode' with the status",
    steps = { TOKEN, faults{ { match = "/api/", invalid_json = true } }, CALL },
    check = function(assert, r)
      assert.is_false(r[2].ok)
      assert.equal("decode", r[2].err.kind)
      assert.equal(200, r[2].err.status)
      assert.is_string(r[2].err.request_id)
    end },

  { group = "transport failures", name = "turn an empty 2xx body into an empty table",
    steps = { TOKEN, faults{ { match = "/api/", empty_body = true } }, CALL },
    check = function(assert, r)
      assert.is_nil(r[2].err)
      assert.same({}, r[2].res)
    end },

  { group = "transport failures", name = "read a chunked answer",
    steps = { TOKEN, faults{ { match = "/api/", chunked = true, chunk_size = 7 } }, CALL,
              { server = function(srv, ctx) ctx.pending = srv:stats().faults_pending end } },
    check = function(assert, r, ctx)
      assert.is_nil(r[2].err)
      assert.is_table(r[2].res.organizations)
      assert.equal(0, ctx.pending)
    end },

  { group = "transport failures", name = "refuse a body larger than max_body_size",
    client = { max_body_size = 1024, max_retries = 0 },
    steps = { TOKEN,
              faults{ { match = "/api/", status = 200, body = '{"pad":"' .. ("x"):rep(4000) .. '"}' },
                      { match = "/api/", status = 200, chunked = true, chunk_size = 500,
                        body = '{"pad":"' .. ("x"):rep(4000) .. '"}' } },
              CALL, CALL, CALL },
    check = function(assert, r)
      for i = 2, 3 do
        assert.is_false(r[i].ok)
        assert.equal("network", r[i].err.kind)
        assert.truthy(r[i].err.message:find("max_body_size", 1, true), r[i].err.message)
      end
      assert.is_true(r[4].ok)
    end },

  -- requests ---------------------------------------------------------------------------
  { group = "requests", name = "send path, query, JSON body and headers intact",
    client = { user_agent = "myapp/1.2" },
    steps = { { client = "call", op = "ConnectionService_EnableConnection",
                params = { organization_id = "org/../x?y#z", id = "c 1%" } },
              { client = "call", op = "RolesService_CreateRole",
                params = { body = { name = "admin", display_name = "Admin" } } },
              { client = "call", op = "RolesService_CreateRole", params = {} },
              { client = "call", op = "DirectoryService_ListDirectoryUsers",
                params = { organization_id = "org_1", directory_id = "dir_1", include_detail = true,
                           page_size = 50, directory_group_id = "a&b=c d" } },
              { client = "call", op = "SessionService_GetUserSessions",
                params = { user_id = "usr_1", ["filter.status"] = { "ACTIVE", "EXPIRED" } } },
              { client = "call", op = "DirectoryService_ListDirectoryUsers",
                params = { organization_id = "o", directory_id = "d", include_detail = false, page_size = 20.0 } },
              { client = "call", op = "OrganizationService_GeneratePortalLink",
                params = { id = "org_1", features = { "sso" } } },
              -- what reached the fake, from its raw request log
              { server = function(srv, ctx)
                  ctx.api = {}
                  for _, q in ipairs(srv:requests()) do
                    if q.path:find("^/api/") then ctx.api[#ctx.api + 1] = q end
                  end
                  ctx.headers = ctx.api[#ctx.api].headers
                end } },
    check = function(assert, _, ctx)
      local q = ctx.api
      assert.equal(7, #q)
      assert.equal("PATCH", q[1].method)
      assert.equal("/api/v1/organizations/org%2F..%2Fx%3Fy%23z/connections/c%201%25:enable", q[1].path)
      assert.equal("POST", q[2].method)
      assert.truthy(q[2].headers["content-type"]:find("application/json", 1, true))
      assert.same({ name = "admin", display_name = "Admin" }, json.decode(q[2].body))
      assert.same({}, json.decode(q[3].body))
      assert.equal("GET", q[4].method)
      assert.equal("directory_group_id=a%26b%3Dc%20d&include_detail=true&page_size=50", q[4].query)
      assert.equal("filter.status=ACTIVE&filter.status=EXPIRED", q[5].query)
      assert.equal("include_detail=false&page_size=20", q[6].query)
      assert.equal("PUT", q[7].method)
      assert.equal("features=sso", q[7].query)
      local ua = ctx.headers["user-agent"]
      assert.truthy(ua:find("^scalekit%-lua/%d+%.%d+%.%d+ %(.+; libcurl/[%d.]+%) myapp/1%.2$"), ua)
      assert.equal("application/json", ctx.headers["accept"])
      assert.truthy(ctx.headers["authorization"]:find("^Bearer "))
    end },

  { group = "requests", name = "never put the access token or the secret in errors or tostring",
    steps = { TOKEN, faults{ { match = "/api/", status = 400 } }, CALL, { client = "inspect" } },
    check = function(assert, r)
      assert.is_nil(r[2].err.text:find(r[1].token, 1, true))
      assert.is_true(r[3].token_clean)
      assert.is_true(r[3].secret_clean)
    end },
}

_M.list = list
_M.by_name = {}
for _, sc in ipairs(list) do
  assert(not _M.by_name[sc.name], "duplicate scenario " .. sc.name)
  _M.by_name[sc.name] = sc
end

return _M
