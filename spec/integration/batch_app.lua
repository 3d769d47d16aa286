-- luacheck: globals ngx
-- OpenResty handler of spec/integration/batch_spec.lua and bench/latency.lua: runs
-- sk:batch (or the sequential sk:call loop) inside a content handler and answers
-- what came back as JSON. Copied into the app nginx's package path as batch_app.
--   GET /t/batch?url=…&ids=a,b,c[&n=…][&concurrency=…][&mode=sequential|init_result]
--                [&close_at=i][&timeout=…]
local _M = {}

local GET = "OrganizationService_GetOrganization"

local function client(url, timeout)
  return assert(require("scalekit").new{
    environment_url = url, client_id = "skc_test", client_secret = "test_secret_value",
    retry_backoff = 0.01, retry_backoff_max = 0.05, keepalive_pool = 64,
    timeout = timeout or 10,
  })
end

--- init_worker_by_lua text: a batch of GetOrganization(ids) on the libcurl multi handle
--- (no cosockets there), its outcome kept in lua_shared_dict batch_init.
function _M.init_worker_conf(url, ids)
  local quoted = {}
  for i, id in ipairs(ids) do quoted[i] = ("%q"):format(id) end
  return ([[
    init_worker_by_lua_block {
        local ok, err = pcall(function()
            local sk = assert(require("scalekit").new{ environment_url = %q,
                client_id = "skc_test", client_secret = "test_secret_value" })
            local calls = {}
            for i, id in ipairs({ %s }) do calls[i] = { %q, { id = id } } end
            local stats = {}
            local results, errs = sk:batch(calls, { stats = stats })
            assert(errs == nil, "batch failed in init_worker")
            ngx.shared.batch_init:set("engine", stats.engine)
            ngx.shared.batch_init:set("count", #results)
            sk:close()
        end)
        if not ok then ngx.log(ngx.ERR, "batch in init_worker: ", err) end
    }
]]):format(url, table.concat(quoted, ", "), GET)
end

function _M.run()
  local cjson = require "cjson"
  local a = ngx.req.get_uri_args()
  if a.mode == "init_result" then
    local d = ngx.shared.batch_init
    ngx.say(cjson.encode({ engine = d:get("engine"), count = d:get("count") }))
    return
  end
  local sk = client(a.url, tonumber(a.timeout))
  local ids = {}
  for id in a.ids:gmatch("[^,]+") do ids[#ids + 1] = id end
  local n = tonumber(a.n) or #ids
  local calls = {}
  for i = 1, n do calls[i] = { GET, { id = ids[(i - 1) % #ids + 1] } } end
  assert(sk:token())  -- the token is not part of what is measured
  local out_ids, out_errs, nerr, nclosed = {}, {}, 0, 0
  local stats = {}
  local before = sk:stats()
  ngx.update_time()
  local t0 = ngx.now()
  local results, errs = {}, nil
  if a.mode == "sequential" then
    for i = 1, n do
      local res, err = sk:call(calls[i][1], calls[i][2])
      results[i] = res
      if err then errs = errs or {}; errs[i] = err end
    end
    local after = sk:stats()
    stats = { engine = "sequential", connects = after.connects - before.connects, tokens = 0 }
  else
    local close_at = tonumber(a.close_at)
    local opts = { concurrency = tonumber(a.concurrency), stats = stats }
    if close_at then
      opts.on_result = function(i, res)
        results[i] = res
        if i == close_at then sk:close() end
      end
      local _
      _, errs = sk:batch(calls, opts)
    else
      results, errs = sk:batch(calls, opts)
    end
  end
  ngx.update_time()
  local elapsed = ngx.now() - t0
  for i = 1, n do
    local r = results[i]
    out_ids[i] = r and r.organization and r.organization.id or false
    local e = errs and errs[i]
    if e then
      nerr = nerr + 1
      if e.error_code == "client_closed" then nclosed = nclosed + 1 end
      out_errs[tostring(i)] = { kind = e.kind, status = e.status, error_code = e.error_code }
    end
  end
  sk:close()
  ngx.say(cjson.encode({ ids = out_ids, errs = out_errs, error_count = nerr, closed_count = nclosed,
                         stats = stats, elapsed = elapsed, n = n }))
end

return _M
