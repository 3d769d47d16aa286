-- Crypto of the C core: base64, SHA-256, HMAC, constant_eq, random bytes, JWK
-- public keys and JWS signature verification, checked against the openssl CLI.
require "spec.support.client" -- package paths for this runtime

local core = require "scalekit.core"

-- helpers ------------------------------------------------------------------

local util = require "spec.support.crypto_util"
local hex, unhex, readfile, writefile, run = util.hex, util.unhex, util.readfile, util.writefile, util.run
local b64url, rsa_jwk, ec_jwk, cli_sign = util.b64url, util.rsa_jwk, util.ec_jwk, util.cli_sign
local CURVE_SIZE = util.CURVE_SIZE

-- tests --------------------------------------------------------------------

describe("scalekit.core crypto", function()
  local dir = util.dir_for_suite(teardown)

  describe("base64", function()
    local vectors = {
      { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
      { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
      { "\0", "AA==" }, { "\255\254\253", "//79" }, { "\251\255", "+/8=" },
    }

    it("encodes and decodes the RFC 4648 vectors", function()
      for _, v in ipairs(vectors) do
        assert.are.equal(v[2], core.b64encode(v[1]))
        assert.are.equal(v[1], core.b64decode(v[2]))
      end
    end)

    -- bytes, base64url, the same with its padding
    local url_vectors = {
      { "f", "Zg", "Zg==" }, { "fo", "Zm8", "Zm8=" }, { "foo", "Zm9v" },
      { "\255\254\253", "__79" }, { "\251\255", "-_8" }, { "", "" },
    }

    it("base64url encodes without padding and with - and _", function()
      for _, v in ipairs(url_vectors) do
        assert.are.equal(v[2], core.b64url_encode(v[1]))
      end
    end)

    it("base64url decodes with or without exact padding", function()
      for _, v in ipairs(url_vectors) do
        assert.are.equal(v[1], core.b64url_decode(v[2]))
        if v[3] then assert.are.equal(v[1], core.b64url_decode(v[3])) end
      end
    end)

    it("round-trips random data of every small length and agrees with openssl base64", function()
      for len = 0, 70 do
        local data = len == 0 and "" or core.random_bytes(len)
        local enc = core.b64encode(data)
        assert.are.equal(data, core.b64decode(enc))
        assert.are.equal(data, core.b64url_decode(core.b64url_encode(data)))
        assert.are.equal(b64url(data), core.b64url_encode(data))
        if len % 7 == 0 or len < 5 then
          writefile(dir .. "/data.bin", data)
          local cli = run("openssl base64 -A -in " .. dir .. "/data.bin"):gsub("%s+$", "")
          assert.are.equal(cli, enc)
        end
      end
      local big = core.random_bytes(4096) .. core.random_bytes(4000)
      writefile(dir .. "/big.bin", big)
      local cli = run("openssl base64 -A -in " .. dir .. "/big.bin"):gsub("%s+$", "")
      assert.are.equal(cli, core.b64encode(big))
      writefile(dir .. "/big.b64", cli)
      run("openssl base64 -d -A -in " .. dir .. "/big.b64 -out " .. dir .. "/big.out")
      assert.are.equal(readfile(dir .. "/big.out"), core.b64decode(cli))
    end)

    it("rejects malformed standard base64", function()
      local bad = {
        "Zg", "Zg=", "Zm9vY", "Zg===", "====", "Z===", "=Zg=", "Zm=v",
        "Zm9v\n", " Zm9v", "Zm 9v", "Zm9-", "Zm9_", "Zm9\0", "Zh==", "Zm9=",
        "Zm8=Zm8=", "\255\255\255\255",
      }
      for _, s in ipairs(bad) do
        local v, err = core.b64decode(s)
        assert.is_nil(v, ("accepted %q"):format(s))
        assert.are.equal("invalid base64", err)
      end
    end)

    it("rejects malformed base64url", function()
      local bad = {
        "Z", "Zm9vY", "Zg=", "Zg===", "Zm8==", "=Zg", "Zg=a", "Zm+v", "Zm/v", "Zm9v+/8",
        "Zm9v=", "Zh", "Zm9", "Zm 9v", "Zm9v\n", "Zm9\0", "====", "\200\200",
      }
      for _, s in ipairs(bad) do
        local v, err = core.b64url_decode(s)
        assert.is_nil(v, ("accepted %q"):format(s))
        assert.are.equal("invalid base64url", err)
      end
    end)

    it("never crashes on random garbage", function()
      for _ = 1, 2000 do
        local s = core.random_bytes(math.random(1, 24))
        local a = core.b64decode(s)
        local b = core.b64url_decode(s)
        -- whatever decodes must encode back to the same text (canonical codec)
        if a then assert.are.equal(s, core.b64encode(a)) end
        if b then assert.are.equal((s:gsub("=", "")), core.b64url_encode(b)) end
      end
    end)

    it("raises on wrong argument types", function()
      assert.has_error(function() core.b64encode(nil) end)
      assert.has_error(function() core.b64decode({}) end)
      assert.has_error(function() core.b64url_encode() end)
      assert.has_error(function() core.b64url_decode(true) end)
    end)
  end)

  describe("sha256 and hmac_sha256", function()
    it("hashes known vectors", function()
      assert.are.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                       hex(core.sha256("")))
      assert.are.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                       hex(core.sha256("abc")))
      assert.are.equal(32, #core.sha256(string.rep("x", 100000)))
    end)

    it("matches the RFC 4231 HMAC-SHA256 vectors", function()
      local vectors = {
        { string.rep("\11", 20), "Hi There",
          "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7" },
        { "Jefe", "what do ya want for nothing?",
          "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" },
        { string.rep("\170", 20), string.rep("\221", 50),
          "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe" },
        { unhex("0102030405060708090a0b0c0d0e0f10111213141516171819"), string.rep("\205", 50),
          "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b" },
        { string.rep("\170", 131), "Test Using Larger Than Block-Size Key - Hash Key First",
          "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54" },
        { string.rep("\170", 131),
          "This is a test using a larger than block-size key and a larger than block-size data."
            .. " The key needs to be hashed before being used by the HMAC algorithm.",
          "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2" },
      }
      for i, v in ipairs(vectors) do
        assert.are.equal(v[3], hex(core.hmac_sha256(v[1], v[2])), "RFC 4231 case " .. i)
      end
    end)

    it("agrees with openssl dgst -hmac on random keys and data", function()
      for _, sizes in ipairs({ { 1, 0 }, { 16, 1 }, { 32, 100 }, { 64, 1000 }, { 65, 3 }, { 200, 4096 } }) do
        local key, data = core.random_bytes(sizes[1]), sizes[2] > 0 and core.random_bytes(sizes[2]) or ""
        writefile(dir .. "/hmac.in", data)
        run("openssl dgst -sha256 -mac HMAC -macopt hexkey:" .. hex(key) .. " -binary -out "
            .. dir .. "/hmac.out " .. dir .. "/hmac.in")
        assert.are.equal(hex(readfile(dir .. "/hmac.out")), hex(core.hmac_sha256(key, data)))
      end
      -- and with a plain-text key
      writefile(dir .. "/hmac.in", "hello")
      run("openssl dgst -sha256 -hmac secretkey -binary -out " .. dir .. "/hmac.out " .. dir .. "/hmac.in")
      assert.are.equal(readfile(dir .. "/hmac.out"), core.hmac_sha256("secretkey", "hello"))
    end)

    it("accepts an empty key and empty data", function()
      assert.are.equal("b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad",
                       hex(core.hmac_sha256("", "")))
    end)

    it("raises on wrong argument types", function()
      assert.has_error(function() core.sha256(nil) end)
      assert.has_error(function() core.hmac_sha256("k") end)
      assert.has_error(function() core.hmac_sha256(nil, "d") end)
    end)
  end)

  describe("constant_eq", function()
    it("compares strings", function()
      assert.is_true(core.constant_eq("abc", "abc"))
      assert.is_true(core.constant_eq("", ""))
      assert.is_true(core.constant_eq("a\0b", "a\0b"))
      assert.is_false(core.constant_eq("abc", "abd"))
      assert.is_false(core.constant_eq("a\0b", "a\0c"))
      assert.is_false(core.constant_eq("abc", "ab"))
      assert.is_false(core.constant_eq("", "a"))
    end)

    it("raises on wrong argument types", function()
      assert.has_error(function() core.constant_eq("a") end)
      assert.has_error(function() core.constant_eq({}, "a") end)
    end)
  end)

  describe("random_bytes", function()
    it("returns n bytes, different each time", function()
      assert.are.equal(1, #core.random_bytes(1))
      assert.are.equal(32, #core.random_bytes(32))
      assert.are.equal(4096, #core.random_bytes(4096))
      assert.are_not.equal(core.random_bytes(32), core.random_bytes(32))
    end)

    it("raises for n outside 1..4096 or not a number", function()
      assert.has_error(function() core.random_bytes(0) end)
      assert.has_error(function() core.random_bytes(-1) end)
      assert.has_error(function() core.random_bytes(4097) end)
      assert.has_error(function() core.random_bytes("x") end)
      assert.has_error(function() core.random_bytes() end)
    end)
  end)

  describe("public keys", function()
    local rsa, rsa2, rsa3072, ec = nil, nil, nil, {}

    setup(function()
      run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " .. dir .. "/rsa.pem")
      run("openssl pkey -in " .. dir .. "/rsa.pem -pubout -out " .. dir .. "/rsa.pub")
      rsa = rsa_jwk(dir, "rsa.pub")
      run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " .. dir .. "/rsa2.pem")
      run("openssl pkey -in " .. dir .. "/rsa2.pem -pubout -out " .. dir .. "/rsa2.pub")
      rsa2 = rsa_jwk(dir, "rsa2.pub")
      run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out " .. dir .. "/rsa3072.pem")
      run("openssl pkey -in " .. dir .. "/rsa3072.pem -pubout -out " .. dir .. "/rsa3072.pub")
      rsa3072 = rsa_jwk(dir, "rsa3072.pub")
      run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out " .. dir .. "/rsa1024.pem")
      run("openssl pkey -in " .. dir .. "/rsa1024.pem -pubout -out " .. dir .. "/rsa1024.pub")
      for _, crv in ipairs({ "P-256", "P-384", "P-521" }) do
        local f = "ec" .. crv:sub(3)
        run("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:" .. crv .. " -out " .. dir .. "/" .. f .. ".pem")
        run("openssl pkey -in " .. dir .. "/" .. f .. ".pem -pubout -out " .. dir .. "/" .. f .. ".pub")
        ec[crv] = ec_jwk(dir, f .. ".pub", crv)
      end
    end)

    it("builds RSA keys from n/e", function()
      local k = assert(core.public_key(rsa))
      assert.are.equal("RSA", k:type())
      assert.are.equal(2048, k:bits())
      local k3 = assert(core.public_key(rsa3072))
      assert.are.equal(3072, k3:bits())
    end)

    it("builds EC keys for P-256, P-384 and P-521", function()
      for crv, bits in pairs({ ["P-256"] = 256, ["P-384"] = 384, ["P-521"] = 521 }) do
        local k = assert(core.public_key(ec[crv]))
        assert.are.equal("EC", k:type())
        assert.are.equal(bits, k:bits())
      end
    end)

    it("rejects RSA keys under 2048 bits", function()
      local k, err = core.public_key(rsa_jwk(dir, "rsa1024.pub"))
      assert.is_nil(k)
      assert.matches("2048", err)
    end)

    it("rejects bad and unsupported JWKs with a message", function()
      local cases = {
        { kty = "oct", k = "AAAA" },
        { kty = "OKP", crv = "Ed25519", x = "AAAA" },
        {},
        { kty = 1 },
        { kty = "RSA", n = rsa.n },
        { kty = "RSA", e = rsa.e },
        { kty = "RSA", n = rsa.n .. "+", e = rsa.e },
        { kty = "RSA", n = rsa.n, e = "" },
        { kty = "RSA", n = rsa.n, e = "Ag" },                       -- even exponent
        { kty = "RSA", n = rsa.n, e = "AQ" },                       -- e = 1
        { kty = "RSA", n = rsa.n:sub(1, -2) .. "A", e = rsa.e },    -- even modulus
        { kty = "RSA", n = 12345, e = rsa.e },
        { kty = "RSA", n = string.rep("_", 1000000), e = rsa.e },                -- huge, rejected before decoding
        { kty = "RSA", n = b64url("\255" .. string.rep("\1", 2100)), e = rsa.e },  -- > 16384 bits
        { kty = "RSA", n = rsa.n, e = b64url(string.rep("\1", 33)) },          -- e > 256 bits
        { kty = "EC", crv = "P-256", x = ec["P-256"].x },
        { kty = "EC", crv = "P-192", x = ec["P-256"].x, y = ec["P-256"].y },
        { kty = "EC", crv = "secp256k1", x = ec["P-256"].x, y = ec["P-256"].y },
        { kty = "EC", crv = "P-384", x = ec["P-256"].x, y = ec["P-256"].y },   -- wrong size
        { kty = "EC", crv = "P-256", x = ec["P-256"].x, y = ec["P-256"].x },   -- off curve
        { kty = "EC", crv = "P-256", x = ec["P-256"].x .. "==", y = ec["P-256"].y },
        { kty = "EC", crv = "P-256", x = b64url(string.rep("\0", 32)), y = b64url(string.rep("\0", 32)) },
      }
      for i, jwk in ipairs(cases) do
        local k, err = core.public_key(jwk)
        assert.is_nil(k, "case " .. i)
        assert.are.equal("string", type(err), "case " .. i)
      end
    end)

    it("raises when the JWK is not a table", function()
      assert.has_error(function() core.public_key("{}") end)
      assert.has_error(function() core.public_key() end)
    end)

    it("verifies RS*/PS* signatures made by openssl dgst", function()
      local k = assert(core.public_key(rsa))
      local input = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjMifQ"
      for _, alg in ipairs({ "RS256", "RS384", "RS512", "PS256", "PS384", "PS512" }) do
        local sig = cli_sign(dir, "rsa.pem", alg, input)
        assert.are.equal(256, #sig)
        assert.is_true(k:verify(alg, input, sig), alg)
        -- altered input
        local ok, reason = k:verify(alg, input .. "x", sig)
        assert.is_false(ok, alg)
        assert.are.equal("signature mismatch", reason)
        -- altered signature
        local bad = sig:sub(1, 100) .. string.char((sig:byte(101) + 1) % 256) .. sig:sub(102)
        assert.is_false((k:verify(alg, input, bad)))
        -- truncated signature
        ok, reason = k:verify(alg, input, sig:sub(2))
        assert.is_false(ok)
        assert.are.equal("bad signature length", reason)
      end
    end)

    it("keeps the algorithm bound to the signature (RS vs PS, hash size)", function()
      local k = assert(core.public_key(rsa))
      local input = "a.b"
      local rs = cli_sign(dir, "rsa.pem", "RS256", input)
      local ps = cli_sign(dir, "rsa.pem", "PS256", input)
      assert.is_false((k:verify("PS256", input, rs)))
      assert.is_false((k:verify("RS256", input, ps)))
      assert.is_false((k:verify("RS384", input, rs)))
      assert.is_false((k:verify("PS512", input, ps)))
    end)

    it("requires the PSS salt length to equal the hash length (RFC 7518 3.5)", function()
      local k = assert(core.public_key(rsa))
      writefile(dir .. "/in.bin", "a.b")
      for _, saltlen in ipairs({ "0", "max", "20" }) do
        run("openssl dgst -sha256 -sign " .. dir .. "/rsa.pem -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:"
            .. saltlen .. " -out " .. dir .. "/pss.bin " .. dir .. "/in.bin")
        local ok, reason = k:verify("PS256", "a.b", readfile(dir .. "/pss.bin"))
        assert.is_false(ok, "salt length " .. saltlen)
        assert.are.equal("signature mismatch", reason)
      end
      run("openssl dgst -sha256 -sign " .. dir .. "/rsa.pem -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32"
          .. " -out " .. dir .. "/pss.bin " .. dir .. "/in.bin")
      assert.is_true(k:verify("PS256", "a.b", readfile(dir .. "/pss.bin")))
    end)

    it("rejects a signature of another RSA key", function()
      local k2 = assert(core.public_key(rsa2))
      local sig = cli_sign(dir, "rsa.pem", "RS256", "a.b")
      local ok, reason = k2:verify("RS256", "a.b", sig)
      assert.is_false(ok)
      assert.are.equal("signature mismatch", reason)
    end)

    it("verifies ES256/ES384/ES512 signatures converted from DER to R||S", function()
      local input = "header.payload"
      for alg, crv in pairs({ ES256 = "P-256", ES384 = "P-384", ES512 = "P-521" }) do
        local k = assert(core.public_key(ec[crv]))
        local f = "ec" .. crv:sub(3) .. ".pem"
        for _ = 1, 3 do -- several signatures: R or S with leading zero bytes happen
          local sig = cli_sign(dir, f, alg, input)
          assert.are.equal(2 * CURVE_SIZE[crv], #sig)
          assert.is_true(k:verify(alg, input, sig), alg)
          assert.is_false((k:verify(alg, input .. ".", sig)))
          local bad = sig:sub(1, -2) .. string.char((sig:byte(-1) + 1) % 256)
          assert.is_false((k:verify(alg, input, bad)))
          local ok, reason = k:verify(alg, input, sig .. "\0")
          assert.is_false(ok)
          assert.are.equal("bad signature length", reason)
        end
        -- all-zero R and S never verify
        assert.is_false((k:verify(alg, input, string.rep("\0", 2 * CURVE_SIZE[crv]))))
      end
    end)

    it("refuses an algorithm that does not match the key", function()
      local krsa = assert(core.public_key(rsa))
      local k256 = assert(core.public_key(ec["P-256"]))
      local k384 = assert(core.public_key(ec["P-384"]))
      local es = cli_sign(dir, "ec256.pem", "ES256", "x")
      local rs = cli_sign(dir, "rsa.pem", "RS256", "x")
      local cases = {
        { krsa, "ES256", rs }, { k256, "RS256", es }, { k256, "PS256", es },
        { k256, "ES384", es }, { k384, "ES256", es }, { k256, "ES512", es },
      }
      for i, c in ipairs(cases) do
        local ok, reason = c[1]:verify(c[2], "x", c[3])
        assert.is_false(ok, "case " .. i)
        assert.are.equal("algorithm does not match key", reason)
      end
      for _, alg in ipairs({ "HS256", "none", "", "RS256 ", "rs256", "EdDSA" }) do
        local ok, reason = krsa:verify(alg, "x", rs)
        assert.is_false(ok)
        assert.are.equal("unsupported algorithm", reason)
      end
      assert.is_true(k256:verify("ES256", "x", es))
    end)

    it("raises on wrong argument types to verify", function()
      local k = assert(core.public_key(rsa))
      assert.has_error(function() k:verify(nil, "x", "y") end)
      assert.has_error(function() k:verify("RS256", nil, "y") end)
      assert.has_error(function() k:verify("RS256", "x") end)
      assert.has_error(function() k.verify({}, "RS256", "x", "y") end)
    end)

    it("closes idempotently, errors on use after close, and survives gc", function()
      local k = assert(core.public_key(rsa))
      k:close()
      k:close()
      local ok, err = pcall(k.verify, k, "RS256", "x", "y")
      assert.is_false(ok)
      assert.matches("closed", err)
      assert.has_error(function() k:type() end)
      assert.has_error(function() k:bits() end)
      assert.matches("^scalekit%.core%.PublicKey %(closed%): ", tostring(k))
      k = nil -- luacheck: ignore
      for _ = 1, 50 do
        local tmp = core.public_key(ec["P-256"])
        if _ % 2 == 0 then tmp:close() end
      end
      collectgarbage()
      collectgarbage()
      assert.is_truthy(core.public_key(rsa))
    end)

    it("has a tostring with type, size and address only", function()
      local k = assert(core.public_key(rsa))
      local s = tostring(k)
      assert.matches("^scalekit%.core%.PublicKey %(RSA 2048%): 0x%x+$", s)
      assert.is_nil(s:find(rsa.n:sub(1, 16), 1, true))
      local e = assert(core.public_key(ec["P-384"]))
      assert.matches("^scalekit%.core%.PublicKey %(EC 384%): 0x%x+$", tostring(e))
    end)

    if _VERSION == "Lua 5.4" and not rawget(_G, "jit") then
      it("is a to-be-closed value on Lua 5.4", function()
        local f = assert(load([[
          local core, jwk = ...
          local keep
          do
            local k <close> = assert(core.public_key(jwk))
            keep = k
            assert(k:bits() == 2048)
          end
          return keep
        ]]))
        local k = f(core, rsa)
        assert.has_error(function() k:bits() end)
      end)
    end
  end)
end)
