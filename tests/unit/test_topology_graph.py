"""The topology graph built from engine state (records) and a kernel view (links),
without any kernel objects: shared namespaces, macvlan, published ports, the host
network, what the kernel says about veth ends, diffs and rates."""

from __future__ import annotations

from engine.containers.options import CreateOptions
from engine.containers.records import Container
from engine.network.store import Endpoint, NetworkRecord
from engine.network.topology import HostLinks, State, build, counters, diff, is_empty, rates
from engine.network.topology_reach import find_path

BR = NetworkRecord(id="b" * 64, name="bridge", driver="bridge", subnet="172.17.0.0/16",
                   gateway="172.17.0.1", bridge="bt0")  # fmt: skip
APP = NetworkRecord(id="a" * 64, name="app", driver="bridge", subnet="10.1.0.0/24",
                    gateway="10.1.0.1", bridge="btapp")  # fmt: skip
DB = NetworkRecord(id="d" * 64, name="db", driver="bridge", subnet="10.2.0.0/24",
                   gateway="10.2.0.1", bridge="btdb", internal=True)  # fmt: skip
LAN = NetworkRecord(id="c" * 64, name="lan", driver="macvlan", subnet="192.168.5.0/24",
                    gateway="192.168.5.1", options={"parent": "eth0"})  # fmt: skip
HOSTNET = NetworkRecord(id="e" * 64, name="host", driver="host")
NONE = NetworkRecord(id="f" * 64, name="none", driver="null")


def ctr(cid: str, name: str, network: str = "", **extra) -> Container:
    return Container(
        id=cid * 64 if len(cid) == 1 else cid, name=name, image_id="", image_ref="busybox",
        created=0, state="running", opts=CreateOptions(image="busybox", network=network),
        args=[], env=[], workdir="", user="", stop_signal="", health=None, exposed_ports={},
        image_volumes=[], pid=1, extra=extra,
    )  # fmt: skip


def ep(
    net: NetworkRecord, c: Container, ip: str, ifname: str = "eth0", host_if: str = ""
) -> Endpoint:
    if not host_if and net.driver == "bridge":
        host_if = f"bt{c.name}{net.name}v"[:15]
    return Endpoint(net.id, c.id, ip, mac="02:42:00:00:00:01", ifname=ifname, host_ifname=host_if)


def link(
    name: str,
    kind: str = "",
    master: str = "",
    up: bool = True,
    rx: int = 0,
    tx: int = 0,
    addrs: tuple[str, ...] = (),
) -> dict:
    return {
        "ifname": name, "flags": ["BROADCAST", "UP", "LOWER_UP"] if up else ["BROADCAST"],
        **({"master": master} if master else {}),
        **({"linkinfo": {"info_kind": kind}} if kind else {}),
        "address": "02:00:00:00:00:09",
        "addr_info": [{"family": "inet", "local": a.split("/")[0], "prefixlen": int(a.split("/")[1])}
                      for a in addrs],
        "stats64": {"rx": {"bytes": rx}, "tx": {"bytes": tx}},
    }  # fmt: skip


def ids(g: dict, part: str = "nodes") -> set[str]:
    return {x["id"] for x in g[part]}


def by_id(g: dict, id_: str) -> dict:
    return next(x for x in g["nodes"] + g["edges"] if x["id"] == id_)


def scene():
    web, api, side, db = (
        ctr("1", "web"),
        ctr("2", "api"),
        ctr("3", "side", "container:web"),
        ctr("4", "pg"),
    )
    web.extra = {"ports": [{"proto": "tcp", "host_ip": "0.0.0.0", "host_port": 8080,
                            "container_port": 80}],
                 "port_target": {"ip": "10.1.0.2", "bridge": "btapp"}}  # fmt: skip
    mac, hn = ctr("5", "mac", "lan"), ctr("6", "hostly", "host")
    eps = [ep(APP, web, "10.1.0.2"), ep(APP, api, "10.1.0.3"), ep(DB, api, "10.2.0.3", "eth1"),
           ep(DB, db, "10.2.0.2"), ep(LAN, mac, "192.168.5.7")]  # fmt: skip
    state = State([BR, HOSTNET, NONE, APP, DB, LAN], eps, [web, api, side, db, mac, hn])
    return state, (web, api, side, db, mac, hn), eps


def kernel(eps, **over) -> HostLinks:
    links = {n: link(n, "bridge") for n in ("bt0", "btapp", "btdb")}
    links["eth0"] = link("eth0", addrs=("192.168.5.2/24",))
    links["lo"] = link("lo")
    for e in eps:
        if e.host_ifname:
            br = {APP.id: "btapp", DB.id: "btdb"}[e.network_id]
            links[e.host_ifname] = link(e.host_ifname, "veth", master=br)
    links.update(over)
    return HostLinks(links, True, 100.0)


