#!/bin/sh
# Set up (idempotent), prepare the host, start Berth's engine helpers, then run the
# dashboard in the foreground (Redis, Celery workers, Daphne); Ctrl-C stops it all.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
# These commands may use a running CLI server but do not start one: after Ctrl-C
# nothing of this script is left running (a user's own `berth` starts it).
export BERTH_CLI_SPAWN=0
berth system check --fix
berth system boot
if ! berth image inspect busybox:latest >/dev/null 2>&1; then
  berth image bootstrap busybox
fi
cat <<MSG

Berth's engine is ready (root: ${BERTH_ROOT:-/var/lib/berth}). The CLI works alongside
the dashboard, e.g.:
  berth run -d --name web -p 127.0.0.1:8080:80 busybox httpd -f -p 80
  berth ps

Starting the dashboard on ${BERTH_LISTEN:-127.0.0.1:8000}...
MSG
# exec: the supervisor gets Ctrl-C/SIGTERM itself and stops its children in order.
exec .venv/bin/python -m dashboard.serve
