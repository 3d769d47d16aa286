-- `make bench`, latency part: the job a real network makes latency-bound. A fake
-- Scalekit whose answers take LATENCY (20 ms: nginx + ngx.sleep), TLS, HTTP/1.1 on one
-- port and HTTP/2 (ALPN h2) on another; GetOrganization calls:
--   * plain Lua: sk:call sequential, then sk:batch at 8 / 32 / 64 (libcurl multi),
--     over HTTP/1.1 and over HTTP/2;
--   * OpenResty: the same in an nginx content handler (cosockets + ngx.thread);
--   * the official Node SDK (bench/node/, `npm ci` there first) with Promise.all at
--     the same concurrency against a gRPC fake made from the SDK's own service
--     descriptors (@connectrpc/connect-node), also answering in LATENCY;
--   * Lua memory of one batch of 10,000 calls.
-- Each measure lasts about BENCH_LATENCY_SECONDS (1). Skips Node when node or
-- bench/node/node_modules is missing (and says so).
package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local server = require "spec.support.fake"
local proc = require "spec.support.proc"
local scalekit = require "scalekit"
local core = require "scalekit.core"
local cjson = require "cjson"

local SECONDS = tonumber(os.getenv("BENCH_LATENCY_SECONDS") or "1")
local LATENCY = tonumber(os.getenv("BENCH_LATENCY") or "0.02")
local MEMORY_CALLS = tonumber(os.getenv("BENCH_MEMORY_CALLS") or "10000")
local LEVELS = { 8, 32, 64 }
local GET = "OrganizationService_GetOrganization"
local quote, run, sh = proc.quote, proc.run, proc.sh

