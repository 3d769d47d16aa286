--- The authorization-code and refresh-token grants of the token endpoint, with the
--- id_token of the answer verified.
local errors = require "scalekit.errors"
local jwt = require "scalekit.auth.jwt"
local urls = require "scalekit.auth.urls"

local _M = {}

local type = type
local misuse = errors.misuse

local function token_grant(client, fields, opname)
  local s = client._s
  local doc, err = s:request("POST", "/oauth/token", s.client_form(fields), opname, "form")
  if not doc then return nil, errors.token_endpoint(err) end
  if type(doc.access_token) ~= "string" then
    return nil, errors.new("decode", "token endpoint answered without an access_token", { operation = opname })
  end
  return doc
end

local function with_identity(client, doc, nonce, opname)
  local res = {
    access_token = doc.access_token,
    refresh_token = type(doc.refresh_token) == "string" and doc.refresh_token or nil,
    id_token = type(doc.id_token) == "string" and doc.id_token or nil,
    expires_in = type(doc.expires_in) == "number" and doc.expires_in or nil,
    token_type = type(doc.token_type) == "string" and doc.token_type or nil,
  }
  if res.id_token then
    local claims, err = jwt.verify(res.id_token, client._jwks:lookup(), {
      issuer = client.environment_url, audience = client.client_id, nonce = nonce,
      azp = client.client_id, -- OIDC Core 3.1.3.7: with several audiences, azp names us
    })
    if not claims then
      err.operation = opname
      return nil, err
    end
    res.user = claims
  end
  return res
end

function _M.authenticate_with_code(client, code, redirect_uri, opts)
  if type(code) ~= "string" or code == "" then misuse("authenticate_with_code: code must be a non-empty string") end
  if type(redirect_uri) ~= "string" or redirect_uri == "" then
    misuse("authenticate_with_code: redirect_uri must be a non-empty string")
  end
  opts = urls.check_opts("authenticate_with_code", opts, { code_verifier = "string", nonce = "string" })
  local doc, err = token_grant(client, {
    grant_type = "authorization_code", code = code, redirect_uri = redirect_uri,
    code_verifier = opts.code_verifier,
  }, "authenticate_with_code")
  if not doc then return nil, err end
  if type(doc.id_token) ~= "string" then
    return nil, errors.new("decode", "token endpoint answered without an id_token",
                           { operation = "authenticate_with_code" })
  end
  return with_identity(client, doc, opts.nonce, "authenticate_with_code")
end

function _M.refresh_access_token(client, refresh_token)
  if type(refresh_token) ~= "string" or refresh_token == "" then
    misuse("refresh_access_token: refresh_token must be a non-empty string")
  end
  local doc, err = token_grant(client, { grant_type = "refresh_token", refresh_token = refresh_token },
                               "refresh_access_token")
  if not doc then return nil, err end
  return with_identity(client, doc, nil, "refresh_access_token")
end

return _M
