-- luacheck: read globals ngx
--- scalekit inside OpenResty: the environment a session is built with there.
--
-- scalekit.new() calls environment(cfg) when it runs inside ngx_lua. Nothing else
-- changes for the user: the same client works in every phase that allows I/O
-- (scalekit/ngx/phase.lua), sleeps without blocking the worker, fetches its token
-- and the JWKS once per worker or, with `shared_dict`, once for all workers
-- (scalekit/ngx/flight.lua), and keeps them in that dict (scalekit/ngx/store.lua).
-- Without `shared_dict` the C token vault is the store and the flight is per worker.
local core = require "scalekit.core"
local errors = require "scalekit.errors"
local curl = require "scalekit.transport.curl"
local cosocket = require "scalekit.transport.cosocket"
local phase = require "scalekit.ngx.phase"
local flight = require "scalekit.ngx.flight"
local store = require "scalekit.ngx.store"

local _M = {}

local ngx = ngx

_M.token_id = store.token_id

--- The transport, store, sleep, flight and JWKS cache of a client in OpenResty.
---@param cfg table validated options of scalekit.new
---@param memory_cache fun(): table the per-client JWKS cache (without a shared dict)
---@return table|nil env
---@return scalekit.Error|nil err
function _M.environment(cfg, memory_cache)
  local dict
  local name = cfg.shared_dict
  if name ~= nil then
    dict = ngx.shared[name]
    if not dict then
      return nil, errors.new("config", "lua_shared_dict '" .. name .. "' not found (add `lua_shared_dict "
        .. name .. " 1m;` to the http block of nginx.conf)", { error_code = "missing_configuration" })
    end
  end
  local env = {
    transport = phase.transport(curl.new(cfg), cosocket.new(cfg)),
    sleep = phase.sleep,
  }
  if dict then
    local id = store.token_id(cfg)
    env.store = store.token_store(dict, name, cfg)
    env.jwks_cache = store.jwks_cache(dict, name, cfg)
    env.flight = flight.new{ wait = cfg.wait, dict = dict, lock_prefix = "scalekit:lock:" .. id .. ":" }
  else
    env.store = core.token_vault()
    env.jwks_cache = memory_cache()
    env.flight = flight.new{ wait = cfg.wait }
  end
  return env
end

return _M
