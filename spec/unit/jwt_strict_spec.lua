-- scalekit.auth.jwt, issue 15: strict JSON in headers and payloads (no hex, NaN,
-- Infinity), time claims finite and in range, `azp` on multi-audience id_tokens,
-- a JWK's declared `alg` bound to the token's.
require "spec.support.client" -- package paths for this runtime

local errors = require "scalekit.errors"
local jwt = require "scalekit.auth.jwt"
local cjson = require("cjson.safe").new()

local util = require "spec.support.crypto_util"
local b64url, rsa_jwk, cli_sign, run = util.b64url, util.rsa_jwk, util.cli_sign, util.run

local NOW = 1700000000
local dir, JWK

local function claims_json(extra)
  return '{"iss":"https://acme.scalekit.dev","sub":"usr_1","aud":"skc_app","iat":' .. (NOW - 10)
    .. ',"exp":' .. (NOW + 3600) .. (extra or "") .. "}"
end

-- a token from raw header and payload JSON text, signed by rsa1 as `alg`
local function raw_token(header_text, payload_text, alg)
  local input = b64url(header_text) .. "." .. b64url(payload_text)
  return input .. "." .. b64url(cli_sign(dir, "rsa1.pem", alg or "RS256", input))
end

local function finder(jwk_over)
  local j = {}
  for k, v in pairs(JWK) do j[k] = v end
  j.kid = "rsa1"
  for k, v in pairs(jwk_over or {}) do j[k] = v end
  return jwt.key_finder({ keys = { j } })
end

local OPTS = { now = NOW, issuer = "https://acme.scalekit.dev", audience = "skc_app" }

local function opts(over)
  local o = {}
  for k, v in pairs(OPTS) do o[k] = v end
  for k, v in pairs(over or {}) do o[k] = v end
  return o
end

local function rejects(token, code, keys, o)
  local claims, err = jwt.verify(token, keys or finder(), o or OPTS)
  assert.is_nil(claims, "expected " .. code)
  assert.is_true(errors.is(err, "auth"), tostring(err))
  assert.are.equal(code, err.error_code, tostring(err))
end

