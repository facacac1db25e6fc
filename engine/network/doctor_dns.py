"""The network doctor's DNS check (plugs into engine.network.doctor).

For a container on a user-defined bridge network, read from the kernel and the
live processes rather than Berth's records:

- resolv.conf: the container's /etc/resolv.conf, read through
  ``/proc/PID/root`` (what the container's own resolver library reads), names
  its network's gateway, where Berth's resolver listens;
- resolver: the ``dns`` helper is recorded, alive and ours (helpers.running);
- listener: it has a UDP socket on GATEWAY:53 (``/proc/PID/net/udp`` of the
  resolver, which lives in the engine's host namespace, matched against the
  socket inodes among its own fds);
- query: an A query for the container's own name sent to GATEWAY:53 from the
  host namespace answers the container's address on that network.

On the default ``bridge`` network names do not resolve by design (as on
Docker): that is said, as ok. Every finding's check is ``dns``;
``details["what"]`` says which step it is about. A failed step that explains a
later one (resolver not running -> no answer) makes the later one a warning
that names it, so exactly the broken thing fails.
"""

from __future__ import annotations

import os
from typing import Any

from engine.errors import EngineError
from engine.network import doctor
from engine.network.doctor import Context, Finding, Status

__all__ = ["CHECK", "check_dns"]

CHECK = "dns"
DNS_PORT = 53
QUERY_TIMEOUT = 2.0


