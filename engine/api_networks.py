"""The networks part of the Engine facade: records, IPAM, events and the hooks.

This mixin owns what the database knows about networks; the kernel side
(bridges, veths, nftables) belongs to optional hooks that another mixin of
Engine provides. Each hook is looked up with getattr, so the API works (and is
tested) without them:

- ``_network_setup_hook(record)``: after a network's row is inserted (create,
  and the default ``bridge`` when it is first made). If it raises, the row is
  deleted again and the error re-raised: nothing is left half made.
- ``_network_teardown_hook(record)``: in ``remove_network``, before the row is
  deleted (an error keeps the row, so the removal can be retried).
- ``_endpoint_attach_hook(record, endpoint, container)``: in ``connect_network``
  after the endpoint (address) is recorded, when the container is running; if
  it raises, the address is released again.
- ``_endpoint_detach_hook(record, endpoint, container)``: in
  ``disconnect_network`` before the address is released, when the container is
  running (``container`` is None for a force-disconnect of a removed container).

Hooks must accept "already done" (CNI-style): a retried operation calls them again.

Locks: ``<locks>/networks/<id>.lock`` is held shared by connect/disconnect and
exclusively by remove, so a network cannot be removed while an endpoint is
being added. Addresses themselves need no lock (see engine/network/ipam.py).
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from ipaddress import IPv4Network
from typing import TYPE_CHECKING, Any

from engine._lazy import lazy
from engine.errors import Conflict, EngineError, InvalidArgument, NotFound, Unsupported
from engine.locks import file_lock
from engine.network import store
from engine.network.store import Endpoint, NetworkRecord

ipam = lazy("engine.network.ipam")

if TYPE_CHECKING:
    from engine.config import EngineConfig
    from engine.state import StateDB

# Docker's rule for network names (moby: restrictedNameChars, one character allowed).
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
DRIVERS = ("bridge", "macvlan", "ipvlan")
BRIDGE_NAME_OPT = "com.docker.network.bridge.name"
MTU_OPT = "com.docker.network.driver.mtu"
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # what nft and iproute2 both take
_MODES = {
    "macvlan": {"macvlan_mode": ("bridge", "private", "vepa", "passthru")},
    "ipvlan": {"ipvlan_mode": ("l2", "l3", "l3s"), "ipvlan_flag": ("bridge", "private", "vepa")},
}


class NetworksAPI:
    # Provided by Engine (declared only, so the MRO never finds a stub here).
    config: EngineConfig
    db: StateDB
    if TYPE_CHECKING:

        def emit(self, type_: str, action: str, obj_id: str, **attrs: object) -> int: ...

    # -- plumbing ------------------------------------------------------------------------
    def _host_routes(self) -> list[IPv4Network]:
        """Routes of the engine's host (tests replace this to inject a routing table)."""
        return ipam.host_routes(self.config.host_netns)

    @contextmanager
    def _network_lock(self, network_id: str, shared: bool = False) -> Iterator[None]:
        with file_lock(self.config.locks_dir / "networks" / f"{network_id}.lock", shared=shared):
            yield

    def _call_hook(self, name: str, *args: Any) -> bool:
        hook = getattr(self, name, None)
        if hook is None:
            return False
        hook(*args)
        return True

    def _networks_ready(self) -> None:
        # Once per Engine object: a CLI process makes one, the web process keeps one.
        if not self.__dict__.get("_networks_ready_done"):
            store.ensure_schema(self.db)
            self.ensure_default_network()
            self.__dict__["_networks_ready_done"] = True

    def ensure_default_network(self) -> NetworkRecord:
        """The predefined networks (``bridge``, ``host``, ``none``), made on first use.

        ``bridge`` gets 172.17.0.0/16 unless that overlaps a host route (then the first
        free default pool) and the bridge device ``<prefix>0``. Two processes racing
        here insert it once: the second sees the row inside its own transaction.
        """
        store.ensure_schema(self.db)
        have = {r["name"] for r in self.db.query("SELECT name FROM networks")}
        if all(n in have for n in store.PREDEFINED):
            rec = store.by_name(self.db, "bridge")
            assert rec is not None
            return rec
        routes = self._host_routes() if "bridge" not in have else []
        now = time.time()
        made: NetworkRecord | None = None
        with self.db.write() as conn:
            rows = [store.network_from_row(r) for r in conn.execute("SELECT * FROM networks")]
            names = {r.name for r in rows}
            for name, driver in (("host", "host"), ("none", "null")):
                if name not in names:
                    store.insert_network(
                        conn, NetworkRecord(id=_new_id(), name=name, driver=driver, created=now)
                    )
            if "bridge" not in names:
                subnet, gateway, _ = ipam.plan_addresses(
                    rows, routes, None, None, None, preferred=ipam.DEFAULT_BRIDGE_SUBNET
                )
                bridge = f"{self.config.prefix}0"
                made = NetworkRecord(
                    id=_new_id(),
                    name="bridge",
                    driver="bridge",
                    subnet=subnet,
                    gateway=gateway,
                    created=now,
                    bridge=bridge,
                    options={
                        "com.docker.network.bridge.default_bridge": "true",
                        "com.docker.network.bridge.enable_icc": "true",
                        "com.docker.network.bridge.enable_ip_masquerade": "true",
                        "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
                        BRIDGE_NAME_OPT: bridge,
                        MTU_OPT: "1500",
                    },
                )
                store.insert_network(conn, made)
        if made is not None:
            self._setup_or_undo(made)
            self.emit("network", "create", made.id, name=made.name, type=made.driver)
        rec = store.by_name(self.db, "bridge")
        assert rec is not None
        return rec

    def _setup_or_undo(self, rec: NetworkRecord) -> None:
        try:
            self._call_hook("_network_setup_hook", rec)
        except BaseException:
            store.delete_network(self.db, rec.id)
            raise

    # -- lookups -------------------------------------------------------------------------
    def get_network(self, ref: str) -> NetworkRecord:
        """By full ID, exact name or unique ID prefix (NotFound "network X not found")."""
        self._networks_ready()
        return store.lookup(self.db, ref)

    def network_endpoints(self, ref: str) -> list[Endpoint]:
        return store.endpoints_of_network(self.db, self.get_network(ref).id)

    def container_endpoints(self, container_id: str) -> list[Endpoint]:
        """The container's endpoints, in interface order (eth0 first)."""
        store.ensure_schema(self.db)
        return store.endpoints_of_container(self.db, container_id)

    # -- create --------------------------------------------------------------------------
    def create_network(
        self,
        name: str,
        driver: str = "bridge",
        subnet: str | None = None,
        gateway: str | None = None,
        ip_range: str | None = None,
        internal: bool = False,
        labels: dict[str, str] | None = None,
        options: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create a network; Docker's inspect dict.

        macvlan/ipvlan networks are validated (``parent`` must exist in the host netns)
        and stored; their links are the setup hook's job. Without ``parent`` they are
        internal, as on Docker (which gives them a dummy parent).
        """
        self._networks_ready()
        labels = dict(labels or {})
        options = dict(options or {})
        _validate_name(name)
        if driver in ("host", "null", "none"):
            raise Conflict(f'only one instance of "{driver}" network is allowed', obj=name)
        if driver not in DRIVERS:
            raise Unsupported(f"network driver {driver!r} is not supported ({', '.join(DRIVERS)})")
        _validate_options(driver, options)
        if driver in ("macvlan", "ipvlan"):
            if options.get("parent"):
                self._check_parent(options["parent"])
            else:
                internal = True
        routes = self._host_routes() if not subnet else []
        nid = _new_id()
        with self._network_lock(nid):
            with self.db.write() as conn:
                rows = [store.network_from_row(r) for r in conn.execute("SELECT * FROM networks")]
                if any(r.name == name for r in rows):
                    raise Conflict(f"network with name {name} already exists", obj=name)
                sub, gw, rng = ipam.plan_addresses(rows, routes, subnet, gateway, ip_range)
                bridge = ""
                if driver == "bridge":
                    bridge = options.get(BRIDGE_NAME_OPT) or self._bridge_name(nid, rows)
                    other = next((r for r in rows if r.bridge == bridge), None)
                    if other is not None:
                        raise Conflict(
                            f"bridge name {bridge} is already used by network {other.name}",
                            obj=bridge,
                        )
                elif options.get("parent"):
                    other = next(
                        (r for r in rows if r.parent == options["parent"] and r.driver == driver),
                        None,
                    )
                    if other is not None:
                        raise Conflict(
                            f"network {other.name} is already using parent interface"
                            f" {options['parent']}",
                            obj=options["parent"],
                        )
                rec = NetworkRecord(
                    id=nid,
                    name=name,
                    driver=driver,
                    subnet=sub,
                    gateway=gw,
                    ip_range=rng,
                    internal=internal,
                    labels=labels,
                    options=options,
                    created=time.time(),
                    bridge=bridge,
                )
                store.insert_network(conn, rec)
            self._setup_or_undo(rec)
        self.emit("network", "create", nid, name=name, type=driver)
        return self.inspect_network(nid)

    def _bridge_name(self, nid: str, rows: list[NetworkRecord]) -> str:
        """``<prefix>-<hash>`` (<= 15 chars); the default network's is ``<prefix>0``."""
        width = 15 - len(self.config.prefix) - 1
        used = {r.bridge for r in rows}
        for start in range(0, len(nid) - width + 1):
            name = f"{self.config.prefix}-{nid[start : start + width]}"
            if name not in used:
                return name
        raise Conflict("no free bridge name")  # pragma: no cover: 64 hex digits of chances

    def _check_parent(self, parent: str) -> None:
        """The parent link must exist in the host netns (``eth0.10``: its ``eth0`` must)."""
        if _link_exists(self.config.host_netns, parent):
            return
        base, dot, vlan = parent.rpartition(".")
        if dot and vlan.isdigit() and 1 <= int(vlan) <= 4094:
            if _link_exists(self.config.host_netns, base):
                return  # the setup hook makes the 802.1q sub-interface, as Docker does
        where = f"network namespace {self.config.host_netns}" if self.config.host_netns else "host"
        raise InvalidArgument(f"-o parent interface {parent} was not found on the {where}")

    # -- list and inspect ----------------------------------------------------------------
    def list_networks(self, filters: list[str] | None = None) -> list[dict[str, Any]]:
        """Filters: name=, id=, driver=, label=K[=V], type=custom|builtin, dangling=, scope=."""
        self._networks_ready()
        want = _parse_filters(filters or [])
        for key in want:
            if key not in ("name", "id", "driver", "label", "type", "dangling", "scope"):
                raise InvalidArgument(f"invalid filter '{key}'")
        dangling = _bool_filter("dangling", want["dangling"]) if "dangling" in want else None
        counts = {
            r["network_id"]: r["n"]
            for r in self.db.query("SELECT network_id, COUNT(*) AS n FROM endpoints GROUP BY 1")
        }
        out = []
        for rec in store.all_networks(self.db):
            if "name" in want and not any(_regex_match(rec.name, p) for p in want["name"]):
                continue
            if "id" in want and not any(_regex_match(rec.id, p) for p in want["id"]):
                continue
            if "driver" in want and rec.driver not in want["driver"]:
                continue
            if not all(_label_match(rec.labels, spec) for spec in want.get("label", [])):
                continue
            kind = "builtin" if rec.predefined else "custom"
            if "type" in want:
                for t in want["type"]:
                    if t not in ("custom", "builtin"):
                        raise InvalidArgument(f"invalid filter: 'type'='{t}'")
                if kind not in want["type"]:
                    continue
            if "scope" in want and "local" not in want["scope"]:
                continue
            if dangling is not None:
                # Docker: dangling=true is the custom networks without containers.
                is_dangling = not rec.predefined and not counts.get(rec.id)
                if is_dangling != dangling:
                    continue
            out.append(self._inspect(rec))
        out.sort(key=lambda d: _natural_key(d["Name"]))
        return out

    def inspect_network(self, ref: str) -> dict[str, Any]:
        return self._inspect(self.get_network(ref))

    def _inspect(self, rec: NetworkRecord) -> dict[str, Any]:
        eps = store.endpoints_of_network(self.db, rec.id)
        names = store.container_names(self.db, [e.container_id for e in eps])
        plen = IPv4Network(rec.subnet).prefixlen if rec.subnet else 0
        containers = {
            e.container_id: {
                "Name": names.get(e.container_id, ""),
                "EndpointID": endpoint_id(e),
                "MacAddress": e.mac,
                "IPv4Address": f"{e.ip}/{plen}" if e.ip else "",
                "IPv6Address": "",
            }
            for e in eps
        }
        config: list[dict[str, str]] = []
        if rec.subnet:
            cfg = {"Subnet": rec.subnet, "Gateway": rec.gateway}
            if rec.ip_range:
                cfg["IPRange"] = rec.ip_range  # Go's omitempty: absent when not set
            config.append(cfg)
        return {
            "Name": rec.name,
            "Id": rec.id,
            "Created": _rfc3339nano(rec.created),
            "Scope": "local",
            "Driver": rec.driver,
            "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": {}, "Config": config},
            "Internal": rec.internal,
            "Attachable": False,
            "Ingress": False,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": False,
            "Containers": containers,
            "Options": dict(rec.options),
            "Labels": dict(rec.labels),
        }

    # -- remove and prune ----------------------------------------------------------------
    def remove_network(self, ref: str) -> NetworkRecord:
        rec = self.get_network(ref)
        if rec.predefined:
            raise InvalidArgument(
                f"{rec.name} is a pre-defined network and cannot be removed", obj=rec.name
            )
        with self._network_lock(rec.id):
            # Endpoints of containers that no longer exist (a crash between two
            # deletes) must not pin the network forever.
            for ep in store.stale_endpoints(self.db, rec.id):
                ipam.release(self.db, rec.id, ep.container_id)
            # Stopped (or never started) containers hold an address but no link: Docker
            # lets the network go and their next start fails with "network X not
            # found". Only containers with a live process keep it.
            eps = store.endpoints_of_network(self.db, rec.id)
            if any(_container_live(self.db, ep.container_id) for ep in eps):
                raise Conflict(
                    f"error while removing network: network {rec.name} id {rec.id}"
                    " has active endpoints",
                    obj=rec.name,
                )
            for ep in eps:  # none is live: the stopped ones give their addresses back
                ipam.release(self.db, rec.id, ep.container_id)
            self._call_hook("_network_teardown_hook", rec)
            store.delete_network(self.db, rec.id)
        self.emit("network", "destroy", rec.id, name=rec.name, type=rec.driver)
        return rec

    def prune_networks(self, filters: list[str] | None = None) -> list[str]:
        """Remove custom networks without endpoints; their names. Filters: label(!)=, until=."""
        self._networks_ready()
        want = _parse_filters(filters or [])
        for key in want:
            if key not in ("label", "label!", "until"):
                raise InvalidArgument(f"invalid filter '{key}'")
        until = min((_parse_until(v) for v in want.get("until", [])), default=None)
        removed: list[str] = []
        for rec in store.all_networks(self.db):
            if rec.predefined or (until is not None and rec.created >= until):
                continue
            if not all(_label_match(rec.labels, s) for s in want.get("label", [])):
                continue
            if any(_label_match(rec.labels, s) for s in want.get("label!", [])):
                continue
            try:
                self.remove_network(rec.id)
            except (EngineError, OSError):
                # In use or gone by the time we got to it, or its teardown failed (the
                # row stays for a retry): like Docker, prune carries on with the rest.
                continue
            removed.append(rec.name)
        self.emit("network", "prune", "", count=len(removed))
        return removed

    # -- connect and disconnect ----------------------------------------------------------
    def connect_network(
        self, net: str, container: str, ip: str | None = None, aliases: list[str] | None = None
    ) -> Endpoint:
        """Give the container an address on the network (and plumb it in if running)."""
        rec = self.get_network(net)
        c = self._container(container)
        aliases = list(aliases or [])
        mode = getattr(getattr(c, "opts", None), "network", "")
        if rec.driver in ("host", "null") or mode == "host":
            raise InvalidArgument(
                "container cannot be disconnected from host network or connected to host network"
            )
        if mode.startswith("container:"):
            raise InvalidArgument(
                "container sharing network namespace with another container or host cannot be"
                " connected to any other network"
            )
        if mode == "none":
            raise InvalidArgument(
                "container cannot be connected to multiple networks with one of the networks"
                " in private (none) mode"
            )
        if rec.name == "bridge" and ip:
            raise InvalidArgument(
                "user specified IP address is supported on user defined networks only"
            )
        if rec.name == "bridge" and aliases:
            raise InvalidArgument(
                "network-scoped alias is supported only for containers in user defined networks"
            )
        if store.endpoint(self.db, rec.id, c.id) is not None:
            raise Conflict(
                f"endpoint with name {c.name} already exists in network {rec.name}", obj=c.name
            )
        with self._network_lock(rec.id, shared=True):
            ep = ipam.allocate(self.db, rec, c.id, ip, aliases, prefix=self.config.prefix)
            if c.state == "running":
                try:
                    self._call_hook("_endpoint_attach_hook", rec, ep, c)
                except BaseException:
                    ipam.release(self.db, rec.id, c.id)
                    raise
        self.emit("network", "connect", rec.id, name=rec.name, type=rec.driver, container=c.id)
        return ep

    def disconnect_network(self, net: str, container: str, force: bool = False) -> Endpoint:
        """Take the container off the network. ``force`` also works for a container that
        is gone (a stale endpoint) and releases the address even if the detach hook fails."""
        rec = self.get_network(net)
        c: Any = None
        try:
            c = self._container(container)
            cid, cname = c.id, c.name
        except NotFound:
            if not force:
                raise
            cid = self._endpoint_container(rec, container)
            cname = container
        if rec.driver == "host":
            raise InvalidArgument(
                "container cannot be disconnected from host network or connected to host network"
            )
        ep = store.endpoint(self.db, rec.id, cid)
        if ep is None:
            raise NotFound(f"container {cname} is not connected to network {rec.name}", obj=cname)
        with self._network_lock(rec.id, shared=True):
            if c is not None and c.state == "running":
                try:
                    self._call_hook("_endpoint_detach_hook", rec, ep, c)
                except Exception:  # EngineError, or OSError from netlink
                    if not force:
                        raise
            ipam.release(self.db, rec.id, cid)
        self.emit("network", "disconnect", rec.id, name=rec.name, type=rec.driver, container=cid)
        return ep

    def _container(self, ref: str) -> Any:
        get = getattr(self, "get_container", None)
        if get is None:
            raise Unsupported("containers are not available in this engine")
        return get(ref)

    def _endpoint_container(self, rec: NetworkRecord, ref: str) -> str:
        """A removed container's ID from the network's endpoints (full ID or unique prefix)."""
        ids = [e.container_id for e in store.endpoints_of_network(self.db, rec.id)]
        hits = [i for i in ids if i == ref] or [i for i in ids if i.startswith(ref)]
        if len(hits) != 1:
            raise NotFound(f"container {ref} is not connected to network {rec.name}", obj=ref)
        return hits[0]


