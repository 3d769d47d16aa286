-- valgrind (tools/memcheck.sh) over the misuse paths of the C core: every raise that
-- happens after something was acquired (a strdup'd option, a curl handle, a header
-- list, a decoded buffer) must leave nothing behind, and huge inputs must not leak.
package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local core = require "scalekit.core"

local HUGE = string.rep("A", 1024 * 1024)
local function raises(f, ...)
  assert(not pcall(f, ...), "expected an error")
end

-- core.http: raise after ca_file / user_agent were copied, and on every bad option
for _ = 1, 10 do
  raises(core.http, { ca_file = "/x.pem", user_agent = "a\nb" })
  raises(core.http, { ca_file = "/x.pem", user_agent = "ok", max_body_size = "big" })
  raises(core.http, { timeout = 0 })
  raises(core.http, { ca_file = "a\0b" })
  raises(core.http, { user_agent = string.rep("u", 9 * 1024 * 1024) })
end
local h = core.http{ timeout = 1 }
for _ = 1, 10 do
  raises(h.request, h, "BREW", "http://127.0.0.1:1/")
  raises(h.request, h, "GET", "http://127.0.0.1:1/\r\n")
  raises(h.request, h, "GET", "http://127.0.0.1:1/", "body")
  raises(h.request, h, "POST", "http://127.0.0.1:1/", {}, "json")
  raises(h.request, h, "POST", "http://127.0.0.1:1/", "x", "form", "tok")
  raises(h.request, h, "GET", "http://127.0.0.1:1/", nil, "json", "a\r\nb")
  -- accepted bearer, then a failure: the header list is kept and freed by close
  h:request("GET", "http://127.0.0.1:1/", nil, "json", "tok" .. _)
  h:request("GET", "http://127.0.0.1:1/" .. HUGE:rep(9), nil, "json", HUGE)
end
h:close()
raises(h.request, h, "GET", "http://127.0.0.1:1/")

-- token vault
local v = core.token_vault()
for _ = 1, 10 do
  raises(v.set, v, "", 10)
  raises(v.set, v, "a\0b", 10)
  raises(v.set, v, "t", 0 / 0)
  v:set(HUGE, 10, 1)
  v:set("small", 10, 1)
  v:clear(HUGE)
end
v:close()

-- crypto: failures after decoding, huge inputs
for _ = 1, 5 do
  assert(core.b64decode(HUGE .. "=") == nil)
  assert(#core.b64url_decode(core.b64url_encode(HUGE)) == #HUGE)
  assert(core.public_key{ kty = "RSA", n = HUGE, e = "AQAB" } == nil)
  assert(core.public_key{ kty = "RSA", n = string.rep("A", 342) .. "B", e = "AQAB" } == nil)
  assert(core.public_key{ kty = "EC", crv = "P-256", x = string.rep("A", 43), y = string.rep("A", 43) } == nil)
  raises(core.public_key, setmetatable({}, { __index = function() error("boom") end }))
  local key = assert(core.public_key{ kty = "EC", crv = "P-256",
    x = "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY", y = "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU" })
  assert(key:verify("ES256", HUGE, string.rep("\1", 64)) == false)
  assert(key:verify("ES256", "x", string.rep("\0", 64)) == false)
  raises(key.verify, key, "ES256", nil, "sig")
  if _ % 2 == 0 then key:close() end -- the others go to __gc
  assert(#core.hmac_sha256(HUGE, HUGE) == 32)
  raises(core.random_bytes, 0)
end
collectgarbage()
collectgarbage()
print("memcheck badinput: ok")
