#!/usr/bin/env bash
# valgrind over scripts that drive every C entry point (make memcheck; part of make test).
# Fails on any memory error or definite/indirect leak.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for script in spec/memcheck/*.lua; do
  echo "== valgrind lua5.4 $script"
  if ! valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect \
       --show-leak-kinds=definite,indirect --error-exitcode=99 \
       lua5.4 "$script"; then
    echo "memcheck FAILED: $script"; status=1
  fi
done
exit $status
