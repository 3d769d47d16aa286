#!/usr/bin/env bash
# `make bench`: build the raw libcurl yardstick, then run bench/bench.lua.
set -euo pipefail
cd "$(dirname "$0")/.."
cc -O2 -o bench/raw_curl bench/raw_curl.c $(pkg-config --cflags --libs libcurl)
make --no-print-directory LUA=luajit >/dev/null  # the LuaJIT core: callgrind rows, gateway
lua5.4 bench/bench.lua
lua5.4 bench/latency.lua
lua5.4 bench/gateway.lua 2>/dev/null
