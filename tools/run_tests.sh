#!/usr/bin/env bash
# `make test`: every suite, each as TAP; the last line is "N passed, N failed".
#   C core under valgrind and under ASan+UBSan, busted on Lua 5.4 and LuaJIT (same
#   specs, both cores), lint. `SUITES=fuzz` runs the fuzzers (make fuzz). SUITES="lua54 luajit" narrows the run; BUSTED_ARGS passes more flags.
set -uo pipefail
cd "$(dirname "$0")/.."

SUITES=${SUITES:-"build lua54 luajit memcheck sanitize fuzz lint"}
OUT=${TEST_OUT:-spec/tmp}
mkdir -p "$OUT"
passed=0
failed=0

count_tap() { # file label
  local p f
  p=$(grep -c '^ok ' "$1" || true)
  f=$(grep -c '^not ok ' "$1" || true)
  # a runner that died before printing its plan counts as one failure
  if ! grep -q '^1\.\.[0-9]' "$1"; then f=$((f + 1)); echo "# $2: no TAP plan: the run crashed" ; fi
  passed=$((passed + p)); failed=$((failed + f))
  echo "# $2: $p passed, $f failed"
}

check() { # label command...: one pass/fail line for a whole command
  local label=$1; shift
  if "$@" > "$OUT/$label.log" 2>&1; then
    passed=$((passed + 1)); echo "ok - $label"
  else
    failed=$((failed + 1)); echo "not ok - $label (see $OUT/$label.log)"; tail -n 30 "$OUT/$label.log"
  fi
}

run_busted() { # label lua cpath
  local label=$1 lua=$2 cpath=$3
  echo "# busted --lua=$lua (cpath $cpath: no ';', busted re-execs through sh)"
  busted --lua="$lua" -o TAP --cpath="$cpath" ${BUSTED_ARGS:-} > "$OUT/$label.tap" 2>&1
  grep -v '^ok ' "$OUT/$label.tap" | head -n 400
  count_tap "$OUT/$label.tap" "$label"
}

for s in $SUITES; do
  case $s in
    build)
      check build-lua54 make --no-print-directory
      check build-luajit make --no-print-directory LUA=luajit ;;
    lua54)  run_busted lua54 lua5.4 "build/?.so" ;;
    luajit) run_busted luajit luajit "build-luajit/?.so" ;;
    memcheck) check memcheck bash tools/memcheck.sh ;;
    sanitize) check sanitize bash tools/sanitize.sh ;;
    fuzz) check fuzz env FUZZ_SECONDS="${FUZZ_SECONDS:-5}" bash tools/fuzz.sh ;;
    lint) check luacheck luacheck -q lua spec tools examples bench ;;
    *) echo "unknown suite $s" >&2; failed=$((failed + 1)) ;;
  esac
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
