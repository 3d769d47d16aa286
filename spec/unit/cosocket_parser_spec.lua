-- The cosocket transport's response parser (scalekit.transport.cosocket), fed bytes by
-- a fake socket (spec/support/fake_socket.lua), issue 15: strict status line, every read
-- bounded before it is buffered (header line, header count, header block, chunk-size
-- line, trailers, body by max_body_size, 1xx answers).
require "spec.support.client" -- package paths for this runtime

local cosocket = require "scalekit.transport.cosocket"
local fake_socket = require "spec.support.fake_socket"

local MAX = 1024 * 1024
local SLACK = 2 * 16384   -- what a reader may hold past a limit (two socket reads)

local function parse(bytes, opts)
  opts = opts or {}
  local sock = fake_socket.new(bytes, { step = opts.step })
  local r = cosocket.reader(sock, math.huge)
  local res, a, b, c = cosocket.read_response(r, opts.method or "GET", { max_body = opts.max or MAX, timeout = 10 })
  return res, a, b, c, sock
end

local function refused(bytes, pattern, opts)
  local res, kind, message, flag, sock = parse(bytes, opts)
  assert.is_nil(res, "accepted: " .. bytes:sub(1, 60))
  assert.are.equal("network", kind)
  assert.truthy(message:find(pattern), message)
  return flag, sock
end

local OK = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Request-Id: r1\r\n\r\n{}"