# -- helpers ------------------------------------------------------------------------------


def _new_id() -> str:
    return secrets.token_hex(32)


def endpoint_id(ep: Endpoint) -> str:
    """Docker's 64-hex EndpointID, derived (not stored): stable for the endpoint's life."""
    import hashlib

    return hashlib.sha256(f"{ep.network_id}/{ep.container_id}".encode()).hexdigest()


def _container_live(db, container_id: str) -> bool:
    """Has the container a process (running, paused, or mid-start with its pid)?"""
    from engine.runtime.oci import pid_alive

    row = db.one("SELECT state, pid FROM containers WHERE id=?", (container_id,))
    if row is None:
        return False
    return row["state"] in ("running", "paused") or bool(row["pid"] and pid_alive(row["pid"]))


def _validate_name(name: str) -> None:
    if not name or not NAME_RE.match(name) or len(name) > 255:
        raise InvalidArgument(
            f'invalid network name {name!r}: only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed',
            obj=name,
        )


def _validate_options(driver: str, options: dict[str, str]) -> None:
    if MTU_OPT in options:
        mtu = options[MTU_OPT]
        if not mtu.isdigit() or not 68 <= int(mtu) <= 65535:
            raise InvalidArgument(f"invalid MTU {mtu!r}: a number between 68 and 65535")
    if driver == "bridge" and BRIDGE_NAME_OPT in options:
        br = options[BRIDGE_NAME_OPT]
        if not _IFNAME_RE.match(br) or br in (".", ".."):
            raise InvalidArgument(f"invalid bridge name {br!r}: 1-15 of A-Z a-z 0-9 _ . -")
    for key, allowed in _MODES.get(driver, {}).items():
        if key in options and options[key] not in allowed:
            raise InvalidArgument(
                f"invalid {key} {options[key]!r}: one of {', '.join(allowed)}", obj=key
            )
    if "parent" in options and driver == "bridge":
        raise InvalidArgument("option parent is for macvlan and ipvlan networks, not bridge")


