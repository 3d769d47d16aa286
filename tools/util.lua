-- The few helpers that the generators under tools/ and the specs checking them share,
-- so that a spec sorts and reads exactly as the tool it checks does. Plain Lua 5.1+,
-- no I/O at load time.
--
--   local util = require "tools.util"   -- from the repository root (./?.lua)
local _M = {}

-- The keys of t, sorted.
function _M.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- The file's bytes, or nil and io.open's message.
function _M.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then
    return nil, err
  end
  local s = f:read("*a")
  f:close()
  return s
end

-- Writes data to path; raises on failure.
function _M.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  f:close()
end

return _M
