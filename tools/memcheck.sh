#!/usr/bin/env bash
# valgrind over scripts that drive every C entry point (make memcheck; part of make test,
# which runs one script per job: `bash tools/memcheck.sh spec/memcheck/core.lua`).
# Fails on any memory error or definite/indirect leak.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
scripts=("$@")
[ ${#scripts[@]} -gt 0 ] || scripts=(spec/memcheck/*.lua)
for script in "${scripts[@]}"; do
  echo "== valgrind lua5.4 $script"
  if ! valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect \
       --show-leak-kinds=definite,indirect --error-exitcode=99 \
       lua5.4 "$script"; then
    echo "memcheck FAILED: $script"; status=1
  fi
done
exit $status
