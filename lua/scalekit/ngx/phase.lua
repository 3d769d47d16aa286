-- luacheck: read globals ngx
--- What each ngx_lua phase allows: cosockets and ngx.sleep, blocking libcurl and a
--- blocking sleep, or no I/O at all.
--
--   phase                                         transport   sleep
--   rewrite, access, content, timer, ssl_cert,    cosockets   ngx.sleep
--   ssl_session_fetch, ssl_client_hello, preread
--   init, init_worker, exit_worker                libcurl     blocking (no event
--                                                             loop runs there)
--   set, header_filter, body_filter, log,         raises "scalekit: no I/O in the
--   balancer, ssl_session_store                   <phase> phase; use ngx.timer.at"
local core = require "scalekit.core"
local errors = require "scalekit.errors"

local _M = {}

local ngx = ngx
local get_phase = ngx.get_phase
local ngx_sleep = ngx.sleep
local core_sleep = core.sleep
local setmetatable = setmetatable
local tostring = tostring

-- phases where cosockets and ngx.sleep work
local COSOCKET = {
  rewrite = true, access = true, content = true, timer = true, ssl_cert = true,
  ssl_session_fetch = true, ssl_client_hello = true, preread = true,
}
-- phases without an event loop to yield to, where blocking is the only way
local BLOCKING = { init = true, init_worker = true, exit_worker = true }

--- true in a cosocket phase, false in an init phase; raises where no I/O may happen.
---@return boolean
function _M.can_yield()
  local phase = get_phase()
  if COSOCKET[phase] then return true end
  if BLOCKING[phase] then return false end
  errors.misuse("no I/O in the %s phase; use ngx.timer.at", tostring(phase))
end
local can_yield = _M.can_yield

--- true in the init phases, where ngx.now() is not updated by an event loop.
function _M.blocking()
  return BLOCKING[get_phase()] == true
end

--- Sleep without blocking the worker where that is possible.
function _M.sleep(seconds)
  if can_yield() then return ngx_sleep(seconds) end
  return core_sleep(seconds)
end

local Picker = {}
local Picker_mt = { __index = Picker }

function Picker_mt.__tostring()
  return "scalekit.ngx.transport (libcurl or cosockets by phase)"
end

--- The transport of the current phase.
function Picker:current()
  if can_yield() then return self.cosocket end
  return self.curl
end

function Picker:request(method, url, body, ctype, bearer)
  return self:current():request(method, url, body, ctype, bearer)
end

function Picker:stats()
  return self:current():stats()
end

function Picker:close()
  self.curl:close()
end

--- A transport that sends through `cosocket` where the phase allows it, else
--- through `curl`.
function _M.transport(curl, cosocket)
  return setmetatable({ curl = curl, cosocket = cosocket }, Picker_mt)
end

return _M
