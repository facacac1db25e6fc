"""The audit log's view of the engine: CLI (and other non-dashboard) actions imported
from the engine's events log.

The dashboard records its own actions itself (dashboard.accounts.audit.record) with
the address and the result, so events whose actor is a dashboard user ("user:NAME")
are not imported again. Every other actor's action event becomes one AuditEntry with
``event_seq`` set (unique: importing twice, or from two processes at once, cannot
duplicate an entry). Events that are consequences rather than actions (a container
dying, health checks, exec output) are skipped. Network host changes (the setup
hook's ``host_changes``, ``endpoint_up``/``endpoint_down``) come just before the
action that caused them, from the same actor, and are attached to it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from dashboard.services import engine_for

# Consequences of actions, not actions: not audit entries of their own.
NOT_ACTIONS = {"die", "oom", "exec_start", "exec_die", "exec_detach", "attach", "detach",
               "resize", "top", "kill_by_policy"}  # fmt: skip
HOST_CHANGE_ACTIONS = {"host_changes", "endpoint_up", "endpoint_down"}
# Host changes not followed by their action within this long (the action failed
# after the kernel changed) are recorded on their own.
ORPHAN_AFTER_NS = 30 * 1_000_000_000
BATCH = 10000  # the most events the engine's events log hands out at once


def host_change(event: dict) -> dict[str, str]:
    """An engine event (Docker's JSON shape) as one host change for the audit log."""
    attrs = dict(event.get("Actor", {}).get("Attributes") or {})
    action = event.get("Action", "")
    if action == "endpoint_up":
        change = "veth added"
    elif action == "endpoint_down":
        change = "veth removed"
    elif "bridge_removed" in attrs:
        change = "bridge removed" if attrs.pop("bridge_removed") == "True" else "address removed"
    elif "vlan_created" in attrs:  # macvlan/ipvlan parent such as eth0.10
        change, attrs["vlan"] = "vlan created", attrs.pop("vlan_created")
    elif "vlan_removed" in attrs:
        attrs["vlan"] = attrs.pop("vlan_removed")
        change = "vlan removed" if attrs["vlan"] else "vlan not removed"
    else:
        change = "bridge set up"
    return {"change": change, **{k: str(v) for k, v in attrs.items() if v not in ("", None)}}


def source_of(actor: str) -> str:
    return "cli" if actor.startswith("uid:") else "engine"


def _entry(event: dict, changes: list[dict]) -> Any:
    from dashboard.accounts.audit import mask
    from dashboard.accounts.models import AuditEntry

    attrs = dict(event.get("Actor", {}).get("Attributes") or {})
    obj = event.get("Actor", {}).get("ID", "")
    target = attrs.get("name") or obj[:12]
    return AuditEntry(
        ts=datetime.fromtimestamp(event["timeNano"] / 1e9, tz=UTC),
        actor=event.get("actor", ""),
        source=source_of(event.get("actor", "")),
        address="",
        action=f"{event['Type']}.{event['Action']}".replace(" ", ""),
        target=mask(str(target))[:255],
        params=mask({"id": obj, **attrs} if obj else attrs),
        result="ok",
        host_changes=changes,
        event_seq=event["seq"],
    )


def import_engine_events(engine: Any = None) -> int:
    """Import the engine's new events into the audit log; returns how many entries were
    added. Idempotent, and safe to call from several processes at once (the audit page,
    the CSV export and the events relay all call it)."""
    from dashboard.accounts.models import AuditEntry, EventCursor

    eng = engine if engine is not None else engine_for(None)
    key = str(eng.config.root)
    cursor, _ = EventCursor.objects.get_or_create(engine_id=key)
    after = cursor.seq
    added = 0
    while True:
        events = list(eng.follow_events(after_seq=after, until=time.time()))
        if not events:
            break
        have = set(
            AuditEntry.objects.filter(
                event_seq__gt=after, event_seq__lte=events[-1]["seq"]
            ).values_list("event_seq", flat=True)
        )
        pending: dict[str, list[tuple[dict, dict]]] = {}  # actor -> [(event, change)]
        entries = []
        for ev in events:
            actor = ev.get("actor", "")
            if actor.startswith("user:"):
                continue  # the dashboard's own: recorded by its views, with more detail
            action = ev.get("Action", "")
            if action in HOST_CHANGE_ACTIONS:
                pending.setdefault(actor, []).append((ev, host_change(ev)))
                continue
            if action in NOT_ACTIONS or action.startswith("health_status"):
                continue
            changes = [c for _e, c in pending.pop(actor, [])]
            if ev["seq"] not in have:
                entries.append(_entry(ev, changes))
        full = len(events) >= BATCH
        # Past the last event read, nothing came: host changes older than the grace
        # time are alone now. A full batch may have their action in the next one.
        newest = events[-1]["timeNano"] if full else time.time_ns()
        upto = events[-1]["seq"]
        for items in pending.values():
            first = items[0][0]
            if newest - first["timeNano"] > ORPHAN_AFTER_NS:
                if first["seq"] not in have:
                    lone = {**first, "Action": "host_changes"}
                    entries.append(_entry(lone, [c for _e, c in items]))
            else:
                # Their action may not be written yet: read them again next time.
                upto = min(upto, first["seq"] - 1)
        AuditEntry.objects.bulk_create(entries, ignore_conflicts=True)
        added += len(entries)
        if upto <= after:
            break
        after = upto
        if not full:
            break
    if after > cursor.seq:
        # Never move the cursor back: another process may have gone further.
        EventCursor.objects.filter(pk=cursor.pk, seq__lt=after).update(seq=after)
    return added
