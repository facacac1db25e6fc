"""Start, stop, kill and exit handling of one container.

Start: mount the overlay rootfs, prepare volumes and /etc files, create the
network namespace, write the OCI bundle, start conmon (which runs
``runtime create``), optionally attach, then ``runtime start``.

Exit: conmon writes ``<run>/exits/<id>`` and runs its exit command
(``berth container cleanup <id>``), which calls :func:`cleanup` — as do stop,
rm and any reader that finds the process gone. cleanup is idempotent and runs
under the container's lock, so whoever comes first does the work.
"""

from __future__ import annotations

import os
import select
import shutil
import signal as _signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from engine import mounts
from engine.containers import records
from engine.containers.options import parse_signal
from engine.containers.records import Container, Paths
from engine.errors import EngineError, InvalidState
from engine.locks import file_lock
from engine.runtime.oci import OCIRuntime, pid_alive, runtime_by_name, select_runtime

AttachHook = Callable[[Path], object]


def crashpoint(name: str) -> None:
    """Fault injection for tests: BERTH_CRASH_AT=<name> makes this process die
    here with SIGKILL, as `kill -9` of the CLI at that moment would."""
    if os.environ.get("BERTH_CRASH_AT") == name:
        os.kill(os.getpid(), _signal.SIGKILL)


def _exit_command(eng) -> list[str]:
    exe = Path(sys.executable).with_name("berth")
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "engine.cli.main"]
    return base + [
        "--root",
        str(eng.config.root),
        "--run-dir",
        str(eng.config.run),
        "container",
        "cleanup",
    ]


def _etc_files(eng, c: Container, p: Paths) -> list[dict]:
    """/etc/hostname, /etc/hosts, /etc/resolv.conf are files of ours, bind-mounted.

    Nothing is written into the rootfs, so a planted symlink there (say
    /etc/resolv.conf -> /host/file) cannot redirect our writes; the runtime
    resolves the mount destination inside the rootfs.
    """
    if c.opts.network.startswith("container:"):
        # Sharing another container's network namespace means sharing its view of
        # names too: bind its /etc/hosts, /etc/resolv.conf and /etc/hostname (Docker).
        other = records.load(eng.db, c.opts.network.split(":", 1)[1])
        theirs = Paths(eng.config, other.id).userdata
        return [
            {
                "destination": f"/etc/{n}",
                "type": "bind",
                "source": str(theirs / n),
                "options": ["rbind", "rprivate"],
            }
            for n in ("hostname", "hosts", "resolv.conf")
            if (theirs / n).exists()
        ]
    hostname = c.opts.hostname or c.id[:12]
    own = [a["ip"] for a in c.extra.get("addresses") or [] if a.get("ip")]
    files = {
        "hostname": hostname + "\n",
        "hosts": (
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            + "".join(f"{ip}\t{hostname}\n" for ip in own)
            + ("" if own else f"127.0.1.1\t{hostname}\n")
        ),
    }
    try:
        host_resolv = Path("/etc/resolv.conf").read_text()
    except OSError:
        host_resolv = ""
    # Loopback resolvers of the host are unreachable from a container's netns.
    lines = [
        ln for ln in host_resolv.splitlines()
        if not (ln.startswith("nameserver") and (" 127." in ln or " ::1" in ln))
    ]  # fmt: skip
    files["resolv.conf"] = _with_dns_flags("\n".join(lines) + "\n", c.opts, servers=True)
    if c.opts.network not in ("none", "host", "bridge") and not c.opts.network.startswith(
        "container:"
    ):
        # User-defined networks: Berth's resolver on the gateway answers container names
        # (and forwards to --dns servers, if given); --dns-search/--dns-option apply here.
        from engine.network import resolver

        ours = resolver.resolv_conf_for(eng, c, host_resolv)
        if ours:
            files["resolv.conf"] = _with_dns_flags(ours, c.opts, servers=False)
    out = []
    for name, text in files.items():
        if c.opts.network == "host" and name != "hostname":
            continue  # the host's own files are visible as-is with --network host
        f = p.userdata / name
        f.write_text(text)
        out.append(
            {
                "destination": f"/etc/{name}",
                "type": "bind",
                "source": str(f),
                "options": ["rbind", "rprivate"],
            }
        )
    return out


