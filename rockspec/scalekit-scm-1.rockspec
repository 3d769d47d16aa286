-- LuaRocks package of scalekit-lua: the C core (scalekit.core, libcurl + libcrypto)
-- and the Lua layer (lua/scalekit/**).
--
-- From a checkout, offline, with the Debian packages of tools/bootstrap.sh (Debian
-- keeps curl/curl.h under the multiarch include directory, and LuaRocks cannot see
-- Debian's lua-cjson, hence the two extra arguments):
--   luarocks --lua-version 5.4 --tree <dir> make rockspec/scalekit-scm-1.rockspec \
--     CURL_INCDIR=/usr/include/x86_64-linux-gnu --deps-mode=none
-- LuaJIT / OpenResty (5.1 ABI; the core needs LuaJIT 2.1's headers):
--   luarocks --lua-version 5.1 --tree <dir> make rockspec/scalekit-scm-1.rockspec \
--     CURL_INCDIR=/usr/include/x86_64-linux-gnu LUA_INCDIR=/usr/include/luajit-2.1 \
--     --deps-mode=none
--
-- build.modules lists every file of lua/scalekit/: spec/luarocks_spec.lua fails when
-- a file is added there and not here. A release rockspec is this file with `version`
-- and `source.tag` set, written by `make rockspec VERSION=x.y.z` (tools/rockspec.sh)
-- when the release is tagged; see "Versioning" in README.md.
--
-- Lua 5.1 to 5.4: PUC Lua 5.1, 5.3 and 5.4 and LuaJIT 2.1 (which LuaRocks sees as 5.1)
-- are built and tested by `make test`. The LuaLS annotations (types/) are copied into
-- the rock's directory, not installed as a module.
rockspec_format = "3.0"
package = "scalekit"
version = "scm-1"

source = {
  url = "git+https://github.com/scalekit-inc/scalekit-lua.git",
  branch = "main",
}

description = {
  summary = "Lua client for the Scalekit API (B2B authentication)",
  license = "MIT",
  maintainer = "scalekit-lua developers",
  detailed = [[
Client for Scalekit's REST API: every operation by operationId and as resource
methods, pagination iterators, a cached client-credentials token, retries with
backoff, authorization URLs, code exchange, JWT and webhook verification. A C core
on libcurl and OpenSSL's libcrypto does the HTTP, the token vault and the crypto;
inside OpenResty request handlers the I/O goes through cosockets.
]],
  homepage = "https://github.com/scalekit-inc/scalekit-lua",
  labels = { "scalekit", "sso", "oauth2", "oidc", "openresty", "http" },
}

dependencies = {
  "lua >= 5.1, < 5.5",
  "lua-cjson",
}

external_dependencies = {
  CURL = { header = "curl/curl.h", library = "curl" },
  OPENSSL = { header = "openssl/evp.h", library = "crypto" },
}

build = {
  type = "builtin",
  modules = {
    ["scalekit.core"] = {
      sources = {
        "csrc/aead.c",
        "csrc/core.c",
        "csrc/crypto.c",
        "csrc/easy.c",
        "csrc/http.c",
        "csrc/multi.c",
        "csrc/token.c",
        "csrc/url.c",
        "csrc/util.c",
      },
      defines = { "_POSIX_C_SOURCE=200809L" },
      incdirs = { "csrc", "$(CURL_INCDIR)", "$(OPENSSL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)", "$(OPENSSL_LIBDIR)" },
      libraries = { "curl", "crypto" },
    },
    ["scalekit.auth.grants"] = "lua/scalekit/auth/grants.lua",
    ["scalekit.auth"] = "lua/scalekit/auth/init.lua",
    ["scalekit.auth.jwks"] = "lua/scalekit/auth/jwks.lua",
    ["scalekit.auth.jwt"] = "lua/scalekit/auth/jwt.lua",
    ["scalekit.auth.urls"] = "lua/scalekit/auth/urls.lua",
    ["scalekit.auth.webhook"] = "lua/scalekit/auth/webhook.lua",
    ["scalekit.batch"] = "lua/scalekit/batch.lua",
    ["scalekit.client"] = "lua/scalekit/client.lua",
    ["scalekit.config"] = "lua/scalekit/config.lua",
    ["scalekit.errors"] = "lua/scalekit/errors.lua",
    ["scalekit.gateway.cookie"] = "lua/scalekit/gateway/cookie.lua",
    ["scalekit.gateway"] = "lua/scalekit/gateway/init.lua",
    ["scalekit.gateway.login"] = "lua/scalekit/gateway/login.lua",
    ["scalekit.gateway.protect"] = "lua/scalekit/gateway/protect.lua",
    ["scalekit.gateway.receiver"] = "lua/scalekit/gateway/receiver.lua",
    ["scalekit"] = "lua/scalekit/init.lua",
    ["scalekit.json"] = "lua/scalekit/json.lua",
    ["scalekit.ngx.flight"] = "lua/scalekit/ngx/flight.lua",
    ["scalekit.ngx"] = "lua/scalekit/ngx/init.lua",
    ["scalekit.ngx.phase"] = "lua/scalekit/ngx/phase.lua",
    ["scalekit.ngx.store"] = "lua/scalekit/ngx/store.lua",
    ["scalekit.operations"] = "lua/scalekit/operations.lua",
    ["scalekit.paginate"] = "lua/scalekit/paginate.lua",
    ["scalekit.proxy"] = "lua/scalekit/proxy.lua",
    ["scalekit.request"] = "lua/scalekit/request.lua",
    ["scalekit.resources"] = "lua/scalekit/resources.lua",
    ["scalekit.session"] = "lua/scalekit/session.lua",
    ["scalekit.transport.cosocket"] = "lua/scalekit/transport/cosocket.lua",
    ["scalekit.transport.curl"] = "lua/scalekit/transport/curl.lua",
  },
  copy_directories = { "types" },
}
