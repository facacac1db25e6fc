"""One handler per Dockerfile instruction (after FROM).

Metadata instructions change the image config and make an image without a
layer (``empty_layer`` in its history, as Docker records them); RUN, COPY,
ADD and a WORKDIR that has to create its directory make a layer. Each goes
through ``Builder.cached_step`` first with the key Docker would use.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
import shlex
from typing import TYPE_CHECKING

from engine.build.dockerfile import Instruction
from engine.build.options import BuildStepFailed
from engine.errors import EngineError, InvalidArgument, Unsupported

if TYPE_CHECKING:
    from engine.build.executor import Builder, StageState

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL = ["/bin/sh", "-c"]
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}


def dispatch(b: Builder, st: StageState, ins: Instruction) -> None:
    handler = _HANDLERS.get(ins.keyword)
    if handler is None:  # pragma: no cover - the parser knows every keyword
        raise Unsupported(f"{ins.keyword} is not supported")
    try:
        handler(b, st, ins)
    except BuildStepFailed:
        raise
    except EngineError as e:
        msg = str(e)
        if getattr(e, "line", 0) or msg.startswith(("dockerfile", "step ")):
            raise
        if not msg.startswith(ins.keyword):
            msg = f"{ins.keyword}: {msg}"
        # Same class and attributes (obj, errno...), the step and line named first.
        named = copy.copy(e)
        named.args = (f"step {b.step}/{b.total} (line {ins.line}): {msg}",)
        raise named from None


def _word(st: StageState, text: str) -> str:
    return st.lex.word(text, st.scope())


def _words(st: StageState, items) -> list[str]:
    scope = st.scope()
    return [st.lex.word(w, scope) for w in items]


def _meta_step(b: Builder, st: StageState, text: str, change, extra: object = None) -> None:
    """A config-only step: cached on (parent, instruction text, ``extra``)."""
    key, hit = b.cached_step(st, text, extra)
    if hit:
        return
    change(st.cfg)
    b.commit(st, None, text, key=key)


def _cmd_form(st: StageState, ins: Instruction, args: tuple[str, ...] | list[str]) -> list[str]:
    if ins.json:
        return list(args)
    shell = st.cfg.get("Shell") or DEFAULT_SHELL
    return [*shell, args[0]] if args else []


# -- metadata ---------------------------------------------------------------------------------


def env(b: Builder, st: StageState, ins: Instruction) -> None:
    pairs = []
    scope = st.scope()
    for k, v in ins.pairs:
        key = st.lex.word(k, scope)
        value = st.lex.word(v, scope)
        # Every pair sees the values from before this instruction (Docker).
        pairs.append((key, value))
    text = "ENV " + " ".join(f"{k}={v}" for k, v in pairs)

    def change(cfg: dict) -> None:
        current = list(cfg.get("Env") or [])
        for k, v in pairs:
            current = [e for e in current if e.split("=", 1)[0] != k] + [f"{k}={v}"]
        cfg["Env"] = current

    _meta_step(b, st, text, change, {"pairs": pairs})  # the text alone is ambiguous


def label(b: Builder, st: StageState, ins: Instruction) -> None:
    scope = st.scope()
    pairs = [(st.lex.word(k, scope), st.lex.word(v, scope)) for k, v in ins.pairs]
    text = "LABEL " + " ".join(f"{k}={v}" for k, v in pairs)
    _meta_step(
        b, st, text, lambda cfg: cfg.update(Labels={**(cfg.get("Labels") or {}), **dict(pairs)}),
        {"pairs": pairs},
    )  # fmt: skip


def label_flag(b: Builder, st: StageState, labels: dict[str, str], text: str) -> None:
    """``--label``: one more LABEL step at the end of the target stage."""
    _meta_step(b, st, text, lambda cfg: cfg.update(Labels={**(cfg.get("Labels") or {}), **labels}))


def maintainer(b: Builder, st: StageState, ins: Instruction) -> None:
    name = _word(st, ins.args[0])
    text = f"MAINTAINER {name}"
    key, hit = b.cached_step(st, text)
    if not hit:
        st.config["author"] = name
        b.commit(st, None, text, key=key)


def expose(b: Builder, st: StageState, ins: Instruction) -> None:
    ports: list[str] = []
    for word in _words(st, ins.args):
        port, _, proto = word.partition("/")
        proto = (proto or "tcp").lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise InvalidArgument(f"invalid proto: {proto}")
        lo, dash, hi = port.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise InvalidArgument(f"invalid containerPort: {port}")
        for p in range(int(lo), int(hi if dash else lo) + 1):
            if not 0 < p < 65536:
                raise InvalidArgument(f"invalid port {p}: must be 1-65535")
            ports.append(f"{p}/{proto}")
    text = "EXPOSE " + " ".join(ports)
    _meta_step(
        b, st, text,
        lambda cfg: cfg.update(ExposedPorts={**(cfg.get("ExposedPorts") or {}), **{p: {} for p in ports}}),
    )  # fmt: skip


def cmd(b: Builder, st: StageState, ins: Instruction) -> None:
    argv = _cmd_form(st, ins, ins.args)
    st.cmd_set = True
    _meta_step(b, st, f"CMD {json.dumps(argv)}", lambda cfg: cfg.update(Cmd=argv or None))


def entrypoint(b: Builder, st: StageState, ins: Instruction) -> None:
    argv = _cmd_form(st, ins, ins.args)

    def change(cfg: dict) -> None:
        cfg["Entrypoint"] = argv or None
        if not st.cmd_set:
            cfg["Cmd"] = None  # Docker: an inherited CMD does not survive a new ENTRYPOINT

    _meta_step(b, st, f"ENTRYPOINT {json.dumps(argv)}", change, {"cmd_reset": not st.cmd_set})


def shell(b: Builder, st: StageState, ins: Instruction) -> None:
    argv = list(ins.args)
    if not argv:
        raise InvalidArgument("SHELL requires at least one argument")
    _meta_step(b, st, f"SHELL {json.dumps(argv)}", lambda cfg: cfg.update(Shell=argv))


def user(b: Builder, st: StageState, ins: Instruction) -> None:
    name = _word(st, ins.args[0])
    if not name:
        raise InvalidArgument("USER requires exactly one non-empty argument")
    _meta_step(b, st, f"USER {name}", lambda cfg: cfg.update(User=name))


def volume(b: Builder, st: StageState, ins: Instruction) -> None:
    paths = _words(st, ins.args)
    if any(not p.strip() for p in paths):
        raise InvalidArgument("VOLUME specified can not be an empty string")
    text = f"VOLUME {json.dumps(paths)}"
    _meta_step(
        b, st, text, lambda cfg: cfg.update(Volumes={**(cfg.get("Volumes") or {}), **{p: {} for p in paths}})
    )  # fmt: skip


def stopsignal(b: Builder, st: StageState, ins: Instruction) -> None:
    from engine.containers.options import parse_signal

    sig = _word(st, ins.args[0])
    parse_signal(sig)  # refuses unknown signals with a clear message
    _meta_step(b, st, f"STOPSIGNAL {sig}", lambda cfg: cfg.update(StopSignal=sig))


def parse_duration(text: str, what: str) -> int:
    """Go's time.ParseDuration subset -> nanoseconds."""
    if text in ("0", ""):
        return 0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    if pos != len(text):
        raise InvalidArgument(f"HEALTHCHECK --{what}: invalid duration {text!r} (e.g. 30s, 1m30s)")
    return int(total)