def _with_dns_flags(text: str, opts, servers: bool) -> str:
    """resolv.conf with --dns (nameservers, when ``servers``), --dns-search and
    --dns-option replacing the lines of the same kind, as Docker writes it."""
    replace = {
        "nameserver": [f"nameserver {ip}" for ip in opts.dns] if servers else [],
        "search": ["search " + " ".join(opts.dns_search)] if opts.dns_search else [],
        "options": ["options " + " ".join(opts.dns_options)] if opts.dns_options else [],
    }
    replace = {k: v for k, v in replace.items() if v}
    if not replace:
        return text
    kept = [ln for ln in text.splitlines() if (ln.split() or [""])[0] not in replace]
    if "domain" in (ln.split()[0] for ln in kept if ln.split()) and "search" in replace:
        kept = [ln for ln in kept if not ln.startswith("domain")]  # search overrides it
    added = [ln for k in ("nameserver", "search", "options") for ln in replace.get(k, [])]
    return "\n".join(kept + added) + "\n"


def _volume_mounts(eng, c: Container, p: Paths) -> list[dict]:
    out = []
    anon = dict(c.extra.get("anon_volumes") or {})
    targets = {m.target for m in c.opts.mounts}
    specs = list(c.opts.mounts)
    from engine.containers.options import MountSpec

    # Image VOLUMEs not covered by a mount become anonymous volumes (Docker).
    for v in c.image_volumes:
        if v not in targets:
            specs.append(MountSpec("volume", "", v, False, anonymous=True))
    for m in specs:
        if m.type == "bind":
            src = m.source
        elif m.type == "volume":
            name = m.source or anon.get(m.target)
            vol = eng.create_volume(name, anonymous=not m.source)
            name = vol["Name"]
            if not m.source:
                anon[m.target] = name
            src = vol["Mountpoint"]
            eng.seed_volume(name, p.merged, m.target)
        else:
            continue
        opts = ["rbind", "rprivate"] + (["ro"] if m.readonly else [])
        out.append({"destination": m.target, "type": "bind", "source": src, "options": opts})
    if anon != c.extra.get("anon_volumes"):
        c.extra["anon_volumes"] = anon
        records.update(eng.db, c.id, config=c.config_json())
    return out


def _namespaces(eng, c: Container, p: Paths) -> dict[str, str | None]:
    from engine.runtime.spec import default_namespaces

    ns = default_namespaces()

    def joined(mode: str, kind: str, nsfile: str) -> None:
        if mode == "host":
            ns.pop(kind, None)
        elif mode.startswith("container:"):
            other = records.load(eng.db, mode.split(":", 1)[1])
            if other.state not in records.ACTIVE or not pid_alive(other.pid):
                raise InvalidState(
                    f"cannot join {kind} namespace of container {other.name}: it is not running"
                )
            ns[kind] = f"/proc/{other.pid}/ns/{nsfile}"

    net = c.opts.network
    if net == "host":
        if eng.config.host_netns:
            from engine.netns import netns_path

            ns["network"] = str(netns_path(eng.config.host_netns))
        else:
            ns.pop("network", None)
    elif net.startswith("container:"):
        joined(net, "network", "net")
    else:
        from engine.netns import create_netns, delete_netns

        delete_netns(p.netns_name)  # a leftover from an interrupted start heals here
        ns["network"] = str(create_netns(p.netns_name))
        if net != "none":
            made = eng.container_networks_up(c, p.netns_name)
            c.extra["addresses"] = made
    joined(c.opts.pid_mode, "pid", "pid")
    joined(c.opts.ipc_mode, "ipc", "ipc")
    return ns


def _memsw_supported() -> bool:
    return os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes") or os.path.exists(
        "/sys/fs/cgroup/cgroup.controllers"
    )


