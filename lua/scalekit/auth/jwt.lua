--- JWT (JWS compact) decoding and verification against JWK public keys.
--
-- Signatures are checked by the C core (`scalekit.core.public_key`), for the
-- asymmetric algorithms only: RS256/384/512, PS256/384/512, ES256/384/512.
-- `none` and the HMAC algorithms (HS*) are always refused, so a token can never
-- pick a weaker algorithm than the key it claims (algorithm confusion).
--
-- Failures are `nil, err` with `err.kind == "auth"` and `err.error_code` one of:
-- token_malformed, token_too_large, alg_not_allowed, unknown_kid, bad_signature,
-- token_expired, token_not_yet_valid, issuer_mismatch, audience_mismatch,
-- azp_mismatch, nonce_mismatch, missing_scope, missing_permission. Messages never
-- quote the token.
--
-- Headers and payloads are decoded strictly (scalekit.json: no NaN, Infinity or hex
-- numbers, which lua-cjson would accept): anything else is token_malformed. The
-- time claims exp/nbf/iat must be finite NumericDates in [0, 253402300799] (up to
-- 9999-12-31), fractions allowed (RFC 7519 2); a huge `exp` is malformed, not
-- "never expires".
--
-- A JWK that declares `alg` (RFC 7517 4.4) only verifies tokens of that algorithm:
-- a PS256 token does not verify with a key published for RS256 (alg_not_allowed);
-- a key whose `alg` is not one we verify is skipped.
local core = require "scalekit.core"
local errors = require "scalekit.errors"
local json = require "scalekit.json"
local misuse = errors.misuse

local type = type
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local os_time = os.time
local str_find = string.find
local str_gmatch = string.gmatch
local setmetatable = setmetatable
local b64url_decode = core.b64url_decode
local null = json.null

