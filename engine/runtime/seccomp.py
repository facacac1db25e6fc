"""Seccomp profiles: containers/common (Docker) format -> OCI ``linux.seccomp``.

The profile shipped in ``/usr/share/containers/seccomp.json`` is not something
a runtime can take as is: its rules carry ``includes``/``excludes`` conditions
(capabilities, architectures, minimum kernel) and an ``archMap``. Docker and
Podman resolve those when they write config.json; so do we, following
containers/common's ``setupSeccomp``:

* excludes.arches holds the native arch  -> drop the rule
* excludes.caps: any of them held        -> drop the rule
* excludes.minKernel <= running kernel   -> drop the rule
* includes.arches lacks the native arch  -> drop the rule
* includes.caps: not all of them held    -> drop the rule
* includes.minKernel > running kernel    -> drop the rule

Arch names in includes/excludes are Go's (``amd64``, ``arm64``...), as in Go's
``runtime.GOARCH``; the ``archMap`` entry whose ``architecture`` is the native
SCMP arch gives ``architectures`` (native + its sub-architectures).

Every ``berth run`` is a fresh CLI process, so the cost that matters is the
cold one: reading and converting the 16 KB default costs well under a
millisecond (see tests), hence no on-disk cache. Long-lived processes (web,
workers) also keep the converted result in memory, keyed by file identity,
arch, caps and kernel.
"""

from __future__ import annotations

import errno as errno_mod
import json
import os
import platform
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.errors import InvalidArgument

DEFAULT_PROFILE = "/usr/share/containers/seccomp.json"

ACTIONS = frozenset(
    {
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
    }
)
OPERATORS = frozenset(
    {
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ",
    }
)

# uname -m -> Go's GOARCH (the vocabulary of includes/excludes.arches).
_MACHINE_TO_GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "i386": "386",
    "i686": "386",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "ppc64le": "ppc64le",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64": "mips64",
    "mips64el": "mips64le",
    "mips": "mips",
    "mipsel": "mipsle",
}
# GOARCH -> libseccomp arch name (containers/common's goArchToSeccompArchMap).
GOARCH_TO_SCMP = {
    "386": "SCMP_ARCH_X86",
    "amd64": "SCMP_ARCH_X86_64",
    "arm": "SCMP_ARCH_ARM",
    "arm64": "SCMP_ARCH_AARCH64",
    "mips": "SCMP_ARCH_MIPS",
    "mips64": "SCMP_ARCH_MIPS64",
    "mips64le": "SCMP_ARCH_MIPSEL64",
    "mipsle": "SCMP_ARCH_MIPSEL",
    "ppc": "SCMP_ARCH_PPC",
    "ppc64": "SCMP_ARCH_PPC64",
    "ppc64le": "SCMP_ARCH_PPC64LE",
    "riscv64": "SCMP_ARCH_RISCV64",
    "s390": "SCMP_ARCH_S390",
    "s390x": "SCMP_ARCH_S390X",
}

# Top-level keys of OCI's LinuxSeccomp that we pass through untouched.
_PASS_THROUGH = ("flags", "listenerPath", "listenerMetadata")

# (path, mtime_ns, size, ino) -> parsed JSON; (that, arch, caps, kernel) -> OCI JSON text.
_parsed_cache: dict[tuple, dict] = {}
_converted_cache: dict[tuple, str] = {}


def native_goarch(arch: str | None = None) -> str:
    """Normalize ``arch`` (uname or Go spelling; None = this host) to GOARCH."""
    machine = arch or platform.machine()
    goarch = _MACHINE_TO_GOARCH.get(machine, machine)
    if goarch not in GOARCH_TO_SCMP:
        raise InvalidArgument(f"unknown architecture {machine!r} for seccomp", obj=machine)
    return goarch


def kernel_version(release: str | None = None) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", release or os.uname().release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _parse_min_kernel(value: Any, where: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)\.(\d+)(?:\.\d+)?", str(value))
    if not m:
        raise ValueError(f"{where}: minKernel {value!r} is not of the form X.Y")
    return int(m.group(1)), int(m.group(2))


def _errno_number(name: Any, where: str) -> int:
    code = getattr(errno_mod, str(name), None)
    if not isinstance(code, int):
        raise ValueError(f"{where}: unknown errno name {name!r}")
    return code


def _norm_caps(caps: Iterable[str]) -> frozenset[str]:
    out = set()
    for c in caps:
        c = c.strip().upper()
        out.add(c if c.startswith("CAP_") else "CAP_" + c)
    return frozenset(out)


def _convert_args(args: Any, where: str) -> list[dict]:
    if args is None:
        return []
    if not isinstance(args, list):
        raise ValueError(f"{where}: 'args' must be a list")
    out = []
    for a in args:
        if not isinstance(a, dict):
            raise ValueError(f"{where}: each arg must be an object")
        index, op = a.get("index"), a.get("op")
        if not isinstance(index, int) or not 0 <= index <= 5:
            raise ValueError(f"{where}: arg index {index!r} must be 0..5")
        if op not in OPERATORS:
            raise ValueError(f"{where}: unknown comparison operator {op!r}")
        value, value_two = a.get("value", 0), a.get("valueTwo", 0)
        if not isinstance(value, int) or not isinstance(value_two, int):
            raise ValueError(f"{where}: arg value/valueTwo must be integers")
        arg: dict[str, Any] = {"index": index, "value": value, "op": op}
        if value_two:
            arg["valueTwo"] = value_two
        out.append(arg)
    return out


