#!/bin/sh
# Idempotent set-up of a fresh Debian 12 machine (as root): host packages,
# the virtual environment and the Python packages. `make run` and `make test`
# both call this first.
set -eu
cd "$(dirname "$0")/.."

DEB_PACKAGES="conmon crun runc busybox-static golang-github-containers-common \
  iptables nftables iproute2 iputils-ping redis-server tini psmisc \
  python3-venv python3-dev gcc procps util-linux tar gzip \
  docker-registry skopeo podman debootstrap apache2-utils chromium"

missing=""
for p in $DEB_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends $missing
fi

# Node.js + npm for the dashboard's front-end libraries (package.json). A machine
# may already have Node from elsewhere (NodeSource ships npm inside nodejs).
if ! command -v npm >/dev/null 2>&1; then
  echo "setup: installing Node.js and npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends nodejs npm
fi

PY=${BERTH_PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.berth-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
# Front-end libraries (htmx, xterm.js, Cytoscape.js, uPlot) from the npm registry,
# pinned by package-lock.json; served from node_modules (settings.STATICFILES_DIRS).
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing front-end packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi
# Byte-compile now: with PYTHONDONTWRITEBYTECODE set (as in some CI
# environments) every `berth` call would otherwise recompile the engine (~50 ms).
.venv/bin/python -m compileall -q engine dashboard >/dev/null
# The `berth` command: a small native client (native/berth.c) that hands each
# command to the CLI server, a resident pre-imported Python (engine/cli/server.py),
# or else runs the venv's interpreter directly (no pyenv shim, no Django import).
# pip's console script for the Python CLI is `berth-py`. The socket is named
# after this checkout, so two checkouts never serve each other's commands.
py="$(pwd)/.venv/bin/python"
sock="/run/berth-cli/$(printf '%s' "$py" | sha256sum | cut -c1-12).sock"
if cc -O2 -Wall -DBERTH_PYTHON="\"$py\"" -DBERTH_SOCKET="\"$sock\"" \
    -o .venv/bin/.berth.new native/berth.c; then
  mv -f .venv/bin/.berth.new .venv/bin/berth
else
  echo "setup: cannot compile native/berth.c; berth is the Python CLI (slower)" >&2
  ln -sf berth-py .venv/bin/berth
fi
ln -sf "$(pwd)/.venv/bin/berth" /usr/local/bin/berth
