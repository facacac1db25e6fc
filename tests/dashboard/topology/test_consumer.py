"""ws/topology/ with WebsocketCommunicator, a real Redis channel layer and a real engine.

The test stands in for the events relay (dashboard/live): it reads the engine's
events log after a CLI action and sends each event to the "events" group exactly
as the relay does. The keeper's periodic rebuild is turned off, so a diff that
arrives can only have come from the event.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from dashboard.services import events as events_svc
from dashboard.topology import keeper as keeper_mod
from dashboard.topology.consumers import TopologyConsumer

pytestmark = [pytest.mark.root, pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
def quiet_keeper(monkeypatch):
    monkeypatch.setattr(keeper_mod, "REFRESH", 3600.0)
    monkeypatch.setattr(keeper_mod, "SETTLE", 3600.0)
    monkeypatch.setattr(keeper_mod, "RATE_INTERVAL", 0.3)


async def _connect(user) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(TopologyConsumer.as_asgi(), "/ws/topology/")
    comm.scope["user"] = user
    ok, code = await comm.connect(timeout=20)
    assert ok, code
    return comm


async def _next(comm, kind: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no {kind} message"
        msg = json.loads(await comm.receive_from(timeout=left))
        if msg["type"] == kind:
            return msg


async def _relay(after: int) -> int:
    """Forward the engine's events after seq ``after`` to the "events" group."""
    layer = get_channel_layer()
    evs = await sync_to_async(events_svc.after)(after)
    for ev in evs:
        await layer.group_send("events", {"type": "engine.event", "event": ev})
    return evs[-1]["seq"] if evs else after


def _names(nodes) -> set[str]:
    return {n["name"] for n in nodes if n["kind"] == "container"}


async def test_strangers_are_refused(engine_root, redis_layer, db):
    from django.contrib.auth.models import AnonymousUser, User

    for user in (AnonymousUser(), await sync_to_async(User.objects.create_user)("nobody")):
        comm = WebsocketCommunicator(TopologyConsumer.as_asgi(), "/ws/topology/")
        comm.scope["user"] = user
        ok, code = await comm.connect(timeout=20)
        assert not ok and code == 4403


async def test_every_role_gets_the_snapshot_then_diffs_driven_by_events(
    wired, users, redis_layer, quiet_keeper
):
    seq = await sync_to_async(events_svc.last_seq)()
    comms = [await _connect(users[r]) for r in ("viewer", "operator", "admin")]
    snaps = [await _next(c, "snapshot") for c in comms]
    for s in snaps:
        assert _names(s["graph"]["nodes"]) == {"a", "b", "x"}
    version = snaps[0]["version"]

    # A container started from the CLI appears, joined to front's bridge: one diff.
    await sync_to_async(wired.berth)(
        "run", "-d", "--name", "c", "--network", "front", "busybox", "sleep", "300", check=True
    )
    seq = await _relay(seq)
    for comm in comms:
        msg = await _next(comm, "diff")
        assert msg["version"] == version + 1
        added = msg["diff"]["nodes"]["add"]
        assert _names(added) == {"c"} and msg["diff"]["nodes"]["remove"] == []
        (veth,) = [e for e in msg["diff"]["edges"]["add"] if e["kind"] == "veth"]
        assert veth["source"] == added[0]["id"] and veth["bridge"]
        # Nothing else was touched: the others keep their places on the page.
        assert msg["diff"]["nodes"]["update"] == []

    # Stopped from the CLI: removed, node and veth.
    await sync_to_async(wired.berth)("stop", "-t", "1", "b", check=True)
    seq = await _relay(seq)
    b_id = next(n["id"] for n in snaps[0]["graph"]["nodes"] if n.get("name") == "b")
    for comm in comms:
        msg = await _next(comm, "diff")
        assert b_id in msg["diff"]["nodes"]["remove"]
        assert any(e.startswith("veth:") for e in msg["diff"]["edges"]["remove"])
    for comm in comms:
        await comm.disconnect()


async def test_rates_are_sampled_while_watched_and_stop_with_the_last_viewer(
    wired, users, redis_layer, quiet_keeper
):
    a = await _connect(users["viewer"])
    b = await _connect(users["operator"])
    snap = await _next(a, "snapshot")
    g = snap["graph"]
    b_ip = next(n for n in g["nodes"] if n.get("name") == "b")["addresses"][0]["ip"]
    a_node = next(n for n in g["nodes"] if n.get("name") == "a")
    (veth,) = [e["id"] for e in g["edges"] if e["kind"] == "veth" and e["source"] == a_node["id"]]
    await sync_to_async(wired.berth)(
        "exec", "a", "ping", "-c", "8", "-i", "0.2", "-s", "1200", b_ip
    )
    deadline = time.monotonic() + 20
    while True:
        r = (await _next(a, "rates"))["rates"]
        if r.get(veth, {}).get("out", 0) > 0 or time.monotonic() > deadline:
            break
    assert r[veth]["out"] > 0 and r[veth]["in"] > 0
    k = keeper_mod.keeper()
    assert k.sampling and len(k.viewers) == 2
    await a.disconnect()
    assert k.sampling  # one viewer left: still sampling
    await b.disconnect()
    assert not k.sampling and not k.viewers
    n = k.samples
    await asyncio.sleep(1.0)
    assert k.samples == n  # nobody watches: no more counter reads


async def test_network_create_connect_disconnect_remove_reach_the_page(
    wired, users, redis_layer, quiet_keeper
):
    seq = await sync_to_async(events_svc.last_seq)()
    comm = await _connect(users["viewer"])
    snap = await _next(comm, "snapshot")
    x_id = next(n["id"] for n in snap["graph"]["nodes"] if n.get("name") == "x")
    berth = sync_to_async(wired.berth)

    await berth("network", "create", "--subnet", "10.97.0.0/24", "extra", check=True)
    seq = await _relay(seq)
    msg = await _next(comm, "diff")
    (net,) = msg["diff"]["nodes"]["add"]
    assert net["kind"] == "network" and net["name"] == "extra" and net["state"] == "up"

    await berth("network", "connect", "extra", "x", check=True)
    seq = await _relay(seq)
    msg = await _next(comm, "diff")
    (veth,) = msg["diff"]["edges"]["add"]
    assert (veth["kind"], veth["source"], veth["target"]) == ("veth", x_id, net["id"])
    # x's node now lists the new address: updated in place, not re-added.
    (upd,) = msg["diff"]["nodes"]["update"]
    assert upd["id"] == x_id and "extra" in upd["networks"]

    await berth("network", "disconnect", "extra", "x", check=True)
    seq = await _relay(seq)
    msg = await _next(comm, "diff")
    assert msg["diff"]["edges"]["remove"] == [veth["id"]]

    await berth("network", "rm", "extra", check=True)
    seq = await _relay(seq)
    msg = await _next(comm, "diff")
    assert net["id"] in msg["diff"]["nodes"]["remove"]
    await comm.disconnect()
