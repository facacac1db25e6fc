"""Docker-shaped views of a container: `inspect` JSON and `ps` rows."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from engine.containers.records import Container, Paths
from engine.units import human_duration

ZERO_TIME = "0001-01-01T00:00:00Z"


def rfc3339(ts: float) -> str:
    if not ts:
        return ZERO_TIME
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def status_text(c: Container) -> str:
    now = time.time()
    if c.state == "running":
        s = f"Up {human_duration(now - c.started_at)}"
        hs = (c.health_state or {}).get("Status")
        if hs == "starting":
            s += " (health: starting)"
        elif hs:
            s += f" ({hs})"
        return s
    if c.state == "paused":
        return f"Up {human_duration(now - c.started_at)} (Paused)"
    if c.state == "exited" and c.finished_at:
        return f"Exited ({c.exit_code}) {human_duration(now - c.finished_at)} ago"
    if c.state == "removing":
        return "Removal In Progress"
    return "Created"


def docker_state(c: Container) -> str:
    return {
        "removing": "removing",
        "running": "running",
        "paused": "paused",
        "exited": "exited",
    }.get(c.state, "created")


def _health(c: Container) -> dict | None:
    if not c.health:
        return None
    h = c.health_state or {}
    return {
        "Status": h.get("Status", "starting"),
        "FailingStreak": h.get("FailingStreak", 0),
        "Log": h.get("Log", []),
    }


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def inspect(eng, c: Container) -> dict:
    p = Paths(eng.config, c.id)
    o = c.opts
    mounts = []
    anon = c.extra.get("anon_volumes") or {}
    vol_dir = eng.config.volumes_dir
    for m in o.mounts:
        if m.type == "bind":
            mounts.append({"Type": "bind", "Source": m.source, "Destination": m.target, "Mode": "ro" if m.readonly else "",
                           "RW": not m.readonly, "Propagation": "rprivate"})  # fmt: skip
        elif m.type == "volume":
            name = m.source or anon.get(m.target, "")
            mounts.append({"Type": "volume", "Name": name, "Source": str(vol_dir / name / "_data") if name else "",
                           "Destination": m.target, "Driver": "local", "Mode": "z", "RW": not m.readonly,
                           "Propagation": ""})  # fmt: skip
    for target, name in anon.items():
        if not any(m["Destination"] == target for m in mounts):
            mounts.append({"Type": "volume", "Name": name, "Source": str(vol_dir / name / "_data"),
                           "Destination": target, "Driver": "local", "Mode": "", "RW": True, "Propagation": ""})  # fmt: skip
    running = c.state == "running"
    health = _health(c)
    state = {
        "Status": docker_state(c),
        "Running": c.state in ("running", "paused"),
        "Paused": c.state == "paused",
        "Restarting": False,
        "OOMKilled": c.oom_killed,
        "Dead": False,
        "Pid": c.pid if c.state in ("running", "paused") else 0,
        "ExitCode": c.exit_code,
        "Error": c.error,
        "StartedAt": rfc3339(c.started_at),
        "FinishedAt": rfc3339(c.finished_at),
    }
    if health:
        state["Health"] = health
    hc = None
    if c.health:
        hc = {
            "Test": c.health["Test"],
            "Interval": _ns(c.health["Interval"]),
            "Timeout": _ns(c.health["Timeout"]),
            "Retries": c.health["Retries"],
            "StartPeriod": _ns(c.health["StartPeriod"]),
        }
    image_cfg_cmd = c.args
    entry = o.entrypoint
    config = {
        "Hostname": o.hostname or c.id[:12],
        "Domainname": "",
        "User": c.user,
        "AttachStdin": o.interactive,
        "AttachStdout": True,
        "AttachStderr": True,
        "ExposedPorts": c.exposed_ports or None,
        "Tty": o.tty,
        "OpenStdin": o.interactive,
        "StdinOnce": False,
        "Env": c.env,
        "Cmd": o.command if o.command else None,
        "Image": c.image_ref,
        "Volumes": {v: {} for v in c.image_volumes} or None,
        "WorkingDir": c.workdir,
        "Entrypoint": entry,
        "Labels": o.labels,
        "StopSignal": c.stop_signal,
        "StopTimeout": o.stop_timeout,
    }
    if hc:
        config["Healthcheck"] = hc
    host_config = {
        "Binds": [
            f"{m.source}:{m.target}{':ro' if m.readonly else ''}"
            for m in o.mounts
            if m.type == "bind"
        ]
        or None,
        "NetworkMode": o.network,
        "Dns": list(o.dns),
        "DnsSearch": list(o.dns_search),
        "DnsOptions": list(o.dns_options),
        "RestartPolicy": {"Name": o.restart.name, "MaximumRetryCount": o.restart.max_retries},
        "AutoRemove": o.auto_remove,
        "CapAdd": o.cap_add or None,
        "CapDrop": o.cap_drop or None,
        "Privileged": o.privileged,
        "ReadonlyRootfs": o.read_only,
        "SecurityOpt": o.security_opt or None,
        "Tmpfs": {t.partition(":")[0]: t.partition(":")[2] for t in o.tmpfs} or None,
        "ShmSize": o.shm_size or 64 * 1024 * 1024,
        "Runtime": c.runtime or o.runtime or "",
        "Memory": o.memory or 0,
        "MemorySwap": o.memory_swap
        if o.memory_swap is not None
        else (2 * o.memory if o.memory else 0),
        "NanoCpus": int((o.cpus or 0) * 1e9),
        "PidsLimit": o.pids_limit,
        "Ulimits": [{"Name": n, "Soft": s, "Hard": h} for n, s, h in o.ulimits] or None,
        "PidMode": o.pid_mode,
        "PortBindings": _port_bindings(c),
        "PublishAllPorts": o.publish_all,
        "IpcMode": o.ipc_mode or "private",
        "Init": o.init,
        "LogConfig": {
            "Type": "k8s-file",
            "Config": {"max-size": str(o.log_max_size), "max-file": str(o.log_max_file)},
        },
    }
    own_ns = o.network != "host" and not o.network.startswith("container:")
    net_settings = {
        "SandboxKey": f"/run/netns/{p.netns_name}" if running and own_ns else "",
        "Ports": _ports_view(c, "inspect"),
        "Networks": _networks(eng, c),
    }
    # Docker fills the top-level fields from the default bridge network only.
    primary = net_settings["Networks"].get("bridge", {}) if o.network == "bridge" else {}
    net_settings.update({k: primary.get(k, "") for k in ("IPAddress", "Gateway", "MacAddress")})
    net_settings["IPPrefixLen"] = primary.get("IPPrefixLen", 0)
    return {
        "Id": c.id,
        "Created": rfc3339(c.created),
        "Path": image_cfg_cmd[0] if image_cfg_cmd else "",
        "Args": image_cfg_cmd[1:],
        "State": state,
        "Image": c.image_id,
        "ResolvConfPath": str(p.userdata / "resolv.conf"),
        "HostnamePath": str(p.userdata / "hostname"),
        "HostsPath": str(p.userdata / "hosts"),
        "LogPath": str(p.log),
        "Name": "/" + c.name,
        "RestartCount": c.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "HostConfig": host_config,
        "GraphDriver": {
            "Name": "overlay",
            "Data": {"UpperDir": str(p.upper), "WorkDir": str(p.work), "MergedDir": str(p.merged)},
        },
        "Mounts": mounts,
        "Config": config,
        "NetworkSettings": net_settings,
    }


def _ports_view(c: Container, kind: str):
    """Published ports while running: Docker's NetworkSettings.Ports or the ps column."""
    running = c.state in ("running", "paused")
    if not running or not (c.extra.get("ports") or c.exposed_ports):
        return {} if kind == "inspect" else ""
    from engine.network import ports

    res = [ports.Reserved.from_dict(d) for d in c.extra.get("ports") or []]
    if kind == "inspect":
        return ports.inspect_ports(res, c.exposed_ports)
    return ports.format_ports(res, c.exposed_ports)


