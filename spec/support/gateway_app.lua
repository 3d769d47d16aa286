-- luacheck: globals ngx
-- The test application of spec/integration/gateway_spec.lua: an OpenResty app that
-- guards its locations with the gateway (sk:protect, sk:login, the receivers).
-- Loaded by init_by_lua (in the master, before the workers fork), from the checkout.
local scalekit = require "scalekit"
local cjson = require "cjson"

local ngx = ngx
local json = cjson.new()

local _M = {}

local sk, env_url, client_id

_M.SESSION_SECRET = "0123456789abcdef0123456789abcdef-test-secret"
_M.WEBHOOK_SECRET = "whsec_" .. ngx.encode_base64("gateway test webhook key")

function _M.init(url, id, secret)
  env_url, client_id = url, id
  sk = assert(scalekit.new{ environment_url = url, client_id = id, client_secret = secret,
                            shared_dict = "scalekit" })
end

local function send(status, v)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(json.encode(v))
  return ngx.exit(status)
end

---------------------------------------------------------------------------
-- protect
---------------------------------------------------------------------------

local PROTECT = {
  basic = function() return { audience = client_id } end,
  scopes = function() return { audience = client_id, scopes = { "openid", "orgs:write" } } end,
  perms = function() return { audience = client_id, permissions = { "organizations:read", "users:delete" } } end,
  granted = function()
    return { audience = { "other", client_id }, scopes = { "openid" }, permissions = { "users:read" } }
  end,
  mcp = function()
    return { audience = client_id, realm = "mcp",
             resource_metadata = "http://127.0.0.1/.well-known/oauth-protected-resource" }
  end,
  nocache = function() return { audience = client_id, cache_ttl = 0 } end,
  strict = function() return { audience = client_id, leeway = 0 } end,
  issuers = function() return { audience = client_id, issuer = { "https://other.example", env_url } } end,
  other_issuer = function() return { audience = client_id, issuer = { "https://a.example", "https://b.example" } } end,
  anyaud = function() return { audience = false } end,
  otheraud = function() return { audience = "https://api.other.example" } end,
  noaud = function() return {} end,
}

function _M.protect()
  local case = ngx.var.gw_case
  return sk:protect(PROTECT[case]())
end

function _M.claims()
  local c = ngx.ctx.scalekit_claims
  return send(200, { sub = c.sub, aud = c.aud, iss = c.iss })
end

function _M.metadata()
  return sk:serve_resource_metadata{ resource = "http://127.0.0.1/mcp", scopes_supported = { "orgs:read" } }
end

-- bench: the cost of one protect, n times in one request (no HTTP in between)
function _M.protect_loop()
  local n = tonumber(ngx.var.arg_n) or 1000
  local opts = PROTECT[ngx.var.arg_case or "basic"]()
  ngx.update_time()
  local t0 = ngx.now()
  for _ = 1, n do sk:protect(opts) end
  ngx.update_time()
  return send(200, { n = n, seconds = ngx.now() - t0 })
end

---------------------------------------------------------------------------
-- login
---------------------------------------------------------------------------

local LOGIN = {
  default = {},
  soon = { refresh_ahead = 3600 * 24 },   -- every request refreshes (the token "expires soon")
  dict = { session_store = "shared_dict", redirect_uri = "/dict/callback", cookie_name = "scalekit_dsession" },
}

function _M.login()
  local o = { redirect_uri = "/callback", logout_path = "/logout", session_secret = _M.SESSION_SECRET,
              post_logout_redirect_uri = "/bye" }
  for k, v in pairs(LOGIN[ngx.var.gw_case or "default"]) do o[k] = v end
  ngx.ctx.session = sk:login(o)
end

function _M.whoami()
  local s = ngx.ctx.session
  return send(200, { email = s.user.email, id = s.user.id, access_token = s.access_token,
                     expires_at = s.expires_at, nonce = s.claims.nonce ~= nil,
                     cookie_bytes = ngx.ctx.scalekit_cookie_bytes })
end

-- the protected page of the browser test: the user, a digest of the access token
-- (to see refreshes), and whether page scripts can read the session cookie
function _M.page()
  local s = ngx.ctx.session
  ngx.header["Content-Type"] = "text/html"
  ngx.say([[<!doctype html><html><body><p id="email">]], s.user.email, [[</p><p id="token">]],
          ngx.md5(s.access_token), [[</p><p id="js">
<script>document.write(document.cookie.indexOf("scalekit_session") >= 0 ? "cookie-visible" : "cookie-hidden")</script>
</p></body></html>]])
end

-- where Scalekit's logout sends the browser
function _M.bye()
  ngx.header["Content-Type"] = "text/html"
  ngx.say([[<!doctype html><html><body><p id="bye">logged out</p></body></html>]])
end

---------------------------------------------------------------------------
-- receivers
---------------------------------------------------------------------------

function _M.webhook()
  return sk:webhook_receiver{
    secret = _M.WEBHOOK_SECRET,
    handler = function(event)
      ngx.shared.app_results:incr("webhooks", 1, 0)
      if event.type == "explode" then error("handler exploded on purpose") end
    end,
  }
end

function _M.interceptor()
  return sk:interceptor_receiver{
    secret = _M.WEBHOOK_SECRET,
    handler = function(payload)
      if payload.email and payload.email:find("@blocked%.example$") then
        return "DENY", { message = "signups closed" }
      end
      return "ALLOW"
    end,
  }
end

function _M.webhook_count()
  return send(200, { n = ngx.shared.app_results:get("webhooks") or 0 })
end

---------------------------------------------------------------------------
-- errors in the log
---------------------------------------------------------------------------

function _M.iterate()
  for _ in sk:each("OrganizationService_ListOrganization", { page_size = 1 }) do end
  return send(200, { done = true })
end

return _M
