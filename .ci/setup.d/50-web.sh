#!/usr/bin/env bash
# The dashboard's browser tests (web/e2e_test.go) drive Debian's chromium
# through playwright-core from npm, pinned in web/e2e/package-lock.json.
# Debian's nodejs comes without npm (a separate package), while a nodejs
# that bundles npm conflicts with that package: install it only if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v npm >/dev/null; then
  echo "installing npm"
  apt-get update -q
  apt-get install -y -q --no-install-recommends npm
fi
cd web/e2e
npm ci --no-audit --no-fund --loglevel=error
