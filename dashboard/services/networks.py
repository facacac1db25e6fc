"""Networks through the engine's facade: list, create, inspect, connect/disconnect,
remove. Each change returns the host changes it made (bridges, addresses, rules,
veths), read from the engine's own events of this action, for the audit log."""

from __future__ import annotations

import time
from typing import Any

from dashboard.services import engine_for
from dashboard.services.accounts import HOST_CHANGE_ACTIONS, host_change
from engine.errors import EngineError, InvalidArgument

__all__ = ["EngineError", "InvalidArgument", "connect", "containers", "create", "disconnect",
           "inspect", "list_all", "remove"]  # fmt: skip


def _changes_since(eng: Any, mark: int, network_id: str) -> list[dict]:
    """Host changes to network ``network_id`` this engine object's actor caused after
    event ``mark`` (the first action on a host also sets up the default bridge: that
    is not this network's change)."""
    return [
        host_change(ev)
        for ev in eng.follow_events(after_seq=mark, until=time.time())
        if ev.get("actor") == eng.actor
        and ev.get("Action") in HOST_CHANGE_ACTIONS
        and ev.get("Actor", {}).get("ID") == network_id
    ]


def _row(n: dict, bridge: str = "") -> dict:
    cfg = (n.get("IPAM", {}).get("Config") or [{}])[0]
    return {
        "id": n["Id"][:12],
        "name": n["Name"],
        "driver": n["Driver"],
        "subnet": cfg.get("Subnet", ""),
        "gateway": cfg.get("Gateway", ""),
        "internal": n.get("Internal", False),
        "bridge": bridge or (n.get("Options") or {}).get("com.docker.network.bridge.name", ""),
        "containers": sorted(c["Name"] for c in (n.get("Containers") or {}).values()),
        "builtin": n["Name"] in ("bridge", "host", "none"),
    }


def _bridge(eng: Any, ref: str) -> str:
    """The bridge device of a network (custom networks do not name it in Options)."""
    return eng.get_network(ref).bridge or ""


def list_all(user: Any) -> list[dict]:
    eng = engine_for(user)
    return [_row(n, _bridge(eng, n["Id"])) for n in eng.list_networks()]


def inspect(user: Any, ref: str) -> dict:
    eng = engine_for(user)
    n = eng.inspect_network(ref)
    row = _row(n, _bridge(eng, n["Id"]))
    row["raw"] = n
    row["endpoints"] = sorted(
        ({"id": cid[:12], **c} for cid, c in (n.get("Containers") or {}).items()),
        key=lambda e: e["Name"],
    )
    return row


def containers(user: Any) -> list[str]:
    """Container names, for the connect form."""
    return sorted(c.name for c in engine_for(user).containers(all=True))


def create(
    user: Any,
    name: str,
    driver: str = "bridge",
    subnet: str = "",
    gateway: str = "",
    internal: bool = False,
) -> tuple[dict, list[dict]]:
    eng = engine_for(user)
    mark = eng.last_event_seq()
    n = eng.create_network(
        name, driver=driver, subnet=subnet or None, gateway=gateway or None, internal=internal
    )
    return _row(n), _changes_since(eng, mark, n["Id"])


def remove(user: Any, ref: str) -> list[dict]:
    eng = engine_for(user)
    mark = eng.last_event_seq()
    rec = eng.remove_network(ref)
    return _changes_since(eng, mark, rec.id)


def connect(user: Any, ref: str, container: str, ip: str = "") -> list[dict]:
    eng = engine_for(user)
    mark = eng.last_event_seq()
    ep = eng.connect_network(ref, container, ip=ip or None)
    return _changes_since(eng, mark, ep.network_id)  # endpoint_up when it is running


def disconnect(user: Any, ref: str, container: str) -> list[dict]:
    eng = engine_for(user)
    mark = eng.last_event_seq()
    ep = eng.disconnect_network(ref, container)
    return _changes_since(eng, mark, ep.network_id)  # endpoint_down when it was running
