-- `make bench`: calls per second of sk:call beside a raw libcurl loop on the same
-- local server in the same run, the same under callgrind (instructions per call,
-- bench/callgrind.lua: independent of the machine's load), the naive token-per-call
-- approach, and pagination throughput and memory. Timings are noisy: the ratio is
-- what to read.
--   BENCH_SECONDS, BENCH_ROUNDS    length and number of the interleaved rounds
--   BENCH_CG_CALLS                 calls under callgrind (2000; 0 skips it)
--   BENCH_ONLY=call                the sk:call rows only (no naive, no paging)
package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
package.cpath = (rawget(_G, "jit") and "build-luajit/?.so;" or "build/?.so;") .. package.cpath

local server = require "spec.support.fake"
local scalekit = require "scalekit"
local core = require "scalekit.core"

local SECONDS = tonumber(os.getenv("BENCH_SECONDS") or "1")
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or "9")
local PAGE_ITEMS = tonumber(os.getenv("BENCH_PAGE_ITEMS") or "100000")
local CG_CALLS = tonumber(os.getenv("BENCH_CG_CALLS") or "2000")
local ONLY_CALL = os.getenv("BENCH_ONLY") == "call"

local srv = server.start{ workers = 1 }
local function new_client(url)
  return assert(scalekit.new{ environment_url = url or srv.url, client_id = "skc_test",
                              client_secret = "test_secret_value" })
end

