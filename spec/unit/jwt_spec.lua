-- scalekit.jwt: tokens built here and signed with the openssl CLI.
require "spec.support.client" -- package paths for this runtime

local core = require "scalekit.core"
local errors = require "scalekit.errors"
local jwt = require "scalekit.auth.jwt"
local cjson = require("cjson.safe").new()

-- helpers ------------------------------------------------------------------

local util = require "spec.support.crypto_util"
local hex, readfile, writefile, run = util.hex, util.readfile, util.writefile, util.run
local b64url, rsa_jwk, ec_jwk, cli_sign = util.b64url, util.rsa_jwk, util.ec_jwk, util.cli_sign

local dir
local KEYFILE = {}   -- name -> private key PEM path (dir/name.pem)
local JWK = {}       -- name -> public JWK

local NOW = 1700000000

local function base_claims(over)
  local c = {
    iss = "https://acme.scalekit.dev", sub = "usr_1", aud = "skc_app",
    exp = NOW + 3600, iat = NOW - 10, nbf = NOW - 10,
  }
  for k, v in pairs(over or {}) do
    if v == false then c[k] = nil else c[k] = v end
  end
  return c
end

-- Build a token signed by `keyname` (header alg/kid from `header`).
local function make(header, claims, keyname)
  local h = b64url(assert(cjson.encode(header)))
  local p = b64url(assert(cjson.encode(claims)))
  local input = h .. "." .. p
  local sig = keyname and cli_sign(dir, keyname .. ".pem", header.alg, input) or ""
  return input .. "." .. b64url(sig)
end

local function rs256(claims, kid)
  return make({ alg = "RS256", typ = "JWT", kid = kid or "rsa1" }, claims or base_claims(), "rsa1")
end

local keys -- keys(kid) over the test JWKS

local function opts(over)
  local o = { now = NOW, issuer = "https://acme.scalekit.dev", audience = "skc_app" }
  for k, v in pairs(over or {}) do
    if v == false then o[k] = nil else o[k] = v end
  end
  return o
end

-- Assert a verification failure with `code`, and that the error never quotes the token.
local function rejects(token, code, o, keyfn)
  local claims, err = jwt.verify(token, keyfn or keys, o or opts())
  assert.is_nil(claims, "expected " .. code)
  assert.is_true(errors.is(err, "auth"), tostring(err))
  assert.are.equal(code, err.error_code)
  local s = tostring(err)
  for seg in token:gmatch("[^.]+") do
    if #seg >= 8 then assert.is_nil(s:find(seg, 1, true), "error quotes the token") end
  end
  return err
end

-- tests --------------------------------------------------------------------

