#!/usr/bin/env bash
# Refreshes the copy of uPlot (the dashboard's chart library) kept in the repository.
#
# The dashboard must work on sites with no internet access, so nothing is loaded from a CDN at
# run time: the browser gets uPlot from src/sensorlake/dashboard/static/vendor/uplot/. This
# script fetches a release from the npm registry, copies the three files the dashboard uses and
# records the version and the tarball's sha256 in VERSION.
#
# Usage: scripts/vendor-uplot.sh [VERSION]    (default: the pinned version below)
set -euo pipefail

PINNED=1.6.32
version="${1:-$PINNED}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/src/sensorlake/dashboard/static/vendor/uplot"
files=(uPlot.iife.min.js uPlot.min.css LICENSE)

command -v npm >/dev/null || { echo "npm is needed (to fetch uplot@$version)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent "uplot@$version" >/dev/null)
tarball="$(ls "$tmp"/uplot-*.tgz)"
sha="$(sha256sum "$tarball" | cut -d' ' -f1)"
tar -xzf "$tarball" -C "$tmp"

mkdir -p "$dest"
before="$(cat "$dest/VERSION" 2>/dev/null || true)"
changed=0
for name in "${files[@]}"; do
    case "$name" in
        LICENSE) src="$tmp/package/LICENSE" ;;
        *) src="$tmp/package/dist/$name" ;;
    esac
    [[ -f "$src" ]] || { echo "uplot@$version has no $src" >&2; exit 1; }
    if [[ -f "$dest/$name" ]] && cmp -s "$src" "$dest/$name"; then
        echo "unchanged  $name"
    else
        cp "$src" "$dest/$name"
        echo "updated    $name"
        changed=1
    fi
done

printf 'uplot %s\nsha256 %s  %s\n' "$version" "$sha" "$(basename "$tarball")" > "$dest/VERSION"
if [[ "$before" != "$(cat "$dest/VERSION")" ]]; then
    echo "updated    VERSION: uplot $version (sha256 $sha)"
    changed=1
else
    echo "unchanged  VERSION"
fi
if (( changed )); then
    echo "vendored uplot $version in ${dest#"$root"/}"
else
    echo "nothing changed: uplot $version was already vendored"
fi