def healthcheck(b: Builder, st: StageState, ins: Instruction) -> None:
    if ins.args[0] == "NONE":
        hc: dict = {"Test": ["NONE"]}
    else:
        body = list(ins.args[1:])
        test = ["CMD", *body] if ins.json else ["CMD-SHELL", body[0]]
        hc = {"Test": test}
        for flag, key in (("interval", "Interval"), ("timeout", "Timeout"),
                          ("start-period", "StartPeriod"), ("start-interval", "StartInterval")):  # fmt: skip
            value = ins.flag(flag)
            if value is not None:
                ns = parse_duration(value, flag)
                if ns and ns < 1_000_000:
                    raise InvalidArgument(f"HEALTHCHECK --{flag} cannot be less than 1ms")
                if ns:
                    hc[key] = ns
        retries = ins.flag("retries")
        if retries is not None:
            if not retries.isdigit():
                raise InvalidArgument(f"HEALTHCHECK --retries {retries!r}: must be a number >= 0")
            if int(retries):
                hc["Retries"] = int(retries)
    _meta_step(
        b,
        st,
        f"HEALTHCHECK {json.dumps(hc, sort_keys=True)}",
        lambda cfg: cfg.update(Healthcheck=hc),
    )


def onbuild(b: Builder, st: StageState, ins: Instruction) -> None:
    trigger = ins.args[0]
    _meta_step(
        b, st, f"ONBUILD {trigger}", lambda cfg: cfg.update(OnBuild=[*(cfg.get("OnBuild") or []), trigger])
    )  # fmt: skip


