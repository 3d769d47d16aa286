# scalekit-lua — build, test, demo, bench. See README.md.
#   make                 C core for Lua 5.4     -> build/scalekit/core.so
#   make LUA=luajit      C core for LuaJIT 2.1  -> build-luajit/scalekit/core.so
#   make test            every test; last line "N passed, N failed"

LUA        ?= lua5.4
PKG_CONFIG ?= pkg-config

ifeq ($(LUA),luajit)
  LUA_PC := luajit
  BUILD  := build-luajit
else
  LUA_PC := lua5.4
  BUILD  := build
endif

CC      ?= cc
CFLAGS  ?= -O2 -g
WERROR  ?= -Werror
SK_CFLAGS := -std=c99 -fPIC -fvisibility=hidden -D_POSIX_C_SOURCE=200809L \
             -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes $(WERROR) \
             $(shell $(PKG_CONFIG) --cflags $(LUA_PC) libcurl libcrypto)
SK_LIBS   := $(shell $(PKG_CONFIG) --libs libcurl libcrypto)

SRCS := $(wildcard csrc/*.c)
HDRS := $(wildcard csrc/*.h)
OBJS := $(patsubst csrc/%.c,$(BUILD)/obj/%.o,$(SRCS))
CORE := $(BUILD)/scalekit/core.so

.PHONY: all core test test-c test-lua test-luajit test-nginx demo bench operations docs \
        memcheck lint fuzz clean deps

all: $(CORE)

$(BUILD)/obj/%.o: csrc/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SK_CFLAGS) -c -o $@ $<

$(CORE): $(OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -shared -o $@ $(OBJS) $(SK_LIBS)

deps:
	bash tools/bootstrap.sh

# Regenerate lua/scalekit/operations.lua from the OpenAPI description.
OPENAPI ?= ../shared/scalekit/openapi.json
operations:
	lua5.4 tools/gen_operations.lua $(OPENAPI) > lua/scalekit/operations.lua.tmp
	mv lua/scalekit/operations.lua.tmp lua/scalekit/operations.lua

docs:
	lua5.4 tools/gen_docs.lua

test:
	bash tools/run_tests.sh

demo: deps all
	lua5.4 tools/demo.lua

bench: all
	bash bench/run.sh

memcheck: all
	bash tools/memcheck.sh

lint:
	luacheck lua spec tools examples bench

clean:
	rm -rf build build-luajit
include mk/fuzz.mk