def build_bundle(eng, c: Container, p: Paths, mount_list: list[dict], ns: dict) -> dict:
    from engine.cgroups import oci_cgroups_path
    from engine.runtime import caps as capsmod
    from engine.runtime import seccomp
    from engine.runtime.spec import Resources, SpecInput, build_spec
    from engine.runtime.users import resolve_user

    o = c.opts
    uid, gid, groups = resolve_user(p.merged, c.user) if c.user else (0, 0, [])
    caps = capsmod.resolve_caps(o.cap_add, o.cap_drop, o.privileged)
    sec: dict | None = None
    nnp = False
    seccomp_opt = ""
    for so in o.security_opt:
        key, _, val = so.partition("=") if "=" in so else so.partition(":")
        if key == "no-new-privileges":
            nnp = val in ("", "true")
        elif key == "seccomp":
            seccomp_opt = val
    if not o.privileged and seccomp_opt != "unconfined":
        sec = (
            seccomp.load_profile_file(seccomp_opt, caps)
            if seccomp_opt
            else seccomp.load_default_profile(caps=caps)
        )
    res = Resources()
    if o.memory:
        res.memory = o.memory
        if o.memory_swap is not None:
            res.memory_swap = o.memory_swap
        elif _memsw_supported():
            res.memory_swap = 2 * o.memory  # Docker's default: as much swap as memory
    if o.cpus:
        res.cpu_period = 100000
        res.cpu_quota = int(o.cpus * 100000)
    if o.pids_limit:
        res.pids_limit = o.pids_limit
    spec = build_spec(
        SpecInput(
            args=c.args,
            rootfs=p.merged,
            env=c.env,
            cwd=c.workdir,
            uid=uid,
            gid=gid,
            additional_gids=groups,
            terminal=o.tty,
            hostname=_hostname(eng, c),
            readonly_rootfs=o.read_only,
            mounts=mount_list,
            namespaces=ns,
            caps=caps,
            privileged=o.privileged,
            no_new_privileges=nnp,
            seccomp=sec,
            rlimits=list(o.ulimits),
            cgroups_path=oci_cgroups_path(eng.config.prefix, c.id),
            resources=res,
            shm_size=o.shm_size or 64 * 1024 * 1024,
            tmpfs=list(o.tmpfs),
            init=o.init,
            annotations={"io.berth.name": c.name},
        )
    )
    if "uts" not in ns:
        spec.pop("hostname", None)
    return spec


def _hostname(eng, c: Container) -> str:
    o = c.opts
    if o.hostname:
        return o.hostname
    if o.network == "host":
        return ""  # the host's own
    if o.network.startswith("container:"):
        # As Docker: the container whose network it joins names it too.
        other = records.load(eng.db, o.network.split(":", 1)[1])
        return other.opts.hostname or other.id[:12]
    return c.id[:12]


def prepare_overlay(p: Paths, volatile: bool) -> None:
    """Make the container's upper and work dirs for a mount, ``volatile`` or not
    (see mounts.mount_overlay; start uses it for ``--rm``, whose layer is thrown
    away at exit, so its writes need never reach the disk).

    A volatile mount leaves a marker in the work dir that makes the kernel refuse
    the next mount. If that mount was made in this boot, it ended without a host
    crash and the layer is intact: the marker goes. From another boot the layer
    may have lost writes: the kernel's advice is to throw it away, which we do.
    """
    marker = mounts.volatile_marker(p.work)
    made_in = p.dir / "volatile-boot"
    if marker.exists():
        try:
            same_boot = made_in.read_text() == _boot_id()
        except OSError:
            same_boot = False
        if same_boot:
            shutil.rmtree(marker)
        else:
            shutil.rmtree(p.upper, ignore_errors=True)
            shutil.rmtree(p.work, ignore_errors=True)
    for d in (p.upper, p.work, p.merged):
        d.mkdir(parents=True, exist_ok=True)
    if volatile:
        made_in.write_text(_boot_id())


def _use_compiled_seccomp(eng, rt: OCIRuntime, spec: dict, use_cache: bool = True):
    """Hand crun the program it compiled for this same profile before (see
    runtime/seccomp_cache.py). Returns ``(key to remember, key used)``: the first
    when there was no program yet (or ``use_cache`` is off), so the program of
    this create is kept; the second when the annotation carries a kept program,
    so a create that crun refuses can drop it. "" where it does not apply."""
    sec = (spec.get("linux") or {}).get("seccomp")
    if rt.name != "crun" or not sec:
        return "", ""
    if sec.get("listenerPath") or any(
        r.get("action") == "SCMP_ACT_NOTIFY" for r in sec.get("syscalls") or ()
    ):
        return "", ""  # a user-space notifier needs crun's own set-up: let it compile
    from engine.runtime import seccomp_cache

    key = seccomp_cache.cache_key(rt.path, sec)
    prog = seccomp_cache.lookup(eng.config.run, key) if use_cache else None
    if prog is None:
        return key, ""
    spec.setdefault("annotations", {})[seccomp_cache.ANNOTATION] = prog
    return "", key


