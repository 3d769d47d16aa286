-- LuaRocks packaging: the rockspecs list every module of lua/scalekit/ and every C
-- source of csrc/, and `luarocks make` (offline, the documented command) installs a
-- tree for Lua 5.4 and for LuaJIT from which a script run outside the checkout
-- requires scalekit and calls the fake Scalekit.
--
-- `luarocks make` builds in its working directory (csrc/*.o, scalekit/core.so): the
-- install runs on a copy of the checkout's csrc/, lua/, rockspec/ and README.md, so
-- that two runs at once (Lua 5.4 and LuaJIT busted) never share object files and the
-- checkout stays clean. One build per target per spec run.
local server = require "spec.support.fake"

local proc = require "spec.support.proc"
local quote, run = proc.quote, proc.run

local ROCKSPEC = "rockspec/scalekit-scm-1.rockspec"
local CURL_INCDIR = "/usr/include/x86_64-linux-gnu"

local function read(path) return assert(proc.read_file(path)) end

-- A rockspec is a Lua chunk that sets globals: run it in an empty environment.
local function load_rockspec(path)
  local env = {}
  local text = read(path)
  local chunk
  if rawget(_G, "setfenv") then
    chunk = assert(loadstring(text, "@" .. path)) -- luacheck: ignore 113
    setfenv(chunk, env) -- luacheck: ignore 113
  else
    chunk = assert(load(text, "@" .. path, "t", env))
  end
  chunk()
  return env
end

local function lines(cmd)
  local out = {}
  for l in run(cmd):gmatch("[^\n]+") do out[#out + 1] = l end
  table.sort(out)
  return out
end

-- lua/scalekit/a/b.lua -> scalekit.a.b; lua/scalekit/a/init.lua -> scalekit.a
local function module_name(path)
  local m = path:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/", ".")
  return (m:gsub("%.init$", ""))
end

local function keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

describe("luarocks", function()
  describe("rockspecs", function()
    local scm, rel

    local reldir

    setup(function()
      scm = load_rockspec(ROCKSPEC)
      reldir = run("mktemp -d /tmp/scalekit-relspec.XXXXXXXX"):match("(%S+)")
      local version = read("csrc/sk.h"):match('#define SK_VERSION "([^"]+)"')
      local out, rc = run("bash tools/rockspec.sh " .. version .. " " .. quote(reldir) .. " 2>/dev/null")
      assert(rc == 0, "tools/rockspec.sh failed: " .. out)
      rel = load_rockspec(out:match("(%S+)"))
      rel.path = out:match("(%S+)")
    end)

    teardown(function()
      if reldir then run("rm -rf " .. quote(reldir)) end
    end)

    it("passes luarocks lint: the scm rockspec and a generated release one", function()
      for _, path in ipairs({ ROCKSPEC, rel.path }) do
        local out, rc = run("luarocks lint " .. quote(path) .. " 2>&1")
        assert.equal(0, rc, path .. ": " .. out)
      end
      assert.equal("MIT", scm.description.license)
      assert.truthy(#scm.description.detailed > 100)
      assert.matches("^https://", scm.description.homepage)
    end)

    it("tools/rockspec.sh refuses a version that csrc/sk.h and CHANGELOG.md do not name", function()
      local out, rc = run("bash tools/rockspec.sh 9.9.9 " .. quote(reldir) .. " 2>&1")
      assert.are_not.equal(0, rc)
      assert.matches("csrc/sk.h says", out)
      assert.equal(1, select(2, run("test -f " .. quote(reldir .. "/scalekit-9.9.9-1.rockspec"))))
    end)

    it("name, version and dependencies", function()
      assert.equal("scalekit", scm.package)
      assert.equal("scm-1", scm.version)
      assert.same({ "lua >= 5.1, < 5.5", "lua-cjson" }, scm.dependencies)
      assert.same({ header = "curl/curl.h", library = "curl" }, scm.external_dependencies.CURL)
      assert.same({ header = "openssl/evp.h", library = "crypto" }, scm.external_dependencies.OPENSSL)
      assert.equal("builtin", scm.build.type)
    end)

    it("lists every Lua module of lua/scalekit/ (a new file must be added here)", function()
      local want = { "scalekit.core" }
      local paths = {}
      for _, f in ipairs(lines("find lua/scalekit -name '*.lua' -type f")) do
        local m = module_name(f)
        want[#want + 1] = m
        paths[m] = f
      end
      table.sort(want)
      assert.same(want, keys(scm.build.modules))
      for m, f in pairs(paths) do
        assert.equal(f, scm.build.modules[m], m)
      end
    end)

    it("builds scalekit.core from every csrc/*.c with curl and crypto", function()
      local core = scm.build.modules["scalekit.core"]
      local want = lines("ls csrc/*.c")
      local got = {}
      for i, s in ipairs(core.sources) do got[i] = s end
      table.sort(got)
      assert.same(want, got)
      assert.same({ "curl", "crypto" }, core.libraries)
      local inc = table.concat(core.incdirs, " ")
      assert.matches("%$%(CURL_INCDIR%)", inc)
      assert.matches("%$%(OPENSSL_INCDIR%)", inc)
      local lib = table.concat(core.libdirs, " ")
      assert.matches("%$%(CURL_LIBDIR%)", lib)
      assert.matches("%$%(OPENSSL_LIBDIR%)", lib)
    end)

    it("the release rockspec is the scm one plus its version and tag", function()
      local version = read("csrc/sk.h"):match('#define SK_VERSION "([^"]+)"')
      assert.equal(version .. "-1", rel.version)
      assert.equal(reldir .. "/scalekit-" .. rel.version .. ".rockspec", rel.path)
      assert.equal("v" .. version, rel.source.tag)
      assert.equal(scm.source.url, rel.source.url)
      assert.is_nil(rel.source.branch)
      for _, k in ipairs({ "package", "rockspec_format", "description", "dependencies",
                           "external_dependencies", "build" }) do
        assert.same(scm[k], rel[k], k)
      end
    end)
  end)

  describe("install", function()
    local srv, tmp

    setup(function()
      srv = server.start{ workers = 1 }
      srv:seed{ organizations = 7 }
      tmp = run("mktemp -d /tmp/scalekit-rock.XXXXXXXX"):match("(%S+)")
      assert(tmp, "mktemp")
      assert(select(2, run("cp -r csrc lua rockspec types README.md " .. quote(tmp .. "/"))) == 0)
    end)

    teardown(function()
      if srv then srv:stop() end
      if tmp and tmp:match("^/tmp/scalekit%-rock%.%w+$") then run("rm -rf " .. quote(tmp)) end
    end)

    -- The script run from an empty directory, with only the tree (and the system's
    -- lua-cjson, the one dependency) on its paths.
    local SCRIPT = [[
local tree, lv, url = arg[1], arg[2], arg[3]
package.path = tree .. "/share/lua/" .. lv .. "/?.lua;" .. tree .. "/share/lua/" .. lv .. "/?/init.lua"
package.cpath = tree .. "/lib/lua/" .. lv .. "/?.so;/usr/lib/x86_64-linux-gnu/lua/" .. lv
  .. "/?.so;/usr/local/lib/lua/" .. lv .. "/?.so;/usr/lib/lua/" .. lv .. "/?.so"
local scalekit = require "scalekit"
local src = debug.getinfo(scalekit.new, "S").source
assert(src:sub(1, #tree + 1) == "@" .. tree, "scalekit loaded from " .. src)
-- the first cpath entry that has the core (package.searchpath is 5.2+)
local core_path
for tpl in package.cpath:gmatch("[^;]+") do
  local f = io.open((tpl:gsub("%?", "scalekit/core")), "rb")
  if f then f:close(); core_path = tpl:gsub("%?", "scalekit/core"); break end
end
assert(core_path and core_path:sub(1, #tree) == tree, "core loaded from " .. tostring(core_path))
local sk = assert(scalekit.new{ environment_url = url, client_id = "skc_test",
                                client_secret = "test_secret_value" })
assert(sk:token())
local n = 0
for org in sk:each("OrganizationService_ListOrganization", { page_size = 3 }) do
  assert(type(org.id) == "string")
  n = n + 1
end
local first = assert(sk.organizations:list{ page_size = 1 })
sk:close()
print("installed ok " .. scalekit._VERSION .. " " .. n .. " " .. #first.organizations)
]]

    local TARGETS = {
      { name = "Lua 5.4", lua_version = "5.4", interp = "lua5.4", vars = "" },
      -- LuaJIT is Lua 5.1 to LuaRocks; the core needs LuaJIT 2.1's headers (luajit.h)
      { name = "LuaJIT", lua_version = "5.1", interp = "luajit", vars = " LUA_INCDIR=/usr/include/luajit-2.1" },
      { name = "Lua 5.3", lua_version = "5.3", interp = "lua5.3", vars = "" },
      -- PUC Lua 5.1 and LuaJIT share LuaRocks' 5.1 tree layout: separate trees
      { name = "Lua 5.1", lua_version = "5.1", interp = "lua5.1", vars = " LUA_INCDIR=/usr/include/lua5.1" },
    }

    for _, t in ipairs(TARGETS) do
      it("luarocks make installs for " .. t.name .. ", usable from outside the checkout", function()
        local tree = tmp .. "/tree-" .. t.interp
        local cmd = "cd " .. quote(tmp) .. " && luarocks --lua-version " .. t.lua_version
          .. " --tree " .. quote(tree) .. " make " .. ROCKSPEC
          .. " CURL_INCDIR=" .. CURL_INCDIR .. t.vars .. " --deps-mode=none 2>&1"
        local out, rc = run(cmd)
        assert.equal(0, rc, cmd .. "\n" .. out)
        assert.matches("scalekit scm%-1 is now installed", out)
        local lv = t.lua_version
        assert.equal(0, select(2, run("test -f " .. quote(tree .. "/lib/lua/" .. lv .. "/scalekit/core.so"))))
        assert.equal(0, select(2, run("test -f " .. quote(tree .. "/share/lua/" .. lv .. "/scalekit/init.lua"))))
        -- the LuaLS annotations land in the rock's directory, never on the module path
        assert.equal(1, select(2, run("test -e " .. quote(tree .. "/share/lua/" .. lv .. "/scalekit/types.lua"))))
        assert.equal(0, select(2, run("test -f " .. quote(tree .. "/lib/luarocks/rocks-" .. lv
          .. "/scalekit/scm-1/types/scalekit.lua"))))

        local cwd = tmp .. "/run-" .. t.interp
        run("mkdir -p " .. quote(cwd))
        local f = assert(io.open(cwd .. "/app.lua", "wb"))
        f:write(SCRIPT)
        f:close()
        out, rc = run("cd " .. quote(cwd) .. " && env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 "
          .. t.interp .. " app.lua " .. quote(tree) .. " " .. lv .. " " .. quote(srv.url) .. " 2>&1")
        assert.equal(0, rc, out)
        assert.matches("installed ok 0%.1%.0 7 1", out)
      end)
    end
  end)
end)