def _link_exists(host_netns: str, name: str) -> bool:
    if not _IFNAME_RE.match(name):
        return False
    cmd = ["ip", *(["-n", host_netns] if host_netns else []), "link", "show", "dev", name]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def _rfc3339nano(ts: float) -> str:
    # Go's RFC3339Nano in local time: trailing zeros of the fraction dropped, "Z" for UTC.
    dt = datetime.fromtimestamp(ts).astimezone()
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{dt.microsecond:06d}".rstrip("0")
    off = dt.strftime("%z")
    zone = "Z" if off == "+0000" else f"{off[:3]}:{off[3:]}"
    return f"{base}{'.' + frac if frac else ''}{zone}"


def _parse_filters(filters: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in filters:
        key, sep, value = f.partition("=")
        if not sep:
            raise InvalidArgument(f"bad format of filter (expected name=value): {f!r}")
        out.setdefault(key.strip().lower(), []).append(value)
    return out


def _bool_filter(key: str, values: list[str]) -> bool:
    truth = {"true": True, "1": True, "false": False, "0": False}
    got = {truth.get(v.lower()) for v in values}
    if None in got or len(got) != 1:
        raise InvalidArgument(f"invalid filter '{key}={values[0]}'")
    return bool(got.pop())


def _label_match(labels: dict[str, str], spec: str) -> bool:
    key, sep, value = spec.partition("=")
    return key in labels and (not sep or labels[key] == value)


def _regex_match(text: str, pattern: str) -> bool:
    # Docker matches name= and id= as regular expressions (plain text: a substring).
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return pattern in text


def _natural_key(name: str) -> list[Any]:
    # The docker CLI sorts with sortorder.NaturalLess: "net2" before "net10".
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name) if p]


def _parse_until(value: str) -> float:
    """``until=`` as a Unix time, an RFC 3339 date, or a Go duration ago (10m, 24h)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m|h)", value)
    if m:
        return time.time() - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InvalidArgument(f"invalid filter 'until={value}'") from None