class _CachedProgramRefused(Exception):
    """The create that carried a kept seccomp program failed (start retries once)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _undo_failed_start(eng, c: Container, reserved: list) -> None:
    """Undo everything a start attempt made (ports, mounts, netns, cgroup, bundle)."""
    # A monitor move started during spawn must be done before the clean-up
    # (and before a caller that removes the instance's cgroups goes on).
    join_monitor_moves()
    if reserved:
        from engine.network import ports

        ports.close_all(reserved)
    try:
        teardown(eng, c)
    except EngineError:
        pass


def _runtime(eng, c: Container) -> OCIRuntime:
    if c.runtime:
        return runtime_by_name(c.runtime, eng.config.run)
    return select_runtime(c.opts.runtime or eng.config.runtime, eng.config.run)


def teardown(eng, c: Container) -> None:
    """Undo everything start made; every step tolerates "already done"."""
    p = Paths(eng.config, c.id)
    rt = _runtime(eng, c)
    _release_ports(eng, c)
    has_netns = os.path.lexists(f"/run/netns/{p.netns_name}")
    links_down: Callable[[], None] | None = None
    # Veths exist only while the container's netns does, and start makes the netns
    # before any link: with its file there, delete them. Without it they are
    # normally gone with the netns (a second teardown: rm after the exit handling,
    # a start's clean-up), but not when the file was removed (`ip netns del`) or a
    # delete failed while something still pins the namespace: then the host ends
    # recorded for the endpoints are looked up by name. --network none never gets here.
    if (
        c.opts.network not in ("none", "host")
        and not c.opts.network.startswith("container:")
        and (has_netns or _host_veths_left(eng, c))
    ):
        try:
            # Started first and finished last: the kernel's ~15-20 ms per veth
            # overlaps the steps below instead of adding to them.
            links_down = eng.container_networks_down_begin(c)
        except (EngineError, OSError):
            links_down = None
    try:
        # Each step first checks cheaply whether there is anything to undo: teardown
        # runs on every start, exit and rm, and a runtime call costs ~5 ms.
        for name in ("crun", "runc"):
            state = eng.config.run / "runtime" / name / c.id
            if state.exists():
                if name == "crun" and _crun_container_gone(state):
                    # What `crun delete` would do for it, less its ~5 ms process start:
                    # the cgroup goes below (killing any straggler, as crun does), and
                    # Berth's specs carry no hooks for crun to run.
                    shutil.rmtree(state, ignore_errors=True)
                if state.exists():
                    (rt if rt.name == name else runtime_by_name(name, eng.config.run)).delete(
                        c.id, force=True
                    )
        # Processes left in the cgroup (a child outliving init without a PID
        # namespace; `crun delete` killed them before) die before their root is
        # unmounted: a lazy unmount would leave them running on a detached rootfs.
        _remove_cgroup(eng, c.id)
        if mounts.is_mountpoint(p.merged):
            mounts.umount(str(p.merged))
        if p.bundle.exists():
            shutil.rmtree(p.bundle, ignore_errors=True)
    finally:
        if links_down is not None:
            try:
                links_down()
            except EngineError:
                # Not retried here; a later teardown (rm, the next start) finds the
                # host end by name even once the netns file below is gone.
                pass
    if has_netns:
        from engine.netns import delete_netns

        delete_netns(p.netns_name)


def _host_veths_left(eng, c: Container) -> bool:
    """Whether a host end of the container's veths may still exist although its
    netns file is gone. One lookup by name per recorded end, no `ip` process: the
    common second teardown of a bridged container stays as cheap as before."""
    from engine.network import store

    try:
        names = [ep.host_ifname for ep in store.endpoints_of_container(eng.db, c.id)]
    except Exception:
        return False
    names = [n for n in names if n]
    if not names:
        return False
    if eng.config.host_netns:
        # Another namespace's links cannot be looked up from here without a
        # process (setns is not for a threaded process): let the delete batch,
        # which accepts links that are not there, be the check.
        return True
    import socket

    for name in names:
        try:
            socket.if_nametoindex(name)
            return True
        except OSError:
            pass
    return False


def _crun_container_gone(state: Path) -> bool:
    """Whether crun's record is of a container whose init process has exited.

    Anything else (unreadable status, a process still there, a created container
    waiting to be started) goes through ``crun delete``, which knows the rest.
    """
    import json

    try:
        status = json.loads((state / "status").read_text())
        pid = int(status.get("pid") or 0)
    except (OSError, ValueError, TypeError, AttributeError):
        return False
    return pid > 0 and not pid_alive(pid)


_LAYOUT = None


def _layout():
    """The cgroup layout does not change while a process runs; detect it once."""
    global _LAYOUT
    if _LAYOUT is None:
        from engine.cgroups import detect

        _LAYOUT = detect()
    return _LAYOUT


def _remove_cgroup(eng, cid: str) -> None:
    from engine.cgroups import open_cgroup

    try:
        cg = open_cgroup(_layout(), f"{eng.config.prefix}/{cid}")
        if cg.exists():
            if cg.procs():
                cg.kill_all()
            cg.remove()
    except EngineError:
        pass


def _oom_count(eng, cid: str) -> int:
    from engine.cgroups import open_cgroup

    try:
        cg = open_cgroup(_layout(), f"{eng.config.prefix}/{cid}")
        return cg.oom_kills() if cg.exists() else 0
    except EngineError:
        return 0


def start(eng, c: Container, attach: AttachHook | None = None, restart: bool = False) -> object:
    """Start a created or exited container. Returns what ``attach`` returned.

    ``restart``: a restart-policy start from the exit handler; it gives way if
    the user stopped or killed the container meanwhile (checked under the lock).
    """
    p = Paths(eng.config, c.id)
    if len(str(p.bundle / "attach")) > 100:
        raise EngineError(f"run directory {eng.config.run} is too long for conmon's unix sockets")
    with file_lock(p.lock):
        c = records.load(eng.db, c.id)
        if c.state in records.ACTIVE and pid_alive(c.pid):
            return None  # Docker: starting a running container is a no-op
        if restart:
            if c.user_stopped or c.state != "exited" or c.extra.get("exit_on_next"):
                return None
            c.restart_count += 1
            records.update(eng.db, c.id, restart_count=c.restart_count)
            eng.emit("container", "restart", c.id, name=c.name)
        for flag in ("exit_on_next", "manual_restart", "after_exit_pending"):
            c.extra.pop(flag, None)
        if c.state in records.ACTIVE:
            _cleanup_locked(eng, c)
            c = records.load(eng.db, c.id)
            for flag in ("exit_on_next", "manual_restart", "after_exit_pending"):
                c.extra.pop(flag, None)
        rt = _runtime(eng, c)
        c.runtime = rt.name
        attached = None
        reserved: list = []
        refused = False
        while True:
            try:
                # Leftovers of an interrupted start or a crash are removed first.
                teardown(eng, c)
                try:
                    p.exit_file.unlink()
                except FileNotFoundError:
                    pass
                # Host ports first: a port in use is refused before anything is made.
                reserved = _reserve_ports(eng, c)
                lower = eng.images.layer_dirs(eng.images.get_by_id(c.image_id))
                volatile = bool(c.opts.auto_remove)
                prepare_overlay(p, volatile)
                for d in (p.userdata, p.persist):
                    d.mkdir(parents=True, exist_ok=True)
                mounts.mount_overlay(lower, p.upper, p.work, p.merged, volatile=volatile)
                crashpoint("start:mounted")
                ns = _namespaces(eng, c, p)
                crashpoint("start:netns")
                if reserved:
                    _hold_ports(eng, c, reserved)
                mount_list = _etc_files(eng, c, p) + _volume_mounts(eng, c, p)
                spec = build_bundle(eng, c, p, mount_list, ns)
                bpf_key, cached_key = _use_compiled_seccomp(eng, rt, spec, use_cache=not refused)
                p.bundle.mkdir(parents=True, exist_ok=True)
                import json

                (p.bundle / "config.json").write_text(json.dumps(spec))
                eng.config.exits_dir.mkdir(parents=True, exist_ok=True)
                from engine.runtime.conmon import ConmonArgs, spawn

                try:
                    pid = spawn(
                        ConmonArgs(
                            cid=c.id,
                            name=c.name,
                            runtime_path=rt.path,
                            runtime_root=rt.state_root,
                            bundle=p.bundle,
                            exit_dir=eng.config.exits_dir,
                            persist_dir=p.persist,
                            log_path=p.log,
                            log_size_max=c.opts.log_max_size,
                            terminal=c.opts.tty,
                            stdin=c.opts.interactive,
                            leave_stdin_open=attach is None,
                            # An attached `run --rm` cleans up and removes by itself; the
                            # exit command (a whole Python process) then only has to find
                            # nothing to do, so it need not compete for the CPU meanwhile.
                            # If the CLI dies, it still heals a second later.
                            exit_delay=1 if attach is not None and c.opts.auto_remove else 0,
                            exit_command=[*_exit_command(eng), c.id],
                            engine_env=eng.config.env(),
                        ),
                        # The monitor's move into the monitors cgroup starts as soon as it
                        # exists, while the runtime creates the container: the first
                        # cgroup.procs write of a burst waits for an RCU grace period
                        # (~8-15 ms on cgroup v1), and crun's own write for the container
                        # then shares that wait instead of paying a second one.
                        on_monitor=lambda: _move_monitor_later(
                            eng, _read_int(p.bundle / "conmon.pid")
                        ),
                    )
                except EngineError:
                    if cached_key:
                        raise _CachedProgramRefused(cached_key) from None
                    raise
                conmon_pid = _read_int(p.bundle / "conmon.pid")
                if bpf_key:
                    from engine.runtime import seccomp_cache

                    seccomp_cache.remember(
                        eng.config.run, bpf_key, rt.state_root / c.id / "seccomp.bpf"
                    )
                crashpoint("start:created")
                if attach is not None:
                    attached = attach(p.bundle)
                rt.start(c.id)
                crashpoint("start:started")
            except _CachedProgramRefused as e:
                # crun refused the program kept for this profile (a damaged entry,
                # or one the kernel no longer takes): drop it, or every create with
                # this profile would fail until reboot, and create once more from
                # the JSON. Everything this attempt made is undone first, exactly
                # as for a failed start, so the second one begins from nothing.
                _undo_failed_start(eng, c, reserved)
                reserved = []
                from engine.runtime import seccomp_cache

                seccomp_cache.forget(eng.config.run, e.key)
                refused = True
                continue
            except BaseException as e:
                _undo_failed_start(eng, c, reserved)
                msg = str(e) if isinstance(e, EngineError) else f"{type(e).__name__}: {e}"
                records.update(eng.db, c.id, error=msg, config=c.config_json())
                if attached is not None and hasattr(attached, "close"):
                    attached.close()
                raise
            break
        records.update(
            eng.db,
            c.id,
            state="running",
            pid=pid,
            conmon_pid=conmon_pid,
            started_at=time.time(),
            finished_at=0.0,
            exit_code=0,
            oom_killed=False,
            error="",
            boot_id=_boot_id(),
            config=c.config_json(),
            health="",
        )
        if c.extra.get("ports"):
            eng.sync_firewall()  # DNAT for the published ports, now that the row says running
        if _user_network(c):
            from engine.network import resolver

            try:
                resolver.reload_resolver(eng)  # starts it on first use; finds the new name
            except EngineError as e:
                # The container runs; only name lookups wait for the resolver (system boot retries).
                print(f"warning: DNS resolver not started: {e}", file=sys.stderr)
    eng.emit("container", "start", c.id, name=c.name, image=c.image_ref)
    if c.health:
        _ensure_health_runner(eng)
    if c.opts.log_max_file > 1:
        _ensure_log_keeper(eng)
    if attach is None:
        join_monitor_moves()
    return attached


def _user_network(c: Container) -> bool:
    net = c.opts.network
    return net not in ("none", "host", "bridge") and not net.startswith("container:")


def _publishes(c: Container) -> bool:
    net = c.opts.network
    return net not in ("none", "host") and not net.startswith("container:")


def _reserve_ports(eng, c: Container) -> list:
    """Bind the host ports (-p/-P) in the engine's host netns; all or nothing."""
    if not _publishes(c) or not (c.opts.publish or c.opts.publish_all):
        return []
    from engine.network import ports

    bindings = [ports.PortBinding.from_dict(d) for d in c.opts.publish]
    if c.opts.publish_all:
        bindings += ports.publish_all(c.exposed_ports, bindings)
    return ports.reserve(bindings, eng.config.host_netns, eng) if bindings else []


