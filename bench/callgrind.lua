-- Instructions per call under callgrind: sk:call("OrganizationService_GetOrganization")
-- (token cached, keep-alive, the answer decoded) against the raw libcurl keep-alive
-- loop (bench/raw_curl) on the same URL, and the C core's http:request alone.
--
-- Each side runs twice under valgrind: WARM calls only (start-up: the process, the
-- token, the connection, first-use caches), then WARM + CALLS; the difference over
-- CALLS is the cost of one call in the steady state. Instruction counts do not depend
-- on the machine's load, so a regression shows on any machine.
--
--   lua5.4 bench/callgrind.lua            starts its own fake Scalekit (bench/callgrind.sh)
--   require("bench.callgrind").measure(url, id, token, {calls =, warm =, lua =})
--                                         from bench/bench.lua, on its running fake
local _M = {}

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("*a")
  local ok, _, code = p:close()
  return out, ok == true or code == 0
end

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- what a function's object file counts as (callgrind_annotate prints "[object]")
local function category(obj, fn)
  local base = obj:match("([^/]+)$") or obj
  if base:find("^libcurl") then return "libcurl" end
  if base:find("cjson") then return "lua-cjson" end  -- before "liblua": liblua5.4-cjson.so
  if base == "core.so" then return "core.so (ours)" end
  if base:find("^lua") or base:find("^libluajit") or base:find("^liblua") then return "Lua interpreter" end
  if base:find("^libc%.so") then
    if fn:find("malloc") or fn:find("free") or fn:find("alloc") or fn:find("tcache") or fn:find("unlink_chunk") then
      return "libc malloc/free"
    end
    if fn:find("mem[cm][po]") or fn:find("memmove") or fn:find("memset") or fn:find("memchr")
      or fn:find("str[a-z]*") then
      return "libc mem*/str*"
    end
    return "libc other"
  end
  if base:find("^ld%-linux") then return "ld.so" end
  if base:find("^libssl") or base:find("^libcrypto") then return "OpenSSL" end
  return "other"
end

_M.CATEGORIES = { "Lua interpreter", "libcurl", "libc malloc/free", "libc mem*/str*", "libc other",
                  "lua-cjson", "core.so (ours)", "OpenSSL", "ld.so", "other" }

-- total Ir and Ir by category of one callgrind run of `cmd`
local function profile(cmd, out_file)
  local out, ok = sh(("valgrind --tool=callgrind --callgrind-out-file=%s %s"):format(q(out_file), cmd))
  if not ok then error("callgrind run failed: " .. cmd .. "\n" .. out) end
  local ann = sh(("callgrind_annotate --inclusive=no --threshold=100 %s"):format(q(out_file)))
  os.remove(out_file)
  local total = ann:match("([%d,]+)%s+%b()%s+PROGRAM TOTALS")
  assert(total, "no totals in callgrind_annotate output")
  local by, sum = {}, 0
  for ir, loc, obj in ann:gmatch("\n%s*([%d,]+)%s+%b()%s+(%S+)%s+%[([^%]]+)%]") do
    local fn = loc:match(":([^:]*)$") or loc
    local c = category(obj, fn)
    local n = tonumber((ir:gsub(",", "")))
    by[c] = (by[c] or 0) + n
    sum = sum + n
  end
  total = tonumber((total:gsub(",", "")))
  -- lines without an object (inlined files of ld.so) count as "other"
  by.other = (by.other or 0) + total - sum
  return total, by
end

-- per-call instructions of `cmd(n)`: (cost(warm + calls) - cost(warm)) / calls
local function per_call(make_cmd, warm, calls, tmp)
  local t0, b0 = profile(make_cmd(warm), tmp .. ".0")
  local t1, b1 = profile(make_cmd(warm + calls), tmp .. ".1")
  local by = {}
  for _, c in ipairs(_M.CATEGORIES) do
    by[c] = ((b1[c] or 0) - (b0[c] or 0)) / calls
  end
  return (t1 - t0) / calls, by
end

