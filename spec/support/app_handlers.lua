-- luacheck: globals ngx
-- The test application of spec/integration/nginx_spec.lua: handlers of an OpenResty app that
-- uses scalekit, run inside the app nginx started by spec/support/app.lua. Every
-- answer is JSON describing what the client returned, for the spec to assert on.
local scalekit = require "scalekit"
local scenarios = require "spec.support.scenarios"
local helpers = require "spec.support.client"
local cjson = require "cjson"

local ngx = ngx
local json = cjson.new()

local _M = {}

local LIST = "OrganizationService_ListOrganization"

local function results() return ngx.shared.app_results end

local function send(v)
  ngx.header["Content-Type"] = "application/json"
  ngx.say(json.encode(v))
end

local function err_fields(err)
  if err == nil then return nil end
  return { kind = err.kind, status = err.status, message = err.message, error_code = err.error_code,
           text = tostring(err) }
end

local function transport_kind(sk)
  local t = sk._s.transport
  return t:current() == t.curl and "libcurl" or "cosocket"
end

local function arg(name)
  local v = ngx.var["arg_" .. name]
  if v == nil or v == "" then return nil end
  return ngx.unescape_uri(v)
end

---------------------------------------------------------------------------
-- shared scenarios: one client per run, kept across the run's steps (1 worker)
---------------------------------------------------------------------------

local runs = {}

function _M.step()
  local run, name = arg("run"), arg("scenario")
  local sc = assert(scenarios.by_name[name], "unknown scenario")
  local sk = runs[run]
  if not sk then
    for id, old in pairs(runs) do
      old:close()
      runs[id] = nil
    end
    local extra
    local dict = arg("shared_dict")
    if dict then
      ngx.shared[dict]:flush_all()   -- each run starts without a cached token
      extra = { shared_dict = dict }
    end
    sk = helpers.new_client({ url = arg("url"), ca_file = arg("ca") }, sc.client, extra)
    runs[run] = sk
  end
  send(scenarios.client_step(sk, sc.steps[tonumber(arg("step"))]))
end

function _M.close_run()
  local sk = runs[arg("run")]
  if sk then sk:close() end
  runs[arg("run")] = nil
  send({})
end

---------------------------------------------------------------------------
-- a worker-wide client, as an application would keep one
---------------------------------------------------------------------------

local clients = {}

local function client(opts)
  local url = arg("url")
  local key = ngx.var.args:gsub("&?i=%d+", "")
  local sk = clients[key]
  if not sk then
    local o = { environment_url = url, client_id = helpers.CLIENT_ID,
                client_secret = helpers.CLIENT_SECRET, shared_dict = arg("shared_dict"),
                ca_file = arg("ca") }
    for _, k in ipairs({ "max_retries", "timeout", "connect_timeout" }) do
      o[k] = tonumber(arg(k))
    end
    for k, v in pairs(opts or {}) do o[k] = v end
    local err
    sk, err = scalekit.new(o)
    if not sk then return nil, err end
    clients[key] = sk
  end
  return sk
end

-- GET /t/call?url=…[&shared_dict=…]: one API call
function _M.call()
  local t0 = ngx.now()
  local sk, err = client()
  local res
  if sk then res, err = sk:call(LIST, {}) end
  ngx.update_time()
  send({ ok = res ~= nil, err = err_fields(err), worker = ngx.worker.pid(),
         transport = sk and transport_kind(sk), elapsed = ngx.now() - t0,
         stats = sk and sk._s.transport.cosocket:stats() })
end

-- GET /t/stuck_lock?url=…: the token lock held by a worker that died (it expires
-- in 60 s): a call waits `timeout` + 1 s for it, then fetches by itself
function _M.stuck_lock()
  local dict = ngx.shared.scalekit
  local id = require("scalekit.ngx").token_id{ environment_url = arg("url"), client_id = helpers.CLIENT_ID,
                                               client_secret = helpers.CLIENT_SECRET }
  dict:delete("scalekit:token:" .. id)
  dict:set("scalekit:lock:" .. id .. ":token", "held by a dead worker", 60)
  local sk = assert(scalekit.new{ environment_url = arg("url"), client_id = helpers.CLIENT_ID,
                                  client_secret = helpers.CLIENT_SECRET, shared_dict = "scalekit",
                                  timeout = 0.5 })
  local t0 = ngx.now()
  local res, err = sk:call(LIST, {})
  ngx.update_time()
  local elapsed = ngx.now() - t0
  local still_locked = dict:get("scalekit:lock:" .. id .. ":token") ~= nil
  dict:delete("scalekit:lock:" .. id .. ":token")
  sk:close()
  send({ ok = res ~= nil, err = err_fields(err), elapsed = elapsed, still_locked = still_locked })