def arg(b: Builder, st: StageState, ins: Instruction) -> None:
    """Declare ARGs; the value is --build-arg's, else the default, else the
    pre-FROM ARG's of that name. Cached on the text only: a changed value
    misses where it is used (RUN's environment, substituted text), as in Docker."""
    from engine.build.executor import platform_args

    for word in ins.args:
        name, eq, default = word.partition("=")
        if name in b.opts.build_args:
            value: str | None = b.opts.build_args[name]
            b.used_args.add(name)
        elif eq:
            value = _word(st, default)
        elif name in st.meta:
            value = st.meta[name]
        else:
            value = platform_args().get(name)
        st.args[name] = value
    _meta_step(b, st, ins.text, lambda cfg: None)


# -- filesystem -------------------------------------------------------------------------------


def workdir(b: Builder, st: StageState, ins: Instruction) -> None:
    from engine.build.copy import is_dir_in_image
    from engine.safepath import mkdirs_in_root

    path = _word(st, ins.args[0])
    if not path.startswith("/"):
        path = posixpath.join(st.cfg.get("WorkingDir") or "/", path)
    path = posixpath.normpath(path)
    if path.startswith("//"):
        path = path[1:]
    text = f"WORKDIR {path}"
    key, hit = b.cached_step(st, text)
    if hit:
        return
    st.cfg["WorkingDir"] = path
    layer = None
    with b.image_fs(st) as fs:
        if not is_dir_in_image(str(fs.root), path):
            mkdirs_in_root(str(fs.root), path)
            layer = fs.commit(b.eng.images)
    b.commit(st, layer, text, key=key)


def run(b: Builder, st: StageState, ins: Instruction) -> None:
    if ins.flag("mount") is not None or ins.flag("security") is not None:
        raise Unsupported("RUN --mount and --security are not supported by Berth's builder")
    argv = _cmd_form(st, ins, ins.args)
    run_args = st.run_args()
    shown = " ".join(shlex.quote(a) if ins.json else a for a in argv)
    prefix = (
        f"|{len(run_args)} " + " ".join(f"{k}={v}" for k, v in run_args) + " " if run_args else ""
    )
    network = ins.flag("network") or b.opts.network
    text = f"RUN {prefix}{shown}"
    # Keyed on the exact argv and build args, not only on the text shown: an exec-form
    # ["sh", "-c", "a", "b"] and a shell-form "a b" print alike but run differently.
    # The network a step ran on does not change what it made (Docker keys so too).
    key, hit = b.cached_step(st, text, {"argv": argv, "args": run_args})
    if hit:
        return
    if not st.image_id or not b.stage_layers(st):
        raise InvalidArgument(
            f"RUN {shown}: the image has no files (FROM scratch): there is no shell to run"
        )
    from engine.build.run import run_step

    b.reap_orphans_once()
    if network in ("default", ""):
        network = ""
    ran: list[str] = []

    def started(cid: str) -> None:
        ran.append(cid[:12])
        b.say(f" ---> Running in {cid[:12]}")

    code, layer = run_step(
        b.eng,
        st.image_id,
        argv,
        env=[f"{k}={v}" for k, v in run_args],
        workdir=st.cfg.get("WorkingDir") or "",
        user=st.cfg.get("User") or "",
        network=network,
        step=f"{b.step}/{b.total}",
        build_id=b.live_id(),
        out=b.raw,
        started=started,
        monitors=b.monitors,
    )
    if code != 0:
        raise BuildStepFailed(b.step, b.total, " ".join(argv), code)
    b.say(f"Removing intermediate container {ran[0]}")
    b.commit(st, layer, text, key=key)


def copy_add(b: Builder, st: StageState, ins: Instruction) -> None:
    from engine.build import sources

    sources.copy_or_add(b, st, ins)


_HANDLERS = {
    "ADD": copy_add,
    "ARG": arg,
    "CMD": cmd,
    "COPY": copy_add,
    "ENTRYPOINT": entrypoint,
    "ENV": env,
    "EXPOSE": expose,
    "HEALTHCHECK": healthcheck,
    "LABEL": label,
    "MAINTAINER": maintainer,
    "ONBUILD": onbuild,
    "RUN": run,
    "SHELL": shell,
    "STOPSIGNAL": stopsignal,
    "USER": user,
    "VOLUME": volume,
    "WORKDIR": workdir,
}
