"""Network records, IPAM and the NetworksAPI on a tmp engine root (no kernel objects).

Host routes are injected (``_host_routes`` / ``choose_subnet(routes=...)``), and
containers are stand-ins served by a replaced ``get_container``.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine import events
from engine.api import Engine
from engine.api_networks import NetworksAPI, endpoint_id
from engine.errors import Conflict, InvalidArgument, NotFound, Unsupported
from engine.network import ipam, store
from engine.network.store import NetworkRecord
from engine.state import StateDB


class E(Engine, NetworksAPI):
    """The engine with the kernel-side hooks switched off: these tests check the
    records and the API's rules; bridges and rules are tested in tests/engine."""

    def _network_setup_hook(self, rec: Any) -> None:
        pass

    def _network_teardown_hook(self, rec: Any) -> None:
        pass

    def _endpoint_attach_hook(self, *args: Any) -> None:
        pass

    def _endpoint_detach_hook(self, *args: Any) -> None:
        pass


@dataclass
class FakeContainer:
    id: str
    name: str
    state: str = "running"
    opts: Any = field(default_factory=lambda: SimpleNamespace(network="bridge"))


def _net(name: str, subnet: str, **kw: Any) -> NetworkRecord:
    return NetworkRecord(id=name.ljust(64, "0"), name=name, driver="bridge", subnet=subnet, **kw)


def _routes(*cidrs: str) -> list[IPv4Network]:
    return [IPv4Network(c) for c in cidrs]


# -- subnets ---------------------------------------------------------------------------------


def test_pool_order_is_dockers() -> None:
    cands = list(ipam.candidate_subnets())
    assert cands[0] == IPv4Network("172.17.0.0/16")
    assert cands[14] == IPv4Network("172.31.0.0/16")
    assert cands[15:17] == _routes("192.168.0.0/20", "192.168.16.0/20")
    assert len(cands) == 15 + 16


def test_choose_subnet_skips_networks_and_host_routes() -> None:
    nets = [_net("bridge", "172.17.0.0/16")]
    assert ipam.choose_subnet(nets, []) == IPv4Network("172.18.0.0/16")
    # A VPN's /24 inside 172.18/16 makes the whole /16 unusable.
    assert ipam.choose_subnet(nets, _routes("172.18.5.0/24")) == IPv4Network("172.19.0.0/16")
    # A route covering all of 172.16/12 sends us to 192.168.x/20, then past a LAN's /24.
    got = ipam.choose_subnet(nets, _routes("172.16.0.0/12", "192.168.0.0/24"))
    assert got == IPv4Network("192.168.16.0/20")
    # preferred is taken when free, skipped when it overlaps
    pref = IPv4Network("172.17.0.0/16")
    assert ipam.choose_subnet([], [], preferred=pref) == pref
    assert ipam.choose_subnet([], _routes("172.17.0.0/24"), pref) == IPv4Network("172.18.0.0/16")


def test_choose_subnet_exhausted() -> None:
    with pytest.raises(Conflict, match="non-overlapping"):
        ipam.choose_subnet([], _routes("172.16.0.0/12", "192.168.0.0/16"))


def test_parse_routes() -> None:
    text = (
        '[{"dst":"default","gateway":"192.0.2.1","dev":"eth0","flags":[]},'
        '{"dst":"192.0.2.0/24","dev":"eth0","protocol":"kernel","scope":"link"},'
        '{"dst":"10.9.8.7","dev":"tun0","flags":[]},{"dst":"0.0.0.0/0","dev":"x"}]'
    )
    assert ipam.parse_routes(text) == _routes("192.0.2.0/24", "10.9.8.7/32")
    assert ipam.parse_routes("") == []


