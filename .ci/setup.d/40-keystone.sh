#!/usr/bin/env bash
# The Keystone tests (internal/testutil.StartKeystone) run their own
# keystone, on SQLite in a temporary directory and a free loopback port:
# the system service that Debian's keystone package may start (port 5000,
# its own database) is not used, so it is stopped and disabled, and CI
# never depends on it.
set -euo pipefail

# --check: nothing to do while no keystone listens on its system port.
if [ "${1:-}" = --check ]; then
  if ss -Hltn 'sport = :5000' 2>/dev/null | grep -q .; then
    exit 1
  fi
  exit 0
fi

if command -v systemctl >/dev/null && systemctl list-unit-files keystone.service >/dev/null 2>&1; then
  systemctl disable --now keystone.service >/dev/null 2>&1 || true # not running under this init: nothing to stop
fi
if [ -x /etc/init.d/keystone ]; then
  /etc/init.d/keystone stop >/dev/null 2>&1 || true # not running: nothing to stop
fi
