#!/bin/sh
# Set up (idempotent), prepare the host, and start Berth's engine helpers.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
berth system check --fix
berth system boot
if ! berth image inspect busybox:latest >/dev/null 2>&1; then
  berth image bootstrap busybox
fi
cat <<MSG

Berth's engine is ready (root: ${BERTH_ROOT:-/var/lib/berth}).
The dashboard lands with issue 5; until then use the CLI, e.g.:
  berth run -d --name web -p 127.0.0.1:8080:80 busybox httpd -f -p 80
  berth ps
  berth logs web
  berth exec -it web sh
  berth stop web && berth rm web
MSG