def _nameservers(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            out.append(parts[1])
    return out


def _resolver_sockets(pid: int, ip: str, port: int) -> list[str]:
    """Protocols ("udp", "tcp") on which process ``pid`` owns a socket bound to ip:port.

    /proc/PID/net shows the namespace the resolver setns()ed into; only sockets
    whose inode is among its own fds count, so another program on the port is not
    mistaken for it.
    """
    from engine.network.doctor_ports import _bound, _read_proc_net

    mine: set[int] = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                mine.add(int(link[8:-1]))
    except OSError:
        return []
    rows = _read_proc_net(f"/proc/{pid}/net", ("udp", "tcp"))
    return sorted(
        proto
        for proto in ("udp", "tcp")
        if any(s.addr == ip and s.inode in mine for s in _bound(rows, proto, port))
    )


def _ask(host_netns: str, server: str, name: str) -> dict[str, Any]:
    """dns.query from the engine's host namespace (where the resolver lives)."""
    from engine.network import dns

    def go() -> dict[str, Any]:
        r = dns.query(server, name, dns.QTYPE_A, timeout=QUERY_TIMEOUT)
        return {"answered": False} if r is None else {"answered": True, "rcode": r.rcode,
                                                        "addrs": list(r.addrs)}  # fmt: skip

    if not host_netns:
        return go()
    from engine.netns import netns_path, run_in_netns

    return run_in_netns(netns_path(host_netns), go)


class _Dns:
    def __init__(self, ctx: Context, c: Any) -> None:
        self.ctx = ctx
        self.c = c
        self.out: list[Finding] = []
        self.base: dict[str, Any] = {"container": c.name}

    def add(self, status: Status, what: str, message: str, **details: Any) -> Finding:
        f = Finding(CHECK, status, message, {**self.base, "what": what, **details})
        self.out.append(f)
        return f

    def run(self) -> list[Finding] | None:
        from engine.network import resolver

        c = self.c
        mode = c.opts.network or "none"
        if mode in ("host", "none") or mode.startswith("container:"):
            how = {
                "host": "uses the host's /etc/resolv.conf (--network host)",
                "none": "has --network none: no name server is reachable",
            }.get(mode, f"shares the network (and name servers) of {mode.split(':', 1)[-1]}")
            self.add("ok", "mode", f"{c.name} {how}; Berth's resolver is not involved")
            return self.out
        rec = resolver._primary_network(self.ctx.eng, c)
        if rec is None:
            return None
        self.base["network"] = rec.name
        if not resolver.is_user_network(rec):
            self.add(
                "ok",
                "default-bridge",
                f"{c.name} is on the default bridge network {rec.name}: container names do not"
                " resolve there by design (as on Docker); its resolv.conf has the host's"
                " servers (use a user-defined network to reach containers by name)",
            )
            return self.out
        bad_conf = self.resolv_conf(rec)
        pid = self.resolver_process(rec)
        listening = pid is not None and self.listener(pid, rec)
        self.query(rec, pid, listening, bad_conf)
        return self.out

    def resolv_conf(self, rec: Any) -> bool:
        """Check the container's resolv.conf; True if it does not use the resolver."""
        c = self.c
        path = f"/proc/{c.pid}/root/etc/resolv.conf"
        fix = f"fix: berth restart {c.name}, which writes it again"
        try:
            with open(path) as f:
                text = f.read()
        except OSError as e:
            self.add(
                "fail",
                "resolv.conf",
                f"{c.name} has no readable /etc/resolv.conf ({e.strerror}): it resolves no"
                f" names ({fix})",
            )
            return True
        servers = _nameservers(text)
        d = {"nameservers": servers, "gateway": rec.gateway}
        if servers[:1] == [rec.gateway]:
            self.add(
                "ok",
                "resolv.conf",
                f"{c.name}'s /etc/resolv.conf uses nameserver {rec.gateway} (Berth's resolver"
                f" on network {rec.name})",
                **d,
            )
            return False
        if rec.gateway in servers:
            self.add(
                "warn",
                "resolv.conf",
                f"{c.name}'s /etc/resolv.conf lists {', '.join(servers)}: Berth's resolver"
                f" {rec.gateway} is not the first, so container names resolve only when the"
                f" servers before it fail ({fix})",
                **d,
            )
            return True
        self.add(
            "fail",
            "resolv.conf",
            f"{c.name}'s /etc/resolv.conf has the wrong nameserver"
            f" {', '.join(servers) or '(none)'}, not Berth's resolver {rec.gateway}, the gateway"
            f" of network {rec.name}: container names do not resolve inside {c.name} ({fix})",
            **d,
        )
        return True

    def resolver_process(self, rec: Any) -> int | None:
        from engine import helpers
        from engine.network import resolver

        eng = self.ctx.eng
        h = helpers.running(eng, resolver.NAME)
        if h is not None:
            self.add("ok", "resolver", f"Berth's DNS resolver runs (pid {h.pid})", pid=h.pid)
            return h.pid
        rec_h = helpers.lookup(eng, resolver.NAME)
        why = (
            f"its recorded pid {rec_h.pid} is gone" if rec_h else "no resolver process is recorded"
        )
        self.add(
            "fail",
            "resolver",
            f"Berth's DNS resolver is not running ({why}): no container on network {rec.name}"
            f" can resolve names (fix: berth system boot starts it; so does starting a container"
            f" on {rec.name}; its log is {helpers.log_path(eng, resolver.NAME)})",
            recorded_pid=rec_h.pid if rec_h else None,
        )
        return None

    def listener(self, pid: int, rec: Any) -> bool:
        from engine import helpers
        from engine.network import resolver

        protos = _resolver_sockets(pid, rec.gateway, DNS_PORT)
        where = f"{rec.gateway}:{DNS_PORT}"
        if "udp" in protos:
            self.add(
                "ok",
                "listener",
                f"the resolver listens on {where} ({'/'.join(protos)}) for network {rec.name}",
                protocols=protos,
            )
            return True
        if self.ctx.report.failing("bridge", network=rec.name):
            cause = " (its bridge is broken: see bridge)"
            status: Status = "warn"
        else:
            cause = ""
            status = "fail"
        self.add(
            status,
            "listener",
            f"the resolver (pid {pid}) does not listen on udp {where}, the gateway of network"
            f" {rec.name}{cause}: queries from its containers go unanswered (see"
            f" {helpers.log_path(self.ctx.eng, resolver.NAME)}; fix: berth system boot)",
            protocols=protos,
        )
        return False

    def query(self, rec: Any, pid: int | None, listening: bool, bad_conf: bool) -> None:
        from engine.network import store

        c = self.c
        ep = store.endpoint(self.ctx.eng.db, rec.id, c.id)
        want = ep.ip if ep else ""
        server = rec.gateway
        try:
            res = _ask(self.ctx.host_netns, server, c.name)
        except EngineError as e:
            self.add("warn", "query", f"could not send a DNS query to {server}: {e}")
            return
        d = {"server": server, "name": c.name, "want": want, **res}
        got = res.get("addrs") or []
        if res.get("answered") and res.get("rcode") == 0 and want in got:
            also = (
                f"; but {c.name} itself asks another server (see resolv.conf above)"
                if bad_conf
                else ""
            )
            self.add(
                "ok",
                "query",
                f"{server} answers {c.name} -> {', '.join(got)}{also}",
                **d,
            )
            return
        if not res.get("answered"):
            seen = f"no answer from {server}:{DNS_PORT} (refused, or nothing within {QUERY_TIMEOUT:g}s)"
        elif res.get("rcode"):
            seen = f"{server} answered rcode {res['rcode']} for {c.name}"
        else:
            seen = f"{server} answered {c.name} -> {', '.join(got) or 'no address'}"
        if pid is None or not listening:
            # Explained by the resolver/listener finding above: a symptom, not a cause.
            self.add("warn", "query", f"{seen}: explained by the resolver check above", **d)
            return
        self.add(
            "fail",
            "query",
            f"{seen}, not {c.name}'s address {want or '?'} on network {rec.name}: the resolver"
            f" runs but does not know {c.name} (fix: kill -HUP {pid} makes it reload)",
            **d,
        )


def check_dns(ctx: Context, container: Any, target: Any) -> list[Finding] | None:
    """The plugin: DNS findings for ``container`` (None without one: not applicable)."""
    if container is None or not container.pid:
        return None
    return _Dns(ctx, container).run()


doctor.register_check(CHECK, check_dns)
