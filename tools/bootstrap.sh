#!/usr/bin/env bash
# Installs the Debian packages scalekit-lua needs, when missing. Debian's archive is
# the only source.
#
#   bash tools/bootstrap.sh demo   build the core for Lua 5.4 and run the demo against
#                                  the local fake Scalekit (make demo)
#   bash tools/bootstrap.sh test   everything make test, make bench and CI use
#                                  (make deps, .ci/run; the default)
#
# It never starts, stops or reconfigures a system service: when nginx itself has to be
# installed, Debian's policy-rc.d hook keeps the package from starting its service
# (the tests and the demo run their own nginx instances on 127.0.0.1).
set -euo pipefail

profile=${1:-test}

DEMO=(lua5.4 liblua5.4-dev libcurl4-openssl-dev libssl-dev pkg-config gcc make libc6-dev
      lua-cjson nginx libnginx-mod-http-lua curl openssl ca-certificates)
TEST=("${DEMO[@]}" luajit2 libluajit2-5.1-dev lua5.3 liblua5.3-dev lua5.1 liblua5.1-0-dev
      valgrind lua-busted luarocks lua-check clang libclang-rt-14-dev
      lua-resty-lrucache chromium)

# The Prism mock server (tools/prism) and the Node SDK bench need node and npm; a
# machine that already has them (any packaging) keeps its own.
NODE=()
command -v npm >/dev/null 2>&1 || NODE=(nodejs npm)

case $profile in
  demo) PKGS=("${DEMO[@]}") ;;
  test) PKGS=("${TEST[@]}" "${NODE[@]}") ;;
  *) echo "usage: bootstrap.sh [demo|test]" >&2; exit 2 ;;
esac

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "bootstrap ($profile): all packages present"
  exit 0
fi
echo "bootstrap ($profile): installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "bootstrap: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi

# invoke-rc.d asks /usr/sbin/policy-rc.d before starting a service; 101 means "not
# allowed". Only a hook we create is removed again; an existing one is left alone.
POLICY=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\n# scalekit-lua bootstrap: no service starts while packages install\nexit 101\n' \
    | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod 755 "$POLICY"
  own_policy=1
fi
cleanup() { if [ "$own_policy" = 1 ]; then $SUDO rm -f "$POLICY"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
