-- Leak / memory-error check of csrc/aead.c. Run from the repo root after `make`:
--   valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect \
--     --error-exitcode=1 lua5.4 spec/memcheck/aead.lua
-- Seals and opens many values, tampered, truncated, under the wrong key or aad,
-- and raised argument errors.
package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
package.cpath = (rawget(_G, "jit") and "build-luajit/?.so;" or "build/?.so;") .. package.cpath

local core = require "scalekit.core"

local ROUNDS = tonumber(os.getenv("SK_MEMCHECK_ROUNDS") or "") or 100
local KEY, OTHER = ("k"):rep(32), ("o"):rep(32)

for r = 1, ROUNDS do
  local pt = ("p"):rep(r * 37 % 5000)
  local s = assert(core.aead_seal(KEY, pt, "aad" .. r))
  assert(core.aead_open(KEY, s, "aad" .. r) == pt)
  assert(core.aead_open(OTHER, s, "aad" .. r) == nil)
  assert(core.aead_open(KEY, s, "other") == nil)
  assert(core.aead_open(KEY, s:sub(1, #s - 1), "aad" .. r) == nil)
  assert(core.aead_open(KEY, s:sub(1, r % 28)) == nil)
  local i = r % #s + 1
  local bad = s:sub(1, i - 1) .. string.char((s:byte(i) + 1) % 256) .. s:sub(i + 1)
  assert(core.aead_open(KEY, bad, "aad" .. r) == nil)
  assert(not pcall(core.aead_seal, "short", pt))
  assert(not pcall(core.aead_open, KEY, nil))
  assert(core.aead_open(KEY, core.aead_seal(KEY, "")) == "")
end
collectgarbage()
print("aead memcheck ok")
