--- The libcurl transport: one HTTP attempt on the C core's reused easy handle
--- (csrc/http.c), in the transport contract that session.lua drives:
---   res, err = t:request(method, url, body, content_type, bearer, raw, compressed)
---   bearer: the token, or the C token vault (`takes_vault`: read in place)
---   compressed: send Accept-Encoding (large answers: paged lists)
---   res = { status =, body =, retry_after =, request_id = [, content_type = (raw)] }
---   raw: nil, or {content_type =, headers =, timeout =} for pass-through calls
---   err = errors.from_transport(kind, message, sent, permanent)
local core = require "scalekit.core"
local errors = require "scalekit.errors"

local _M = {}

local setmetatable = setmetatable
local from_transport = errors.from_transport

local Curl = { takes_vault = true }
local mt = { __index = Curl }

function mt.__tostring()
  return "scalekit.transport.curl"
end

---@param cfg table validated options (scalekit.config)
function _M.new(cfg)
  return setmetatable({
    http = core.http({
      timeout = cfg.timeout,
      connect_timeout = cfg.connect_timeout,
      ca_file = cfg.ca_file,
      user_agent = cfg.user_agent,
      max_body_size = cfg.max_body_size,
      proxy = cfg.proxy,
      no_proxy = cfg.no_proxy,
      headers = cfg.extra_headers,
    }),
  }, mt)
end

---@return table|nil res
---@return scalekit.Error|nil err
function Curl:request(method, url, body, ctype, bearer, raw, compressed)
  local status, a, b, c, d = self.http:request(method, url, body, ctype, bearer, raw, compressed)
  if status then
    return { status = status, body = a, retry_after = b, request_id = c, content_type = d }
  end
  return nil, from_transport(a, b, c, d)
end

--- {requests = n, connects = n}: connects counts new connections.
function Curl:stats()
  return self.http:stats()
end

function Curl:close()
  self.http:close()
end

return _M