local rows = {}
local function row(name, value, unit, note)
  rows[#rows + 1] = { name, value, unit, note or "" }
  io.stderr:write(("  %-52s %10s %-8s %s\n"):format(name, value, unit, note or ""))
end
local function fmt(v) return ("%.0f"):format(v) end

local h2_port = proc.random_port()
local srv = server.start{
  workers = 1, tls = true,
  extra_server = table.concat({
    "        listen 127.0.0.1:" .. h2_port .. " ssl http2;",
    "        access_by_lua_block {",
    "            if not ngx.var.uri:find('^/_admin/') then ngx.sleep(" .. LATENCY .. ") end",
    "        }",
  }, "\n"),
}
local h1_url, h2_url = srv.url, "https://localhost:" .. h2_port
local app, node_pid

local function stop_all()
  if node_pid then sh("kill " .. node_pid) end
  if app then app:stop() end
  srv:stop()
end

local ok, err = pcall(function()
  srv:seed{ organizations = 64 }
  local function new(url)
    return assert(scalekit.new{ environment_url = url, client_id = "skc_test",
                                client_secret = "test_secret_value", ca_file = srv.ca_file })
  end
  local tokens0 = srv:stats().tokens_issued
  local sk1 = new(h1_url)
  local ids = {}
  for i, o in ipairs(assert(sk1:call("OrganizationService_ListOrganization", { page_size = 64 })).organizations) do
    ids[i] = o.id
  end
  local function calls(n)
    local c = {}
    for i = 1, n do c[i] = { GET, { id = ids[(i - 1) % #ids + 1] } } end
    return c
  end

  -- plain Lua ------------------------------------------------------------
  local t0, n = core.monotonic(), 0
  repeat
    n = n + 1
    assert(sk1:call(GET, { id = ids[(n - 1) % #ids + 1] }))
  until core.monotonic() - t0 >= SECONDS
  local seq = n / (core.monotonic() - t0)
  row("plain Lua: sk:call sequential", fmt(seq), "calls/s", ("%d calls, %.0f ms each"):format(n, 1000 / seq))
  local sk2 = new(h2_url)
  local speedup = {}
  local batch_tokens = 0
  for _, proto in ipairs({ { "HTTP/1.1", sk1 }, { "HTTP/2", sk2 } }) do
    for _, c in ipairs(LEVELS) do
      local list = calls(math.floor(c * SECONDS / LATENCY + 0.5))
      local stats = {}
      t0 = core.monotonic()
      local res, errs = proto[2]:batch(list, { concurrency = c, stats = stats })
      local dt = core.monotonic() - t0
      assert(errs == nil and #res == #list, "batch failed")
      local rate = #list / dt
      batch_tokens = batch_tokens + stats.tokens
      speedup[proto[1] .. c] = rate / seq
      row(("plain Lua: sk:batch %s, concurrency %d"):format(proto[1], c), fmt(rate), "calls/s",
          ("%.1fx sequential; %d connections, %d over HTTP/2"):format(rate / seq, stats.connects, stats.http2))
    end
  end
  row("token requests, plain Lua (2 clients, all runs)", tostring(srv:stats().tokens_issued - tokens0), "",
      "one per client: fetched once, reused by every batch")

  row("token requests made by the 6 batches themselves", tostring(batch_tokens), "",
      "HTTP/2 client's first token, fetched once for its batch")

  -- memory: one batch of MEMORY_CALLS calls -----------------------------
  local list = calls(MEMORY_CALLS)
  collectgarbage()
  collectgarbage()
  local base = collectgarbage("count")
  local peak = 0
  t0 = core.monotonic()
  local _, errs = sk2:batch(list, { concurrency = 64, on_result = function(i)
    if i % 250 == 0 then peak = math.max(peak, collectgarbage("count") - base) end
  end })
  assert(errs == nil)
  local dt = core.monotonic() - t0
  row(("Lua memory, %d calls, on_result (nothing kept)"):format(MEMORY_CALLS), fmt(peak), "KiB",
      ("peak above the calls table; %.0f calls/s"):format(MEMORY_CALLS / dt))
  collectgarbage()
  collectgarbage()
  base = collectgarbage("count")
  local results = sk2:batch(list, { concurrency = 64 })
  collectgarbage()
  local kept = collectgarbage("count") - base
  assert(#results == MEMORY_CALLS)
  results = nil -- luacheck: ignore 311
  collectgarbage()
  collectgarbage()
  row(("Lua memory, %d calls, results kept"):format(MEMORY_CALLS), fmt(kept), "KiB",
      ("%.2f KiB per decoded result; %.0f KiB left after dropping them"):format(kept / MEMORY_CALLS,
        math.max(0, collectgarbage("count") - base)))
  sk1:close()
  sk2:close()

  -- OpenResty ------------------------------------------------------------
  local launcher = require "spec.support.app"
  app = launcher.start{
    workers = 1,
    http = "    lua_ssl_trusted_certificate " .. srv.ca_file .. ";\n    lua_ssl_verify_depth 3;\n",
    server = "        location = /t/batch { content_by_lua_block { require(\"batch_app\").run() } }\n",
  }
  assert(sh("cp spec/integration/batch_app.lua " .. quote(app.prefix .. "/app/batch_app.lua")
    .. " && chmod 644 " .. quote(app.prefix .. "/app/batch_app.lua")))
  local idlist = table.concat(ids, ",")
  local function app_run(q)
    local out, status = app:get("/t/batch?url=" .. h1_url .. "&ids=" .. idlist .. "&" .. q)
    assert(status == 200 and type(out) == "table" and out.error_count == 0,
           "app batch failed: " .. (type(out) == "table" and cjson.encode(out) or tostring(out)))
    return out
  end
  local tokens1 = srv:stats().tokens_issued
  local out = app_run("mode=sequential&n=" .. math.floor(SECONDS / LATENCY + 0.5))
  local oseq = out.n / out.elapsed
  row("OpenResty: sk:call sequential", fmt(oseq), "calls/s", ("%d calls"):format(out.n))
  local ngx_rate = {}
  for _, c in ipairs(LEVELS) do
    out = app_run(("concurrency=%d&n=%d"):format(c, math.floor(c * SECONDS / LATENCY + 0.5)))
    local rate = out.n / out.elapsed
    ngx_rate[c] = rate
    row(("OpenResty: sk:batch cosockets, concurrency %d"):format(c), fmt(rate), "calls/s",
        ("%.1fx sequential; %d new connections"):format(rate / oseq, out.stats.connects))
  end
  row("token requests, OpenResty (one client per request)", tostring(srv:stats().tokens_issued - tokens1),
      "", ("%d requests to the app"):format(#LEVELS + 1))

  -- Node SDK ---------------------------------------------------------------
  local have_node = run("command -v node >/dev/null 2>&1 && test -d bench/node/node_modules/@scalekit-sdk"
    .. " && echo yes"):find("yes")
  if not have_node then
    row("Node SDK", "-", "", "skipped: node or bench/node/node_modules missing (cd bench/node && npm ci)")
  else
    local port = proc.random_port()
    local log = srv.prefix .. "/node_fake.log"
    node_pid = tonumber(run(("cd bench/node && (node fake.js %d %s %s %d > %s 2>&1 & echo $!)"):format(
      port, quote(srv.cert_file), quote(srv.key_file), math.floor(LATENCY * 1000 + 0.5), quote(log))):match("%d+"))
    for _ = 1, 100 do
      if (proc.read_file(log) or ""):find("ready") then break end
      proc.sleep(0.05)
    end
    local text, rc = run(("cd bench/node && NODE_EXTRA_CA_CERTS=%s node client.js https://localhost:%d %s %s 2>&1")
      :format(quote(srv.ca_file), port, SECONDS, table.concat(LEVELS, ",")))
    assert(rc == 0, "node client failed: " .. text)
    local res = cjson.decode(text:match("%[.*%]"))
    local stats = cjson.decode((run(("curl -s --cacert %s https://localhost:%d/_stats"):format(
      quote(srv.ca_file), port))))
    local nseq
    for _, r in ipairs(res) do
      local conc = math.floor(r.concurrency)
      if conc == 0 then
        nseq = r.rate
        row("Node SDK (gRPC): sequential await", fmt(r.rate), "calls/s", "")
      else
        local lua_rate = speedup["HTTP/2" .. conc] * seq
        row(("Node SDK (gRPC): Promise.all, concurrency %d"):format(conc), fmt(r.rate), "calls/s",
            ("%.1fx sequential; Lua batch (HTTP/2) %.2fx, OpenResty %.2fx of it"):format(
              r.rate / nseq, lua_rate / r.rate, ngx_rate[conc] / r.rate))
      end
    end
    row("Node SDK: token requests / connections", ("%d / %d"):format(stats.tokens, stats.connections or 0), "",
        "connections: TLS, incl. the token's HTTP/1.1 one")
  end
end)
stop_all()
if not ok then
  io.stderr:write("bench latency: ", tostring(err), "\n")
  os.exit(1)
end

print(("latency bench: every answer takes %.0f ms (TLS, loopback)"):format(LATENCY * 1000))
print(("%-52s %10s %-8s %s"):format("benchmark", "value", "unit", "note"))
print(("-"):rep(110))
for _, r in ipairs(rows) do
  print(("%-52s %10s %-8s %s"):format(r[1], r[2], r[3], r[4]))
end
