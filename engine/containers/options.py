"""Typed container options and the parsers for Docker's flag syntaxes.

Everything is validated here, before anything is created, so a bad flag value
leaves nothing half-made behind.
"""

from __future__ import annotations

import os
import re
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.errors import InvalidArgument

NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


@dataclass
class MountSpec:
    type: str  # volume | bind | tmpfs
    source: str  # volume name (or "" for anonymous), host path
    target: str
    readonly: bool = False
    anonymous: bool = False


@dataclass
class HealthConfig:
    test: list[str] = field(default_factory=list)  # ["CMD-SHELL", "..."] | ["CMD", ...] | ["NONE"]
    interval: float = 30.0
    timeout: float = 30.0
    retries: int = 3
    start_period: float = 0.0


@dataclass
class RestartPolicy:
    name: str = "no"  # no | on-failure | always | unless-stopped
    max_retries: int = 0


@dataclass
class CreateOptions:
    image: str
    command: list[str] | None = None
    name: str = ""
    entrypoint: list[str] | None = None
    env: list[str] = field(default_factory=list)
    workdir: str = ""
    user: str = ""
    hostname: str = ""
    tty: bool = False
    interactive: bool = False
    mounts: list[MountSpec] = field(default_factory=list)
    tmpfs: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    memory: int | None = None
    memory_swap: int | None = None
    cpus: float | None = None
    pids_limit: int | None = None
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    auto_remove: bool = False
    read_only: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    security_opt: list[str] = field(default_factory=list)
    ulimits: list[tuple[str, int, int]] = field(default_factory=list)
    shm_size: int | None = None
    stop_signal: str = ""
    stop_timeout: int | None = None
    init: bool = False
    health: HealthConfig | None = None
    no_healthcheck: bool = False
    log_max_size: int = 10 * 1024 * 1024
    log_max_file: int = 1
    network: str = ""  # "" = the engine's default network (EngineConfig.default_network)
    ip: str = ""  # --ip: a static address on the container's network
    publish: list[dict] = field(default_factory=list)  # -p, as ports.PortBinding.to_dict()
    publish_all: bool = False  # -P
    network_aliases: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)  # --dns: nameserver addresses
    dns_search: list[str] = field(default_factory=list)  # --dns-search
    dns_options: list[str] = field(default_factory=list)  # --dns-option
    pid_mode: str = ""
    ipc_mode: str = ""
    runtime: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CreateOptions:
        d = dict(d)
        d["mounts"] = [MountSpec(**m) for m in d.get("mounts", [])]
        d["restart"] = RestartPolicy(**d.get("restart", {}))
        d["health"] = HealthConfig(**d["health"]) if d.get("health") else None
        d["ulimits"] = [tuple(u) for u in d.get("ulimits", [])]
        return cls(**d)


