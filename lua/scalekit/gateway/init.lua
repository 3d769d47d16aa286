--- The OpenResty gateway: the client methods protect and serve_resource_metadata
--- (gateway/protect.lua: a bearer-only resource server, RFC 6750 / RFC 9728), login
--- (gateway/login.lua: browser login with a session in an encrypted cookie,
--- gateway/cookie.lua) and the webhook and interceptor receivers
--- (gateway/receiver.lua). OpenResty only: elsewhere each method raises a misuse
--- error; the modules are loaded on first use, inside ngx_lua.
local errors = require "scalekit.errors"

local _M = {}

local type = type
local rawget = rawget
local require = require
local misuse = errors.misuse

local function openresty(name)
  local ngx = rawget(_G, "ngx")
  if type(ngx) ~= "table" or type(ngx.get_phase) ~= "function" then
    misuse("sk:%s needs OpenResty (ngx_lua): call it from access_by_lua* or content_by_lua*", name)
  end
  return ngx
end

--- The lua_shared_dict a gateway method uses: the one named `name`, else the
--- client's own (scalekit.new{shared_dict =}), else nil.
function _M.dict(client, name, what)
  local ngx = openresty(what)
  if name ~= nil then
    if type(name) ~= "string" then misuse("%s: option 'shared_dict' must be a string", what) end
    local d = ngx.shared[name]
    if not d then
      misuse("%s: lua_shared_dict '%s' not found (add `lua_shared_dict %s 1m;` to the http block)",
             what, name, name)
    end
    return d
  end
  local s = rawget(client, "_s")
  local f = s and s.flight
  return f and f.dict or nil
end

---@class scalekit.Gateway
local Gateway = {}
_M.methods = Gateway

--- Bearer-only resource server for access_by_lua*: answers 401/403 (and ends the
--- request) unless the request carries a valid access token. See README "OpenResty gateway".
---@param opts {audience: string|string[]|false, issuer: (string|string[])?, scopes: string[]?,
---  permissions: string[]?, realm: string?, resource_metadata: string?, leeway: number?, cache_ttl: number?}
---@return table claims
function Gateway:protect(opts)
  openresty("protect")
  return require("scalekit.gateway.protect").protect(self, opts)
end

--- Serve the RFC 9728 protected-resource metadata (content_by_lua*).
---@param opts {resource: string?, scopes_supported: string[]?, authorization_servers: string[]?}
function Gateway:serve_resource_metadata(opts)
  openresty("serve_resource_metadata")
  return require("scalekit.gateway.protect").serve_resource_metadata(self, opts)
end

--- Browser login for access_by_lua*: redirects to Scalekit, handles the callback and
--- logout, returns the session of a logged-in user.
---@param opts table see README "OpenResty gateway"
---@return {user: table, claims: table, access_token: string, id_token: string, expires_at: number}
function Gateway:login(opts)
  openresty("login")
  return require("scalekit.gateway.login").login(self, opts)
end

--- Content handler for Scalekit webhooks: verify, reject replays, call handler(event), 204.
---@param opts {secret: string, handler: fun(event: table), tolerance: number?, shared_dict: string?}
function Gateway:webhook_receiver(opts)
  openresty("webhook_receiver")
  return require("scalekit.gateway.receiver").webhook(self, opts)
end

--- Content handler for Scalekit interceptors: verify, call handler(payload) ->
--- "ALLOW"|"DENY"[, opts], answer the decision as JSON.
---@param opts {secret: string, handler: fun(payload: table): string, table?, tolerance: number?, shared_dict: string?}
function Gateway:interceptor_receiver(opts)
  openresty("interceptor_receiver")
  return require("scalekit.gateway.receiver").interceptor(self, opts)
end

return _M