describe("scalekit.jwt (strict)", function()
  setup(function()
    dir = util.mktempdir()
    run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " .. dir .. "/rsa1.pem")
    run("openssl pkey -in " .. dir .. "/rsa1.pem -pubout -out " .. dir .. "/rsa1.pub")
    JWK = rsa_jwk(dir, "rsa1.pub")
  end)

  teardown(function()
    if dir then util.rmtree(dir) end
  end)

  it("a well-formed token still verifies", function()
    local claims = assert(jwt.verify(raw_token('{"alg":"RS256","kid":"rsa1"}', claims_json()), finder(), OPTS))
    assert.are.equal("usr_1", claims.sub)
  end)

  describe("non-JSON numbers are token_malformed", function()
    local HDR = '{"alg":"RS256","kid":"rsa1"}'
    local payloads = {
      hex_exp = '{"sub":"usr_1","aud":"skc_app","exp":0x7fffffff}',
      nan_exp = '{"sub":"usr_1","aud":"skc_app","exp":NaN}',
      inf_exp = '{"sub":"usr_1","aud":"skc_app","exp":Infinity}',
      neg_inf_nbf = claims_json(',"nbf":-Infinity'),
      hex_iat = '{"sub":"usr_1","aud":"skc_app","exp":' .. (NOW + 60) .. ',"iat":0x10}',
      nan_other = claims_json(',"n":nan'),
    }
    for name, payload in pairs(payloads) do
      it("payload " .. name, function()
        local token = raw_token(HDR, payload)
        local parts, err = jwt.decode(token)
        assert.is_nil(parts)
        assert.are.equal("token_malformed", err.error_code)
        rejects(token, "token_malformed")
      end)
    end
    it("header with a hex or NaN member", function()
      for _, h in ipairs({ '{"alg":"RS256","kid":"rsa1","x":0x1}', '{"alg":"RS256","kid":"rsa1","x":NaN}' }) do
        local parts, err = jwt.decode(raw_token(h, claims_json()))
        assert.is_nil(parts, h)
        assert.are.equal("token_malformed", err.error_code)
      end
    end)
  end)

  describe("time claims must be finite and in range", function()
    local HDR = '{"alg":"RS256","kid":"rsa1"}'
    local function payload(name, v)
      local c = { iss = "https://acme.scalekit.dev", sub = "usr_1", aud = "skc_app", exp = NOW + 3600 }
      c[name] = nil
      local text = assert(cjson.encode(c))
      return text:sub(1, -2) .. ',"' .. name .. '":' .. v .. "}"
    end
    for _, name in ipairs({ "exp", "nbf", "iat" }) do
      for _, v in ipairs({ "1e999", "-1e999", "1e300", "-1", "253402300800", '"1700000000"', "true" }) do
        it(name .. " = " .. v, function()
          rejects(raw_token(HDR, payload(name, v)), "token_malformed")
        end)
      end
    end
    it("fractional NumericDates are accepted", function()
      assert.is_truthy(jwt.verify(raw_token(HDR, payload("exp", (NOW + 60) .. ".5")), finder(), OPTS))
    end)
  end)

  describe("azp (OIDC Core 3.1.3.7, with opts.azp = the client id)", function()
    local HDR = '{"alg":"RS256","kid":"rsa1"}'
    local function tok(aud, azp)
      local c = { iss = "https://acme.scalekit.dev", sub = "usr_1", aud = aud, azp = azp,
                  exp = NOW + 3600, iat = NOW - 10 }
      return raw_token(HDR, assert(cjson.encode(c)))
    end
    local AZP = opts({ azp = "skc_app" })
    it("several audiences without azp: azp_mismatch", function()
      rejects(tok({ "skc_app", "skc_other" }), "azp_mismatch", nil, AZP)
    end)
    it("several audiences with another party's azp: azp_mismatch", function()
      rejects(tok({ "skc_app", "skc_other" }, "skc_other"), "azp_mismatch", nil, AZP)
    end)
    it("an azp that is not the client id: azp_mismatch, even with one audience", function()
      rejects(tok("skc_app", "skc_x"), "azp_mismatch", nil, AZP)
      rejects(tok({ "skc_app" }, 5), "azp_mismatch", nil, AZP)
    end)
    it("several audiences with azp = the client id: accepted", function()
      assert.is_truthy(jwt.verify(tok({ "skc_app", "skc_other" }, "skc_app"), finder(), AZP))
    end)
    it("one audience (string or one-element array) needs no azp", function()
      assert.is_truthy(jwt.verify(tok("skc_app"), finder(), AZP))
      assert.is_truthy(jwt.verify(tok({ "skc_app" }), finder(), AZP))
      assert.is_truthy(jwt.verify(tok("skc_app", "skc_app"), finder(), AZP))
    end)
    it("without opts.azp (access tokens) azp is not looked at", function()
      assert.is_truthy(jwt.verify(tok({ "skc_app", "skc_other" }), finder(), OPTS))
    end)
    it("opts.azp must be a string", function()
      assert.has_error(function() jwt.verify(tok("skc_app"), finder(), opts({ azp = 1 })) end)
    end)
  end)

  describe("a JWK's declared alg", function()
    it("a PS256 token does not verify with a key published for RS256", function()
      local token = raw_token('{"alg":"PS256","kid":"rsa1"}', claims_json(), "PS256")
      -- the same key without a declared alg accepts it
      assert.is_truthy(jwt.verify(token, finder(), OPTS))
      rejects(token, "alg_not_allowed", finder({ alg = "RS256" }))
      assert.is_truthy(jwt.verify(token, finder({ alg = "PS256" }), OPTS))
    end)
    it("an RS256 token does not verify with a key published for RS512, kid or no kid", function()
      local token = raw_token('{"alg":"RS256","kid":"rsa1"}', claims_json())
      rejects(token, "alg_not_allowed", finder({ alg = "RS512" }))
      local nokid = raw_token('{"alg":"RS256"}', claims_json())
      rejects(nokid, "alg_not_allowed", finder({ alg = "RS512", kid = cjson.null }))
      assert.is_truthy(jwt.verify(nokid, finder({ alg = "RS256", kid = cjson.null }), OPTS))
    end)
    it("keys_from_jwks skips keys whose alg is not a string we verify", function()
      local function jwk(kid, alg)
        local j = {}
        for k, v in pairs(JWK) do j[k] = v end
        j.kid, j.alg = kid, alg
        return j
      end
      local by_kid, all = jwt.keys_from_jwks({ keys = { jwk("a", "HS256"), jwk("b", 7), jwk("c", "RS256") } })
      assert.is_nil(by_kid.a)
      assert.is_nil(by_kid.b)
      assert.is_truthy(by_kid.c)
      assert.are.equal(1, #all)
    end)
  end)
end)
