-- Leak / memory-error check of csrc/crypto.c. Run from the repo root after `make`:
--   valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect \
--     --error-exitcode=1 lua5.4 spec/memcheck/crypto.lua
-- Exercises every crypto function many times, failures, raised argument errors,
-- close/gc and use after close. Keys and signatures come from the openssl CLI.
package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
package.cpath = (rawget(_G, "jit") and "build-luajit/?.so;" or "build/?.so;") .. package.cpath

local core = require "scalekit.core"
local util = require "spec.support.crypto_util"

local ROUNDS = tonumber(os.getenv("SK_MEMCHECK_ROUNDS") or "") or 100

local run = util.run
local SIZE, CURVE_OF = util.CURVE_SIZE, util.CURVE_OF

local dir = util.mktempdir()

-- keys
run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " .. dir .. "/rsa.pem")
run("openssl pkey -in " .. dir .. "/rsa.pem -pubout -out " .. dir .. "/rsa.pub")
local RSA = util.rsa_jwk(dir, "rsa.pub")
local EC = {}
for crv in pairs(SIZE) do
  run("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:" .. crv .. " -out " .. dir .. "/" .. crv .. ".pem")
  run("openssl pkey -in " .. dir .. "/" .. crv .. ".pem -pubout -out " .. dir .. "/" .. crv .. ".pub")
  EC[crv] = util.ec_jwk(dir, crv .. ".pub", crv)
end

-- signatures
local INPUT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0"
local SIGS = {}
for _, alg in ipairs({ "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512" }) do
  local keyfile = alg:sub(1, 2) == "ES" and (CURVE_OF[alg] .. ".pem") or "rsa.pem"
  SIGS[alg] = util.cli_sign(dir, keyfile, alg, INPUT)
end
util.rmtree(dir)

local BAD_JWKS = {
  { kty = "oct" }, {}, { kty = "RSA", n = RSA.n }, { kty = "RSA", n = "!!", e = "AQAB" },
  { kty = "RSA", n = "AQAB", e = "AQAB" }, { kty = "RSA", n = RSA.n, e = "Ag" },
  { kty = "RSA", n = RSA.n .. RSA.n .. RSA.n .. RSA.n .. RSA.n .. RSA.n .. RSA.n .. RSA.n .. RSA.n, e = "AQAB" },
  { kty = "EC", crv = "P-256", x = EC["P-256"].x, y = EC["P-256"].x },
  { kty = "EC", crv = "P-256", x = EC["P-384"].x, y = EC["P-384"].y },
  { kty = "EC", crv = "P-999", x = "AA", y = "AA" },
  { kty = "EC", crv = "P-521", x = EC["P-521"].x, y = "*" },
}

local function check(cond, msg)
  if not cond then error("memcheck assertion failed: " .. msg, 2) end
end

for round = 1, ROUNDS do
  -- codecs
  local data = core.random_bytes(1 + round % 200)
  check(core.b64decode(core.b64encode(data)) == data, "b64 round trip")
  check(core.b64url_decode(core.b64url_encode(data)) == data, "b64url round trip")
  check(core.b64decode("Zm9v=") == nil, "bad b64")
  check(core.b64url_decode("Z") == nil, "bad b64url")
  core.b64decode(core.random_bytes(8))
  core.b64url_decode(core.random_bytes(7))
  check(core.b64encode("") == "" and core.b64decode("") == "", "empty")
  -- digests
  check(#core.sha256(data) == 32, "sha256")
  check(#core.hmac_sha256(data, data) == 32, "hmac")
  check(#core.hmac_sha256("", "") == 32, "hmac empty")
  check(core.constant_eq(data, data) and not core.constant_eq(data, data .. "x"), "constant_eq")
  check(#core.random_bytes(4096) == 4096, "random")
  -- misuse raises (longjmp out of the C functions)
  check(not pcall(core.random_bytes, 0), "random 0")
  check(not pcall(core.b64encode, {}), "b64 table")
  check(not pcall(core.hmac_sha256, "k"), "hmac arg")
  check(not pcall(core.public_key, "x"), "public_key arg")

  -- keys
  local rsa = assert(core.public_key(RSA))
  for alg, sig in pairs(SIGS) do
    if alg:sub(1, 2) ~= "ES" then
      check(rsa:verify(alg, INPUT, sig) == true, alg)
      check(rsa:verify(alg, INPUT .. "x", sig) == false, alg .. " altered")
      check(rsa:verify(alg, INPUT, sig:sub(2)) == false, alg .. " length")
    else
      check(rsa:verify(alg, INPUT, sig) == false, alg .. " on RSA")
    end
  end
  check(rsa:verify("HS256", INPUT, "x") == false, "HS256")
  check(not pcall(rsa.verify, rsa, nil, INPUT, "x"), "verify arg")
  check(tostring(rsa):find("RSA 2048", 1, true) ~= nil, "tostring")
  if round % 2 == 0 then
    rsa:close()
    rsa:close()
    check(not pcall(rsa.verify, rsa, "RS256", INPUT, SIGS.RS256), "use after close")
    check(not pcall(rsa.bits, rsa), "bits after close")
    check(tostring(rsa):find("closed", 1, true) ~= nil, "tostring closed")
  end
  for alg, crv in pairs(CURVE_OF) do
    local k = assert(core.public_key(EC[crv]))
    check(k:verify(alg, INPUT, SIGS[alg]) == true, alg)
    check(k:verify(alg, INPUT .. "x", SIGS[alg]) == false, alg .. " altered")
    check(k:verify(alg, INPUT, SIGS[alg] .. "\0") == false, alg .. " length")
    check(k:verify(alg, INPUT, string.rep("\0", 2 * SIZE[crv])) == false, alg .. " zero")
    check(k:verify("RS256", INPUT, SIGS.RS256) == false, alg .. " RS256 on EC")
    check(k:type() == "EC" and k:bits() > 0, "ec accessors")
    if round % 3 == 0 then k:close() end
  end
  for _, jwk in ipairs(BAD_JWKS) do
    local k, err = core.public_key(jwk)
    check(k == nil and type(err) == "string", "bad jwk accepted")
  end
  if round % 10 == 0 then collectgarbage() end
end

collectgarbage()
collectgarbage()
print(("memcheck crypto: %d rounds ok"):format(ROUNDS))
