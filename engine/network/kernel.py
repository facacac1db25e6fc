"""NetworkKernelAPI: the kernel side of networks — bridges, veths, nftables,
ip_forward — as the hooks that NetworksAPI calls, plus what container start
and teardown need. Everything acts in the engine's "host" namespace
(EngineConfig.host_netns, "" for the real host).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from engine.errors import EngineError, InvalidArgument
from engine.locks import file_lock


def _bridge_specs(eng):
    from engine.network import nft, store

    specs = []
    for n in store.all_networks(eng.db):
        if n.driver == "bridge" and n.bridge and n.subnet:
            specs.append(
                nft.NetSpec(name=n.name, bridge=n.bridge, subnet=n.subnet, internal=n.internal)
            )
    return specs


def _port_specs(eng):
    """DNAT specs of every running container that publishes ports."""
    from engine.containers import records
    from engine.network import ports

    out = []
    for c in records.load_all(eng.db):
        t = c.extra.get("port_target")
        if c.state in records.ACTIVE and c.extra.get("ports") and t:
            res = [ports.Reserved.from_dict(d) for d in c.extra["ports"]]
            out += ports.port_specs(res, t["ip"], t["bridge"])
    return out


class NetworkKernelAPI:
    def _netlock(self):
        return file_lock(self.config.locks_dir / "network-kernel.lock")

    def sync_firewall(self) -> dict:
        """Rebuild the instance's nftables table from the networks we have (atomic)."""
        from engine.network import nft

        with self._netlock():
            ports = _port_specs(self)
            ch = nft.sync(self.config.host_netns, self.config.prefix, _bridge_specs(self), ports)
            if ports:
                from engine.network import sysctl

                # DNAT from 127.0.0.1 to a container needs route_localnet on its bridge.
                for br in {p.bridge for p in ports}:
                    sysctl.route_localnet(self.config.host_netns, br, True)
        return ch.to_dict()

    # -- NetworksAPI hooks --------------------------------------------------------------
    def _network_setup_hook(self, rec) -> None:
        from engine.network import links, sysctl

        if rec.driver != "bridge":
            # macvlan/ipvlan: containers' links are made at start; a VLAN parent
            # (eth0.10) is made here, and removed with the network if we made it.
            if rec.parent and links.ensure_vlan(self.config.host_netns, rec.parent):
                self.db.set_kv(f"network-made-vlan:{rec.id}", rec.parent)
                self.emit("network", "host_changes", rec.id, name=rec.name,
                          vlan_created=rec.parent)  # fmt: skip
            return

        net = ipaddress.ip_network(rec.subnet)
        kind = links.link_kind(self.config.host_netns, rec.bridge)
        if kind is not None and kind != "bridge":
            raise InvalidArgument(
                f"network {rec.name}: {rec.bridge} exists and is a {kind or 'plain'} interface, not a bridge"
            )
        # A bridge that was there before us is used, never deleted (as Docker does).
        created = links.ensure_bridge(
            self.config.host_netns, rec.bridge, rec.gateway, net.prefixlen, rec.mtu
        )
        if kind == "bridge" and not rec.bridge.startswith(self.config.prefix):
            self._mark_preexisting(rec)  # ours by name otherwise: a leftover we own
        try:
            changes = self.sync_firewall()
        except BaseException:
            if created:
                links.delete_link(self.config.host_netns, rec.bridge)
            raise
        fwd = False if rec.internal else sysctl.ensure_ip_forward(self.config.host_netns)
        self.emit("network", "host_changes", rec.id, name=rec.name, bridge=rec.bridge,
                  address=f"{rec.gateway}/{net.prefixlen}", ip_forward_enabled=str(fwd),
                  rules_added=str(len(changes.get("added", []))))  # fmt: skip

    def _network_teardown_hook(self, rec) -> None:
        from engine.network import links, nft

        if rec.driver in ("macvlan", "ipvlan"):
            key = f"network-made-vlan:{rec.id}"
            made = self.db.get_kv(key)
            if made:
                removed = links.delete_link(self.config.host_netns, made)
                self.db.delete_kv(key)
                self.emit("network", "host_changes", rec.id, name=rec.name,
                          vlan_removed=made if removed else "")  # fmt: skip
            return
        if rec.driver != "bridge" or not rec.bridge:
            return

        if self._preexisting(rec):
            net = ipaddress.ip_network(rec.subnet)
            links.remove_address(
                self.config.host_netns, rec.bridge, f"{rec.gateway}/{net.prefixlen}"
            )
            removed = False
        else:
            removed = links.delete_link(self.config.host_netns, rec.bridge)
        with self._netlock():
            specs = [s for s in _bridge_specs(self) if s.bridge != rec.bridge]
            if specs:
                nft.sync(self.config.host_netns, self.config.prefix, specs, _port_specs(self))
            else:
                nft.teardown(self.config.host_netns, self.config.prefix)
        self.emit("network", "host_changes", rec.id, name=rec.name, bridge_removed=str(removed))
        self._reload_resolver()

    def _reload_resolver(self) -> None:
        from engine.network import resolver

        try:
            resolver.reload_resolver(self)
        except EngineError:
            pass  # names resolve again once it is back (system boot restarts it)

    def _mark_preexisting(self, rec) -> None:
        self.db.set_kv(f"network-preexisting-bridge:{rec.id}", rec.bridge)

    def _preexisting(self, rec) -> bool:
        return self.db.get_kv(f"network-preexisting-bridge:{rec.id}") == rec.bridge

    def _endpoint_attach_hook(self, rec, ep, container) -> None:
        from engine.containers.records import Paths

        self.attach_endpoint(rec, ep, Paths(self.config, container.id).netns_name, primary=False)
        # `network connect` of a running container: the audit log and the topology
        # learn which link it made, as they do at start.
        self.emit("network", "endpoint_up", rec.id, name=rec.name, container=container.id,
                  ip=ep.ip or "", host_ifname=ep.host_ifname or "", bridge=rec.bridge or "",
                  ifname=ep.ifname or "")  # fmt: skip

    def _endpoint_detach_hook(self, rec, ep, container) -> None:
        from engine.containers.records import Paths
        from engine.network import links

        if ep.host_ifname:
            removed = links.delete_link(self.config.host_netns, ep.host_ifname)
        else:
            links.detach_in_container(Paths(self.config, container.id).netns_name, ep.ifname)
            removed = True
        if removed:
            self.emit("network", "endpoint_down", rec.id, name=rec.name, container=container.id,
                      host_ifname=ep.host_ifname or "", ifname=ep.ifname or "",
                      bridge=rec.bridge or "")  # fmt: skip

    # -- container start / teardown --------------------------------------------------------
    def attach_endpoint(self, rec, ep, netns_name: str, primary: bool = True) -> None:
        from engine.network import links

        net = ipaddress.ip_network(rec.subnet)
        if rec.driver in ("macvlan", "ipvlan"):
            if not rec.parent:
                raise InvalidArgument(
                    f"network {rec.name}: {rec.driver} needs -o parent=IFACE to reach anything"
                )
            mode_key = "macvlan_mode" if rec.driver == "macvlan" else "ipvlan_mode"
            tmp = f"{self.config.prefix}m{ep.container_id[:6]}{ep.ifname[-1:]}"[:15]
            links.attach_sublink(
                self.config.host_netns, rec.driver, rec.parent, tmp, netns_name, ep.ifname, ep.ip,
                net.prefixlen, rec.gateway, mode=rec.options.get(mode_key, ""), mac=ep.mac,
                default_route=primary and not rec.internal,
            )  # fmt: skip
            return
        if rec.driver != "bridge":
            raise InvalidArgument(
                f"network {rec.name}: driver {rec.driver} is not supported for containers"
            )
        # The bridge may be gone (host reboot, someone deleted it) or down: attach_veth
        # heals it (bridge_prefixlen) in the batch that plugs the veth in.
        links.attach_veth(
            self.config.host_netns,
            rec.bridge,
            ep.host_ifname,
            netns_name,
            ep.ifname,
            ep.ip,
            net.prefixlen,
            rec.gateway,
            ep.mac,
            rec.mtu,
            default_route=primary and not rec.internal,
            bridge_prefixlen=net.prefixlen,
        )

    def container_networks_up(self, c, netns_name: str) -> list[dict]:
        """Allocate (once) and plumb the container's endpoints; returns what was made."""
        from engine.network import store

        made = []
        if not c.extra.get("network_joined"):
            # Containers made before membership was recorded at create: join once.
            self.join_primary_network(c)
        eps = self.container_endpoints(c.id)
        primary = c.opts.network
        if primary not in ("", "none", "host") and not primary.startswith("container:"):
            if not any(store.by_id(self.db, ep.network_id) for ep in eps):
                # Its network was removed while it was stopped (Docker's message).
                self.get_network(primary)  # NotFound: "network X not found"
        route_to = self._default_route_endpoint(c, eps)
        for ep in eps:
            # Shared network lock: `network rm` (exclusive) cannot run between our
            # check that the network exists and the veth on its bridge.
            with self._network_lock(ep.network_id, shared=True):
                nrec = store.by_id(self.db, ep.network_id)
                if nrec is None:
                    raise EngineError(f"network {ep.network_id[:12]} was removed")
                if nrec.driver not in ("bridge", "macvlan", "ipvlan"):
                    continue
                self.attach_endpoint(nrec, ep, netns_name, primary=ep is route_to)
            # The audit log and the live topology learn which host links this made.
            self.emit("network", "endpoint_up", nrec.id, name=nrec.name, container=c.id,
                      ip=ep.ip or "", host_ifname=ep.host_ifname or "", bridge=nrec.bridge or "")  # fmt: skip
            made.append({"network": nrec.name, "ip": ep.ip, "mac": ep.mac, "ifname": ep.ifname,
                         "host_ifname": ep.host_ifname, "bridge": nrec.bridge})  # fmt: skip
        return made

    def join_primary_network(self, c) -> None:
        """The --network network's endpoint (eth0), allocated once, at create: a later
        `network disconnect` then sticks, and connects made before the first start
        come after it."""
        from engine.containers import records
        from engine.network import ipam, store

        rec = self.get_network(c.opts.network)
        if store.endpoint(self.db, rec.id, c.id) is None:
            ipam.allocate(self.db, rec, c.id, requested_ip=c.opts.ip or None,
                          aliases=c.opts.network_aliases, prefix=self.config.prefix)  # fmt: skip
        c.extra["network_joined"] = True
        records.update(self.db, c.id, config=c.config_json())

    def _default_route_endpoint(self, c, eps):
        """The default route goes via the --network network if still connected, else
        via the first network that is not internal (never via an internal one)."""
        from engine.network import store

        recs = {ep.network_id: store.by_id(self.db, ep.network_id) for ep in eps}
        usable = [
            ep for ep in eps if recs[ep.network_id] is not None and not recs[ep.network_id].internal
        ]
        for ep in usable:
            if recs[ep.network_id].name == c.opts.network:
                return ep
        return usable[0] if usable else None

    def container_networks_down(self, c) -> None:
        """Remove the host ends of the container's veths (addresses stay reserved)."""
        self.container_networks_down_begin(c)()

    def container_networks_down_begin(self, c) -> Callable[[], None]:
        """Start removing the host ends of the container's veths (one `ip` batch) and
        return the function that waits for it and records what went. The kernel
        takes ~15-20 ms per veth; teardown does its other steps meanwhile."""
        from engine.network import links, store

        try:
            eps = [ep for ep in store.endpoints_of_container(self.db, c.id) if ep.host_ifname]
        except Exception:
            return lambda: None
        names = [ep.host_ifname for ep in eps]
        proc = links.delete_links_begin(self.config.host_netns, names)

        def end() -> None:
            deleted = set(links.delete_links_end(proc, names))
            for ep in eps:
                if ep.host_ifname in deleted:
                    self.emit("network", "endpoint_down", ep.network_id, container=c.id,
                              host_ifname=ep.host_ifname)  # fmt: skip

        return end

    def release_container_addresses(self, cid: str) -> None:
        from engine.network import ipam, store

        try:
            eps = store.endpoints_of_container(self.db, cid)
        except Exception:
            return
        for ep in eps:
            ipam.release(self.db, ep.network_id, cid)
