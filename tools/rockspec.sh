#!/usr/bin/env bash
# Writes the release rockspec of VERSION: rockspec/scalekit-scm-1.rockspec with
# `version = "VERSION-1"` and `source.tag = "vVERSION"` instead of the branch.
#
#   bash tools/rockspec.sh 0.2.0 [outdir]     (make rockspec VERSION=0.2.0)
#
# Refuses a VERSION that csrc/sk.h (SK_VERSION) and CHANGELOG.md do not both name,
# so that the rock, the module's _VERSION and the change log cannot disagree. The
# release steps that follow (commit, `git tag -a vVERSION`, `luarocks upload`) are
# printed, not run: they are the maintainer's.
set -euo pipefail
cd "$(dirname "$0")/.."

version=${1:?usage: tools/rockspec.sh VERSION [outdir]}
outdir=${2:-rockspec}
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "rockspec: VERSION must be x.y.z" >&2; exit 2; }
have=$(sed -n 's/^#define SK_VERSION "\(.*\)"/\1/p' csrc/sk.h)
[ "$have" = "$version" ] || { echo "rockspec: csrc/sk.h says $have, not $version" >&2; exit 1; }
grep -q "^## \[$version\]" CHANGELOG.md || { echo "rockspec: CHANGELOG.md has no [$version] section" >&2; exit 1; }

out="$outdir/scalekit-$version-1.rockspec"
sed -e "s/^version = \"scm-1\"/version = \"$version-1\"/" \
    -e "s/^  branch = \"main\",/  tag = \"v$version\",/" \
    rockspec/scalekit-scm-1.rockspec > "$out"
grep -q "^version = \"$version-1\"" "$out" && grep -q "tag = \"v$version\"" "$out" \
  || { echo "rockspec: the scm rockspec no longer has the expected version/branch lines" >&2; rm -f "$out"; exit 1; }
echo "$out"
echo "next: git add $out && git commit -m 'Release $version' && git tag -a v$version -m $version && luarocks upload $out" >&2