def _hold_ports(eng, c: Container, reserved: list) -> None:
    """Hand the bound sockets to the port keeper for the container's life and
    remember where DNAT must send the traffic."""
    from engine.network import ports

    target = next((a for a in c.extra.get("addresses") or [] if a.get("bridge")), None)
    if target is None:
        ports.close_all(reserved)
        raise InvalidState(
            f"cannot publish ports of {c.name}: it has no address on a bridge network"
        )
    c.extra["ports"] = [r.to_dict() for r in reserved]
    c.extra["port_target"] = {"ip": target["ip"], "bridge": target["bridge"]}
    records.update(eng.db, c.id, config=c.config_json())  # before hold: teardown must know
    ports.hold(eng, c.id, reserved)


def _release_ports(eng, c: Container) -> None:
    if not c.extra.get("ports"):
        if _publishes(c) and (c.opts.publish or c.opts.publish_all):
            from engine.network import ports

            # A start killed between hold and persist: the keeper may still hold them.
            if (eng.config.run / "ports.sock").exists():
                ports.release(eng, c.id)
        return
    from engine.network import ports

    c.extra.pop("ports", None)
    records.update(eng.db, c.id, config=c.config_json())
    try:
        eng.sync_firewall()
    finally:
        ports.release(eng, c.id)