def _port_bindings(c: Container) -> dict:
    if not c.opts.publish:
        return {}
    from engine.network import ports

    return ports.port_bindings_config([ports.PortBinding.from_dict(d) for d in c.opts.publish])


def _networks(eng, c: Container) -> dict:
    """Docker's NetworkSettings.Networks, from the endpoint records."""
    o = c.opts
    if o.network in ("none", "host") or o.network.startswith("container:"):
        return {
            o.network.split(":")[0]: {
                "IPAddress": "",
                "Gateway": "",
                "MacAddress": "",
                "NetworkID": o.network,
            }
        }
    out = {}
    from engine.api_networks import endpoint_id
    from engine.network import store

    live = c.state in ("running", "paused")  # Docker shows addresses only while running
    for ep in eng.container_endpoints(c.id):
        rec = store.by_id(eng.db, ep.network_id)
        if rec is None:
            continue
        plen = int(rec.subnet.split("/")[1]) if "/" in rec.subnet else 0
        out[rec.name] = {
            "Aliases": list(ep.aliases) or None,
            "NetworkID": rec.id,
            "EndpointID": endpoint_id(ep) if live else "",
            "Gateway": rec.gateway if live else "",
            "IPAddress": (ep.ip or "") if live else "",
            "IPPrefixLen": plen if live else 0,
            "MacAddress": (ep.mac or "") if live else "",
            "DNSNames": [c.name, c.id[:12], *ep.aliases],
        }
    return out


def ps_row(c: Container) -> dict:
    """The fields of `docker ps --format '{{json .}}'`."""
    cmd = " ".join(c.args)
    return {
        "Command": f'"{cmd[:20]}…"' if len(cmd) > 20 else f'"{cmd}"',
        "CreatedAt": datetime.fromtimestamp(c.created, UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC"),
        "ID": c.id[:12],
        "Image": c.image_ref,
        "Labels": ",".join(f"{k}={v}" for k, v in c.opts.labels.items()),
        "LocalVolumes": str(len(c.extra.get("anon_volumes") or {})),
        "Mounts": ",".join(m.source or m.target for m in c.opts.mounts),
        "Names": c.name,
        "Networks": c.opts.network,
        "Ports": _ports_view(c, "ps"),
        "RunningFor": human_duration(time.time() - c.created) + " ago",
        "Size": "0B",
        "State": docker_state(c),
        "Status": status_text(c),
    }
