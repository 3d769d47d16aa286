#!/usr/bin/env bash
# `make fuzz`: the C parsing surfaces under libFuzzer + ASan + UBSan, for a bounded time.
#
#   FUZZ_SECONDS=20      seconds per target (default 20)
#   FUZZ_TARGETS="..."   subset of: headers base64 jwk jwt
#   FUZZ_JOBS=1          libFuzzer workers per target (keep 1 on a shared machine)
#   FUZZ_MODE=standalone force the gcc fallback driver (default: libfuzzer when available)
#   FUZZ_LUA_TARGETS="http1 json"  the pure-Lua targets (fuzz/lua_fuzz.lua), "" for none
#
# Lua targets (fuzz/fuzz_<name>.lua, driven by fuzz/lua_fuzz.lua, a mutation fuzzer
# without coverage feedback, lua5.4 over build/scalekit/core.so, or over the ASan'd
# build-asan/ core with the ASan runtime preloaded when tools/sanitize.sh built it):
# http1, the cosocket transport's response parser fed by a fake socket
# (spec/support/fake_socket.lua); json, the strict JSON boundary (scalekit.json) and the
# JWT/JWKS readers behind it.
#
# Targets (fuzz/*.c): response header/body callbacks of csrc/http.c, base64/base64url
# of csrc/crypto.c, JWK -> key + signature checks (crypto.c, directly and through
# core.public_key), JWT segment and JWKS parsing (lua/scalekit/auth/jwt.lua over the whole
# core). The drivers #include the C file so that its static functions are reachable;
# csrc/ is not changed. Built into build-fuzz/; the corpora grow in build-fuzz/corpus/
# from the seeds in fuzz/corpus/.
#
# Compiler: clang with libFuzzer (Debian: clang + libclang-rt-14-dev). When it is
# missing and we are root (or have sudo), it is installed with apt like
# tools/bootstrap.sh does; otherwise the same drivers are linked with
# fuzz/standalone.c (a random mutator, no coverage feedback) and built by gcc with
# -fsanitize=address,undefined. Any sanitizer report, assertion or Lua error fails.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECONDS_PER=${FUZZ_SECONDS:-20}
TARGETS=${FUZZ_TARGETS:-"headers base64 jwk jwt"}
JOBS=${FUZZ_JOBS:-1}
OUT=build-fuzz
mkdir -p "$OUT"

have_libfuzzer() {
  command -v clang >/dev/null 2>&1 || return 1
  echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n){(void)d;(void)n;return 0;}' > "$OUT/probe.c"
  clang -fsanitize=fuzzer "$OUT/probe.c" -o "$OUT/probe" >/dev/null 2>&1
}

MODE=${FUZZ_MODE:-libfuzzer}
if [ "$MODE" = libfuzzer ] && ! have_libfuzzer; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
    echo "fuzz: installing clang and libclang-rt-14-dev (libFuzzer)"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q >/dev/null && \
      $SUDO apt-get install -y -q --no-install-recommends clang libclang-rt-14-dev >/dev/null || true
  fi
  have_libfuzzer || MODE=standalone
fi
# the fallback gets its own directory: objects of the two compilers never mix
if [ "$MODE" = standalone ]; then OUT=build-fuzz-gcc; mkdir -p "$OUT"; fi

PKG_CFLAGS=$(pkg-config --cflags lua5.4 libcurl libcrypto)
PKG_LIBS="$(pkg-config --libs libcurl libcrypto) -llua5.4 -lm -ldl"
COMMON="-g -O1 -fno-omit-frame-pointer -D_GNU_SOURCE -DSK_ROOT=\"$ROOT\" -Icsrc $PKG_CFLAGS"
if [ "$MODE" = libfuzzer ]; then
  CC=clang
  SAN="-fsanitize=address,undefined -fno-sanitize-recover=all"
  COMPILE_FLAGS="$SAN -fsanitize=fuzzer-no-link"
  LINK_FLAGS="$SAN -fsanitize=fuzzer"
  EXTRA_SRC=""
else
  CC=gcc
  SAN="-fsanitize=address,undefined -fno-sanitize-recover=all"
  COMPILE_FLAGS="$SAN"
  LINK_FLAGS="$SAN"
  EXTRA_SRC="fuzz/standalone.c"
fi
echo "fuzz: $MODE ($CC), $SECONDS_PER s per target: $TARGETS"