describe("cosocket response parser", function()
  it("loads outside nginx", function()
    assert.is_function(cosocket.read_response)
  end)

  it("parses an answer split at any byte", function()
    for step = 1, #OK do
      local res, keepalive = parse(OK, { step = step })
      assert.are.equal(200, res.status, "step " .. step)
      assert.are.equal("{}", res.body)
      assert.are.equal("r1", res.request_id)
      assert.is_true(keepalive)
    end
  end)

  describe("status line: HTTP/1.x SP 3DIGIT [SP reason]", function()
    for _, line in ipairs({ "HTTP/1.1 200 OK", "HTTP/1.0 200 OK", "HTTP/1.1 200", "HTTP/1.1 200 ",
                            "HTTP/1.1 404 Not  Found", "HTTP/1.1 599 x\tz" }) do
      it("accepts " .. line, function()
        local res = parse(line .. "\r\nContent-Length: 0\r\n\r\n")
        assert.is_table(res)
      end)
    end
    for _, line in ipairs({ "HTTP/1.1 2000 OK", "HTTP/1.1 2000", "HTTP/1.1 200OK", "HTTP/1.1  200 OK",
                            "HTTP/2 200 OK", "HTTP/1.2 200 OK", "http/1.1 200 OK", "HTTP/1.1 099 x",
                            "HTTP/1.1 600 x", "HTTP/1.1 20 OK", "HTTP/1.1 +20 OK", " HTTP/1.1 200 OK",
                            "HTTP/1.1 200 O\0K", "HTTP/1.1 200 O\rK", "HTTP/1.1 2e2 OK", "" }) do
      it("refuses " .. ("%q"):format(line), function()
        refused(line .. "\r\nContent-Length: 0\r\n\r\n", "invalid status line")
      end)
    end
  end)

  it("a 4 MiB header line: refused after reading at most MAX_LINE + two reads", function()
    local bytes = "HTTP/1.1 200 OK\r\nX-Big: " .. string.rep("a", 4 * 1024 * 1024) .. "\r\n\r\n"
    local flag, sock = refused(bytes, "header line too long")
    assert.are.equal("permanent", flag)
    assert.is_true(sock.read <= cosocket.MAX_LINE + SLACK, sock.read)
  end)

  it("a 4 MiB status line: refused the same way", function()
    local _, sock = refused("HTTP/1.1 200 " .. string.rep("a", 4 * 1024 * 1024), "status line too long")
    assert.is_true(sock.read <= cosocket.MAX_LINE + SLACK, sock.read)
  end)

  it("more than MAX_HEADERS header lines", function()
    local t = { "HTTP/1.1 200 OK" }
    for i = 1, cosocket.MAX_HEADERS + 1 do t[#t + 1] = "X-H" .. i .. ": v" end
    refused(table.concat(t, "\r\n") .. "\r\n\r\n", "too many headers")
  end)

  it("a header block over MAX_HEADER_BLOCK bytes (each line under MAX_LINE)", function()
    local t = { "HTTP/1.1 200 OK" }
    for i = 1, 9 do t[#t + 1] = "X-H" .. i .. ": " .. string.rep("v", 8000) end
    local _, sock = refused(table.concat(t, "\r\n") .. "\r\n\r\n", "header block too large")
    assert.is_true(sock.read <= cosocket.MAX_HEADER_BLOCK + SLACK)
  end)

  it("invalid header lines (no colon, obs-fold, NUL, bare CR, space before colon)", function()
    for _, h in ipairs({ "NoColon", " folded: x", "X-A: a\0b", "X-A: a\rb", "X-A : b", ": empty" }) do
      refused("HTTP/1.1 200 OK\r\n" .. h .. "\r\nContent-Length: 0\r\n\r\n", "invalid header line")
    end
  end)

  it("invalid or conflicting Content-Length", function()
    for _, v in ipairs({ "-1", "12abc", "0x10", "1234567890123456", "" }) do
      refused("HTTP/1.1 200 OK\r\nContent-Length: " .. v .. "\r\n\r\n", "Content%-Length")
    end
    refused("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "Content%-Length")
  end)

  it("a Content-Length over max_body_size is refused before reading the body", function()
    local flag, sock = refused("HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n" .. string.rep("x", 100000),
                               "max_body_size", { max = 1000 })
    assert.are.equal("permanent", flag)
    assert.is_true(sock.read <= SLACK)
  end)

  it("a close-delimited body over max_body_size: bounded read", function()
    local _, sock = refused("HTTP/1.0 200 OK\r\n\r\n" .. string.rep("x", 1000000), "max_body_size", { max = 5000 })
    assert.is_true(sock.read <= 5000 + SLACK, sock.read)
  end)

  describe("chunked", function()
    local HEAD = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    it("reads chunks, extensions and trailers", function()
      local res, keepalive = parse(HEAD .. "2;x=y\r\n{}\r\n0\r\nX-T: 1\r\n\r\n", { step = 3 })
      assert.are.equal("{}", res.body)
      assert.is_true(keepalive)
    end)
    it("a chunk-size line of 4 MiB: bounded", function()
      local _, sock = refused(HEAD .. "2;" .. string.rep("e", 4 * 1024 * 1024) .. "\r\n{}\r\n0\r\n\r\n",
                              "line too long")
      assert.is_true(sock.read <= cosocket.MAX_LINE + SLACK, sock.read)
    end)
    it("chunk sizes that are not hex, too long, or a total over max_body_size", function()
      refused(HEAD .. "zz\r\n", "invalid chunked")
      refused(HEAD .. "123456789\r\n", "invalid chunked")
      refused(HEAD .. "-1\r\n", "invalid chunked")
      local _, sock = refused(HEAD .. "ffff\r\n" .. string.rep("x", 70000), "max_body_size", { max = 1000 })
      assert.is_true(sock.read <= SLACK)
      refused(HEAD .. "2\r\n{}XX\r\n0\r\n\r\n", "invalid chunked")
    end)
    it("endless trailers", function()
      local t = {}
      for i = 1, cosocket.MAX_HEADERS + 5 do t[i] = "X-T" .. i .. ": v\r\n" end
      refused(HEAD .. "0\r\n" .. table.concat(t) .. "\r\n", "trailer")
    end)
  end)

  it("endless 1xx answers", function()
    refused(string.rep("HTTP/1.1 100 Continue\r\n\r\n", 50) .. OK, "interim")
    local res = parse(string.rep("HTTP/1.1 100 Continue\r\n\r\n", 3) .. OK)
    assert.are.equal(200, res.status)
  end)

  it("keep-alive only for a complete answer with nothing after it", function()
    local _, keepalive = parse(OK .. "HTTP/1.1 200 OK\r\n")
    assert.is_false(keepalive)
    _, keepalive = parse("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    assert.is_false(keepalive)
    _, keepalive = parse("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
    assert.is_false(keepalive)
  end)

  it("nothing at all is 'stale' (a dead pooled connection); a partial answer is not", function()
    local res, kind, _, flag = parse("")
    assert.is_nil(res)
    assert.are.equal("network", kind)
    assert.are.equal("stale", flag)
    res, kind, _, flag = parse("HTTP/1.1 200 OK\r\nContent-Le")
    assert.is_nil(res)
    assert.are.equal("network", kind)
    assert.is_nil(flag)
  end)

  it("bare LF line ends are accepted", function()
    local res = parse("HTTP/1.1 200 OK\nContent-Length: 2\n\n{}")
    assert.are.equal("{}", res.body)
  end)
end)
