-- luacheck: globals ngx
--- Content handlers for what Scalekit sends: webhooks and interceptor calls.
--
--   sk:webhook_receiver{secret =, handler = fn(event)}        204 / 400 / 401 / 405 / 500
--   sk:interceptor_receiver{secret =, handler = fn(payload)}  200 {"decision": …} / 400 / 401 / …
--
-- Both read the raw body (also when nginx buffered it to a file), verify it with the
-- Standard Webhooks signature (sk:verify_webhook), and refuse a `webhook-id` already
-- seen within the tolerance (401, kept in a lua_shared_dict, so for all workers).
-- A handler that raises gets 500, with its error in the log, and its id forgotten so
-- that Scalekit's retry is not taken for a replay.
local core = require "scalekit.core"
local errors = require "scalekit.errors"
local webhook = require "scalekit.auth.webhook"
local gateway = require "scalekit.gateway"

local _M = {}

local ngx = ngx
local type = type
local pairs = pairs
local tostring = tostring
local xpcall = xpcall
local traceback = debug.traceback
local io_open = io.open
local max = math.max
local misuse = errors.misuse
local b64url = core.b64url_encode

local json = require("cjson.safe").new()

local KNOWN = { secret = "string", handler = "function", tolerance = "number", shared_dict = "string" }

local function check(client, what, opts)
  if type(opts) ~= "table" then misuse("%s: opts must be a table with secret and handler", what) end
  for k, v in pairs(opts) do
    local want = KNOWN[k]
    if not want then misuse("%s: unknown option '%s'", what, tostring(k)) end
    if type(v) ~= want then misuse("%s: option '%s' must be a %s", what, k, want) end
  end
  if not opts.secret then misuse("%s: option 'secret' (whsec_…) is required", what) end
  if not opts.handler then misuse("%s: option 'handler' is required", what) end
  local dict = gateway.dict(client, opts.shared_dict, what)
  if not dict then
    misuse("%s: replay protection needs a lua_shared_dict: pass shared_dict = \"name\" or create the"
      .. " client with scalekit.new{shared_dict =}", what)
  end
  return opts, dict
end

--- The request body exactly as received, from memory or from nginx's temp file.
function _M.raw_body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body then return body end
  local path = ngx.req.get_body_file()
  if not path then return "" end
  local f = io_open(path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return text
end

local function answer(status, doc)
  ngx.status = status
  if doc then
    ngx.header["Content-Type"] = "application/json"
    ngx.say(json.encode(doc))
  end
  return ngx.exit(status)
end

local BAD_REQUEST = { webhook_missing_header = true, webhook_bad_timestamp = true }

-- verify and claim the id; the decoded body, or the answer already sent
local function verify(client, what, opts, dict)
  if ngx.req.get_method() ~= "POST" then
    ngx.header["Allow"] = "POST"
    return nil, answer(405, { error = "method_not_allowed" })
  end
  local body = _M.raw_body()
  if not body then
    ngx.log(ngx.ERR, "scalekit: ", what, ": cannot read the buffered request body")
    return nil, answer(500)
  end
  local headers = ngx.req.get_headers()
  local tolerance = opts.tolerance or webhook.DEFAULT_TOLERANCE
  local doc, err = client:verify_webhook(body, headers, opts.secret, { tolerance = tolerance })
  if not doc then
    if err.error_code == "webhook_bad_secret" then
      ngx.log(ngx.ERR, "scalekit: ", what, ": the configured secret is not a whsec_ secret")
      return nil, answer(500)
    end
    ngx.log(ngx.WARN, "scalekit: ", what, ": request refused: ", tostring(err))
    local status = (err.kind == "decode" or BAD_REQUEST[err.error_code]) and 400 or 401
    return nil, answer(status, { error = err.error_code or "invalid_request", error_description = err.message })
  end
  local id = headers["webhook-id"]
  if type(id) == "table" then id = id[1] end
  local key = "scalekit:wh:" .. b64url(core.sha256(tostring(id)))
  local ok, derr = dict:add(key, true, max(2 * tolerance, 60))
  if not ok then
    if derr == "exists" then
      ngx.log(ngx.WARN, "scalekit: ", what, ": replayed webhook-id refused")
      return nil, answer(401, { error = "webhook_replayed", error_description = "webhook-id already received" })
    end
    ngx.log(ngx.WARN, "scalekit: ", what, ": cannot record the webhook-id (replays not detected): ", derr)
  end
  return doc, key
end

-- check the options, verify and claim the id: the options, the dict, the decoded
-- body and its key; or no body, the answer already sent
local function receive(client, what, opts)
  local dict
  opts, dict = check(client, what, opts)
  local doc, key = verify(client, what, opts, dict)
  return opts, dict, doc, key
end

local function run(dict, key, what, handler, doc)
  local ok, a, b = xpcall(handler, traceback, doc)
  if not ok then
    dict:delete(key)
    ngx.log(ngx.ERR, "scalekit: ", what, ": handler failed: ", tostring(a))
    return nil
  end
  return true, a, b
end

function _M.webhook(client, opts)
  local dict, event, key
  opts, dict, event, key = receive(client, "webhook_receiver", opts)
  if not event then return end
  if not run(dict, key, "webhook_receiver", opts.handler, event) then return answer(500) end
  return answer(204)
end

function _M.interceptor(client, opts)
  local dict, payload, key
  opts, dict, payload, key = receive(client, "interceptor_receiver", opts)
  if not payload then return end
  local ok, decision, extra = run(dict, key, "interceptor_receiver", opts.handler, payload)
  if not ok then return answer(500) end
  if decision ~= "ALLOW" and decision ~= "DENY" then
    ngx.log(ngx.ERR, "scalekit: interceptor_receiver: handler returned ", tostring(decision),
            ", not \"ALLOW\" or \"DENY\"")
    return answer(500)
  end
  local made, body = pcall(webhook.interceptor_response, decision, extra)
  if not made then
    ngx.log(ngx.ERR, "scalekit: interceptor_receiver: handler's answer: ", tostring(body))
    return answer(500)
  end
  ngx.status = 200
  ngx.header["Content-Type"] = "application/json"
  ngx.print(body)
  return ngx.exit(200)
end

return _M