@pytest.mark.parametrize(
    ("subnet", "gateway", "ip_range", "err", "match"),
    [
        ("10.0.0.0/33", None, None, InvalidArgument, "not a CIDR"),
        ("bogus", None, None, InvalidArgument, "not a CIDR"),
        ("10.0.0.0", None, None, InvalidArgument, "prefix length"),
        ("10.0.0.5/16", None, None, InvalidArgument, "it should be 10.0.0.0/16"),
        ("fd00::/64", None, None, Unsupported, "IPv6"),
        ("10.0.0.0/31", None, None, InvalidArgument, "too small"),
        ("10.0.0.0/24", "10.0.1.1", None, InvalidArgument, "gateway 10.0.1.1 is not in"),
        ("10.0.0.0/24", "10.0.0.255", None, InvalidArgument, "broadcast"),
        ("10.0.0.0/24", "nope", None, InvalidArgument, "invalid gateway"),
        ("10.0.0.0/24", None, "10.0.1.0/25", InvalidArgument, "not inside subnet"),
        (None, "10.0.0.1", None, InvalidArgument, "corresponding subnet"),
        (None, None, "10.0.0.0/25", InvalidArgument, "corresponding subnet"),
    ],
)
def test_plan_addresses_refuses(subnet, gateway, ip_range, err, match) -> None:
    with pytest.raises(err, match=match):
        ipam.plan_addresses([], [], subnet, gateway, ip_range)


def test_plan_addresses_overlap_names_the_other_network() -> None:
    nets = [_net("backend", "10.1.0.0/16")]
    with pytest.raises(Conflict, match="overlaps with network backend"):
        ipam.plan_addresses(nets, [], "10.1.2.0/24", None, None)
    # host routes do not stop an explicit subnet (the network doctor reports those)
    got = ipam.plan_addresses(nets, _routes("10.2.0.0/16"), "10.2.0.0/24", None, "10.2.0.64/26")
    assert got == ("10.2.0.0/24", "10.2.0.1", "10.2.0.64/26")


def test_mac_is_derived_from_ip() -> None:
    assert ipam.mac_for("172.17.0.2") == "02:42:ac:11:00:02"
    assert ipam.mac_for("10.255.0.16") == "02:42:0a:ff:00:10"


# -- allocation ------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> StateDB:
    d = StateDB(tmp_path / "berth.db")
    store.ensure_schema(d)
    return d


def _add(db: StateDB, rec: NetworkRecord) -> NetworkRecord:
    with db.write() as c:
        store.insert_network(c, rec)
    return rec


def test_allocate_skips_network_and_gateway(db: StateDB) -> None:
    net = _add(db, _net("n", "10.0.0.0/24", gateway="10.0.0.1"))
    eps = [ipam.allocate(db, net, f"c{i}", prefix="btx") for i in range(3)]
    assert [e.ip for e in eps] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert eps[0].mac == "02:42:0a:00:00:02"
    assert all(e.ifname == "eth0" for e in eps)
    names = {e.host_ifname for e in eps}
    assert len(names) == 3 and all(n.startswith("btxv") and len(n) <= 15 for n in names)
    # a gateway that is not the first host frees .1
    net2 = _add(db, _net("m", "10.1.0.0/24", gateway="10.1.0.2"))
    assert ipam.allocate(db, net2, "c0").ip == "10.1.0.1"
    assert ipam.allocate(db, net2, "c1").ip == "10.1.0.3"


def test_allocate_within_ip_range_and_never_broadcast(db: StateDB) -> None:
    net = _add(db, _net("n", "10.0.0.0/24", gateway="10.0.0.1", ip_range="10.0.0.252/30"))
    got = [ipam.allocate(db, net, f"c{i}").ip for i in range(3)]
    assert got == ["10.0.0.252", "10.0.0.253", "10.0.0.254"]
    with pytest.raises(Conflict, match="no available IPv4 addresses on network n"):
        ipam.allocate(db, net, "c9")
    # a static address may sit outside the range (the range is the dynamic part)
    assert ipam.allocate(db, net, "s1", requested_ip="10.0.0.20").ip == "10.0.0.20"


def test_small_subnet_exhausts(db: StateDB) -> None:
    net = _add(db, _net("n", "10.0.0.0/29", gateway="10.0.0.1"))
    got = [ipam.allocate(db, net, f"c{i}").ip for i in range(5)]
    assert got == [f"10.0.0.{i}" for i in range(2, 7)]
    with pytest.raises(Conflict, match="10.0.0.0/29 is full"):
        ipam.allocate(db, net, "c5")


