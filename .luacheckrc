-- luacheck config: `make lint` (Debian's lua-check).
std = "min"
max_line_length = 120
-- types/ holds the generated LuaLS ---@meta library: empty function bodies by design
exclude_files = { "build/**", "build-luajit/**", "spec/tmp/**", "luarocks-tree/**", "types/**", "build-lua53/**", "build-lua51/**", "build-asan/**" }

files["spec/**/*_spec.lua"] = { std = "+busted" }
-- ngx is read-only in the OpenResty files and in the fake server
files["lua/scalekit/ngx/**"] = { read_globals = { "ngx" } }
files["lua/scalekit/transport/cosocket.lua"] = { read_globals = { "ngx" } }
files["spec/support/fake/**"] = { read_globals = { "ngx" } }
files["spec/support/app_handlers.lua"] = { read_globals = { "ngx" } }
-- generated
files["lua/scalekit/operations.lua"] = { max_line_length = false }