def convert_profile(
    profile: dict,
    caps: Iterable[str],
    arch: str | None = None,
    kernel: tuple[int, int] | None = None,
) -> dict:
    """Convert a parsed profile (containers/common, Docker or OCI form) to OCI form.

    Raises ``ValueError`` describing the first problem found; callers wrap it.
    """
    if not isinstance(profile, dict):
        raise ValueError("the profile must be a JSON object")
    goarch = native_goarch(arch)
    native = GOARCH_TO_SCMP[goarch]
    held = _norm_caps(caps)
    kver = kernel or kernel_version()

    default_action = profile.get("defaultAction")
    if default_action not in ACTIONS:
        raise ValueError(f"defaultAction {default_action!r} is not a known SCMP_ACT_* action")
    out: dict[str, Any] = {"defaultAction": default_action}
    if isinstance(profile.get("defaultErrnoRet"), int):
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    elif profile.get("defaultErrno"):
        out["defaultErrnoRet"] = _errno_number(profile["defaultErrno"], "defaultErrno")

    arches, arch_map = profile.get("architectures"), profile.get("archMap")
    if arches and arch_map:
        raise ValueError("use either 'architectures' or 'archMap', not both")
    if arch_map:
        if not isinstance(arch_map, list):
            raise ValueError("'archMap' must be a list")
        for entry in arch_map:
            if isinstance(entry, dict) and entry.get("architecture") == native:
                out["architectures"] = [native, *(entry.get("subArchitectures") or [])]
                break
    elif arches:
        if not isinstance(arches, list) or not all(isinstance(a, str) for a in arches):
            raise ValueError("'architectures' must be a list of SCMP_ARCH_* names")
        out["architectures"] = list(arches)
    for key in _PASS_THROUGH:
        if key in profile:
            out[key] = profile[key]

    syscalls = profile.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise ValueError("'syscalls' must be a list")
    rules = []
    for i, call in enumerate(syscalls):
        where = f"syscalls[{i}]"
        if not isinstance(call, dict):
            raise ValueError(f"{where} must be an object")
        names = call.get("names")
        if names is None and call.get("name"):  # Docker's legacy single-name form
            names = [call["name"]]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{where}: 'names' must be a non-empty list of syscall names")
        action = call.get("action")
        if action not in ACTIONS:
            raise ValueError(f"{where}: action {action!r} is not a known SCMP_ACT_* action")
        inc, exc = call.get("includes") or {}, call.get("excludes") or {}
        if not isinstance(inc, dict) or not isinstance(exc, dict):
            raise ValueError(f"{where}: 'includes'/'excludes' must be objects")
        args = _convert_args(call.get("args"), where)  # validate even rules we skip
        if goarch in (exc.get("arches") or ()):
            continue
        if held & _norm_caps(exc.get("caps") or ()):
            continue
        if exc.get("minKernel") and kver >= _parse_min_kernel(exc["minKernel"], where):
            continue
        if inc.get("arches") and goarch not in inc["arches"]:
            continue
        if not _norm_caps(inc.get("caps") or ()) <= held:
            continue
        if inc.get("minKernel") and kver < _parse_min_kernel(inc["minKernel"], where):
            continue
        rule: dict[str, Any] = {"names": list(names), "action": action}
        if isinstance(call.get("errnoRet"), int):
            rule["errnoRet"] = call["errnoRet"]
        elif call.get("errno"):
            rule["errnoRet"] = _errno_number(call["errno"], where)
        if args:
            rule["args"] = args
        rules.append(rule)
    out["syscalls"] = rules
    return out


def _load_converted(path: str, caps: Iterable[str], arch: str | None) -> dict:
    """Read (cached by file identity), convert (cached), return a fresh dict."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise InvalidArgument(
            f"seccomp profile {path}: {e.strerror}", obj=path, errno=e.errno
        ) from None
    file_key = (path, st.st_mtime_ns, st.st_size, st.st_ino)
    goarch = native_goarch(arch)
    kver = kernel_version()
    key = (file_key, goarch, _norm_caps(caps), kver)
    text = _converted_cache.get(key)
    if text is None:
        parsed = _parsed_cache.get(file_key)
        try:
            if parsed is None:
                with open(path, "rb") as f:
                    parsed = json.load(f)
                _parsed_cache.clear()  # one version per path is enough; keeps memory flat
                _parsed_cache[file_key] = parsed
            converted = convert_profile(parsed, caps, goarch, kver)
        except OSError as e:
            raise InvalidArgument(
                f"seccomp profile {path}: {e.strerror}", obj=path, errno=e.errno
            ) from None
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            raise InvalidArgument(f"seccomp profile {path}: {e}", obj=path) from None
        text = json.dumps(converted, separators=(",", ":"))
        if len(_converted_cache) > 64:
            _converted_cache.clear()
        _converted_cache[key] = text
    # json.loads of the cached text is cheaper than deepcopy and hands every
    # caller its own dict to modify.
    return json.loads(text)


def load_default_profile(
    path: str | Path = DEFAULT_PROFILE, arch: str | None = None, *, caps: Iterable[str]
) -> dict:
    """The host's default profile as an OCI ``linux.seccomp`` object.

    ``caps`` are the container's effective capabilities (``CAP_X`` or ``X``);
    ``arch`` is ``x86_64``/``amd64``-style, None for this host.
    """
    return _load_converted(str(path), caps, arch)


def load_profile_file(path: str | Path, caps: Iterable[str], arch: str | None = None) -> dict:
    """A user's ``--security-opt seccomp=FILE`` (OCI, Docker or containers/common form).

    A missing, unreadable or malformed file -> InvalidArgument naming the file.
    """
    return _load_converted(str(path), caps, arch)
