# scalekit-lua — build, test, demo, bench. See README.md.
#   make                 C core for Lua 5.4     -> build/scalekit/core.so
#   make LUA=luajit      C core for LuaJIT 2.1  -> build-luajit/scalekit/core.so
#   make LUA=lua5.3      C core for Lua 5.3     -> build-lua53/scalekit/core.so
#   make LUA=lua5.1      C core for Lua 5.1     -> build-lua51/scalekit/core.so
#   make test            every test; last line "N passed, N failed"
#   make demo            installs what the demo needs, builds, runs the quick start

LUA        ?= lua5.4
PKG_CONFIG ?= pkg-config

ifeq ($(LUA),luajit)
  LUA_PC := luajit
  BUILD  := build-luajit
else ifeq ($(LUA),lua5.3)
  LUA_PC := lua5.3
  BUILD  := build-lua53
else ifeq ($(LUA),lua5.1)
  LUA_PC := lua5.1
  BUILD  := build-lua51
else
  LUA_PC := lua5.4
  BUILD  := build
endif

CC      ?= cc
CFLAGS  ?= -O2 -g
WERROR  ?= -Werror
# Deferred (=, not :=): pkg-config runs when a compile runs, never while make reads
# this file, so `make demo` can install the headers first on a fresh machine.
SK_CFLAGS = -std=c99 -fPIC -fvisibility=hidden -D_POSIX_C_SOURCE=200809L \
            -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes $(WERROR) \
            $(shell $(PKG_CONFIG) --cflags $(LUA_PC) libcurl libcrypto)
SK_LIBS   = $(shell $(PKG_CONFIG) --libs libcurl libcrypto)

SRCS := $(wildcard csrc/*.c)
HDRS := $(wildcard csrc/*.h)
OBJS := $(patsubst csrc/%.c,$(BUILD)/obj/%.o,$(SRCS))
CORE := $(BUILD)/scalekit/core.so

.PHONY: all core test demo bench operations docs memcheck lint clean deps deps-demo fake rockspec

all: $(CORE)

$(BUILD)/obj/%.o: csrc/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SK_CFLAGS) -c -o $@ $<

$(CORE): $(OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -shared -o $@ $(OBJS) $(SK_LIBS)

# Every package of the build, the tests and the benchmark / only what the demo needs.
deps:
	bash tools/bootstrap.sh test
deps-demo:
	bash tools/bootstrap.sh demo

# Regenerate lua/scalekit/operations.lua from the committed OpenAPI description.
OPENAPI ?= api/openapi.json
operations:
	lua5.4 tools/gen_operations.lua $(OPENAPI) > lua/scalekit/operations.lua.tmp
	mv lua/scalekit/operations.lua.tmp lua/scalekit/operations.lua

docs:
	lua5.4 tools/gen_docs.lua

test:
	bash tools/run_tests.sh

# The release rockspec of VERSION (see "Versioning" in README.md).
rockspec:
	bash tools/rockspec.sh $(VERSION)

# The packages first, then a new make for the build: this one read the Makefile
# before the headers existed.
demo:
	bash tools/bootstrap.sh demo
	$(MAKE) --no-print-directory all
	lua5.4 tools/demo.lua

# The local fake Scalekit on 127.0.0.1:$(PORT) (default 8088), seeded, until Ctrl-C;
# needs only lua5.4, lua-cjson, nginx + libnginx-mod-http-lua (not the C core).
fake:
	lua5.4 tools/fake.lua $(PORT)

bench: all
	bash bench/run.sh

memcheck: all
	bash tools/memcheck.sh

lint:
	luacheck lua spec tools examples bench

clean:
	rm -rf build build-luajit build-lua53 build-lua51
include mk/fuzz.mk
