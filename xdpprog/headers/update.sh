#!/usr/bin/env bash
# Refresh the vendored libbpf headers that xdp.c includes. The version is
# pinned: the headers come from the Debian libbpf-dev package of exactly this
# version, so `make generate` gives the same object everywhere. To move to
# another version, change LIBBPF_VERSION, install that libbpf-dev, run this,
# then `make generate`, and commit headers and generated files together.
set -euo pipefail
LIBBPF_VERSION=1:1.1.2-0+deb12u1
cd "$(dirname "$0")"
have=$(dpkg-query -W -f='${Version}' libbpf-dev 2>/dev/null || true)
if [ "$have" != "$LIBBPF_VERSION" ]; then
  echo "update.sh: need libbpf-dev $LIBBPF_VERSION, have '${have:-none}'" >&2
  exit 1
fi
for h in bpf_helpers.h bpf_helper_defs.h bpf_endian.h; do
  cp "/usr/include/bpf/$h" "$h"
done
echo "libbpf headers $LIBBPF_VERSION" > VERSION