@pytest.mark.parametrize(
    ("ip", "err", "match"),
    [
        ("10.9.0.5", InvalidArgument, "contain the IP address 10.9.0.5"),
        ("10.0.0.0", InvalidArgument, "network or broadcast address"),
        ("10.0.0.255", InvalidArgument, "network or broadcast address"),
        ("10.0.0.1", Conflict, "10.0.0.1 is already in use on network n .by the gateway"),
        ("10.0.0.2", Conflict, "10.0.0.2 is already in use on network n .by container first"),
        ("10.0.0.300", InvalidArgument, "invalid IP address"),
        ("fd00::5", Unsupported, "IPv6"),
    ],
)
def test_static_ip_errors(db: StateDB, ip: str, err: type, match: str) -> None:
    net = _add(db, _net("n", "10.0.0.0/24", gateway="10.0.0.1"))
    ipam.allocate(db, net, "first")
    with pytest.raises(err, match=match):
        ipam.allocate(db, net, "second", requested_ip=ip)
    assert [e.container_id for e in store.endpoints_of_network(db, net.id)] == ["first"]


def test_static_ip_and_duplicate_endpoint(db: StateDB) -> None:
    net = _add(db, _net("n", "10.0.0.0/24", gateway="10.0.0.1"))
    assert ipam.allocate(db, net, "c1", requested_ip="10.0.0.77").ip == "10.0.0.77"
    with pytest.raises(Conflict, match="already exists in network n"):
        ipam.allocate(db, net, "c1")
    gone = NetworkRecord(id="f" * 64, name="gone", driver="bridge", subnet="10.7.0.0/24")
    with pytest.raises(NotFound, match="network gone not found"):
        ipam.allocate(db, gone, "c1")


def test_release_and_reuse(db: StateDB) -> None:
    net = _add(db, _net("n", "10.0.0.0/24", gateway="10.0.0.1"))
    a, b, c = (ipam.allocate(db, net, cid) for cid in ("a", "b", "c"))
    released = ipam.release(db, net.id, "b")
    assert released is not None and released.ip == b.ip
    assert ipam.release(db, net.id, "b") is None  # repeatable
    d = ipam.allocate(db, net, "d")
    assert d.ip == b.ip and d.mac == b.mac
    assert {e.ip for e in store.endpoints_of_network(db, net.id)} == {a.ip, c.ip, d.ip}


def test_interface_names_per_container(db: StateDB) -> None:
    n1 = _add(db, _net("n1", "10.1.0.0/24", gateway="10.1.0.1"))
    n2 = _add(db, _net("n2", "10.2.0.0/24", gateway="10.2.0.1"))
    n3 = _add(db, _net("n3", "10.3.0.0/24", gateway="10.3.0.1"))
    assert ipam.allocate(db, n1, "c").ifname == "eth0"
    assert ipam.allocate(db, n2, "c").ifname == "eth1"
    ipam.release(db, n1.id, "c")
    assert ipam.allocate(db, n3, "c").ifname == "eth0"
    assert [e.ifname for e in store.endpoints_of_container(db, "c")] == ["eth0", "eth1"]


def test_addressless_networks_take_many_endpoints(db: StateDB) -> None:
    host = _add(db, NetworkRecord(id="h" * 64, name="host", driver="host"))
    eps = [ipam.allocate(db, host, f"c{i}", prefix="btx") for i in range(3)]
    assert all(e.ip == "" and e.mac == "" and e.host_ifname == "" for e in eps)


def _allocate_in_thread(path: Path, net: NetworkRecord, cid: str, out: dict, go: Any) -> None:
    go.wait()
    try:
        out[cid] = ipam.allocate(StateDB(path), net, cid).ip  # own thread: own connection
    except Exception as e:  # reported by the test
        out[cid] = e


