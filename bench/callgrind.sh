#!/usr/bin/env bash
# Instructions per call under callgrind (bench/callgrind.lua): sk:call against the raw
# libcurl loop on a fake Scalekit of its own. BENCH_CG_CALLS (2000), BENCH_LUA (lua5.4).
set -euo pipefail
cd "$(dirname "$0")/.."
make --no-print-directory >/dev/null
cc -O2 -o bench/raw_curl bench/raw_curl.c $(pkg-config --cflags --libs libcurl)
exec "${BENCH_LUA:-lua5.4}" bench/callgrind.lua
