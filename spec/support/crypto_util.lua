-- Shared helpers of the crypto specs (crypto, jwt, webhook) and of
-- spec/memcheck/crypto.lua: bytes <-> hex, files, shell commands with an exit
-- check, and JWKs / JOSE signatures made with the openssl CLI.
-- Pure Lua (Lua 5.1/LuaJIT and 5.4); it does not load scalekit.core, so that
-- b64url is a reference independent of the C codec under test.
-- Key and signature helpers take the scratch directory `dir` and file names
-- relative to it.
local _M = {}

-- Bytes of each curve coordinate, and the curve of each ES algorithm.
_M.CURVE_SIZE = { ["P-256"] = 32, ["P-384"] = 48, ["P-521"] = 66 }
_M.CURVE_OF = { ES256 = "P-256", ES384 = "P-384", ES512 = "P-521" }

local DIGEST = { ["256"] = "-sha256", ["384"] = "-sha384", ["512"] = "-sha512" }

--- Lower-case hex of the bytes of `s`.
function _M.hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

--- Bytes of hex text `h`; characters other than hex digits (spaces, colons) are dropped.
function _M.unhex(h)
  h = h:gsub("[^%x]", "")
  return (h:gsub("%x%x", function(b) return string.char(tonumber(b, 16)) end))
end

local files = require "tools.util"
local proc = require "spec.support.proc"

--- The file's bytes; raises when it cannot be read.
function _M.readfile(path)
  return (assert(files.read_file(path)))
end

_M.writefile = files.write_file

--- Run a shell command; returns its output (stdout and stderr), raises on a non-zero exit.
function _M.run(cmd)
  local body, rc = proc.run(cmd .. " 2>&1")
  assert(rc == 0, "command failed: " .. cmd .. "\n" .. tostring(body))
  return body
end

--- A new private (mode 700) directory; remove it with rmtree.
function _M.mktempdir()
  local d = os.tmpname()
  os.remove(d)
  _M.run("mkdir -m 700 '" .. d .. "'")
  return d
end

function _M.rmtree(path)
  _M.run("rm -rf '" .. path .. "'")
end

--- A temp directory for a describe block, removed by its `teardown` (pass busted's).
function _M.dir_for_suite(teardown)
  local d = _M.mktempdir()
  teardown(function() _M.rmtree(d) end)
  return d
end

local B64URL = {}
do
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
  for i = 1, 64 do B64URL[i - 1] = alphabet:sub(i, i) end
end

--- base64url without padding (RFC 4648 section 5), in plain Lua.
function _M.b64url(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local sextets = {
      math.floor(n / 262144) % 64, math.floor(n / 4096) % 64, math.floor(n / 64) % 64, n % 64,
    }
    -- 1, 2 or 3 bytes give 2, 3 or 4 characters
    for j = 1, (c and 4) or (b and 3) or 2 do
      out[#out + 1] = B64URL[sextets[j]]
    end
  end
  return table.concat(out)
end

--- JWK of the RSA public key PEM `dir/pub` (made by the openssl CLI).
function _M.rsa_jwk(dir, pub)
  local modulus = _M.run("openssl rsa -pubin -in " .. dir .. "/" .. pub .. " -noout -modulus")
  local n = _M.unhex(assert(modulus:match("Modulus=(%x+)")))
  local text = _M.run("openssl pkey -pubin -in " .. dir .. "/" .. pub .. " -noout -text")
  local e = tonumber(assert(text:match("Exponent: (%d+)")))
  local eb = ""
  while e > 0 do
    eb = string.char(e % 256) .. eb
    e = math.floor(e / 256)
  end
  return { kty = "RSA", n = _M.b64url(n), e = _M.b64url(eb) }
end

--- JWK of the EC public key PEM `dir/pub` on curve `crv`; writes `dir/pub.der`.
function _M.ec_jwk(dir, pub, crv)
  local size = assert(_M.CURVE_SIZE[crv], "unknown curve")
  _M.run("openssl pkey -pubin -in " .. dir .. "/" .. pub .. " -outform DER -out " .. dir .. "/" .. pub .. ".der")
  local der = _M.readfile(dir .. "/" .. pub .. ".der")
  -- The uncompressed point 04||X||Y ends the SubjectPublicKeyInfo.
  local point = der:sub(-(2 * size + 1))
  assert(point:byte(1) == 4, "expected an uncompressed point")
  return { kty = "EC", crv = crv, x = _M.b64url(point:sub(2, size + 1)), y = _M.b64url(point:sub(size + 2)) }
end

--- DER ECDSA-Sig-Value -> JOSE R||S, each `size` bytes.
function _M.der_to_jose(der, size)
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
  assert(der:byte(pos) == 0x30); pos = pos + 1
  len()
  local out = {}
  for i = 1, 2 do
    assert(der:byte(pos) == 0x02); pos = pos + 1
    local l = len()
    local v = der:sub(pos, pos + l - 1):gsub("^%z+", "")
    pos = pos + l
    out[i] = string.rep("\0", size - #v) .. v
  end
  return out[1] .. out[2]
end

--- Sign `input` with the private key PEM `dir/keyfile` as JWS algorithm `alg`
-- (RS*, PS*, ES*) would, with openssl dgst; returns the JOSE signature.
-- Uses dir/in.bin and dir/sig.bin as scratch files.
function _M.cli_sign(dir, keyfile, alg, input)
  _M.writefile(dir .. "/in.bin", input)
  local kind, bits = alg:sub(1, 2), alg:sub(3)
  local cmd = "openssl dgst " .. assert(DIGEST[bits], "unknown algorithm") .. " -sign " .. dir .. "/" .. keyfile
  if kind == "PS" then
    cmd = cmd .. " -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest"
  end
  _M.run(cmd .. " -out " .. dir .. "/sig.bin " .. dir .. "/in.bin")
  local sig = _M.readfile(dir .. "/sig.bin")
  if kind == "ES" then
    sig = _M.der_to_jose(sig, _M.CURVE_SIZE[assert(_M.CURVE_OF[alg], "unknown algorithm")])
  end
  return sig
end

return _M
