-- The bench's large data set: `n` organizations generated page by page by the bench's
-- own nginx (spec/support/nginx.lua), shaped like the fake's seeded ones (~600 bytes
-- each) and never stored, so the fake Scalekit keeps only what the specs need.
--
--   local pages = require "bench.pages"
--   local p = pages.start(100000)   -- p.url: an environment_url; any client id and secret
--   p:stop()
--
-- Routes: POST /oauth/token (a fixed token) and GET /api/v1/organizations
-- (page_size, default 10, max 100; page_token: the offset of the page).
local nginx = require "spec.support.nginx"
local proc = require "spec.support.proc"

local _M = {}

local Pages = {}
Pages.__index = Pages

local HANDLER = [=[
local cjson = require "cjson"
local ngx = ngx
local N = ${N}
local TS = "2026-01-01T00:00:00Z"
local _M = {}

function _M.token()
  ngx.req.read_body()
  ngx.header["Content-Type"] = "application/json"
  ngx.print('{"access_token":"bench_pages_token","token_type":"Bearer","expires_in":3600}')
end

local function org(i)
  local tag = string.format("%06d", i)
  return {
    id = "org_" .. tag, display_name = "Seeded Organization " .. tag,
    external_id = "seed-org-" .. tag, region_code = "US", slug = "seeded-organization-" .. tag,
    logo_url = "https://assets.example.com/logos/seeded-organization-" .. tag .. ".png",
    metadata = { plan = "enterprise", industry = "software", seeded = "true", index = tostring(i) },
    settings = { features = {
      { name = "sso", enabled = true }, { name = "dir_sync", enabled = false },
      { name = "domain_verification", enabled = false }, { name = "session_policy", enabled = false },
    } },
    create_time = TS, update_time = TS,
  }
end

function _M.list()
  local args = ngx.req.get_uri_args()
  local size = math.min(tonumber(args.page_size) or 10, 100)
  local first = tonumber(args.page_token) or 0
  local items = {}
  for i = first + 1, math.min(first + size, N) do items[#items + 1] = org(i) end
  local next_token = first + size < N and tostring(first + size) or ""
  ngx.header["Content-Type"] = "application/json"
  ngx.print(cjson.encode({ organizations = items, next_page_token = next_token,
                           prev_page_token = first > 0 and tostring(math.max(first - size, 0)) or "",
                           total_size = N }))
end

return _M
]=]

--- Starts the generator for `n` organizations.
function _M.start(n)
  local self = setmetatable({}, Pages)
  self.nginx = nginx.start({
    kind = "pages", who = "bench pages",
    install = function(prefix)
      proc.write_file(prefix .. "/bench_pages.lua", (HANDLER:gsub("%${N}", tostring(math.floor(n)))), "644")
    end,
    conf = function(prefix, ports)
      return nginx.conf{ prefix = prefix, http = {
        '    lua_package_path "' .. prefix .. '/?.lua;;";',
        "    keepalive_requests 100000;",
      }, servers = nginx.server{ port = ports.port, body = {
        '        location = /oauth/token { content_by_lua_block { require("bench_pages").token() } }',
        '        location = /api/v1/organizations { content_by_lua_block { require("bench_pages").list() } }',
      } } }
    end,
    ready = function(p)
      return proc.sh("curl -sf --max-time 1 -o /dev/null http://127.0.0.1:" .. p.port .. "/api/v1/organizations")
    end,
  }, 2)
  self.url = "http://127.0.0.1:" .. self.nginx.port
  return self
end

function Pages:stop()
  return self.nginx:stop()
end

return _M
