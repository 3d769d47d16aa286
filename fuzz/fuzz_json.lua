-- Target of fuzz/lua_fuzz.lua: the JSON boundary (scalekit.json) and what the library
-- derives from decoded documents. json.decode never raises and never returns NaN or
-- ±inf anywhere in the value; finite/integer hand back only finite numbers in range;
-- the JWT and JWKS readers (scalekit.auth.jwt) and the page walker's checks take any
-- decoded value without raising.
local json = require "scalekit.json"
local core = require "scalekit.core"
local jwt = require "scalekit.auth.jwt"

local seeds = {
  '{"access_token":"t","token_type":"Bearer","expires_in":86399}',
  '{"keys":[{"kty":"RSA","kid":"k","alg":"RS256","n":"AQAB","e":"AQAB"}]}',
  '{"organizations":[{"id":"org_1"}],"next_page_token":"abc","total_size":30}',
  '{"exp":1700000000,"nbf":1e3,"iat":-0,"aud":["a","b"],"azp":"a"}',
  '[1,2.5,-3e10,true,false,null,"s\\u0000"]',
  '{"a":{"b":{"c":[[[[1]]]]}}}',
}

local function check_no_nan(v, depth)
  local tv = type(v)
  if tv == "number" then
    assert(v == v, "NaN from json.decode")
  elseif tv == "table" and depth < 200 then
    for k, x in pairs(v) do
      check_no_nan(k, depth + 1)
      check_no_nan(x, depth + 1)
    end
  end
end

local OPTS = { now = 1700000000, audience = "a", azp = "a" }
local function no_key() return nil end

local function run(input)
  local v, err = json.decode(input)
  if v == nil then assert(type(err) == "string", "decode failed without a message") end
  check_no_nan(v, 0)
  for _, x in ipairs({ v, type(v) == "table" and v.exp or nil, type(v) == "table" and v.expires_in or nil }) do
    local f = json.finite(x)
    assert(f == nil or (f == f and f ~= math.huge and f ~= -math.huge))
    local i = json.integer(x, 0, 2 ^ 53)
    assert(i == nil or (i >= 0 and i <= 2 ^ 53 and math.floor(i) == i))
  end
  if type(v) == "table" then
    local ok, e = pcall(jwt.keys_from_jwks, v)
    assert(ok, e)
    -- the document as a token payload: verify must fail cleanly (no key)
    local token = core.b64url_encode('{"alg":"RS256","kid":"k"}') .. "." .. core.b64url_encode(input) .. ".AAAA"
    local claims, verr = jwt.verify(token, no_key, OPTS)
    assert(claims == nil and type(verr) == "table" and verr.kind == "auth", "bad verify result")
    -- the round trip: what decodes encodes again (or is refused with a message)
    local text, eerr = json.encode(v)
    assert(text ~= nil or type(eerr) == "string")
  end
end

return { seeds = seeds, run = run }
