-- The one certificate maker of the test kit (openssl CLI, never the library under
-- test), for the fake Scalekit's TLS and the raw servers' certificate variants.
--
--   local certs = require "spec.support.certs"
--   local c = certs.make(dir)
--   c.ca_file       -- throwaway CA (P-256, 2 days)
--   c.key_file      -- the one server key of every leaf below
--   c.good          -- signed by the CA for localhost and 127.0.0.1
--   c.expired       --   same, validity ended in 2020
--   c.wrong_host    --   same CA, issued for wrong-host.test only
--   c.self_signed   --   self-signed for localhost and 127.0.0.1
local proc = require "spec.support.proc"

local quote, run, sh, write_file = proc.quote, proc.run, proc.sh, proc.write_file

local _M = {}

local CA_CONF = [[
[ ca ]
default_ca = sk
[ sk ]
dir = ${DIR}
database = ${DIR}/index.txt
serial = ${DIR}/serial
new_certs_dir = ${DIR}
certificate = ${DIR}/ca.pem
private_key = ${DIR}/ca.key
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[ any ]
commonName = supplied
[ req ]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[ dn ]
CN = scalekit-lua test CA
[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ leaf_localhost ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ leaf_wrong ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:wrong-host.test
[ self_signed ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, digitalSignature, keyEncipherment, keyCertSign
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
]]

--- Writes the CA, the server key and the four leaf certificates into `dir`
--- (world-readable: nginx workers run as nobody; they are test keys). Raises
--- with openssl's output when a step fails.
function _M.make(dir)
  write_file(dir .. "/ca.cnf", (CA_CONF:gsub("%${DIR}", dir)))
  write_file(dir .. "/index.txt", "")
  write_file(dir .. "/serial", "1000\n")
  local function p(name) return quote(dir .. "/" .. name) end
  local conf = " -config " .. p("ca.cnf")
  local ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  local sign = "openssl ca -batch -notext" .. conf .. " -in " .. p("leaf.csr")
  local cmds = {
    "openssl req -x509" .. ec .. " -days 2 -sha256" .. conf .. " -keyout " .. p("ca.key")
      .. " -out " .. p("ca.pem"),
    "openssl req -new" .. ec .. " -subj /CN=localhost -keyout " .. p("leaf.key")
      .. " -out " .. p("leaf.csr"),
    sign .. " -days 2 -extensions leaf_localhost -out " .. p("good.pem"),
    sign .. " -startdate 200101000000Z -enddate 200102000000Z -extensions leaf_localhost -out "
      .. p("expired.pem"),
    sign .. " -days 2 -extensions leaf_wrong -subj /CN=wrong-host.test -out " .. p("wrong_host.pem"),
    "openssl req -x509 -new -key " .. p("leaf.key") .. " -days 2 -sha256 -subj /CN=localhost"
      .. conf .. " -extensions self_signed -out " .. p("self_signed.pem"),
  }
  for _, cmd in ipairs(cmds) do
    local out, rc = run(cmd .. " 2>&1")
    if rc ~= 0 then error("certs: openssl failed: " .. cmd .. "\n" .. out, 0) end
  end
  sh("chmod 644 " .. p("*.pem") .. " " .. p("*.key"))
  local c = { ca_file = dir .. "/ca.pem", key_file = dir .. "/leaf.key" }
  for _, name in ipairs({ "good", "expired", "wrong_host", "self_signed" }) do
    c[name] = dir .. "/" .. name .. ".pem"
  end
  return c
end

return _M