--- Measure on a running fake: `url` its base URL, `id` an organization, `token` a
--- valid token (for the raw loop). opts: calls (2000), warm (20), lua ("lua5.4").
--- Returns {call =, core =, floor =, raw =, ratio =, core_ratio =, floor_ratio =,
--- over_floor =, by = {call =, core =, floor =, raw =}} (instructions per call; ratio =
--- raw / call, 1.0 meaning as lean as raw libcurl; floor: core + cjson decode, and
--- over_floor = floor / call, 1.0 meaning the client layer costs nothing).
function _M.measure(url, id, token, opts)
  opts = opts or {}
  local calls, warm, lua = opts.calls or 2000, opts.warm or 20, opts.lua or "lua5.4"
  local tmp = os.tmpname()
  os.remove(tmp)
  local full = url .. "/api/v1/organizations/" .. id
  local r = { by = {} }
  r.raw, r.by.raw = per_call(function(n)
    return ("bench/raw_curl %s %s 0 %d"):format(q(full), q(token), n)
  end, warm, calls, tmp)
  r.call, r.by.call = per_call(function(n)
    return ("%s bench/cg_call.lua %s %s 0 %d call"):format(lua, q(url), q(id), n)
  end, warm, calls, tmp)
  if opts.core ~= false then
    r.core, r.by.core = per_call(function(n)
      return ("%s bench/cg_call.lua %s %s 0 %d core"):format(lua, q(url), q(id), n)
    end, warm, calls, tmp)
    r.core_ratio = r.raw / r.core
    -- the floor of any client that hands back Lua tables: the C core plus one
    -- lua-cjson decode of the same answer, with no client around them
    r.floor, r.by.floor = per_call(function(n)
      return ("%s bench/cg_call.lua %s %s 0 %d decode"):format(lua, q(url), q(id), n)
    end, warm, calls, tmp)
    r.floor_ratio = r.raw / r.floor
    r.over_floor = r.floor / r.call
  end
  r.ratio = r.raw / r.call
  r.calls = calls
  return r
end

--- The breakdown as text lines (thousands of instructions per call).
function _M.report(r)
  local lines = {}
  local cols = { "call", "floor", "core", "raw" }
  local head = ("%-20s"):format("k instr/call")
  for _, c in ipairs(cols) do
    local names = { call = "sk:call", floor = "+decode", core = "http:req", raw = "raw" }
    if r.by[c] then head = head .. ("%10s"):format(names[c]) end
  end
  lines[#lines + 1] = head
  for _, cat in ipairs(_M.CATEGORIES) do
    local line, any = ("%-20s"):format(cat), false
    for _, c in ipairs(cols) do
      if r.by[c] then
        local v = r.by[c][cat] or 0
        if math.abs(v) >= 50 then any = true end
        line = line .. ("%10.1f"):format(v / 1000)
      end
    end
    if any then lines[#lines + 1] = line end
  end
  local tl = ("%-20s"):format("total")
  for _, c in ipairs(cols) do
    if r[c] then tl = tl .. ("%10.1f"):format(r[c] / 1000) end
  end
  lines[#lines + 1] = tl
  return lines
end

if not pcall(debug.getlocal, 4, 1) then
  -- run as a script: a fake of its own
  package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
  package.cpath = "build/?.so;" .. package.cpath
  local server = require "spec.support.fake"
  local scalekit = require "scalekit"
  local srv = server.start{ workers = 1 }
  local ok, err = pcall(function()
    local sk = assert(scalekit.new{ environment_url = srv.url, client_id = "skc_test",
                                    client_secret = "test_secret_value" })
    local org = assert(sk.organizations:create{ display_name = "Bench Corp", external_id = "bench",
                                                metadata = { tier = "gold", region = "eu" } })
    local token = assert(sk:token())
    local r = _M.measure(srv.url, org.organization.id, token, {
      calls = tonumber(os.getenv("BENCH_CG_CALLS") or "2000"),
      lua = os.getenv("BENCH_LUA") or "lua5.4",
    })
    sk:close()
    print(("callgrind, %d calls: sk:call %.1f k instr/call, http:request + cjson.decode %.1f k, "
           .. "http:request %.1f k, raw libcurl %.1f k; ratio %.2f (decode floor %.2f, http:request %.2f)")
          :format(r.calls, r.call / 1000, r.floor / 1000, r.core / 1000, r.raw / 1000, r.ratio,
                  r.floor_ratio, r.core_ratio))
    for _, l in ipairs(_M.report(r)) do print(l) end
  end)
  srv:stop()
  if not ok then
    io.stderr:write("callgrind: ", tostring(err), "\n")
    os.exit(1)
  end
end

return _M
