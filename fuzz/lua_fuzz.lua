-- A pure-Lua mutation fuzzer for the Lua-level parsers (no libFuzzer needed):
--
--   lua5.4 fuzz/lua_fuzz.lua TARGET SECONDS [SEED]
--
-- TARGET is fuzz/fuzz_<TARGET>.lua, which returns { seeds = {…}, run = function(input) }.
-- Inputs are the seeds mutated (bit flips, byte insertions and deletions, splices,
-- repeated slices, interesting bytes and numbers); `run` must never raise. A failing
-- input is written to build-fuzz/crash-<target>-<n> and the script exits 1. Run by
-- tools/fuzz.sh (under the ASan'd core when it preloads the runtime) and make test.
package.path = "lua/?.lua;lua/?/init.lua;fuzz/?.lua;./?.lua;" .. package.path

local target, seconds, seed = arg[1], tonumber(arg[2] or "3"), tonumber(arg[3] or os.time())
assert(target, "usage: lua fuzz/lua_fuzz.lua TARGET SECONDS [SEED]")
local t = require("fuzz_" .. target)
math.randomseed(seed)
local random, char, sub, rep = math.random, string.char, string.sub, string.rep

local TOKENS = { "\r\n", "\n", "\r", "\0", " ", ":", ";", "0", "9", "f", "-", "1e999", "NaN", "Infinity",
                 "0x7fffffff", "-0", "\"", "{", "}", "[", "]", ",", "\\u0000", "\255", "HTTP/1.1 ",
                 "Content-Length: ", "Transfer-Encoding: chunked", "100 Continue", "9007199254740993" }

local function mutate(s)
  for _ = 1, random(1, 4) do
    local n = #s
    local op = random(1, 7)
    local i = random(1, n + 1)
    if op == 1 and n > 0 then      -- flip a bit
      local b = s:byte(i > n and n or i)
      s = sub(s, 1, i - 1) .. char(b ~ (1 << random(0, 7))) .. sub(s, i + 1)
    elseif op == 2 then            -- insert a token
      s = sub(s, 1, i - 1) .. TOKENS[random(#TOKENS)] .. sub(s, i)
    elseif op == 3 and n > 0 then  -- delete a slice
      s = sub(s, 1, i - 1) .. sub(s, i + random(1, 16))
    elseif op == 4 then            -- random byte
      s = sub(s, 1, i - 1) .. char(random(0, 255)) .. sub(s, i)
    elseif op == 5 and n > 0 then  -- repeat a slice
      if i > n then i = n end
      local j = random(i, math.min(n, i + 32))
      s = sub(s, 1, j) .. rep(sub(s, i, j), random(1, 64)) .. sub(s, j + 1)
    elseif op == 6 then            -- splice with another seed
      local o = t.seeds[random(#t.seeds)]
      s = sub(s, 1, i - 1) .. sub(o, random(1, #o + 1))
    else                           -- truncate
      s = sub(s, 1, i)
    end
  end
  if #s > 65536 then s = sub(s, 1, 65536) end
  return s
end

local clock = os.clock
local deadline = clock() + seconds
local runs, corpus = 0, {}
for i, s in ipairs(t.seeds) do corpus[i] = s end
local function try(input)
  runs = runs + 1
  local ok, err = pcall(t.run, input)
  if not ok then
    os.execute("mkdir -p build-fuzz")
    local name = "build-fuzz/crash-" .. target .. "-" .. runs
    local f = assert(io.open(name, "wb"))
    f:write(input)
    f:close()
    io.stderr:write("fuzz_", target, ": Lua error on input ", name, ": ", tostring(err), "\n")
    os.exit(1)
  end
end
for _, s in ipairs(corpus) do try(s) end
while clock() < deadline do
  local input = mutate(corpus[random(#corpus)])
  try(input)
  -- keep some mutants as new starting points (no coverage feedback: a small pool)
  if random(16) == 1 then
    if #corpus < 256 then corpus[#corpus + 1] = input else corpus[random(#corpus)] = input end
  end
  if runs % 512 == 0 then collectgarbage() end
end
print(("fuzz_%s: ok, %d execs in %gs (seed %d)"):format(target, runs, seconds, seed))
