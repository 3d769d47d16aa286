-- Leak / memory-error check of csrc/crypto.c. Run from the repo root after `make`:
--   valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect \
--     --error-exitcode=1 lua5.4 spec/memcheck/crypto.lua
-- Exercises every crypto function many times, failures, raised argument errors,
-- close/gc and use after close. Keys and signatures come from the openssl CLI.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = (rawget(_G, "jit") and "build-luajit/?.so;" or "build/?.so;") .. package.cpath

local core = require "scalekit.core"

local ROUNDS = tonumber(os.getenv("SK_MEMCHECK_ROUNDS") or "") or 100

local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  local body, rc = out:match("^(.*)__rc=(%d+)%s*$")
  assert(rc == "0", "command failed: " .. cmd .. "\n" .. tostring(body))
  return body
end

local function readfile(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function writefile(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function unhex(h)
  return (h:gsub("%x%x", function(b) return string.char(tonumber(b, 16)) end))
end

local b64url = core.b64url_encode

local dir = os.tmpname()
os.remove(dir)
run("mkdir -m 700 '" .. dir .. "'")

local SIZE = { ["P-256"] = 32, ["P-384"] = 48, ["P-521"] = 66 }
local CURVE_OF = { ES256 = "P-256", ES384 = "P-384", ES512 = "P-521" }

local function der_to_jose(der, size)
  local pos = 1
  local function len()
    local l = der:byte(pos); pos = pos + 1
    if l >= 0x80 then
      local nb = l - 0x80
      l = 0
      for _ = 1, nb do l = l * 256 + der:byte(pos); pos = pos + 1 end
    end
    return l
  end
  pos = pos + 1
  len()
  local out = {}
  for i = 1, 2 do
    pos = pos + 1
    local l = len()
    local v = der:sub(pos, pos + l - 1):gsub("^%z+", "")
    pos = pos + l
    out[i] = string.rep("\0", size - #v) .. v
  end
  return out[1] .. out[2]
end

-- keys
run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " .. dir .. "/rsa.pem")
run("openssl pkey -in " .. dir .. "/rsa.pem -pubout -out " .. dir .. "/rsa.pub")
local n = unhex(run("openssl rsa -pubin -in " .. dir .. "/rsa.pub -noout -modulus"):match("Modulus=(%x+)"))
local RSA = { kty = "RSA", n = b64url(n), e = "AQAB" }
local EC = {}
for crv, size in pairs(SIZE) do
  local f = dir .. "/" .. crv
  run("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:" .. crv .. " -out " .. f .. ".pem")
  run("openssl pkey -in " .. f .. ".pem -pubout -outform DER -out " .. f .. ".der")
  local point = readfile(f .. ".der"):sub(-(2 * size + 1))
  EC[crv] = { kty = "EC", crv = crv, x = b64url(point:sub(2, size + 1)), y = b64url(point:sub(size + 2)) }
end

-- signatures
local INPUT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0"
writefile(dir .. "/in", INPUT)
local SIGS = {}
for _, alg in ipairs({ "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512" }) do
  local kind, bits = alg:sub(1, 2), alg:sub(3)
  local keyfile = kind == "ES" and (dir .. "/" .. CURVE_OF[alg] .. ".pem") or (dir .. "/rsa.pem")
  local cmd = "openssl dgst -sha" .. bits .. " -sign " .. keyfile
  if kind == "PS" then cmd = cmd .. " -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest" end
  run(cmd .. " -out " .. dir .. "/sig " .. dir .. "/in")
  local sig = readfile(dir .. "/sig")
  if kind == "ES" then sig = der_to_jose(sig, SIZE[CURVE_OF[alg]]) end
  SIGS[alg] = sig
end
run("rm -rf '" .. dir .. "'")

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