def parse_size(text: str, what: str = "size") -> int:
    """Docker's RAMInBytes: 512m, 1g, 100000 (bytes); units are binary."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtb]?)b?\s*", text.lower())
    if not m:
        raise InvalidArgument(
            f"invalid {what} {text!r}: expected a number with an optional unit (b, k, m, g)"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def parse_dns(servers: list[str]) -> list[str]:
    """--dns values: IP addresses only (a name would need a resolver to find the resolver)."""
    import ipaddress

    out = []
    for text in servers:
        try:
            out.append(str(ipaddress.ip_address(text.strip())))
        except ValueError:
            raise InvalidArgument(f"invalid --dns {text!r}: not an IP address") from None
    return out


def parse_cpus(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise InvalidArgument(f"invalid --cpus {text!r}: not a number") from None
    if v <= 0:
        raise InvalidArgument(f"invalid --cpus {text!r}: must be positive")
    return v


def parse_restart(text: str) -> RestartPolicy:
    name, _, count = text.partition(":")
    if name not in ("no", "on-failure", "always", "unless-stopped"):
        raise InvalidArgument(
            f"invalid restart policy {text!r}: use no, on-failure[:N], always or unless-stopped"
        )
    if count and name != "on-failure":
        raise InvalidArgument(
            f"invalid restart policy {text!r}: only on-failure takes a retry count"
        )
    try:
        n = int(count) if count else 0
    except ValueError:
        raise InvalidArgument(
            f"invalid restart policy {text!r}: retry count must be a number"
        ) from None
    if n < 0:
        raise InvalidArgument(f"invalid restart policy {text!r}: retry count must be >= 0")
    return RestartPolicy(name, n)


def parse_ulimit(text: str) -> tuple[str, int, int]:
    name, _, vals = text.partition("=")
    if not vals:
        raise InvalidArgument(f"invalid ulimit {text!r}: expected NAME=SOFT[:HARD]")
    soft_s, _, hard_s = vals.partition(":")
    try:
        soft = int(soft_s)
        hard = int(hard_s) if hard_s else soft
    except ValueError:
        raise InvalidArgument(f"invalid ulimit {text!r}: limits must be numbers") from None
    if hard != -1 and soft > hard:
        raise InvalidArgument(
            f"invalid ulimit {text!r}: soft limit {soft} exceeds hard limit {hard}"
        )
    return (name.strip(), soft, hard)


def parse_volume(text: str) -> MountSpec:
    """-v [SRC:]DST[:ro|rw] — SRC is a host path when it starts with / (or .), else a volume name."""
    parts = text.split(":")
    mode = ""
    if len(parts) >= 2 and parts[-1] in ("ro", "rw", "z", "Z", "ro,z", "rw,z", "ro,Z", "rw,Z"):
        mode = parts.pop()
    if len(parts) == 1:
        dst = parts[0]
        src = ""
    elif len(parts) == 2:
        src, dst = parts
    else:
        raise InvalidArgument(f"invalid volume specification {text!r}")
    if not dst.startswith("/"):
        raise InvalidArgument(
            f"invalid volume specification {text!r}: destination {dst!r} must be an absolute path"
        )
    ro = mode.startswith("ro")
    if not src:
        return MountSpec("volume", "", dst, ro, anonymous=True)
    if src.startswith("/") or src.startswith("."):
        return MountSpec("bind", str(Path(src).absolute()), dst, ro)
    if not NAME_RE.match(src):
        raise InvalidArgument(f"invalid volume name {src!r} in {text!r}")
    return MountSpec("volume", src, dst, ro)


def parse_signal(text: str) -> int:
    t = text.strip().upper()
    if t.isdigit():
        n = int(t)
        if 0 < n < 65:
            return n
    else:
        t = t if t.startswith("SIG") else "SIG" + t
        try:
            return int(signal.Signals[t])
        except KeyError:
            pass
    raise InvalidArgument(f"invalid signal {text!r}")


def parse_duration(text: str) -> float:
    """Go durations as docker takes them: 30s, 1m30s, 500ms, 1h."""
    m = re.fullmatch(r"((?:\d+(?:\.\d+)?(?:ns|us|ms|s|m|h))+)", text.strip())
    if not m:
        try:
            return float(text)
        except ValueError:
            raise InvalidArgument(
                f"invalid duration {text!r}: use e.g. 30s, 1m30s, 500ms"
            ) from None
    total = 0.0
    mult = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", text):
        total += float(num) * mult[unit]
    return total


def parse_env_file(path: str) -> list[str]:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise InvalidArgument(f"cannot read env file {path}: {e.strerror}", errno=e.errno) from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        out.append(line)
    return out


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidArgument(
            f"invalid container name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )
    return name.lstrip("/")


def merge_env(base: list[str], extra: list[str]) -> list[str]:
    """`-e` values over a base environment (the image's, or the container's for exec)."""
    env = list(base)
    index = {e.partition("=")[0]: i for i, e in enumerate(env)}
    for e in extra:
        key, eq, _ = e.partition("=")
        if not key:
            raise InvalidArgument(f"invalid environment variable {e!r}")
        if not eq:  # -e NAME: our value, or nothing (Docker)
            if key not in os.environ:
                continue
            e = f"{key}={os.environ[key]}"
        if key in index:
            env[index[key]] = e
        else:
            index[key] = len(env)
            env.append(e)
    return env