def _ensure_health_runner(eng) -> None:
    try:
        from engine.containers import health

        health.ensure_runner(eng)
    except (ImportError, EngineError) as e:
        # The container is running; a health runner that failed to start must
        # not turn that into an error. `system boot` retries it.
        print(f"warning: health-check runner not started: {e}", file=sys.stderr)


def _ensure_log_keeper(eng) -> None:
    try:
        from engine.containers import logkeeper

        logkeeper.ensure_keeper(eng)
    except EngineError as e:
        # As for health checks: the container runs; only older log files are not kept.
        print(f"warning: log keeper not started (max-file): {e}", file=sys.stderr)


_MOVERS: list = []


def _move_monitor_later(eng, pid: int) -> None:
    """Move the monitor into the monitors cgroup in the background.

    The first write to a v1 cgroup.procs in a process costs a full RCU grace
    period (~14 ms here); done in a thread it overlaps the container's run
    instead of adding to `berth run`'s latency. Until it lands the monitor
    sits in the caller's cgroup, which is harmless for that moment.
    """
    import threading

    if pid <= 0:
        return  # no PID file: writing 0 to cgroup.procs would move *this* process
    t = threading.Thread(target=_to_monitor_cgroup, args=(eng, pid), daemon=True)
    t.start()
    _MOVERS.append(t)