end

-- GET /t/new?url=…&shared_dict=…: what scalekit.new returns (a missing dict)
function _M.new()
  local sk, err = scalekit.new{ environment_url = arg("url"), client_id = helpers.CLIENT_ID,
                                client_secret = helpers.CLIENT_SECRET,
                                shared_dict = arg("shared_dict") }
  if sk then sk:close() end
  send({ ok = sk ~= nil, err = err_fields(err) })
end

-- GET /t/jwks?url=…&shared_dict=…: the JWKS cache object the client got
function _M.jwks()
  local sk = assert(client())
  local cache = sk._s.jwks_cache
  local before = cache:get()
  cache:set('{"keys":[]}', 5)
  send({ before = before, after = cache:get(),
         shm = ngx.shared[arg("shared_dict")]:get("scalekit:jwks:" .. arg("url")) })
end

-- GET /t/validate?url=…&token=…[&shared_dict=…]: a new client each time validates
function _M.validate()
  local sk = assert(scalekit.new{ environment_url = arg("url"), client_id = helpers.CLIENT_ID,
                                  client_secret = helpers.CLIENT_SECRET, shared_dict = arg("shared_dict") })
  local claims, err = sk:validate_access_token(arg("token"))
  sk:close()
  send({ ok = claims ~= nil, sub = claims and claims.sub, err = err_fields(err) })
end

-- GET /t/validate_cached?url=…&token=…: the worker's cached client validates (its
-- JWKS cache starts empty for a new url string)
function _M.validate_cached()
  local sk = assert(client())
  local claims, err = sk:validate_access_token(arg("token"))
  send({ ok = claims ~= nil, sub = claims and claims.sub, err = err_fields(err), worker = ngx.worker.pid() })
end

-- GET /t/raw?base=…&path=…[&timeout=…&max_body_size=…&ca=…]: one attempt of the
-- cosocket transport, summarized like the libcurl one (spec/support/scenarios.lua)
function _M.raw()
  local sk = assert(scalekit.new{
    environment_url = arg("base"), client_id = "skc_raw", client_secret = helpers.CLIENT_SECRET,
    timeout = tonumber(arg("timeout")), max_body_size = tonumber(arg("max_body_size")),
    ca_file = arg("ca"),
  })
  local out = scenarios.client_step(sk, { client = "raw", method = "GET", path = arg("path"), bearer = "tok" })
  sk:close()
  send(out)
end

---------------------------------------------------------------------------
-- phases
---------------------------------------------------------------------------

local init_sk

-- init_by_lua: a client made in the master, before the workers fork
function _M.init(url)
  init_sk = assert(scalekit.new{ environment_url = url, client_id = helpers.CLIENT_ID,
                                 client_secret = helpers.CLIENT_SECRET, shared_dict = "scalekit" })
end

local function record(key, v)
  results():set(key, json.encode(v))
end

-- A call of the init_by_lua client from the current phase: how it went, on which transport.
local function init_call()
  local res, err = init_sk:call(LIST, {})
  return { ok = res ~= nil, err = err_fields(err), transport = transport_kind(init_sk) }
end

-- Records init_call() under `key` from a timer (cosockets), where I/O is allowed.
local function record_from_timer(key)
  assert(ngx.timer.at(0, function(premature)
    if premature then return end
    record(key, init_call())
  end))
end

-- init_worker_by_lua: a blocking token fetch (libcurl), then a timer doing a call
-- (cosockets)
function _M.init_worker()
  local token, err = init_sk:token()
  record("init_worker", { ok = token ~= nil, err = err_fields(not token and err or nil),
                          transport = transport_kind(init_sk) })
  record_from_timer("timer")
end

-- GET /t/init_client: the client made in init_by_lua, used from a request
function _M.init_client()
  send(init_call())
end

-- GET /t/result?key=…
function _M.result()
  local v = results():get(arg("key"))
  ngx.header["Content-Type"] = "application/json"
  ngx.say(v or "null")
end

-- set_by_lua: returns what a call raises there
function _M.set_phase()
  local ok, err = pcall(init_sk.call, init_sk, LIST, {})
  return ok and "no error" or tostring(err)
end

-- log / header_filter / body_filter: a call there raises (the spec reads error.log)
function _M.no_io()
  init_sk:call(LIST, {})
end

-- log_by_lua done right: the I/O goes to a timer
function _M.log_with_timer()
  record_from_timer("log_timer")
end

return _M
