#!/usr/bin/env bash
# Copies the dashboard's one front-end library, uPlot, from npm into
# dist/vendor/. The dashboard has no build step: the copied files are
# committed and embedded as they are. Bump UPLOT_VERSION, run this script,
# look at the dashboard, and commit dist/vendor/ with the version change.
set -euo pipefail
UPLOT_VERSION=1.6.32

cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "uplot@${UPLOT_VERSION}" >/dev/null && tar -xzf uplot-*.tgz)
mkdir -p dist/vendor
cp "$tmp/package/dist/uPlot.esm.js" dist/vendor/uPlot.esm.js
cp "$tmp/package/dist/uPlot.min.css" dist/vendor/uPlot.min.css
cp "$tmp/package/LICENSE" dist/vendor/uPlot.LICENSE
echo "uplot@${UPLOT_VERSION}" > dist/vendor/VERSION