def join_monitor_moves(timeout: float = 10.0) -> None:
    while _MOVERS:
        _MOVERS.pop().join(timeout)


def _to_monitor_cgroup(eng, pid: int) -> None:
    """Monitors live in a cgroup of their own, outside the caller's (DESIGN.md)."""
    try:
        from engine.cgroups import monitor_cgroup

        monitor_cgroup(_layout(), eng.config.prefix).move_pid(pid)
    except EngineError:
        pass  # not fatal: the monitor still works from the caller's cgroup


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


_BOOT_ID = ""


def _boot_id() -> str:
    global _BOOT_ID
    if not _BOOT_ID:
        try:
            _BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            _BOOT_ID = "unknown"
    return _BOOT_ID


def wait_pid_exit(pid: int, timeout: float | None) -> bool:
    """Wait for a process that is not our child; True once it is gone."""
    if not pid_alive(pid):
        return True
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return not pid_alive(pid)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            r, _, _ = select.select([fd], [], [], left if left is None else min(left, 0.5))
            if r or not pid_alive(pid):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
    finally:
        os.close(fd)


def read_exit_code(p: Paths, wait: float = 2.0) -> int | None:
    """conmon writes the exit file just after the process dies; give it a moment."""
    deadline = time.monotonic() + wait
    # A foreground `run` asks the moment the attach socket closes, and the file
    # usually follows within ~1-3 ms: poll finely at first, then every 2 ms.
    fine = 40
    while True:
        try:
            text = p.exit_file.read_text().strip()
            if text:
                return int(text)
        except (OSError, ValueError):
            pass
        if time.monotonic() >= deadline:
            return None
        fine -= 1
        time.sleep(0.0005 if fine > 0 else 0.002)


def _persist_extra(eng, c: Container, **flags) -> None:
    c.extra.update(flags)
    records.update(eng.db, c.id, config=c.config_json())


