-- Exercises the libcurl multi handle (csrc/multi.c) for valgrind (tools/memcheck.sh):
-- sk:batch over HTTP/1.1 and HTTP/2 (TLS, ALPN h2), retries, a 401 renewal, a
-- timeout, a refused connection, close with transfers in flight, close twice, GC.
local helpers = require "spec.support.client" -- package paths, the test credentials
local server = require "spec.support.fake"
local proc = require "spec.support.proc"
local core = require "scalekit.core"

local h2_port = proc.random_port()
local srv = server.start{ workers = 1, tls = true,
                          extra_server = "        listen 127.0.0.1:" .. h2_port .. " ssl http2;" }
local ok, err = pcall(function()
  srv:seed{ organizations = 30 }
  local function new(url, extra)
    return helpers.new_client({ url = url, ca_file = srv.ca_file },
                              { retry_backoff = 0.001, retry_backoff_max = 0.002, timeout = 2 }, extra)
  end
  local sk = new(srv.url)
  local list = assert(sk:call("OrganizationService_ListOrganization", { page_size = 30 }))
  local calls = {}
  for i, o in ipairs(list.organizations) do calls[i] = { "OrganizationService_GetOrganization", { id = o.id } } end
  calls[#calls + 1] = { "OrganizationService_GetOrganization", { id = "org_missing" } }
  calls[#calls + 1] = { "OrganizationService_CreateOrganization", { body = { display_name = "mem" } } }

  srv:faults{ { match = "/api/v1/organizations/" .. list.organizations[3].id, revoke = true },
              { match = "/api/v1/organizations/" .. list.organizations[5].id, status = 503 },
              { match = "/api/v1/organizations/" .. list.organizations[7].id, status = 429, retry_after = 0 } }
  local _, errs = sk:batch(calls, { concurrency = 6 })
  assert(errs and errs[31] and not errs[1])

  local h2 = new("https://localhost:" .. h2_port)
  local stats = {}
  local res = h2:batch(calls, { concurrency = 8, stats = stats })
  assert(stats.http2 > 0 and res[1])
  h2:close()
  h2:close()

  local slow = new(srv.url, { timeout = 0.2, max_retries = 0 })
  srv:faults{ { match = "/api/v1/organizations/" .. list.organizations[2].id, delay = 0.5 } }
  _, errs = slow:batch(calls, { concurrency = 4 })
  assert(errs[2] and errs[2].kind == "timeout")
  -- closed from on_result, transfers in flight
  slow:batch(calls, { concurrency = 4, on_result = function(i) if i == 3 then slow:close() end end })
  slow:close()

  local bad = new("http://127.0.0.1:9", { max_retries = 1 })
  _, errs = bad:batch({ calls[1] })
  assert(errs[1])
  bad = nil -- luacheck: ignore 311 (dropped without close: __gc must free it)

  local m = core.multi{ concurrency = 2, timeout = 1 }
  m:add(1, "GET", srv.url .. "/_admin/ping", nil, "json", "tok")
  m:add(2, "POST", srv.url .. "/_admin/ping", "{}", "form")
  m:run(0.001)
  m:close()
  m:close()
  m = core.multi{}
  m:add(1, "GET", "http://127.0.0.1:9/")
  m = nil -- luacheck: ignore 311
  sk:close()
  collectgarbage()
  collectgarbage()
end)
srv:stop()
if not ok then error(err, 0) end
print("memcheck multi: ok")