# the whole core, instrumented, for the jwt target (it runs lua/scalekit/auth/jwt.lua)
build_core_objs() {
  mkdir -p "$OUT/obj"
  for c in csrc/*.c; do
    o="$OUT/obj/$(basename "${c%.c}").o"
    if [ ! -f "$o" ] || [ "$c" -nt "$o" ] || [ csrc/sk.h -nt "$o" ] || [ csrc/compat.h -nt "$o" ]; then
      $CC $COMMON $COMPILE_FLAGS -fPIC -c "$c" -o "$o"
    fi
  done
}

build() { # target
  local t=$1 srcs="fuzz/fuzz_$1.c"
  if [ "$t" = jwt ]; then build_core_objs; srcs="$srcs $OUT/obj/*.o"; fi
  # shellcheck disable=SC2086
  $CC $COMMON $LINK_FLAGS -o "$OUT/fuzz_$t" $srcs $EXTRA_SRC $PKG_LIBS
}

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:symbolize=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

status=0
summary=()
for t in $TARGETS; do
  [ -f "fuzz/fuzz_$t.c" ] || { echo "fuzz: unknown target $t" >&2; status=1; continue; }
  echo "== fuzz_$t: build"
  build "$t"
  corpus="$OUT/corpus/$t"
  mkdir -p "$corpus"
  cp -n fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
  dict=""
  [ -f "fuzz/$t.dict" ] && [ "$MODE" = libfuzzer ] && dict="-dict=fuzz/$t.dict"
  log="$OUT/fuzz_$t.log"
  echo "== fuzz_$t: run ${SECONDS_PER}s"
  if [ "$MODE" = libfuzzer ]; then
    jobs=""
    [ "$JOBS" -gt 1 ] && jobs="-jobs=$JOBS -workers=$JOBS"
    # shellcheck disable=SC2086
    if "$OUT/fuzz_$t" -max_total_time="$SECONDS_PER" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
         -print_final_stats=1 $jobs -artifact_prefix="$OUT/crash-$t-" \
         $dict "$corpus" > "$log" 2>&1; then
      rc=0
    else
      rc=$?
    fi
    # with -jobs the workers write fuzz-N.log in the working directory
    if [ -n "$jobs" ]; then cat fuzz-*.log >> "$log" 2>/dev/null; rm -f fuzz-*.log; fi
  else
    if "$OUT/fuzz_$t" -max_total_time="$SECONDS_PER" "$corpus" > "$log" 2>&1; then rc=0; else rc=$?; fi
  fi
  execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+|DONE execs: [0-9]+' "$log" | grep -Eo '[0-9]+$' \
          | awk '{s += $1} END {print s + 0}' || true)
  cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1 | grep -Eo '[0-9]+' || true)
  if [ "$rc" -ne 0 ] || grep -q -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|Assertion .* failed|Lua error' "$log"; then
    echo "fuzz_$t: FAILED (exit $rc), see $log"
    grep -E -A 25 'ERROR:|runtime error:|Assertion|Lua error' "$log" | head -n 60 || tail -n 40 "$log"
    status=1
    summary+=("fuzz_$t: FAILED after $execs execs")
  else
    summary+=("fuzz_$t: ok, $execs execs in ${SECONDS_PER}s${cov:+, cov $cov}, corpus $(ls "$corpus" | wc -l)")
  fi
done

# the pure-Lua targets
LUA_TARGETS=${FUZZ_LUA_TARGETS-"http1 json"}
LUA_CORE=build
LUA_PRELOAD=""
if [ -f build-asan/scalekit/core.so ]; then
  LUA_CORE=build-asan
  LUA_PRELOAD=$(gcc -print-file-name=libasan.so 2>/dev/null || true)
fi
for t in $LUA_TARGETS; do
  log="$OUT/fuzz_lua_$t.log"
  echo "== fuzz_$t (Lua, $LUA_CORE): run ${SECONDS_PER}s"
  if [ ! -f "$LUA_CORE/scalekit/core.so" ]; then
    echo "fuzz_$t: $LUA_CORE/scalekit/core.so missing (run make)"; status=1
    summary+=("fuzz_$t: FAILED (no core)"); continue
  fi
  if env ${LUA_PRELOAD:+LD_PRELOAD=$LUA_PRELOAD} ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1 \
       LUA_CPATH="$LUA_CORE/?.so;;" lua5.4 fuzz/lua_fuzz.lua "$t" "$SECONDS_PER" > "$log" 2>&1; then
    summary+=("$(tail -n 1 "$log")")
  else
    echo "fuzz_$t: FAILED, see $log"; tail -n 20 "$log"; status=1
    summary+=("fuzz_$t: FAILED")
  fi
done

echo "== fuzz summary ($MODE)"
printf '%s\n' "${summary[@]}"
exit $status
