#!/usr/bin/env bash
# `make test`: every suite; the last line is "N passed, N failed".
#
#   build     the C core for Lua 5.4, LuaJIT, 5.3 and 5.1 (-Werror)
#   lua54 luajit lua53 lua51
#             the busted specs on that runtime, one busted process per spec file
#             (lua51: the specs that drive the C core and the Lua layer directly;
#             the nginx, LuaRocks and fake-server specs already cover 5.1's ABI
#             through LuaJIT and the 5.1 rock)
#   memcheck  valgrind over spec/memcheck/*.lua, one job per script
#   sanitize  the C-touching specs over an ASan+UBSan core
#   fuzz      libFuzzer, FUZZ_SECONDS (3) per target, from the committed corpus
#   lint      luacheck
#
# Suites and spec files are independent jobs, run JOBS (default 6) at a time,
# slowest first: most of the specs' time is spent waiting on sockets, timeouts and
# backoff, so a 2-core machine runs several at once. Each job's output goes to
# $TEST_OUT (spec/tmp) and its time is printed. SUITES="lua54 lint" narrows the run;
# SPECS="spec/a_spec.lua …" narrows the busted suites; BUSTED_ARGS adds flags.
set -uo pipefail
cd "$(dirname "$0")/.."

SUITES=${SUITES:-"build lua54 luajit lua53 lua51 memcheck sanitize fuzz lint"}
JOBS=${JOBS:-6}
OUT=${TEST_OUT:-spec/tmp}
# one directory per run: two runs at once (two shells, two developers) never mix
mkdir -p "$OUT"
JOBDIR=$(mktemp -d "$OUT/jobs.XXXXXX")
rm -rf "$OUT/jobs"; ln -s "$(basename "$JOBDIR")" "$OUT/jobs"  # the latest run

# Spec files, slowest first (measured, by base name); files not listed run after these.
SLOW_FIRST="gateway nginx openapi_mock batch faults client server badinput readme luarocks auth paginate
  fidelity resources examples
  session crypto jwt webhook errors request operations"
