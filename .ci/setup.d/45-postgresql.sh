#!/usr/bin/env bash
# The PostgreSQL tests (internal/testutil.StartPostgres) run their own
# cluster, in a temporary directory on a unix socket only: the cluster
# Debian's postgresql package creates and starts (15/main, port 5432) is not
# used, so it is stopped and set to start manually, and CI never depends
# on it (nor spends its memory).
set -euo pipefail

command -v pg_lsclusters >/dev/null || exit 0 # postgresql not installed: nothing to do

# --check: nothing to do while no system cluster runs or starts by itself.
if [ "${1:-}" = --check ]; then
  if pg_lsclusters -h 2>/dev/null | awk '$4 == "online"' | grep -q .; then
    exit 1
  fi
  if grep -qx auto /etc/postgresql/*/*/start.conf 2>/dev/null; then
    exit 1
  fi
  exit 0
fi

pg_lsclusters -h 2>/dev/null | while read -r version cluster _; do
  pg_ctlcluster "$version" "$cluster" stop >/dev/null 2>&1 || true # down already: nothing to stop
  conf=/etc/postgresql/$version/$cluster/start.conf
  if [ -f "$conf" ]; then
    sed -i 's/^auto$/manual/' "$conf"
  fi
done