def test_containers_joined_to_their_bridges_by_named_veths():
    state, (web, api, *_), eps = scene()
    g = build(state, kernel(eps), "bt")
    veth = by_id(g, f"veth:{eps[0].host_ifname}")
    assert (veth["source"], veth["target"]) == (f"ctr:{web.id}", f"net:{APP.id}")
    assert veth["host_ifname"] == eps[0].host_ifname and veth["state"] == "up"
    assert eps[0].host_ifname in veth["label"] and "eth0" in veth["label"]
    # api is on two networks: two veths, and both addresses on its node.
    api_edges = [e for e in g["edges"] if e["source"] == f"ctr:{api.id}" and e["kind"] == "veth"]
    assert {e["target"] for e in api_edges} == {f"net:{APP.id}", f"net:{DB.id}"}
    node = by_id(g, f"ctr:{api.id}")
    assert [a["ip"] for a in node["addresses"]] == ["10.1.0.3", "10.2.0.3"]
    assert node["networks"] == ["app", "db"] and "10.2.0.3" in node["label"]
    # The bridge networks hang off the host; the internal one is marked so.
    assert by_id(g, f"uplink:{APP.id}")["label"] == "NAT"
    assert by_id(g, f"uplink:{DB.id}").get("internal") is True
    assert by_id(g, f"net:{APP.id}")["bridge"] == "btapp"


def test_shared_namespace_host_network_and_macvlan():
    state, (web, _api, side, _db, mac, hn), eps = scene()
    g = build(state, kernel(eps), "bt")
    shares = by_id(g, f"shares:{side.id}")
    assert (shares["source"], shares["target"]) == (f"ctr:{side.id}", f"ctr:{web.id}")
    assert not [e for e in g["edges"] if e["source"] == f"ctr:{side.id}" and e["kind"] == "veth"]
    assert by_id(g, f"ctr:{side.id}")["mode"] == "container:web"
    # --network host: the host network node appears (only because someone uses it).
    assert by_id(g, f"hostnet:{hn.id}")["target"] == f"net:{HOSTNET.id}"
    assert by_id(g, f"ctr:{hn.id}")["networks"] == ["host"]
    assert f"net:{NONE.id}" not in ids(g)
    # macvlan: container -> network -> its parent interface on the host.
    sub = by_id(g, f"sub:{mac.id}:{LAN.id}")
    assert (
        sub["kind"] == "sublink" and sub["target"] == f"net:{LAN.id}" and sub["ip"] == "192.168.5.7"
    )
    parent = by_id(g, f"parent:{LAN.id}")
    assert parent["target"] == "if:eth0" and by_id(g, "if:eth0")["addresses"] == ["192.168.5.2/24"]
    assert by_id(g, f"net:{LAN.id}")["driver"] == "macvlan"


def test_published_port_is_an_edge_from_host_ip_port_to_container_port():
    state, (web, *_), eps = scene()
    g = build(state, kernel(eps), "bt")
    port = by_id(g, "port:tcp:0.0.0.0:8080")
    assert port["kind"] == "port" and port["label"] == "0.0.0.0:8080/tcp"
    pub = by_id(g, "publish:tcp:0.0.0.0:8080")
    assert (pub["source"], pub["target"]) == ("port:tcp:0.0.0.0:8080", f"ctr:{web.id}")
    assert pub["label"] == "0.0.0.0:8080 → 10.1.0.2:80/tcp"
    assert by_id(g, "listen:tcp:0.0.0.0:8080")["source"] == "host"


def test_kernel_state_flags_missing_and_misplaced_veth_ends():
    state, _, eps = scene()
    g = build(state, kernel(eps, **{eps[0].host_ifname: link(eps[0].host_ifname, "veth",
                                                              master="bt0")}), "bt")  # fmt: skip
    e = by_id(g, f"veth:{eps[0].host_ifname}")
    assert e["state"] == "detached" and "on bt0, not btapp" in e["problem"]
    links = kernel(eps).links
    del links[eps[1].host_ifname]
    links["btdb"] = link("btdb", "bridge", up=False)
    g = build(state, HostLinks(links, True, 0), "bt")
    assert by_id(g, f"veth:{eps[1].host_ifname}")["state"] == "missing"
    assert by_id(g, f"net:{DB.id}")["state"] == "down"
    # Without the kernel's view nothing is flagged.
    g = build(state, None, "bt")
    assert by_id(g, f"net:{DB.id}")["state"] == "unknown"
    assert by_id(g, f"veth:{eps[1].host_ifname}")["state"] == "up"


def test_host_interfaces_are_the_hosts_own_links_only():
    state, _, eps = scene()
    extra = {"wlan0": link("wlan0", addrs=("10.9.9.9/24",)), "btleft": link("btleft", "bridge"),
             "vethX": link("vethX", "veth", master="docker0")}  # fmt: skip
    g = build(state, kernel(eps, **extra), "bt")
    hostifs = {n["name"] for n in g["nodes"] if n["kind"] == "hostif"}
    assert hostifs == {"eth0", "wlan0"}  # not lo, our bridges/veths, prefixed or foreign veths
    assert by_id(g, "hostif:wlan0")["target"] == "host"


