-- valgrind (tools/memcheck.sh) over the fault paths of the C core: refused, DNS
-- failure, connect timeout, no answer, closed mid-body, truncated chunked, over
-- max_body_size, garbage, oversized headers, HTTP/1.0, 1xx, TLS refusals, redirects,
-- 429 storms, broken JSON; the same handle / client reused after each.
local helpers = require "spec.support.client" -- package paths, the test credentials
local server = require "spec.support.fake"
local rawserver = require "spec.support.raw"
local scalekit = require "scalekit"
local core = require "scalekit.core"

local srv = server.start{ workers = 1 }
local rs = rawserver.start{ tls = true }
local bh = rawserver.unaccepted{ seconds = 120 }

local ok, err = pcall(function()
  -- core.http directly: every failure kind, then a success on the same handle
  local h = core.http{ timeout = 2, connect_timeout = 1, max_body_size = 64 * 1024, ca_file = rs.ca_file }
  -- the successes get a long limit of their own (a raw request's timeout): a TLS
  -- handshake under valgrind on a busy machine can take more than the 2 s the
  -- expected timeouts need
  local PATIENT = { timeout = 30 }
  local function ok_status(url)
    return (h:request("GET", url, nil, "raw", nil, PATIENT))
  end
  -- the TLS refusals get a patient handle of their own too: a refused handshake
  -- under valgrind on a loaded machine can outlast 2 s and read as a timeout
  local patient = core.http{ timeout = 30, connect_timeout = 30, ca_file = rs.ca_file }
  local function expect(kind, url, handle)
    local st, k = (handle or h):request("GET", url, nil, "json", "tok")
    assert(st == nil and k == kind, url .. ": " .. tostring(st) .. " " .. tostring(k))
    assert(ok_status(rs.url .. "/raw/ok") == 200)
  end
  expect("network", "http://127.0.0.1:1/")
  expect("network", "https://" .. string.rep("a", 64) .. ".invalid/")
  expect("timeout", bh.url .. "/raw/ok")
  expect("timeout", rs.url .. "/raw/never")
  expect("network", rs.url .. "/raw/close_mid_body")
  expect("network", rs.url .. "/raw/truncated_chunked")
  expect("network", rs.url .. "/raw/empty_reply")
  expect("network", rs.url .. "/raw/big")
  expect("network", rs.url .. "/raw/garbage")
  expect("network", rs.url .. "/raw/huge_header")
  expect("tls", rs.tls_url.expired .. "/raw/ok", patient)
  expect("tls", rs.tls_url.wrong_host .. "/raw/ok", patient)
  expect("tls", rs.tls_url.self_signed .. "/raw/ok", patient)
  expect("network", "file:///etc/passwd")
  assert(ok_status(rs.url .. "/raw/http10") == 200)
  assert(ok_status(rs.url .. "/raw/continue") == 200)
  assert(ok_status(rs.url .. "/raw/long_request_id") == 500)
  assert(h:request("GET", rs.tls_url.good .. "/raw/ok", nil, "raw", "tok2", PATIENT) == 200)
  -- a new bearer on every call: the header list is rebuilt and the old one wiped
  for i = 1, 5 do assert(h:request("GET", rs.url .. "/raw/ok", nil, "raw", "tok" .. i, PATIENT) == 200) end
  h:close()
  h:close()
  patient:close()

  -- the client over the fake: faults of the fault queue, then a good call
  local sk = helpers.new_client(srv, { retry_backoff = 0.001, retry_backoff_max = 0.002, timeout = 2,
                                      max_retries = 2 })
  assert(sk:token())
  srv:faults{
    { match = "/api/", status = 429, count = 3 },
    { match = "/api/", status = 302, body = "", headers = { Location = rs.url .. "/raw/ok" } },
    { match = "/api/", invalid_json = true },
    { match = "/api/", status = 500, body = "<html>" },
    { match = "/api/", empty_body = true },
    { match = "/api/", chunked = true, chunk_size = 7 },
    { match = "/api/", close = true, count = 2 },
  }
  for _ = 1, 8 do sk:call("OrganizationService_ListOrganization", {}) end
  srv:clear_faults()
  assert(sk:call("OrganizationService_ListOrganization", {}))
  sk:close()

  -- the client over the raw server
  local rk = assert(scalekit.new{
    environment_url = rs.url, client_id = "a", client_secret = "b", timeout = 1, max_retries = 1,
    retry_backoff = 0.001, retry_backoff_max = 0.002, max_body_size = 4096,
  })
  for _, name in ipairs({ "close_mid_body", "truncated_chunked", "big", "trickle", "bad_length", "http11_close" }) do
    rk.organizations:get(name)
  end
  assert(rk.organizations:get("ok"))
  rk = nil -- luacheck: ignore 311 (collected without close: __gc frees it)

  -- TLS through a client: refused, then trusted
  for _, c in ipairs({ { "expired", rs.ca_file }, { "self_signed", nil }, { "self_signed", rs.self_signed_file } }) do
    local tk = assert(scalekit.new{ environment_url = rs.tls_url[c[1]], client_id = "a", client_secret = "b",
                                    ca_file = c[2], max_retries = 0 })
    tk:token()
    tk:close()
  end
  collectgarbage()
  collectgarbage()
end)
bh:stop()
rs:stop()
srv:stop()
if not ok then error(err, 0) end
print("memcheck faults: ok")