spec_files() {
  local listed=() f n d
  if [ -n "${SPECS:-}" ]; then echo "$SPECS"; return; fi
  for n in $SLOW_FIRST; do
    for d in integration unit; do [ -f "spec/$d/${n}_spec.lua" ] && listed+=("spec/$d/${n}_spec.lua"); done
  done
  for f in spec/integration/*_spec.lua spec/unit/*_spec.lua; do
    [ -f "$f" ] || continue
    case " ${listed[*]} " in *" $f "*) ;; *) listed+=("$f") ;; esac
  done
  echo "${listed[@]}"
}
# Specs whose subject does not run in the busted interpreter — the OpenResty app and
# the gateway run in nginx (LuaJIT), the fake and the README snippets are nginx, the
# LuaRocks spec builds and runs every runtime itself, Prism checks the requests —
# run on Lua 5.4 and LuaJIT only; Lua 5.3 and 5.1 run every other spec.
RUNTIME_FREE="nginx gateway server luarocks readme openapi_mock"
LUA51_SKIP="$RUNTIME_FREE"
LUA53_SKIP="$RUNTIME_FREE"

now() { date +%s.%N; }

# job NAME KIND COMMAND...: KIND is tap (count ok/not ok) or check (one result).
declare -a JOB_NAMES=()
start_job() {
  local name=$1 kind=$2; shift 2
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n 2>/dev/null || true; done
  JOB_NAMES+=("$name")
  (
    t0=$(now)
    "$@" > "$JOBDIR/$name.log" 2>&1
    rc=$?
    t1=$(now)
    printf '%s %s %.1f\n' "$kind" "$rc" "$(awk "BEGIN{print $t1 - $t0}")" > "$JOBDIR/$name.status"
  ) &
}

busted_job() { # suite lua build spec
  local suite=$1 lua=$2 build=$3 spec=$4
  local base dir; base=$(basename "$spec" _spec.lua); dir=$(basename "$(dirname "$spec")")
  # cpath without ';': busted re-execs the interpreter through sh
  start_job "$suite.$dir.$base" tap busted --lua="$lua" -o TAP --cpath="$build/?.so" ${BUSTED_ARGS:-} "$spec"
}

T_START=$(now)

# The builds come first: every other suite needs them.
if [[ " $SUITES " == *" build "* ]]; then
  for l in lua5.4 luajit lua5.3 lua5.1; do
    start_job "build.$l" check make --no-print-directory -j2 LUA="$l"
  done
  wait
fi

for s in $SUITES; do
  case $s in
    build) ;;
    sanitize) start_job sanitize check bash tools/sanitize.sh ;;
    memcheck)
      for m in spec/memcheck/*.lua; do start_job "memcheck.$(basename "$m" .lua)" check bash tools/memcheck.sh "$m"; done ;;
    fuzz) start_job fuzz check env FUZZ_SECONDS="${FUZZ_SECONDS:-3}" bash tools/fuzz.sh ;;
    lint) start_job lint check luacheck -q lua spec tools examples bench ;;
    lua54|luajit|lua53|lua51) ;;
    *) echo "unknown suite $s" >&2; echo "tap 1 0" > "$JOBDIR/unknown-$s.status"; JOB_NAMES+=("unknown-$s") ;;
  esac
done
# Spec files interleaved across runtimes, slowest first.
for spec in $(spec_files); do
  base=$(basename "$spec" _spec.lua)
  for s in $SUITES; do
    case $s in
      lua54) busted_job lua54 lua5.4 build "$spec" ;;
      luajit) busted_job luajit luajit build-luajit "$spec" ;;
      lua53) [[ " $LUA53_SKIP " == *" $base "* ]] || busted_job lua53 lua5.3 build-lua53 "$spec" ;;
      lua51) [[ " $LUA51_SKIP " == *" $base "* ]] || busted_job lua51 lua5.1 build-lua51 "$spec" ;;
    esac
  done
done
wait

passed=0
failed=0
declare -A SUITE_P SUITE_F SUITE_T
for name in "${JOB_NAMES[@]}"; do
  suite=${name%%.*}
  log="$JOBDIR/$name.log"
  read -r kind rc secs < "$JOBDIR/$name.status" || { kind=check; rc=1; secs=0; }
  p=0; f=0
  if [ "$kind" = tap ]; then
    p=$(grep -c '^ok ' "$log" || true)
    f=$(grep -c '^not ok ' "$log" || true)
    # a runner that died before printing its plan counts as one failure
    if ! grep -q '^1\.\.[0-9]' "$log"; then f=$((f + 1)); echo "# $name: no TAP plan: the run crashed"; fi
    if [ "$f" -gt 0 ]; then echo "# $name: see $log"; grep -v '^ok ' "$log" | head -n 200; fi
  elif [ "$rc" -eq 0 ]; then
    p=1
  else
    f=1; echo "not ok - $name (see $log)"; tail -n 30 "$log"
  fi
  grep -h '^# [A-Z].*:' "$log" 2>/dev/null | grep -v '^# Failure\|^# spec/' | head -n 5
  printf '# %-34s %4d passed, %d failed  %6.1f s\n' "$name" "$p" "$f" "$secs"
  passed=$((passed + p)); failed=$((failed + f))
  SUITE_P[$suite]=$(( ${SUITE_P[$suite]:-0} + p ))
  SUITE_F[$suite]=$(( ${SUITE_F[$suite]:-0} + f ))
  SUITE_T[$suite]=$(awk "BEGIN{print ${SUITE_T[$suite]:-0} + $secs}")
done

echo "# per suite (job time, summed over its jobs; they ran $JOBS at a time):"
for suite in build lua54 luajit lua53 lua51 memcheck sanitize fuzz lint; do
  [ -n "${SUITE_P[$suite]:-}" ] || continue
  printf '#   %-10s %4d passed, %d failed  %6.1f s\n' "$suite" "${SUITE_P[$suite]}" "${SUITE_F[$suite]}" "${SUITE_T[$suite]}"
done
printf '# wall time %.0f s\n' "$(awk "BEGIN{print $(now) - $T_START}")"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
