-- A fake cosocket over a string, for the cosocket response parser
-- (scalekit.transport.cosocket: reader / read_response) without nginx: the specs and
-- fuzz/fuzz_http1.lua feed it bytes.
--
--   local fake_socket = require "spec.support.fake_socket"
--   local sock = fake_socket.new(bytes, { step = 7 })  -- receiveany gives at most 7 bytes
--   sock.read                                          -- bytes handed out so far
--
-- receive(n) returns exactly n bytes or nil, "closed", partial; receiveany(max) gives
-- what is left up to min(max, step), nil, "closed" at the end. Those are the only
-- reads the parser makes: any other raises, so that a parser starting to use one
-- shows here first.
local _M = {}

local Sock = {}
Sock.__index = Sock

function _M.new(data, opts)
  opts = opts or {}
  return setmetatable({ data = data, pos = 1, step = opts.step or math.huge, read = 0,
                        max_ask = 0 }, Sock)
end

function Sock.settimeout(_) end

local function take(self, n)
  local s = self.data:sub(self.pos, self.pos + n - 1)
  self.pos = self.pos + #s
  self.read = self.read + #s
  return s
end

function Sock:receiveany(max)
  if max > self.max_ask then self.max_ask = max end
  if self.pos > #self.data then return nil, "closed" end
  return take(self, math.min(max, self.step))
end

function Sock:receive(pat)
  if type(pat) == "number" then
    if pat > self.max_ask then self.max_ask = pat end
    local s = take(self, pat)
    if #s < pat then return nil, "closed", s end
    return s
  end
  error("fake socket: unsupported receive pattern " .. tostring(pat))
end

return _M