def test_50_concurrent_allocations_are_distinct(db: StateDB) -> None:
    net = _add(db, _net("n", "10.0.0.0/24", gateway="10.0.0.1"))
    out: dict[str, Any] = {}
    go = threading.Barrier(50)
    threads = [
        threading.Thread(target=_allocate_in_thread, args=(db.path, net, f"c{i}", out, go))
        for i in range(50)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ips = list(out.values())
    assert all(isinstance(ip, str) for ip in ips), ips
    assert len(ips) == 50 and len(set(ips)) == 50
    assert set(ips) == {f"10.0.0.{i}" for i in range(2, 52)}


def _allocate_in_process(path: str, net: NetworkRecord, cids: list[str]) -> list[str]:
    db = StateDB(Path(path))
    return [ipam.allocate(db, net, cid).ip for cid in cids]


def test_concurrent_allocations_across_processes(db: StateDB) -> None:
    net = _add(db, _net("n", "10.0.0.0/24", gateway="10.0.0.1"))
    # spawn, not fork: a forked child would inherit (and share) the parent's connection.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(10) as pool:
        batches = [[f"p{p}c{i}" for i in range(5)] for p in range(10)]
        results = pool.starmap(_allocate_in_process, [(str(db.path), net, b) for b in batches])
    ips = [ip for batch in results for ip in batch]
    assert len(ips) == 50 and len(set(ips)) == 50


# -- store lookups ---------------------------------------------------------------------------


def test_lookup_by_id_name_and_prefix(db: StateDB) -> None:
    a = _add(db, NetworkRecord(id="ab12" + "0" * 60, name="alpha", driver="bridge"))
    b = _add(db, NetworkRecord(id="ab34" + "0" * 60, name="beta", driver="bridge"))
    assert store.lookup(db, a.id) == a
    assert store.lookup(db, "beta") == b
    assert store.lookup(db, "ab3").name == "beta"
    with pytest.raises(InvalidArgument, match="ambiguous"):
        store.lookup(db, "ab")
    with pytest.raises(NotFound, match="^network gamma not found$"):
        store.lookup(db, "gamma")
    with pytest.raises(NotFound, match="network ffff not found"):
        store.lookup(db, "ffff")
    # a name that looks like a prefix of another network's ID wins by exact name
    c = _add(db, NetworkRecord(id="cd" * 32, name="ab1", driver="bridge"))
    assert store.lookup(db, "ab1") == c


# -- the API ---------------------------------------------------------------------------------


@pytest.fixture
def routes() -> list[IPv4Network]:
    return []


@pytest.fixture
def eng(eng_env: Any, routes: list[IPv4Network], monkeypatch: pytest.MonkeyPatch) -> E:
    e = E(eng_env.config(), actor="tester")
    monkeypatch.setattr(e, "_host_routes", lambda: list(routes))
    ctrs: dict[str, FakeContainer] = {}

    def get_container(ref: str) -> FakeContainer:
        for c in ctrs.values():
            if ref in (c.id, c.name) or c.id.startswith(ref):
                return c
        raise NotFound(f"no such container: {ref}")

    monkeypatch.setattr(e, "get_container", get_container)
    e.fake_containers = ctrs  # type: ignore[attr-defined]
    return e


def _container(eng: E, name: str, state: str = "running", mode: str = "bridge") -> FakeContainer:
    cid = (name.encode().hex() + "0" * 64)[:64]
    c = FakeContainer(cid, name, state, SimpleNamespace(network=mode))
    eng.fake_containers[name] = c  # type: ignore[attr-defined]
    # A containers row, so the endpoint is not taken for a stale one.
    with eng.db.write() as conn:
        conn.execute(
            "INSERT INTO containers(id, name, image_id, image_ref, created, state, config)"
            " VALUES (?,?,?,?,?,?,?)",
            (cid, name, "img", "img", time.time(), state, "{}"),
        )
    return c


def _net_events(eng: E) -> list[tuple[str, str, str, dict]]:
    return [(e.action, e.id, e.actor, e.attrs) for e in events.since(eng.db) if e.type == "network"]


def test_predefined_networks(eng: E) -> None:
    nets = {n["Name"]: n for n in eng.list_networks()}
    assert sorted(nets) == ["bridge", "host", "none"]
    br = nets["bridge"]
    assert br["Driver"] == "bridge"
    assert br["IPAM"]["Config"] == [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]
    assert br["Options"]["com.docker.network.bridge.name"] == f"{eng.config.prefix}0"
    assert eng.get_network("bridge").bridge == f"{eng.config.prefix}0"
    assert nets["host"]["Driver"] == "host" and nets["host"]["IPAM"]["Config"] == []
    assert nets["none"]["Driver"] == "null"
    for name in ("bridge", "host", "none"):
        with pytest.raises(InvalidArgument, match=f"{name} is a pre-defined network"):
            eng.remove_network(name)
    # a second engine object on the same root does not make them twice
    again = E(eng.config)
    again._host_routes = lambda: []  # type: ignore[method-assign]
    assert len(again.list_networks()) == 3


@pytest.mark.parametrize("routes", [_routes("172.17.0.0/24")])
def test_default_bridge_avoids_a_host_route(eng: E) -> None:
    assert eng.get_network("bridge").subnet == "172.18.0.0/16"
    assert eng.create_network("n1")["IPAM"]["Config"][0]["Subnet"] == "172.19.0.0/16"


@pytest.mark.parametrize("routes", [_routes("172.18.0.0/16", "172.19.9.0/24")])
def test_create_auto_subnet_skips_routes(eng: E) -> None:
    rec = eng.create_network(
        "app", labels={"tier": "web"}, options={"com.docker.network.driver.mtu": "1400"}
    )
    assert rec["Name"] == "app" and len(rec["Id"]) == 64
    assert rec["IPAM"] == {
        "Driver": "default",
        "Options": {},
        "Config": [{"Subnet": "172.20.0.0/16", "Gateway": "172.20.0.1"}],
    }
    assert rec["Labels"] == {"tier": "web"} and rec["Scope"] == "local"
    assert rec["Containers"] == {} and rec["Internal"] is False and rec["EnableIPv6"] is False
    r = eng.get_network("app")
    assert r.mtu == 1400 and r.bridge.startswith(eng.config.prefix + "-") and len(r.bridge) == 15


def test_create_validation(eng: E) -> None:
    eng.create_network("app", subnet="10.10.0.0/16")
    with pytest.raises(Conflict, match="network with name app already exists"):
        eng.create_network("app")
    with pytest.raises(Conflict, match="network with name bridge already exists"):
        eng.create_network("bridge")
    with pytest.raises(Conflict, match="overlaps with network app"):
        eng.create_network("other", subnet="10.10.5.0/24")
    with pytest.raises(InvalidArgument, match="invalid network name"):
        eng.create_network("-bad")
    with pytest.raises(Conflict, match='only one instance of "host"'):
        eng.create_network("h2", driver="host")
    with pytest.raises(Unsupported, match="overlay"):
        eng.create_network("o", driver="overlay")
    with pytest.raises(InvalidArgument, match="invalid MTU"):
        eng.create_network("m", options={"com.docker.network.driver.mtu": "12"})
    with pytest.raises(InvalidArgument, match="invalid bridge name"):
        eng.create_network("b", options={"com.docker.network.bridge.name": "x" * 16})
    eng.create_network("b1", options={"com.docker.network.bridge.name": "mybr0"})
    assert eng.get_network("b1").bridge == "mybr0"
    with pytest.raises(Conflict, match="bridge name mybr0 is already used by network b1"):
        eng.create_network("b2", options={"com.docker.network.bridge.name": "mybr0"})
    names = [n["Name"] for n in eng.list_networks()]
    assert names == ["app", "b1", "bridge", "host", "none"]


def test_macvlan_and_ipvlan_are_stored(eng: E) -> None:
    with pytest.raises(InvalidArgument, match="parent interface nosuch0 was not found"):
        eng.create_network("mv", driver="macvlan", options={"parent": "nosuch0"})
    rec = eng.create_network(
        "mv", driver="macvlan", subnet="10.50.0.0/24", options={"parent": "lo"}
    )
    assert rec["Driver"] == "macvlan" and rec["Options"] == {"parent": "lo"}
    assert eng.get_network("mv").parent == "lo" and eng.get_network("mv").bridge == ""
    with pytest.raises(Conflict, match="network mv is already using parent interface lo"):
        eng.create_network("mv2", driver="macvlan", options={"parent": "lo"})
    with pytest.raises(InvalidArgument, match="invalid ipvlan_mode"):
        eng.create_network("iv", driver="ipvlan", options={"parent": "lo", "ipvlan_mode": "l4"})
    # no parent: internal, as Docker does (it gives such a network a dummy parent)
    assert eng.create_network("iv", driver="ipvlan", options={"ipvlan_mode": "l3"})["Internal"]


def test_setup_hook_failure_leaves_nothing(eng: E, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[NetworkRecord] = []

    def hook(rec: NetworkRecord) -> None:
        assert store.by_id(eng.db, rec.id) is not None  # the row is there when it runs
        seen.append(rec)
        if rec.name == "bad":
            raise OSError(17, "boom")

    monkeypatch.setattr(eng, "_network_setup_hook", hook, raising=False)
    eng.create_network("good")
    with pytest.raises(OSError, match="boom"):
        eng.create_network("bad", subnet="10.3.0.0/24")
    # the default bridge is made (and set up) on first use, before "good"
    assert [r.name for r in seen] == ["bridge", "good", "bad"]
    assert "bad" not in [n["Name"] for n in eng.list_networks()]
    # its subnet is free again
    assert eng.create_network("bad2", subnet="10.3.0.0/24")["Name"] == "bad2"
    created = [attrs["name"] for a, _, _, attrs in _net_events(eng) if a == "create"]
    assert created == ["bridge", "good", "bad2"]


def test_ls_filters(eng: E) -> None:
    a = eng.create_network("net2", labels={"env": "prod"})
    eng.create_network("net10", labels={"env": "dev", "x": ""})
    eng.connect_network("net2", _container(eng, "web").id)

    def names(*f: str) -> list[str]:
        return [n["Name"] for n in eng.list_networks(list(f))]

    assert names() == ["bridge", "host", "net2", "net10", "none"]
    assert names("name=net") == ["net2", "net10"]
    assert names("name=^net1") == ["net10"]
    assert names(f"id={a['Id'][:10]}") == ["net2"]
    assert names("driver=null") == ["none"]
    assert names("label=env") == ["net2", "net10"]
    assert names("label=env=dev") == ["net10"]
    assert names("type=builtin") == ["bridge", "host", "none"]
    assert names("type=custom") == ["net2", "net10"]
    assert names("dangling=true") == ["net10"]
    assert names("dangling=false") == ["bridge", "host", "net2", "none"]
    with pytest.raises(InvalidArgument, match="invalid filter 'colour'"):
        names("colour=red")
    with pytest.raises(InvalidArgument):
        names("dangling=maybe")


def test_connect_inspect_disconnect(eng: E, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str, str]] = []
    monkeypatch.setattr(
        eng,
        "_endpoint_attach_hook",
        lambda rec, ep, c: calls.append(("attach", rec.name, c.name)),
        raising=False,
    )
    monkeypatch.setattr(
        eng,
        "_endpoint_detach_hook",
        lambda rec, ep, c: calls.append(("detach", rec.name, c.name)),
        raising=False,
    )
    eng.create_network("app", subnet="10.20.0.0/24")
    web = _container(eng, "web")
    db_ = _container(eng, "db", state="created")
    ep = eng.connect_network("app", "web", aliases=["www", "www"])
    assert (ep.ip, ep.mac, ep.aliases) == ("10.20.0.2", "02:42:0a:14:00:02", ["www"])
    eng.connect_network("app", "db", ip="10.20.0.50")
    assert calls == [("attach", "app", "web")]  # only the running one is plumbed
    info = eng.inspect_network("app")["Containers"]
    assert info[web.id] == {
        "Name": "web",
        "EndpointID": endpoint_id(ep),
        "MacAddress": "02:42:0a:14:00:02",
        "IPv4Address": "10.20.0.2/24",
        "IPv6Address": "",
    }
    assert info[db_.id]["IPv4Address"] == "10.20.0.50/24"
    with pytest.raises(Conflict, match="endpoint with name web already exists in network app"):
        eng.connect_network("app", "web")
    with pytest.raises(Conflict, match="has active endpoints"):
        eng.remove_network("app")
    eng.disconnect_network("app", "web")
    assert calls[-1] == ("detach", "app", "web")
    with pytest.raises(NotFound, match="container web is not connected to network app"):
        eng.disconnect_network("app", "web")
    assert list(eng.inspect_network("app")["Containers"]) == [db_.id]
    acts = [(a, attrs.get("container")) for a, _, _, attrs in _net_events(eng)]
    assert ("connect", web.id) in acts and ("disconnect", web.id) in acts


def test_connect_rules(eng: E, monkeypatch: pytest.MonkeyPatch) -> None:
    eng.create_network("app")
    _container(eng, "h", mode="host")
    _container(eng, "n", mode="none")
    _container(eng, "j", mode="container:other")
    _container(eng, "b")
    with pytest.raises(InvalidArgument, match="host network"):
        eng.connect_network("app", "h")
    with pytest.raises(InvalidArgument, match="private \\(none\\) mode"):
        eng.connect_network("app", "n")
    with pytest.raises(InvalidArgument, match="sharing network namespace"):
        eng.connect_network("app", "j")
    with pytest.raises(InvalidArgument, match="host network"):
        eng.connect_network("host", "b")
    with pytest.raises(InvalidArgument, match="user defined networks only"):
        eng.connect_network("bridge", "b", ip="172.17.0.9")
    with pytest.raises(InvalidArgument, match="alias is supported only"):
        eng.connect_network("bridge", "b", aliases=["x"])
    assert eng.connect_network("bridge", "b").ip == "172.17.0.2"
    with pytest.raises(NotFound, match="no such container"):
        eng.connect_network("app", "ghost")

    def failing(rec: Any, ep: Any, c: Any) -> None:
        raise OSError("veth failed")

    monkeypatch.setattr(eng, "_endpoint_attach_hook", failing, raising=False)
    with pytest.raises(OSError, match="veth failed"):
        eng.connect_network("app", "b")
    assert eng.inspect_network("app")["Containers"] == {}  # the address went back


def test_force_disconnect_of_a_removed_container(eng: E) -> None:
    eng.create_network("app")
    c = _container(eng, "gone")
    eng.connect_network("app", "gone")
    del eng.fake_containers["gone"]  # type: ignore[attr-defined]
    with pytest.raises(NotFound):
        eng.disconnect_network("app", "gone")
    eng.disconnect_network("app", c.id[:12], force=True)
    assert eng.inspect_network("app")["Containers"] == {}


def test_rm_and_prune(eng: E, monkeypatch: pytest.MonkeyPatch) -> None:
    torn: list[str] = []

    def teardown(rec: NetworkRecord) -> None:
        assert store.by_id(eng.db, rec.id) is not None  # called before the row goes
        if rec.name == "sticky":
            raise OSError("busy bridge")
        torn.append(rec.name)

    monkeypatch.setattr(eng, "_network_teardown_hook", teardown, raising=False)
    a = eng.create_network("gone", labels={"keep": "1"})
    eng.create_network("b")
    eng.create_network("c")
    eng.create_network("sticky")
    eng.create_network("stale")
    eng.connect_network("c", _container(eng, "web").id)
    # an endpoint whose container row is gone does not pin the network
    ipam.allocate(eng.db, eng.get_network("stale"), "9" * 64)

    removed = eng.remove_network(a["Id"][:8])
    assert removed.name == "gone" and torn == ["gone"]
    with pytest.raises(NotFound, match="network gone not found"):
        eng.inspect_network("gone")
    with pytest.raises(OSError, match="busy bridge"):
        eng.remove_network("sticky")
    assert eng.get_network("sticky")  # kept for a retry

    assert eng.prune_networks(["label=nothing"]) == []
    assert eng.prune_networks() == ["b", "stale"]  # c in use, sticky fails, builtins stay
    left = [n["Name"] for n in eng.list_networks()]
    assert left == ["bridge", "c", "host", "none", "sticky"]
    evs = _net_events(eng)
    assert ("destroy", a["Id"], "tester", {"name": "gone", "type": "bridge"}) in evs
    assert evs[-1][0] == "prune" and evs[-1][3] == {"count": 2}
    assert all(actor == "tester" for _, _, actor, _ in evs)


def test_prune_until(eng: E) -> None:
    eng.create_network("old")
    assert eng.prune_networks(["until=1h"]) == []
    assert eng.prune_networks([f"until={time.time() + 5}"]) == ["old"]
    with pytest.raises(InvalidArgument):
        eng.prune_networks(["until=yesterday"])


def test_create_event_and_inspect_created(eng: E) -> None:
    rec = eng.create_network("evt")
    assert ("create", rec["Id"], "tester", {"name": "evt", "type": "bridge"}) in _net_events(eng)
    assert rec["Created"][:4].isdigit() and "T" in rec["Created"]
