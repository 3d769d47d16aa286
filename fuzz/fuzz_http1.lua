-- Target of fuzz/lua_fuzz.lua: the cosocket transport's HTTP/1.x response parser
-- (scalekit.transport.cosocket reader + read_response) over a fake socket, at several
-- read sizes. It must never raise; every answer it accepts has a 3-digit status, a
-- string body within max_body_size, and it never reads far past its limits.
local cosocket = require "scalekit.transport.cosocket"
local fake_socket = require "spec.support.fake_socket"

local MAX_BODY = 4096
local SLACK = 2 * 16384

local seeds = {
  "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Request-Id: r1\r\nRetry-After: 3\r\n\r\n{}",
  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\n{}\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
  "HTTP/1.0 200 OK\r\n\r\nclose delimited body",
  "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
  "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 5\r\n\r\nerror",
  "HTTP/1.1 200 OK\nContent-Length: 0\n\n",
}

local function run(input)
  for _, step in ipairs({ 1, 7, 16384 }) do
    local sock = fake_socket.new(input, { step = step })
    local r = cosocket.reader(sock, math.huge)
    local res, a, b, c = cosocket.read_response(r, "GET", { max_body = MAX_BODY, timeout = 1 })
    if res then
      local st = res.status
      assert(type(st) == "number" and st % 1 == 0 and st >= 100 and st <= 599, "bad status")
      assert(type(res.body) == "string" and #res.body <= MAX_BODY, "body over max_body_size")
      assert(type(a) == "boolean", "keepalive is not a boolean")
    else
      assert(a == "network" or a == "timeout", "bad kind " .. tostring(a))
      assert(type(b) == "string", "no message")
      assert(c == nil or c == "stale" or c == "permanent", "bad flag")
    end
    assert(sock.read <= MAX_BODY + cosocket.MAX_HEADER_BLOCK * (cosocket.MAX_INTERIM + 1) + 2 * SLACK,
           "read too much")
  end
end

return { seeds = seeds, run = run }
