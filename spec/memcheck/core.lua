-- Exercises the C core's HTTP and token paths for valgrind (tools/memcheck.sh):
-- calls, retries, 401 renewal, timeouts, refused connections, close and GC.
local helpers = require "spec.support.client" -- package paths, the test credentials
local server = require "spec.support.fake"
local scalekit = require "scalekit"
local core = require "scalekit.core"

local srv = server.start{ workers = 1 }
local ok, err = pcall(function()
  srv:seed{ organizations = 120 }
  local sk = helpers.new_client(srv, { retry_backoff = 0.001, retry_backoff_max = 0.002, timeout = 0.5 })
  for _ = 1, 20 do assert(sk:call("OrganizationService_ListOrganization", { page_size = 10 })) end
  local n = 0
  for _ in sk:each("OrganizationService_ListOrganization", { page_size = 25 }) do n = n + 1 end
  assert(n == 120, n)
  srv:faults{ { match = "/api/", revoke = true }, { match = "/api/", status = 503 },
              { match = "/api/", invalid_json = true }, { match = "/api/", delay = 1 },
              { match = "/api/", close = true } }
  for _ = 1, 5 do sk:call("OrganizationService_ListOrganization", {}) end
  assert(sk:call("OrganizationService_CreateOrganization", { body = { display_name = "mem" } }))
  sk:invalidate_token()
  assert(sk:token())
  sk:close()
  sk:close()

  local bad = assert(scalekit.new{ environment_url = "http://127.0.0.1:9", client_id = "a",
                                   client_secret = "b", max_retries = 1, retry_backoff = 0.001 })
  assert(not bad:call("OrganizationService_ListOrganization", {}))
  bad = nil -- luacheck: ignore 311 (dropped without close on purpose: __gc must free it)

  local h = core.http{ timeout = 1 }
  assert(h:request("GET", srv.url .. "/_admin/ping"))
  pcall(h.request, h, "BREW", srv.url)
  h:close()
  h:close()
  for _ = 1, 20 do
    local v = core.token_vault()
    v:set(string.rep("t", 100), 10, 1)
    assert(v:get())
    v:clear("other")
    v:clear()
  end
  collectgarbage()
  collectgarbage()
end)
srv:stop()
if not ok then error(err, 0) end
print("memcheck core: ok")
