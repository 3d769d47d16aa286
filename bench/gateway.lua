-- `make bench` (bench/run.sh): sk:protect with and without the verified-token cache,
-- in an OpenResty app (2 workers, LuaJIT core) against the fake Scalekit:
--   1. calls per second of protect inside one request (the cost of protect itself)
--   2. HTTP requests per second of a protected location, driven by curl --parallel
--      over keep-alive connections (the client's cost is in the number too: compare
--      the two lines, not the absolute value)
package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local server = require "spec.support.fake"
local launcher = require "spec.support.app"
local proc = require "spec.support.proc"
local scenarios = require "spec.support.scenarios"
local cjson = require "cjson"
local core = require "scalekit.core"

local CALLS = tonumber(os.getenv("BENCH_PROTECT_CALLS") or "20000")
local REQUESTS = tonumber(os.getenv("BENCH_PROTECT_REQUESTS") or "4000")
local quote = proc.quote

local srv = server.start{ workers = 1, oidc = true }
local app
local ok, err = pcall(function()
  local client_id = srv.client_id or scenarios.CLIENT_ID
  local function loc(path, case, content)
    return "        location = " .. path .. " { set $gw_case " .. case .. ";"
      .. " access_by_lua_block { require(\"gateway_app\").protect() }"
      .. " content_by_lua_block { require(\"gateway_app\")." .. content .. "() } }\n"
  end
  app = launcher.start{
    workers = 2, reuseport = true,
    http = "    lua_shared_dict scalekit 1m;\n    lua_shared_dict app_results 1m;\n"
      .. "    init_by_lua_block { package.path = \"" .. proc.CWD .. "/spec/support/?.lua;\" .. package.path\n"
      .. "      require(\"gateway_app\").init(\"" .. srv.url .. "\", \"" .. client_id .. "\", \""
      .. (srv.client_secret or scenarios.CLIENT_SECRET) .. "\") }",
    server = loc("/cached", "basic", "claims") .. loc("/uncached", "nocache", "claims")
      .. "        location = /loop { content_by_lua_block { require(\"gateway_app\").protect_loop() } }\n",
  }
  local now = os.time()
  local token = srv:sign_jwt({ iss = srv.url, aud = { client_id }, sub = "usr_bench", iat = now, nbf = now,
                               exp = now + 3600, scope = "openid" })
  local auth = "Authorization: Bearer " .. token

  local function loop(case)
    -- warm up (JWKS fetched, cache filled), then measure
    proc.run("curl -s -H " .. quote(auth) .. " " .. quote(app.url .. "/loop?n=100&case=" .. case))
    local out = proc.run("curl -s -H " .. quote(auth) .. " "
      .. quote(app.url .. "/loop?n=" .. CALLS .. "&case=" .. case))
    local doc = cjson.decode(out)
    return doc.n / doc.seconds
  end

  local function http(path)
    proc.run("curl -s -o /dev/null -H " .. quote(auth) .. " " .. quote(app.url .. path))
    local t0 = core.monotonic()
    local out = proc.run("curl -s --no-progress-meter --parallel --parallel-max 16 -o /dev/null"
      .. " -w '%{http_code}\\n' -H " .. quote(auth) .. " " .. quote(app.url .. path .. "?i=[1-" .. REQUESTS .. "]"))
    local wall = core.monotonic() - t0
    local good = select(2, out:gsub("200", ""))
    assert(good == REQUESTS, "only " .. good .. " of " .. REQUESTS .. " requests answered 200")
    return REQUESTS / wall
  end

  local cached, uncached = loop("basic"), loop("nocache")
  local h_cached, h_uncached = http("/cached"), http("/uncached")
  print(("%-44s %12.0f calls/s"):format("protect in-process, verified-token cache", cached))
  print(("%-44s %12.0f calls/s"):format("protect in-process, no cache (RS256 verify)", uncached))
  print(("%-44s %12.1f x"):format("  cache speed-up", cached / uncached))
  print(("%-44s %12.0f req/s"):format("protect over HTTP (2 workers), cache", h_cached))
  print(("%-44s %12.0f req/s"):format("protect over HTTP (2 workers), no cache", h_uncached))
  print(("%-44s %12d"):format("JWKS fetches at the fake", srv:stats().jwks_fetches))
end)
if app then app:stop() end
srv:stop()
if not ok then error(err, 0) end