describe("scalekit.jwt", function()
  setup(function()
    dir = util.mktempdir()
    for _, name in ipairs({ "rsa1", "rsa2" }) do
      KEYFILE[name] = dir .. "/" .. name .. ".pem"
      run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " .. KEYFILE[name])
      run("openssl pkey -in " .. KEYFILE[name] .. " -pubout -out " .. dir .. "/" .. name .. ".pub")
      JWK[name] = rsa_jwk(dir, name .. ".pub")
    end
    for crv, name in pairs({ ["P-256"] = "ec256", ["P-384"] = "ec384", ["P-521"] = "ec521" }) do
      KEYFILE[name] = dir .. "/" .. name .. ".pem"
      run("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:" .. crv .. " -out " .. KEYFILE[name])
      run("openssl pkey -in " .. KEYFILE[name] .. " -pubout -out " .. dir .. "/" .. name .. ".pub")
      JWK[name] = ec_jwk(dir, name .. ".pub", crv)
    end
    local list = {}
    for _, name in ipairs({ "rsa1", "rsa2", "ec256", "ec384", "ec521" }) do
      local j = {}
      for k, v in pairs(JWK[name]) do j[k] = v end
      j.kid, j.use = name, "sig"
      list[#list + 1] = j
    end
    keys = jwt.key_finder({ keys = list })
  end)

  teardown(function()
    if dir then util.rmtree(dir) end
  end)

  describe("decode", function()
    it("splits a token into header, claims, signing input and raw signature", function()
      local token = rs256()
      local parts = assert(jwt.decode(token))
      assert.are.equal("RS256", parts.header.alg)
      assert.are.equal("rsa1", parts.header.kid)
      assert.are.equal("usr_1", parts.claims.sub)
      assert.are.equal(token:match("^[^.]+%.[^.]+"), parts.signing_input)
      assert.are.equal(256, #parts.signature)
    end)

    it("rejects malformed tokens", function()
      local h = b64url('{"alg":"RS256"}')
      local p = b64url('{"sub":"x"}')
      local cases = {
        "", "abc", h .. "." .. p, h .. "." .. p .. ".sig.extra", "." .. p .. ".sig", h .. "..sig",
        h .. "." .. p .. ".si+g", h .. "." .. p .. ".sig=", h .. "=." .. p .. ".sig",
        h .. " ." .. p .. ".sig", h .. "." .. p .. ".s", -- impossible base64url length
        b64url("not json") .. "." .. p .. ".sig",
        b64url("[1,2]") .. "." .. p .. ".sig",
        h .. "." .. b64url('"a string"') .. ".sig",
        h .. "." .. b64url("null") .. ".sig",
        h .. "." .. b64url("[]") .. ".sig",
        h .. "." .. b64url('{"a":') .. ".sig",
      }
      for i, token in ipairs(cases) do
        local parts, err = jwt.decode(token)
        assert.is_nil(parts, "case " .. i)
        assert.are.equal("token_malformed", err.error_code, "case " .. i)
        assert.are.equal("auth", err.kind)
      end
    end)

    it("rejects a token over 16 KiB before parsing it", function()
      local big = string.rep("A", 16385)
      local parts, err = jwt.decode(big)
      assert.is_nil(parts)
      assert.are.equal("token_too_large", err.error_code)
      -- a big but valid-looking token is still too large
      local token = rs256(base_claims({ pad = string.rep("x", 13000) }))
      assert.is_true(#token > 16384)
      rejects(token, "token_too_large")
      -- just under the limit is fine structurally
      assert.is_truthy(jwt.decode(rs256(base_claims({ pad = string.rep("x", 11000) }))))
    end)

    it("a token that is not a string is data, not misuse: nil, token_malformed", function()
      for i = 1, 3 do
        local parts, err = jwt.decode(({ nil, 42, {} })[i])
        assert.is_nil(parts)
        assert.equal("token_malformed", err.error_code)
      end
    end)
  end)

  describe("verify accepts", function()
    it("every supported algorithm with its key", function()
      local cases = {
        { "RS256", "rsa1" }, { "RS384", "rsa1" }, { "RS512", "rsa2" },
        { "PS256", "rsa1" }, { "PS384", "rsa2" }, { "PS512", "rsa1" },
        { "ES256", "ec256" }, { "ES384", "ec384" }, { "ES512", "ec521" },
      }
      for _, c in ipairs(cases) do
        local token = make({ alg = c[1], kid = c[2] }, base_claims(), c[2])
        local claims, err = jwt.verify(token, keys, opts())
        assert.is_nil(err, c[1] .. ": " .. tostring(err))
        assert.are.equal("usr_1", claims.sub)
      end
    end)

    it("with default options (no iss/aud checks, real clock)", function()
      local token = rs256(base_claims({ exp = os.time() + 60, iat = os.time(), nbf = false }))
      local claims = assert(jwt.verify(token, keys))
      assert.are.equal("usr_1", claims.sub)
    end)

    it("an audience array and an audience list option (match any)", function()
      local token = rs256(base_claims({ aud = { "other", "skc_app" } }))
      assert.is_truthy(jwt.verify(token, keys, opts()))
      assert.is_truthy(jwt.verify(token, keys, opts({ audience = { "nope", "other" } })))
      local token2 = rs256(base_claims({ aud = "skc_app" }))
      assert.is_truthy(jwt.verify(token2, keys, opts({ audience = { "x", "skc_app" } })))
    end)

    it("times within the leeway", function()
      -- expired 30 s ago, default leeway 60
      local token = rs256(base_claims({ exp = NOW - 30 }))
      assert.is_truthy(jwt.verify(token, keys, opts()))
      rejects(token, "token_expired", opts({ leeway = 0 }))
      assert.is_truthy(jwt.verify(token, keys, opts({ leeway = 31 })))
      -- nbf and iat 50 s in the future
      token = rs256(base_claims({ nbf = NOW + 50, iat = NOW + 50 }))
      assert.is_truthy(jwt.verify(token, keys, opts()))
      rejects(token, "token_not_yet_valid", opts({ leeway = 10 }))
    end)

    it("a token without kid when the key set has exactly one key", function()
      local one = jwt.key_finder({ keys = { JWK.ec256 } })
      local token = make({ alg = "ES256" }, base_claims(), "ec256")
      local claims = assert(jwt.verify(token, one, opts()))
      assert.are.equal("usr_1", claims.sub)
      -- the same token against a multi-key set has no key
      rejects(token, "unknown_kid")
    end)

    it("required scopes from the scope string or the scopes array", function()
      local token = rs256(base_claims({ scope = "openid  profile org:read" }))
      assert.is_truthy(jwt.verify(token, keys, opts({ scopes = { "org:read", "openid" } })))
      token = rs256(base_claims({ scopes = { "a", "b" } }))
      assert.is_truthy(jwt.verify(token, keys, opts({ scopes = { "b" } })))
      token = rs256(base_claims({ scope = "a", scopes = { "b" } }))
      assert.is_truthy(jwt.verify(token, keys, opts({ scopes = { "a", "b" } })))
      assert.is_truthy(jwt.verify(token, keys, opts({ scopes = {} })))
    end)

    it("required permissions", function()
      local token = rs256(base_claims({ permissions = { "org:read", "org:write" } }))
      assert.is_truthy(jwt.verify(token, keys, opts({ permissions = { "org:write", "org:read" } })))
    end)

    it("a matching nonce", function()
      local token = rs256(base_claims({ nonce = "n-0S6_WzA2Mj" }))
      assert.is_truthy(jwt.verify(token, keys, opts({ nonce = "n-0S6_WzA2Mj" })))
    end)

    it("an allowlist that includes the algorithm", function()
      local token = make({ alg = "PS256", kid = "rsa1" }, base_claims(), "rsa1")
      assert.is_truthy(jwt.verify(token, keys, opts({ algorithms = { "ES256", "PS256" } })))
    end)
  end)

  describe("verify rejects", function()
    it("alg none, with or without a signature", function()
      local h = { alg = "none", kid = "rsa1" }
      rejects(make(h, base_claims()), "alg_not_allowed")
      local good = rs256()
      local forged = b64url(cjson.encode(h)) .. "." .. good:match("^[^.]+%.([^.]+)") .. "." .. good:match("([^.]+)$")
      rejects(forged, "alg_not_allowed")
      rejects(make({ alg = "None", kid = "rsa1" }, base_claims()), "alg_not_allowed")
      rejects(make({ kid = "rsa1" }, base_claims()), "token_malformed")
      rejects(make({ alg = 256, kid = "rsa1" }, base_claims()), "token_malformed")
    end)

    it("HS256 signed with the RSA public key PEM as HMAC secret (algorithm confusion)", function()
      local pem = readfile(dir .. "/rsa1.pub")
      local header = { alg = "HS256", typ = "JWT", kid = "rsa1" }
      local input = b64url(cjson.encode(header)) .. "." .. b64url(cjson.encode(base_claims()))
      writefile(dir .. "/in.bin", input)
      run("openssl dgst -sha256 -mac HMAC -macopt hexkey:" .. hex(pem) .. " -binary -out " .. dir .. "/hs.bin "
          .. dir .. "/in.bin")
      local mac = readfile(dir .. "/hs.bin")
      assert.are.equal(core.hmac_sha256(pem, input), mac)
      local token = input .. "." .. b64url(mac)
      rejects(token, "alg_not_allowed")
      -- even if the caller lists every algorithm it can
      rejects(token, "alg_not_allowed", opts({ algorithms = jwt.DEFAULT_ALGORITHMS }))
      for _, alg in ipairs({ "HS384", "HS512" }) do
        rejects(make({ alg = alg, kid = "rsa1" }, base_claims()), "alg_not_allowed")
      end
    end)

    it("an algorithm outside the allowlist", function()
      rejects(rs256(), "alg_not_allowed", opts({ algorithms = { "ES256" } }))
      rejects(rs256(), "alg_not_allowed", opts({ algorithms = {} }))
      rejects(make({ alg = "EdDSA", kid = "rsa1" }, base_claims()), "alg_not_allowed")
    end)

    it("an unknown or missing kid", function()
      rejects(rs256(nil, "nope"), "unknown_kid")
      rejects(make({ alg = "RS256" }, base_claims(), "rsa1"), "unknown_kid")
      rejects(make({ alg = "RS256", kid = 7 }, base_claims(), "rsa1"), "token_malformed")
    end)

    it("passes through a scalekit error from the key lookup", function()
      local fetch_err = errors.new("network", "connection refused")
      local claims, err = jwt.verify(rs256(), function() return nil, fetch_err end, opts())
      assert.is_nil(claims)
      assert.are.equal(fetch_err, err)
      rejects(rs256(), "unknown_kid", opts(), function() return nil, "not found" end)
    end)

    it("a bad signature", function()
      local token = rs256()
      -- claims swapped for others, signature kept
      local h, _, s = token:match("^([^.]+)%.([^.]+)%.([^.]+)$")
      local p2 = b64url(cjson.encode(base_claims({ sub = "admin" })))
      rejects(h .. "." .. p2 .. "." .. s, "bad_signature")
      -- one signature byte flipped
      local sig = core.b64url_decode(s)
      local flipped = sig:sub(1, 10) .. string.char((sig:byte(11) + 1) % 256) .. sig:sub(12)
      rejects(h .. "." .. token:match("^[^.]+%.([^.]+)") .. "." .. b64url(flipped), "bad_signature")
      -- signed by another key than the kid names
      rejects(make({ alg = "RS256", kid = "rsa1" }, base_claims(), "rsa2"), "bad_signature")
      -- empty signature
      rejects(h .. "." .. token:match("^[^.]+%.([^.]+)") .. ".", "bad_signature")
      -- an EC key named with an RSA alg, and a curve of another size
      local es = make({ alg = "ES256", kid = "ec256" }, base_claims(), "ec256")
      local eh = b64url(cjson.encode({ alg = "RS256", kid = "ec256" }))
      local err = rejects(eh .. es:match("(%..+)$"), "bad_signature")
      assert.matches("algorithm does not match key", err.message)
      eh = b64url(cjson.encode({ alg = "ES256", kid = "ec384" }))
      rejects(eh .. es:match("(%..+)$"), "bad_signature")
      eh = b64url(cjson.encode({ alg = "ES256", kid = "rsa1" }))
      rejects(eh .. es:match("(%..+)$"), "bad_signature")
    end)

    it("an expired token or one without a numeric exp", function()
      rejects(rs256(base_claims({ exp = NOW - 61 })), "token_expired")
      rejects(rs256(base_claims({ exp = NOW - 3600 })), "token_expired", opts({ leeway = 0 }))
      rejects(rs256(base_claims({ exp = NOW })), "token_expired", opts({ leeway = 0 }))
      rejects(rs256(base_claims({ exp = false })), "token_malformed")
      rejects(rs256(base_claims({ exp = tostring(NOW + 3600) })), "token_malformed")
      rejects(rs256(base_claims({ exp = { NOW + 3600 } })), "token_malformed")
    end)

    it("a token not valid yet", function()
      rejects(rs256(base_claims({ nbf = NOW + 61 })), "token_not_yet_valid")
      rejects(rs256(base_claims({ iat = NOW + 3000 })), "token_not_yet_valid")
      rejects(rs256(base_claims({ nbf = "soon" })), "token_malformed")
      rejects(rs256(base_claims({ iat = true })), "token_malformed")
    end)

    it("a wrong or missing issuer", function()
      rejects(rs256(base_claims({ iss = "https://evil.example" })), "issuer_mismatch")
      rejects(rs256(base_claims({ iss = false })), "issuer_mismatch")
      rejects(rs256(base_claims({ iss = { "https://acme.scalekit.dev" } })), "issuer_mismatch")
    end)

    it("a wrong or missing audience", function()
      rejects(rs256(base_claims({ aud = "other" })), "audience_mismatch")
      rejects(rs256(base_claims({ aud = { "a", "b" } })), "audience_mismatch")
      rejects(rs256(base_claims({ aud = false })), "audience_mismatch")
      rejects(rs256(base_claims({ aud = { 1, "skc_app" } })), "audience_mismatch")
      rejects(rs256(base_claims({ aud = "skc_app" })), "audience_mismatch", opts({ audience = { "x", "y" } }))
    end)

    it("a wrong or missing nonce", function()
      rejects(rs256(base_claims({ nonce = "abc" })), "nonce_mismatch", opts({ nonce = "abd" }))
      rejects(rs256(), "nonce_mismatch", opts({ nonce = "abc" }))
    end)

    it("missing scopes", function()
      local token = rs256(base_claims({ scope = "openid profile" }))
      local err = rejects(token, "missing_scope", opts({ scopes = { "openid", "org:write" } }))
      assert.matches("org:write", err.message)
      rejects(rs256(), "missing_scope", opts({ scopes = { "openid" } }))
      -- "org" is not "org:read": whole words only
      rejects(rs256(base_claims({ scope = "org:read" })), "missing_scope", opts({ scopes = { "org" } }))
      rejects(rs256(base_claims({ scope = 5 })), "token_malformed", opts({ scopes = { "x" } }))
    end)

    it("missing permissions", function()
      local token = rs256(base_claims({ permissions = { "org:read" } }))
      rejects(token, "missing_permission", opts({ permissions = { "org:read", "org:write" } }))
      rejects(rs256(), "missing_permission", opts({ permissions = { "org:read" } }))
      rejects(rs256(base_claims({ permissions = "org:read" })), "token_malformed",
              opts({ permissions = { "org:read" } }))
    end)

    it("critical header extensions", function()
      rejects(make({ alg = "RS256", kid = "rsa1", crit = { "exp" } }, base_claims(), "rsa1"), "token_malformed")
    end)

    it("malformed and oversize tokens", function()
      rejects("a.b", "token_malformed")
      rejects(rs256() .. ".x", "token_malformed")
      rejects(string.rep("a", 20000), "token_too_large")
    end)
  end)

  describe("verify misuse", function()
    it("raises on wrong argument types and unknown options", function()
      local token = rs256()
      local claims, err = jwt.verify(nil, keys, opts())
      assert.is_nil(claims)
      assert.equal("token_malformed", err.error_code)
      assert.has_error(function() jwt.verify(token, {}, opts()) end)
      assert.has_error(function() jwt.verify(token, keys, "opts") end)
      assert.has_error(function() jwt.verify(token, keys, { audiences = "skc_app" }) end)
      assert.has_error(function() jwt.verify(token, keys, { issuer = 1 }) end)
      assert.has_error(function() jwt.verify(token, keys, { audience = { 1 } }) end)
      assert.has_error(function() jwt.verify(token, keys, { leeway = -1 }) end)
      assert.has_error(function() jwt.verify(token, keys, { now = "x" }) end)
      assert.has_error(function() jwt.verify(token, keys, { algorithms = { "HS256" } }) end)
      assert.has_error(function() jwt.verify(token, keys, { algorithms = "RS256" }) end)
      assert.has_error(function() jwt.verify(token, keys, { nonce = 1 }) end)
      assert.has_error(function() jwt.verify(token, keys, { scopes = "a b" }) end)
      assert.has_error(function() jwt.verify(token, keys, { permissions = { true } }) end)
    end)
  end)

  describe("keys_from_jwks", function()
    it("maps kid to key and skips unusable keys", function()
      local function with(name, extra)
        local j = {}
        for k, v in pairs(JWK[name]) do j[k] = v end
        for k, v in pairs(extra) do j[k] = v end
        return j
      end
      local small = dir .. "/small.pem"
      run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out " .. small)
      run("openssl pkey -in " .. small .. " -pubout -out " .. small .. ".pub")
      local small_jwk = rsa_jwk(dir, "small.pem.pub")
      small_jwk.kid = "small"
      local jwks = {
        keys = {
          with("rsa1", { kid = "a", use = "sig", alg = "RS256" }),
          with("ec256", { kid = "b" }),                                 -- no use: fine
          with("rsa2", { kid = "enc", use = "enc" }),                   -- encryption key
          with("rsa2", { kid = "ops", key_ops = { "encrypt" } }),       -- not for verify
          with("rsa2", { kid = "ops2", key_ops = { "verify" } }),
          { kty = "oct", kid = "hmac", k = "c2VjcmV0" },                -- symmetric
          { kty = "OKP", kid = "ed", crv = "Ed25519", x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" },
          small_jwk,                                                    -- < 2048 bits
          with("rsa2", { kid = "a" }),                                  -- duplicate kid
          with("ec384", {}),                                            -- no kid
          "garbage",
        },
      }
      local by_kid, all = jwt.keys_from_jwks(jwks)
      local kids = {}
      for kid in pairs(by_kid) do kids[#kids + 1] = kid end
      table.sort(kids)
      assert.are.same({ "a", "b", "ops2" }, kids)
      assert.are.equal(4, #all)
      assert.are.equal("RSA", by_kid.a:type())
      assert.are.equal("EC", by_kid.b:type())
      assert.are.equal(384, all[4]:bits())
      -- "a" is rsa1 (the first), not rsa2
      local token = rs256(nil, "a")
      assert.is_truthy(jwt.verify(token, jwt.key_finder(jwks), opts()))
      assert.are.same({}, (jwt.keys_from_jwks({})))
      assert.are.same({}, (jwt.keys_from_jwks({ keys = "x" })))
      assert.has_error(function() jwt.keys_from_jwks(nil) end)
    end)
  end)
end)
