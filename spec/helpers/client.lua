-- Shared bits of the client specs: paths for both runtimes and a client factory
-- pointed at a running fake Scalekit.
local _M = {}

local jit = rawget(_G, "jit")
package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
package.cpath = (jit and "build-luajit/?.so;" or "build/?.so;") .. package.cpath

_M.CLIENT_ID = "skc_test"
_M.CLIENT_SECRET = "test_secret_value"

--- A client for `srv` with fast retries; `overrides` replaces any option.
function _M.new_client(srv, overrides)
  local opts = {
    environment_url = srv.url,
    client_id = _M.CLIENT_ID,
    client_secret = _M.CLIENT_SECRET,
    retry_backoff = 0.01,
    retry_backoff_max = 0.05,
    ca_file = srv.ca_file,
  }
  for k, v in pairs(overrides or {}) do opts[k] = v end
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

return _M
