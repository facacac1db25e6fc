#!/bin/sh
# Set up (idempotent), lint, then run the whole test suite.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check engine dashboard tests bench
.venv/bin/ruff format --check engine dashboard tests bench
# (in-process: no CLI server is left running after the tests)
BERTH_CLI_SERVER=0 .venv/bin/berth system check --fix >/dev/null || true
exec .venv/bin/python -m pytest "$@"