def test_ids_are_stable_and_diff_names_only_what_changed():
    state, (web, api, side, db, mac, hn), eps = scene()
    g1 = build(state, kernel(eps), "bt")
    assert build(state, kernel(eps), "bt") == g1 and is_empty(diff(g1, g1))
    # pg stops: its node and veth go, nothing else is touched.
    state2 = State(state.networks, [e for e in eps if e.container_id != db.id],
                   [web, api, side, mac, hn])  # fmt: skip
    links = kernel(eps).links
    del links[eps[3].host_ifname]
    g2 = build(state2, HostLinks(links, True, 0), "bt")
    d = diff(g1, g2)
    assert d["nodes"]["remove"] == [f"ctr:{db.id}"] and d["nodes"]["add"] == []
    assert d["edges"]["remove"] == [f"veth:{eps[3].host_ifname}"]
    assert d["nodes"]["update"] == [] and d["edges"]["add"] == []
    # ...and back: added in full.
    d = diff(g2, g1)
    assert [n["id"] for n in d["nodes"]["add"]] == [f"ctr:{db.id}"]
    assert d["edges"]["add"][0]["host_ifname"] == eps[3].host_ifname


def test_shared_namespace_of_a_stopped_container_draws_no_dangling_edge():
    state, (web, api, side, db, mac, hn), eps = scene()
    state = State(state.networks, state.endpoints, [api, side, db])
    g = build(state, kernel(eps), "bt")
    assert f"shares:{side.id}" not in ids(g, "edges")
    assert all(e["source"] in ids(g) and e["target"] in ids(g) for e in g["edges"])


def test_rates_from_two_counter_samples():
    state, _, eps = scene()
    k1 = kernel(
        eps, **{eps[0].host_ifname: link(eps[0].host_ifname, "veth", "btapp", rx=1000, tx=500)}
    )
    g = build(state, k1, "bt")
    c1 = counters(g, k1)
    k2 = kernel(
        eps, **{eps[0].host_ifname: link(eps[0].host_ifname, "veth", "btapp", rx=5000, tx=2500)}
    )
    k2.time = k1.time + 2.0
    r = rates(c1, counters(g, k2))
    assert r[f"veth:{eps[0].host_ifname}"] == {"out": 2000.0, "in": 1000.0}
    assert r[f"veth:{eps[1].host_ifname}"] == {"out": 0.0, "in": 0.0}
    # The uplink's rate is the bridge device's.
    k1.links["btapp"]["stats64"] = {"rx": {"bytes": 0}, "tx": {"bytes": 0}}
    k2.links["btapp"]["stats64"] = {"rx": {"bytes": 600}, "tx": {"bytes": 200}}
    r = rates(counters(g, k1), counters(g, k2))
    assert r[f"uplink:{APP.id}"] == {"out": 300.0, "in": 100.0}
    # A counter that went backwards (the veth was recreated) gives no rate.
    assert f"veth:{eps[0].host_ifname}" not in rates(counters(g, k2), c1 | {"time": 103.0})


def test_paths_go_through_bridges_and_the_host_never_through_a_port():
    state, (web, api, side, db, mac, hn), eps = scene()
    g = build(state, kernel(eps), "bt")
    p = find_path(g, f"ctr:{web.id}", f"ctr:{api.id}")
    assert p == [f"ctr:{web.id}", f"veth:{eps[0].host_ifname}", f"net:{APP.id}",
                 f"veth:{eps[1].host_ifname}", f"ctr:{api.id}"]  # fmt: skip
    p = find_path(g, f"ctr:{web.id}", f"ctr:{db.id}")
    # Not through api, which sits on both networks: containers do not route.
    assert p[2::2] == [f"net:{APP.id}", "host", f"net:{DB.id}", f"ctr:{db.id}"]
    p = find_path(g, f"ctr:{db.id}", "port:tcp:0.0.0.0:8080")
    assert p[-3:] == ["host", "listen:tcp:0.0.0.0:8080", "port:tcp:0.0.0.0:8080"]
    p = find_path(g, f"ctr:{mac.id}", f"ctr:{hn.id}")
    assert "if:eth0" in p and "port:tcp:0.0.0.0:8080" not in p


def test_a_shared_namespace_is_one_stack_on_the_path():
    state, (web, api, side, db, mac, hn), eps = scene()
    g = build(state, kernel(eps), "bt")
    p = find_path(g, f"ctr:{side.id}", f"ctr:{api.id}")
    assert (
        p[:3] == [f"ctr:{side.id}", f"shares:{side.id}", f"ctr:{web.id}"]
        and p[-1] == f"ctr:{api.id}"
    )
    p = find_path(g, f"ctr:{api.id}", f"ctr:{side.id}")
    assert p[-3:] == [f"ctr:{web.id}", f"shares:{side.id}", f"ctr:{side.id}"]
