#!/usr/bin/env bash
# Installs the Debian packages scalekit-lua builds and tests with, when missing.
# Used by `make demo`, `make deps` and .ci/run. Debian's archive is the only source.
set -euo pipefail

PKGS=(lua5.4 liblua5.4-dev luajit2 libluajit2-5.1-dev libcurl4-openssl-dev libssl-dev
      pkg-config gcc make valgrind lua-cjson lua-busted luarocks lua-check
      nginx libnginx-mod-http-lua curl openssl ca-certificates)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "bootstrap: all packages present"
  exit 0
fi
echo "bootstrap: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "bootstrap: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
# Debian starts the packaged nginx on install; the tests run their own instances.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl stop nginx 2>/dev/null || true; fi
