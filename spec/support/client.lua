-- Shared bits of the specs: package paths for this runtime, the test credentials (the
-- one place they are written) and the one client factory. Also loaded inside the
-- OpenResty test app (spec/support/scenarios.lua): nothing here does I/O at load time.
local _M = {}

-- The interpreter running the specs and the build directory of its C core (Makefile).
local RUNTIMES = {
  ["Lua 5.4"] = { "lua5.4", "build" },
  ["Lua 5.3"] = { "lua5.3", "build-lua53" },
  ["Lua 5.1"] = { "lua5.1", "build-lua51" },
}
local runtime = rawget(_G, "jit") and { "luajit", "build-luajit" } or RUNTIMES[_VERSION]
_M.LUA, _M.BUILD = runtime[1], runtime[2]
if not rawget(_G, "ngx") then
  package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
  package.cpath = _M.BUILD .. "/?.so;" .. package.cpath
end

_M.CLIENT_ID = "skc_test"
_M.CLIENT_SECRET = "test_secret_value"

--- A client for `srv` ({url =, ca_file =}: a fake, or any base URL) with fast
--- retries; `overrides` and then `extra` replace any option.
function _M.new_client(srv, overrides, extra)
  local opts = {
    environment_url = srv.url,
    client_id = _M.CLIENT_ID,
    client_secret = _M.CLIENT_SECRET,
    retry_backoff = 0.01,
    retry_backoff_max = 0.05,
    ca_file = srv.ca_file,
  }
  for k, v in pairs(overrides or {}) do opts[k] = v end
  for k, v in pairs(extra or {}) do opts[k] = v end
  return assert(require("scalekit").new(opts))
end

--- Monotonic seconds, for measuring elapsed time (never asserted as absolutes).
function _M.clock()
  return require("scalekit.core").monotonic()
end

--- Count the fake server's requests whose path matches `pattern`.
function _M.count_requests(srv, pattern)
  local n = 0
  for _, r in ipairs(srv:requests()) do
    if (r.path or r.uri):find(pattern) then n = n + 1 end
  end
  return n
end

--- s with every %XX decoded.
function _M.unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- The fields of a query string (names and values decoded); raises on a repeated name,
--- which no URL of the client or the fake may carry.
function _M.parse_query(q)
  local t = {}
  for k, v in (q or ""):gmatch("([^&=]+)=([^&]*)") do
    k = _M.unescape(k)
    if t[k] ~= nil then error("repeated " .. k, 2) end
    t[k] = _M.unescape(v)
  end
  return t
end

--- The query fields of a URL (none when it has no "?").
function _M.url_query(url)
  return _M.parse_query(url:match("%?(.*)$"))
end

--- Calls fn(resource, verb, spec) for every method of the resource map, sorted.
function _M.each_method(fn)
  local map = require("scalekit.resources").MAP
  local names = {}
  for r in pairs(map) do names[#names + 1] = r end
  table.sort(names)
  for _, r in ipairs(names) do
    local verbs = {}
    for v in pairs(map[r]) do verbs[#verbs + 1] = v end
    table.sort(verbs)
    for _, v in ipairs(verbs) do fn(r, v, map[r][v]) end
  end
end

return _M
