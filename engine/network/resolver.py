"""Starting, reloading and stopping the DNS resolver of user-defined networks,
and the resolv.conf its containers get (the server itself: engine.network.dns).

One resolver per engine instance, recorded in the ``helpers`` table as ``dns``
(engine.helpers), needed while any user-defined bridge network exists. It also
exits by itself ~10 s after the last such network is gone; ``berth system boot``
calls :func:`ensure_resolver` again after a reboot.

A SIGHUP makes it re-read the state at once. Before the resolver has done its
first load it does not handle SIGHUP yet (the default action would kill it), so
it writes a ready file after that load and :func:`reload_resolver` signals only
a ready resolver: one that is still starting reads the newest state anyway. The
resolver also notices commits by itself (``PRAGMA data_version``), so a missed
signal costs at most half a second.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from engine import helpers
from engine.errors import EngineError, NotFound

NAME = "dns"
MODULE = "engine.network.dns"
READY_TIMEOUT = 10.0

# User-defined bridge networks with an address to listen on. The default network
# is named `bridge`; its containers do not resolve each other by name (Docker).
USER_NETWORKS_SQL = (
    "SELECT id, name, subnet, gateway, internal FROM networks"
    " WHERE driver = 'bridge' AND name <> 'bridge' AND gateway <> ''"
)


def ready_path(eng) -> Path:
    return eng.config.run / "dns" / "ready"


def needed(eng) -> bool:
    """Does any user-defined bridge network exist?"""
    from engine.network import store

    store.ensure_schema(eng.db)
    return eng.db.one(USER_NETWORKS_SQL + " LIMIT 1") is not None


def _ready_pid(eng) -> int:
    try:
        return int(ready_path(eng).read_text())
    except (OSError, ValueError):
        return 0


def _wait_ready(eng, pid: int) -> None:
    from engine.runtime.oci import pid_alive

    deadline = time.monotonic() + READY_TIMEOUT
    while _ready_pid(eng) != pid:
        if not pid_alive(pid):
            raise EngineError(
                f"the DNS resolver (pid {pid}) exited at start; see {helpers.log_path(eng, NAME)}",
                obj=NAME,
            )
        if time.monotonic() > deadline:
            raise EngineError(
                f"the DNS resolver (pid {pid}) is not ready after {READY_TIMEOUT:g}s; "
                f"see {helpers.log_path(eng, NAME)}",
                obj=NAME,
            )
        time.sleep(0.01)


def ensure_resolver(eng) -> int | None:
    """Start the resolver if a user-defined network exists and none runs; its pid
    once it answers (None when no network needs one). Idempotent."""
    if not needed(eng):
        return None
    pid = helpers.ensure(eng, NAME, helpers.python_argv(MODULE, eng))
    _wait_ready(eng, pid)
    return pid


def reload_resolver(eng) -> int | None:
    """Make the resolver re-read networks and containers now (starting it if a
    network needs one); its pid or None. Call after committing the change."""
    h = helpers.running(eng, NAME)
    if h is None:
        return ensure_resolver(eng)
    if _ready_pid(eng) == h.pid:
        try:
            os.kill(h.pid, signal.SIGHUP)
        except ProcessLookupError:
            return ensure_resolver(eng)
    return h.pid


def stop_resolver(eng, timeout: float = 5.0) -> bool:
    """Stop the resolver; True if one was running."""
    return helpers.stop(eng, NAME, timeout)


# -- resolv.conf -----------------------------------------------------------------------


def _primary_network(eng, container):
    """The network record a container was started on, or None (host, none,
    container:..., or gone)."""
    from engine.network import store

    net = container.opts.network
    if not net or net in ("host", "none") or net.startswith("container:"):
        return None
    try:
        return store.lookup(eng.db, net)
    except (NotFound, EngineError):
        pass
    # Fallback: the network of eth0 (endpoints are ordered by interface name).
    for ep in store.endpoints_of_container(eng.db, container.id):
        rec = store.by_id(eng.db, ep.network_id)
        if rec is not None:
            return rec
    return None


def is_user_network(rec) -> bool:
    return rec.driver == "bridge" and rec.name != "bridge" and bool(rec.gateway)


def resolv_conf_for(eng, container, host_resolv: str | None = None) -> str | None:
    """The container's /etc/resolv.conf when its network is user-defined: our
    resolver on the network's gateway, the host's search domains and options,
    and ``ndots:0`` unless the host sets ndots (as Docker writes it). None for
    any other network: the caller writes the host's upstream servers."""
    rec = _primary_network(eng, container)
    if rec is None or not is_user_network(rec):
        return None
    if host_resolv is None:
        try:
            host_resolv = Path("/etc/resolv.conf").read_text()
        except OSError:
            host_resolv = ""
    search: list[str] = []
    options: list[str] = []
    for line in host_resolv.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] in ("search", "domain"):
            search = parts[1:]  # resolv.conf(5): the last one wins
        elif parts[0] == "options":
            options += parts[1:]
    if not any(o.startswith("ndots:") for o in options):
        # Single-label names are container names: ask for them as they are first.
        options.insert(0, "ndots:0")
    lines = [
        f"# Generated by Berth: the resolver of network {rec.name} answers container",
        "# names and aliases and forwards other names to the host's servers.",
        f"nameserver {rec.gateway}",
    ]
    if search:
        lines.append("search " + " ".join(search))
    lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"