-- The `alg` a key was published for, by key (weak: the keys are the caller's).
local KEY_ALG = setmetatable({}, { __mode = "k" })

local _M = {}

--- Largest accepted token, in bytes (checked before anything else).
_M.MAX_TOKEN_SIZE = 16384

--- Algorithms we can verify; also the default allowlist.
local SUPPORTED = {
  RS256 = true, RS384 = true, RS512 = true,
  PS256 = true, PS384 = true, PS512 = true,
  ES256 = true, ES384 = true, ES512 = true,
}
_M.DEFAULT_ALGORITHMS = {
  "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
}

local DEFAULT_LEEWAY = 60

local VERIFY_OPTS = {
  issuer = true, audience = true, leeway = true, now = true, algorithms = true,
  nonce = true, scopes = true, permissions = true, azp = true,
}

--- Range of exp/nbf/iat: 1970-01-01 .. 9999-12-31T23:59:59Z, epoch seconds.
_M.NUMERIC_DATE_MAX = 253402300799

local function fail(code, message)
  return nil, errors.new("auth", message, { error_code = code })
end

-- A JSON object (not an array, not a scalar) decoded from `text`, or nil.
local function decode_object(text)
  if not str_find(text, "^[ \t\r\n]*{") then return nil end
  local v = json.decode(text)
  if type(v) ~= "table" then return nil end
  return v
end

local finite = json.finite

---@class scalekit.jwt.Parts
---@field header table decoded JOSE header
---@field claims table decoded payload
---@field signing_input string `header.payload` as in the token
---@field signature string raw signature bytes

--- Split and decode a compact JWS without verifying anything but its structure.
---@param token string
---@return scalekit.jwt.Parts? parts
---@return scalekit.Error? err
function _M.decode(token)
  if type(token) ~= "string" then
    -- a token is data from the network (a missing header is nil): not a misuse
    return fail("token_malformed", "token must be a string, got " .. type(token))
  end
  if #token > _M.MAX_TOKEN_SIZE then
    return fail("token_too_large", "token larger than " .. _M.MAX_TOKEN_SIZE .. " bytes")
  end
  -- Exactly three base64url segments (RFC 7515 7.1: no padding, no whitespace).
  local h, p, s = token:match("^([A-Za-z0-9_-]+)%.([A-Za-z0-9_-]+)%.([A-Za-z0-9_-]*)$")
  if not h then
    return fail("token_malformed", "token is not three base64url segments")
  end
  local header_json = b64url_decode(h)
  local claims_json = b64url_decode(p)
  local signature = b64url_decode(s)
  if not header_json or not claims_json or not signature then
    return fail("token_malformed", "token segment is not valid base64url")
  end
  local header = decode_object(header_json)
  if not header then
    return fail("token_malformed", "token header is not a JSON object")
  end
  local claims = decode_object(claims_json)
  if not claims then
    return fail("token_malformed", "token payload is not a JSON object")
  end
  return {
    header = header,
    claims = claims,
    signing_input = h .. "." .. p,
    signature = signature,
  }
end

-- Set of the strings of a list (nil when `list` is not a table of strings).
local function string_set(list)
  if type(list) ~= "table" then return nil end
  local set = {}
  for _, v in ipairs(list) do
    if type(v) ~= "string" then return nil end
    set[v] = true
  end
  return set
end

local function check_string_list(name, v)
  if type(v) ~= "table" then
    misuse("jwt: opts.%s", name .. " must be a list of strings")
  end
  for i, s in ipairs(v) do
    if type(s) ~= "string" then
      misuse("jwt: opts.%s", name .. "[" .. i .. "] must be a string")
    end
  end
end

local function check_opts(opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    misuse("jwt: opts must be a table")
  end
  for k in pairs(opts) do
    if not VERIFY_OPTS[k] then
      misuse("jwt: unknown option %s", tostring(k))
    end
  end
  if opts.issuer ~= nil and type(opts.issuer) ~= "string" then
    misuse("jwt: opts.issuer must be a string")
  end
  local aud = opts.audience
  if aud ~= nil and type(aud) ~= "string" then check_string_list("audience", aud) end
  if opts.leeway ~= nil and (not finite(opts.leeway) or opts.leeway < 0) then
    misuse("jwt: opts.leeway must be a non-negative number")
  end
  if opts.now ~= nil and not finite(opts.now) then
    misuse("jwt: opts.now must be a number")
  end
  if opts.algorithms ~= nil then
    check_string_list("algorithms", opts.algorithms)
    for _, a in ipairs(opts.algorithms) do
      if not SUPPORTED[a] then
        misuse("jwt: opts.algorithms: unsupported algorithm %s", a)
      end
    end
  end
  if opts.nonce ~= nil and type(opts.nonce) ~= "string" then
    misuse("jwt: opts.nonce must be a string")
  end
  if opts.azp ~= nil and type(opts.azp) ~= "string" then
    misuse("jwt: opts.azp must be a string")
  end
  if opts.scopes ~= nil then check_string_list("scopes", opts.scopes) end
  if opts.permissions ~= nil then check_string_list("permissions", opts.permissions) end
  return opts
end

local function audience_matches(aud_claim, wanted)
  local have
  if type(aud_claim) == "string" then
    have = { [aud_claim] = true }
  else
    have = string_set(aud_claim)
    if not have then return false end
  end
  if type(wanted) == "string" then return have[wanted] == true end
  for _, a in ipairs(wanted) do
    if have[a] then return true end
  end
  return false
end

-- Scopes granted by the token: the space-separated `scope` string and/or the
-- `scopes` array. nil when either claim has the wrong type.
local function granted_scopes(claims)
  local set = {}
  local scope, scopes = claims.scope, claims.scopes
  if scope ~= nil and scope ~= null then
    if type(scope) ~= "string" then return nil end
    for s in str_gmatch(scope, "%S+") do set[s] = true end
  end
  if scopes ~= nil and scopes ~= null then
    local extra = string_set(scopes)
    if not extra then return nil end
    for s in pairs(extra) do set[s] = true end
  end
  return set
end

-- Numeric time claim: absent (nil, true) or a finite NumericDate in range.
local function time_claim(claims, name)
  local v = claims[name]
  if v == nil or v == null then return nil, true end
  v = finite(v)
  if not v or v < 0 or v > _M.NUMERIC_DATE_MAX then return nil, false end
  return v, true
end

-- OIDC Core 3.1.3.7 (4, 5), with `opts.azp` (an id_token's client id): an `aud`
-- array of several audiences needs an `azp`, and an `azp` must be that client id.
-- Without `opts.azp` (access tokens) `azp` is not looked at.
local function azp_ok(claims, opts)
  local want = opts.azp
  if want == nil then return true end
  local azp = claims.azp
  if azp == nil or azp == null then
    local aud = claims.aud
    return not (type(aud) == "table" and #aud > 1)
  end
  return azp == want
end

---@class scalekit.jwt.VerifyOpts
---@field issuer string? required value of `iss`
---@field audience (string|string[])? `aud` (string or array) must contain one of these
---@field leeway number? clock skew allowed on exp/nbf/iat, seconds (default 60)
---@field now number? current time, epoch seconds (default os.time())
---@field algorithms string[]? allowlist (default: every supported algorithm)
---@field nonce string? required value of `nonce`
---@field scopes string[]? all required in `scope` (space-separated) or `scopes` (array)
---@field permissions string[]? all required in `permissions` (array)
---@field azp string? the client id an id_token was issued to: `azp`, when present, must be it,
---                   and an `aud` of several audiences must come with it (OIDC Core 3.1.3.7)

--- Verify a JWT: structure, algorithm, signature, then claims.
---
--- `keys(kid)` returns the PublicKey for that `kid` (or `nil[, err]`); for a token
--- without `kid` it is called with `nil` and must return a key only when the key set
--- holds exactly one key. A scalekit error returned by `keys` (say, the JWKS could
--- not be fetched) is passed through unchanged.
---@param token string compact JWS
---@param keys fun(kid: string?): userdata?, any
---@param opts scalekit.jwt.VerifyOpts?
---@return table? claims
---@return scalekit.Error? err
function _M.verify(token, keys, opts)
  if type(keys) ~= "function" then
    misuse("jwt: keys must be a function kid -> PublicKey")
  end
  opts = check_opts(opts)

  local parts, err = _M.decode(token)
  if not parts then return nil, err end
  local header, claims = parts.header, parts.claims

  -- Algorithm: a string, never none/HS*, in the allowlist.
  local alg = header.alg
  if type(alg) ~= "string" then
    return fail("token_malformed", "token header has no alg")
  end
  if not SUPPORTED[alg] then
    return fail("alg_not_allowed", "token algorithm is not allowed")
  end
  local allowed = opts.algorithms and string_set(opts.algorithms) or SUPPORTED
  if not allowed[alg] then
    return fail("alg_not_allowed", "token algorithm is not allowed")
  end
  -- RFC 7515 4.1.11: we understand no extension, so any `crit` is fatal.
  if header.crit ~= nil then
    return fail("token_malformed", "token header has unsupported critical extensions")
  end

  local kid = header.kid
  if kid == null then kid = nil end
  if kid ~= nil and type(kid) ~= "string" then
    return fail("token_malformed", "token header kid is not a string")
  end
  local key, kerr = keys(kid, alg)
  if key == nil then
    if errors.is(kerr) then return nil, kerr end
    if kid == nil then
      return fail("unknown_kid", "token has no kid and the key set does not hold exactly one key")
    end
    return fail("unknown_kid", "no key for the token's kid")
  end

  local key_alg = KEY_ALG[key]
  if key_alg ~= nil and key_alg ~= alg then
    return fail("alg_not_allowed", "token algorithm does not match the key's alg")
  end

  local ok, reason = key:verify(alg, parts.signing_input, parts.signature)
  if not ok then
    return fail("bad_signature", "signature verification failed: " .. tostring(reason))
  end

  -- Time claims.
  local now = opts.now or os_time()
  local leeway = opts.leeway or DEFAULT_LEEWAY
  local exp, exp_ok = time_claim(claims, "exp")
  if not exp_ok then return fail("token_malformed", "exp claim is not a number") end
  if not exp then return fail("token_malformed", "token has no exp claim") end
  if now >= exp + leeway then
    return fail("token_expired", "token expired")
  end
  local nbf, nbf_ok = time_claim(claims, "nbf")
  if not nbf_ok then return fail("token_malformed", "nbf claim is not a number") end
  if nbf and nbf > now + leeway then
    return fail("token_not_yet_valid", "token not valid yet (nbf)")
  end
  local iat, iat_ok = time_claim(claims, "iat")
  if not iat_ok then return fail("token_malformed", "iat claim is not a number") end
  if iat and iat > now + leeway then
    return fail("token_not_yet_valid", "token issued in the future (iat)")
  end

  if opts.issuer ~= nil and claims.iss ~= opts.issuer then
    return fail("issuer_mismatch", "token issuer does not match")
  end
  if opts.audience ~= nil and not audience_matches(claims.aud, opts.audience) then
    return fail("audience_mismatch", "token audience does not match")
  end
  if not azp_ok(claims, opts) then
    return fail("azp_mismatch", "token authorized party (azp) does not match")
  end
  if opts.nonce ~= nil and claims.nonce ~= opts.nonce then
    return fail("nonce_mismatch", "token nonce does not match")
  end

  if opts.scopes ~= nil and #opts.scopes > 0 then
    local granted = granted_scopes(claims)
    if not granted then return fail("token_malformed", "scope claim has the wrong type") end
    for _, s in ipairs(opts.scopes) do
      if not granted[s] then
        return fail("missing_scope", "token lacks required scope \"" .. s .. "\"")
      end
    end
  end
  if opts.permissions ~= nil and #opts.permissions > 0 then
    local perms = claims.permissions
    if perms == null then perms = nil end
    local granted = perms == nil and {} or string_set(perms)
    if not granted then return fail("token_malformed", "permissions claim is not a list of strings") end
    for _, p in ipairs(opts.permissions) do
      if not granted[p] then
        return fail("missing_permission", "token lacks required permission \"" .. p .. "\"")
      end
    end
  end

  return claims
end

local function has_verify_op(key_ops)
  for _, op in ipairs(key_ops) do
    if op == "verify" then return true end
  end
  return false
end

--- Public keys of a JWKS document (`{ keys = { jwk, … } }`).
---
--- Skips keys whose `use` is present and not `"sig"`, whose `key_ops` lacks
--- `"verify"`, whose `kty` is not RSA or EC, whose `alg` is present and not one we
--- verify, and keys the core refuses (bad encoding, RSA < 2048 bits, unsupported
--- curve). When two keys share a `kid` the first wins. A key's declared `alg` stays
--- bound to it: `verify` refuses a token of another algorithm with it.
---@param jwks table decoded JWKS
---@return table<string, userdata> by_kid PublicKey by kid (keys with a kid only)
---@return userdata[] all every usable key, in document order (with or without kid)
function _M.keys_from_jwks(jwks)
  if type(jwks) ~= "table" then
    misuse("jwt: jwks must be a table")
  end
  local by_kid, all = {}, {}
  local list = jwks.keys
  if type(list) ~= "table" then return by_kid, all end
  for _, jwk in ipairs(list) do
    if type(jwk) == "table"
      and (jwk.use == nil or jwk.use == null or jwk.use == "sig")
      and (type(jwk.key_ops) ~= "table" or has_verify_op(jwk.key_ops))
      and (jwk.kty == "RSA" or jwk.kty == "EC")
      and (jwk.alg == nil or jwk.alg == null or SUPPORTED[jwk.alg] == true)
    then
      local kid = jwk.kid
      if kid == null then kid = nil end
      if kid == nil or (type(kid) == "string" and by_kid[kid] == nil) then
        local key = core.public_key(jwk)
        if key then
          if jwk.alg ~= nil and jwk.alg ~= null then KEY_ALG[key] = jwk.alg end
          all[#all + 1] = key
          if kid then by_kid[kid] = key end
        end
      end
    end
  end
  return by_kid, all
end

--- A `keys(kid)` function for `verify` over a fixed JWKS document: a key by kid,
--- or for a token without kid the only key of the set.
---@param jwks table decoded JWKS
---@return fun(kid: string?): userdata?
function _M.key_finder(jwks)
  local by_kid, all = _M.keys_from_jwks(jwks)
  return function(kid)
    if kid == nil then
      if #all == 1 then return all[1] end
      return nil
    end
    return by_kid[kid]
  end
end

return _M
