#!/usr/bin/env bash
# The dashboard's browser tests (web/e2e_test.go) drive Debian's chromium
# through playwright-core from npm, pinned in web/e2e/package-lock.json.
# Debian's nodejs comes without npm (a separate package), while a nodejs
# that bundles npm conflicts with that package: install it only if missing.
# --check: exit 0 when node_modules already holds what the lock file pins
# (a stamp of the lock file's hash, written after npm ci).
set -euo pipefail
cd "$(dirname "$0")/../../web/e2e"

want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "${1:-}" = --check ]; then
  [ -f node_modules/.taas-lock-sha256 ] && [ "$(cat node_modules/.taas-lock-sha256)" = "$want" ]
  exit
fi
if ! command -v npm >/dev/null; then
  echo "installing npm"
  apt-get update -q
  apt-get install -y -q --no-install-recommends npm
fi
npm ci --no-audit --no-fund --loglevel=error
echo "$want" > node_modules/.taas-lock-sha256