local rows, notes = {}, {}
local function row(name, value, unit, note)
  rows[#rows + 1] = { name, value, unit, note or "" }
end

local ok, err = pcall(function()
  local sk = new_client()
  local org = assert(sk.organizations:create{ display_name = "Bench Corp", external_id = "bench",
                                              metadata = { tier = "gold", region = "eu" } })
  local id = org.organization.id
  local token = assert(sk:token())
  local url = srv.url .. "/api/v1/organizations/" .. id

  local function raw()
    local p = assert(io.popen(("bench/raw_curl '%s' '%s' %s"):format(url, token, SECONDS)))
    local out = p:read("*a")
    p:close()
    local rate, size = out:match("^(%S+) (%d+)")
    assert(rate, "raw_curl failed: " .. out)
    return tonumber(rate), tonumber(size)
  end
  -- calls per second of `one` (one call; false when it failed) over SECONDS
  local function rate(one)
    local calls, t0 = 0, core.monotonic()
    local t
    repeat
      for _ = 1, 50 do
        if not one() then error("call failed") end
      end
      calls = calls + 50
      t = core.monotonic()
    until t - t0 >= SECONDS
    return calls / (t - t0)
  end
  local params = { id = id }
  local function module_rate()
    return rate(function() return sk:call("OrganizationService_GetOrganization", params) end)
  end
  -- the C core alone: one attempt, body returned as a string, nothing decoded
  local http = sk._s.transport.http
  local function core_rate()
    return rate(function() return http:request("GET", url, nil, "json", token) end)
  end
  -- the floor of any client that returns Lua tables: the core and one lua-cjson decode
  local decode = require("scalekit.json").decode
  local function floor_rate()
    return rate(function()
      local _, body = http:request("GET", url, nil, "json", token)
      return body and decode(body)
    end)
  end

  -- Interleave short rounds so that the four loops see the same machine weather,
  -- and report medians: of the rates, and of the per-round ratios (robust to a VM
  -- neighbour stealing one round).
  local raws, mods, cores, floors, rmod, rcore, rfloor, size = {}, {}, {}, {}, {}, {}, {}, 0
  local before = srv:stats().tokens_issued
  for i = 1, ROUNDS do
    local r, s = raw()
    size = s
    local m, c, f = module_rate(), core_rate(), floor_rate()
    raws[i], mods[i], cores[i], floors[i] = r, m, c, f
    rmod[i], rcore[i], rfloor[i] = m / r, c / r, f / r
  end
  local function median(t)
    table.sort(t)
    local n = #t
    return n % 2 == 1 and t[(n + 1) / 2] or (t[n / 2] + t[n / 2 + 1]) / 2
  end
  local best_raw, best_mod, best_core, best_floor = median(raws), median(mods), median(cores), median(floors)
  local ratio_mod, ratio_core, ratio_floor = median(rmod), median(rcore), median(rfloor)
  local tokens = srv:stats().tokens_issued - before
  row("raw libcurl keep-alive loop (C)", ("%.0f"):format(best_raw), "calls/s", size .. "-byte answer")
  row("scalekit.core http:request (C core alone)", ("%.0f"):format(best_core), "calls/s",
      ("ratio %.2f of raw libcurl"):format(ratio_core))
  row("http:request + cjson.decode (the floor)", ("%.0f"):format(best_floor), "calls/s",
      ("ratio %.2f of raw libcurl"):format(ratio_floor))
  row("sk:call GetOrganization (JSON decoded)", ("%.0f"):format(best_mod), "calls/s",
      ("ratio %.2f of raw libcurl"):format(ratio_mod))
  row("token requests during the sk:call runs", tostring(tokens), "", "cached token reused")

  if CG_CALLS > 0 and os.execute("valgrind --version >/dev/null 2>&1") then
    local cg = require("bench.callgrind").measure(srv.url, id, token, { calls = CG_CALLS })
    row("callgrind: raw libcurl loop", ("%.1f"):format(cg.raw / 1000), "k instr", "per call, start-up subtracted")
    row("callgrind: http:request (C core alone)", ("%.1f"):format(cg.core / 1000), "k instr",
        ("ratio %.2f of raw libcurl"):format(cg.core_ratio))
    row("callgrind: http:request + cjson.decode", ("%.1f"):format(cg.floor / 1000), "k instr",
        ("ratio %.2f of raw libcurl: the floor of a decoding client"):format(cg.floor_ratio))
    row("callgrind: sk:call GetOrganization", ("%.1f"):format(cg.call / 1000), "k instr",
        ("ratio %.2f of raw libcurl (%d calls; wall-clock ratio %.2f)"):format(cg.ratio, cg.calls, ratio_mod))
    notes[#notes + 1] = ("callgrind: the client layer over the decode floor: %.1f k instructions per call "
      .. "(sk:call at %.2f of the floor)"):format((cg.call - cg.floor) / 1000, cg.over_floor)
    notes[#notes + 1] = "callgrind by library, thousands of instructions per call:"
    for _, l in ipairs(require("bench.callgrind").report(cg)) do notes[#notes + 1] = "  " .. l end
    -- the same on LuaJIT (OpenResty's runtime, and luajit2's), when its core is built
    local built = io.open("build-luajit/scalekit/core.so")
    if built then built:close() end
    if built and os.execute("luajit -v >/dev/null 2>&1") then
      local jcg = require("bench.callgrind").measure(srv.url, id, token, { calls = CG_CALLS, lua = "luajit" })
      row("callgrind, LuaJIT: http:request + decode", ("%.1f"):format(jcg.floor / 1000), "k instr",
          ("ratio %.2f of raw libcurl (%.1f k)"):format(jcg.floor_ratio, jcg.raw / 1000))
      row("callgrind, LuaJIT: sk:call GetOrganization", ("%.1f"):format(jcg.call / 1000), "k instr",
          ("ratio %.2f of raw libcurl; client layer %.1f k"):format(jcg.ratio, (jcg.call - jcg.floor) / 1000))
    end
  end
  if ONLY_CALL then
    sk:close()
    return
  end

  -- the naive way of Scalekit's REST examples: a token and a connection per call
  local calls, t0 = 0, core.monotonic()
  while core.monotonic() - t0 < SECONDS do
    local c = new_client()
    assert(c:call("OrganizationService_GetOrganization", { id = id }))
    c:close()
    calls = calls + 1
  end
  local naive = calls / (core.monotonic() - t0)
  row("naive: new token + connection per call", ("%.0f"):format(naive), "calls/s",
      ("sk:call is %.1fx faster"):format(best_mod / naive))
  sk:close()

  -- pagination: items per second and Lua memory over PAGE_ITEMS records, generated
  -- page by page by bench/pages.lua (the fake keeps only what the specs need)
  local pages = require("bench.pages").start(PAGE_ITEMS)
  sk = new_client(pages.url)
  collectgarbage()
  collectgarbage()
  local base = collectgarbage("count")
  local peak, n = 0, 0
  t0 = core.monotonic()
  for _ in sk.organizations:each{ page_size = 100 } do
    n = n + 1
    if n % 1000 == 0 then
      local used = collectgarbage("count") - base
      if used > peak then peak = used end
    end
  end
  local dt = core.monotonic() - t0
  row("each() over " .. n .. " organizations", ("%.0f"):format(n / dt), "items/s",
      ("%d pages of 100"):format(math.ceil(n / 100)))
  row("Lua memory above baseline while paging", ("%.0f"):format(peak), "KiB", "peak, sampled every 1000 items")
  sk:close()
  pages:stop()
end)
srv:stop()
if not ok then
  io.stderr:write("bench: ", tostring(err), "\n")
  os.exit(1)
end

print(("%-44s %12s %-8s %s"):format("benchmark", "value", "unit", "note"))
print(("-"):rep(100))
for _, r in ipairs(rows) do
  print(("%-44s %12s %-8s %s"):format(r[1], r[2], r[3], r[4]))
end
if #notes > 0 then
  print()
  for _, l in ipairs(notes) do print(l) end
end