def cleanup(eng, cid: str, *, from_monitor: bool = False) -> Container | None:
    """Exit handling (idempotent): record the exit and tear down; then, only in
    conmon's exit command (``from_monitor``), apply --rm and the restart policy.

    Readers (ps, inspect, wait, stop...) that find the process gone record the
    exit too, but never restart: the policy (with its back-off sleep) belongs to
    the exit command, once per run ("after_exit_pending"). If the monitor died
    without running it, a reader starts a detached exit handler instead.
    """
    p = Paths(eng.config, cid)
    spawn_handler = False
    handle = False
    if eng.db.one("SELECT 1 FROM containers WHERE id=?", (cid,)) is None:
        return None  # removed already (e.g. by an attached `run --rm`): touch nothing
    with file_lock(p.lock):
        try:
            c = records.load(eng.db, cid)
        except EngineError:
            _unlink_quietly(p.lock)
            return None
        if c.state in records.ACTIVE and pid_alive(c.pid):
            return c  # still running: nothing to do
        if c.state in records.ACTIVE:
            monitor_alive = bool(c.conmon_pid) and pid_alive(c.conmon_pid)
            c = _cleanup_locked(eng, c)
            spawn_handler = not from_monitor and not monitor_alive
        if from_monitor and c.extra.get("after_exit_pending"):
            _persist_extra(eng, c, after_exit_pending=False)
            handle = True
    if spawn_handler:
        _spawn_exit_handler(eng, cid)
    return _after_exit(eng, c) if handle else c


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _spawn_exit_handler(eng, cid: str) -> None:
    import subprocess

    env = dict(os.environ)
    env.update(eng.config.env())
    subprocess.Popen(
        [*_exit_command(eng), cid],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _cleanup_locked(eng, c: Container, restart_ok: bool = False) -> Container:
    p = Paths(eng.config, c.id)
    code = read_exit_code(p, wait=1.0 if c.conmon_pid and pid_alive(c.conmon_pid) else 0.05)
    oom = _oom_count(eng, c.id) > 0
    if code is None:
        code = 137 if oom else 255  # monitor gone without a word: treat as killed
    teardown(eng, c)
    c.state, c.exit_code, c.oom_killed = "exited", code, oom
    c.finished_at = time.time()
    c.extra["after_exit_pending"] = True
    records.update(
        eng.db,
        c.id,
        state="exited",
        exit_code=code,
        oom_killed=oom,
        finished_at=c.finished_at,
        pid=0,
        conmon_pid=0,
        config=c.config_json(),
    )
    attrs = {"name": c.name, "image": c.image_ref, "exitCode": str(code)}
    if oom:
        eng.emit("container", "oom", c.id, name=c.name, image=c.image_ref)
    eng.emit("container", "die", c.id, **attrs)
    return c


def restart_delay(c: Container) -> float | None:
    """Docker's policy and growing back-off; None means do not restart."""
    pol = c.opts.restart
    if c.user_stopped or pol.name == "no" or c.extra.get("exit_on_next"):
        return None
    if pol.name == "on-failure":
        if c.exit_code == 0 or (pol.max_retries and c.restart_count >= pol.max_retries):
            return None
    # 100 ms doubling, reset once the container ran 10 s; capped at 1 minute.
    ran = c.finished_at - c.started_at if c.started_at else 0
    n = 0 if ran >= 10 else c.restart_count
    return min(0.1 * (2**n), 60.0)


def _after_exit(eng, c: Container) -> Container:
    if c.opts.auto_remove and not c.extra.get("manual_restart"):
        from engine.containers import remove

        # A foreground `run --rm` reads the exit code from the exit file.
        waiter = Paths(eng.config, c.id).exit_file.with_suffix(".waiter")
        remove.remove(eng, c.id, force=True, volumes=True, keep_exit_file=waiter.exists())
        return c
    delay = restart_delay(c)
    if delay is not None:
        time.sleep(delay)
        start(eng, c, restart=True)
    return c


def stop(eng, c: Container, timeout: float | None = None) -> None:
    """The stop signal, then SIGKILL after the timeout (Docker's default 10 s)."""
    records.update(eng.db, c.id, user_stopped=True)
    if c.state not in records.ACTIVE or not pid_alive(c.pid):
        c2 = cleanup(eng, c.id)
        if not c2 or c2.state not in records.ACTIVE or not pid_alive(c2.pid):
            return
        c = c2  # a policy restart won the race: stop that run
    rt = _runtime(eng, c)
    if c.state == "paused":
        rt.resume(c.id)
    if timeout is None:
        timeout = c.opts.stop_timeout if c.opts.stop_timeout is not None else 10
    sig = parse_signal(c.stop_signal or "SIGTERM")
    if timeout > 0:
        rt.kill(c.id, sig)
    if not wait_pid_exit(c.pid, timeout):
        rt.kill(c.id, int(_signal.SIGKILL), all_procs=True)
        wait_pid_exit(c.pid, 10)
    cleanup(eng, c.id)
    eng.emit("container", "stop", c.id, name=c.name, image=c.image_ref)


def kill(eng, c: Container, sig: str = "KILL") -> None:
    if c.state not in records.ACTIVE or not pid_alive(c.pid):
        raise InvalidState(f"cannot kill container {c.name}: container is not running", obj=c.name)
    n = parse_signal(sig)
    rt = _runtime(eng, c)
    if n == _signal.SIGKILL or n == parse_signal(c.stop_signal or "SIGTERM"):
        # Docker: a kill with SIGKILL or the stop signal is not restarted by the policy.
        _persist_extra(eng, c, exit_on_next=True)
    if not rt.kill(c.id, n):
        os.kill(c.pid, n)
    if c.state == "paused":
        rt.resume(c.id)  # a frozen task cannot act on the signal
    eng.emit("container", "kill", c.id, name=c.name, signal=str(n))
    if n == _signal.SIGKILL:
        wait_pid_exit(c.pid, 10)
        cleanup(eng, c.id)
