"""Network leftovers of crashed operations, found in the kernel of the engine's
host netns: veth host ends no running container owns, bridges no network owns,
and an nftables table that differs from what the networks need."""

from __future__ import annotations

from engine.system.findings import Finding


def _links(host_netns: str) -> dict[str, str]:
    """name -> kind ("bridge", "veth", ...) of the links in the host netns."""
    import json
    import subprocess

    cmd = ["ip", "-j", "-d", "link", "show"]
    if host_netns:
        cmd[1:1] = ["-n", host_netns]
    p = subprocess.run(cmd, capture_output=True, text=True)
    out = {}
    for link in json.loads(p.stdout or "[]"):
        out[link["ifname"]] = (link.get("linkinfo") or {}).get("info_kind", "")
    return out


def find_network_orphans(eng, fix: bool) -> list[Finding]:
    from engine.containers import records
    from engine.network import links, store

    prefix = eng.config.prefix
    host_ns = eng.config.host_netns
    try:
        nets = store.all_networks(eng.db)
    except Exception:
        return []
    running = {c.id for c in records.load_all(eng.db) if c.state in records.ACTIVE}
    wanted_veths = set()
    for n in nets:
        for ep in store.endpoints_of_network(eng.db, n.id):
            if ep.host_ifname and ep.container_id in running:
                wanted_veths.add(ep.host_ifname)
    bridges = {n.bridge for n in nets if n.driver == "bridge" and n.bridge}
    found: list[Finding] = []
    for name, kind in sorted(_links(host_ns).items()):
        if not name.startswith(prefix):
            continue
        stray = (kind == "veth" and name not in wanted_veths) or (
            kind == "bridge" and name not in bridges
        )
        if not stray:
            continue
        fixed = fix and links.delete_link(host_ns, name)
        found.append(Finding("network-orphan", "error", f"{kind} {name} belongs to no running container or network",
                             fixed=bool(fixed), hint="berth system check --fix removes it", obj=name))  # fmt: skip
    if nets:
        from engine.network import nft
        from engine.network.kernel import _port_specs

        want = nft.render(prefix, _specs(eng), _port_specs(eng))[1]
        have = nft.rule_summaries(nft.list_rules(host_ns, prefix))
        missing = [r for r in want if r not in have]
        if missing:
            if fix:
                eng.sync_firewall()
            found.append(Finding("network-rules", "error", f"nftables table inet {prefix} lacks {len(missing)} rule(s): "
                                 + "; ".join(missing[:3]), fixed=fix, hint="berth system check --fix rebuilds it",
                                 obj=f"inet {prefix}"))  # fmt: skip
    return found


def _specs(eng):
    from engine.network.kernel import _bridge_specs

    return _bridge_specs(eng)
