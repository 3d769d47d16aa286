-- Lua side of fuzz/fuzz_jwt.c: JWT segment parsing (scalekit.auth.jwt decode / verify) and
-- JWKS parsing (keys_from_jwks) over the real C core. Returns the function called
-- for each input; it must never raise on a string.
local jwt = require "scalekit.auth.jwt"
local core = require "scalekit.core"
local json = require "scalekit.json"

-- the P-256 key that signed fuzz/corpus/jwt/es256 (valid at OPTS.now)
local EC = { kty = "EC", crv = "P-256", kid = "k1", alg = "ES256",
             x = "CXGeBWjH-m8qGgzRCS6EkMCYFZHb4krJ4wL-tjXT5Xo",
             y = "gMesdSUZNaHWDWaFshfueb1FYaW2YrzqNCjgc3eMU0k" }
local finder = jwt.key_finder({ keys = { EC } })
local OPTS = { now = 1700000000, leeway = 60, issuer = "https://fuzz.test",
               audience = "aud", algorithms = { "ES256", "RS256", "PS256" } }

local function check(ok, res, err)
  assert(ok, res)
  if res == nil then assert(type(err) == "table" and err.kind == "auth", "bad error") end
end

return function(input)
  -- 1. the input as a compact token
  check(pcall(jwt.decode, input))
  check(pcall(jwt.verify, input, finder, OPTS))
  -- 2. the input as header \0 payload \0 signature, encoded into a token: past the
  --    base64url layer, into the JSON and the claim checks
  local h, p, s = input:match("^([^%z]*)%z([^%z]*)%z(.*)$")
  if h then
    local token = core.b64url_encode(h) .. "." .. core.b64url_encode(p) .. "." .. core.b64url_encode(s)
    check(pcall(jwt.decode, token))
    check(pcall(jwt.verify, token, finder, OPTS))
  end
  -- 3. the input as a JWKS document (decoded strictly, as scalekit.auth.jwks does)
  local doc = json.decode(input)
  if type(doc) == "table" then
    local ok, by_kid, all = pcall(jwt.keys_from_jwks, doc)
    assert(ok, by_kid)
    assert(type(by_kid) == "table" and type(all) == "table")
    for _, k in ipairs(all) do k:close() end
    -- and through key_finder, with the token's alg checked against a key's alg
    local ok2, find = pcall(jwt.key_finder, doc)
    assert(ok2, find)
    check(pcall(jwt.verify, input, find, OPTS))
  end
end
