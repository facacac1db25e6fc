"""The build: which stages to build, each step through the cache, the final image.

Like Docker's classic builder, every step makes an image (untagged, its
``parent`` the previous step's) and the cache maps the step's key to it, so
an unchanged rebuild walks the cache from image to image and only re-tags
the last one. Only the stages the target needs are built (the target's
FROM chain and every ``COPY --from``); the final image holds only the
target stage's layers. A step that fails leaves the images of the steps
before it (complete, and cached) and nothing else.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from engine.build import steps
from engine.build.cache import BuildCache, step_key
from engine.build.context import (
    BuildContext,
    dir_context,
    ignore_text,
    read_dockerfile,
    rel_in_context,
    tar_context,
)
from engine.build.dockerfile import Dockerfile, Stage, parse, parse_line
from engine.build.dockerignore import Matcher, read_patterns
from engine.build.options import BuildOptions, BuildResult
from engine.build.shell import ShellLex
from engine.errors import InvalidArgument, NotFound
from engine.images.store import HOST_ARCH, ImageRecord, now_rfc3339

if TYPE_CHECKING:
    from engine.api import Engine
    from engine.build.rootfs import ImageFS, Workspace

Output = Callable[[bytes], None]


@dataclass
class StageState:
    """Where a stage is: its current image (``""`` before the first step on
    scratch), the image config being built, and the ARGs declared in it."""

    stage: Stage
    image_id: str
    config: dict
    args: dict[str, str | None] = field(default_factory=dict)
    # The manifest's layer descriptors; None until a step needs them (see
    # Builder.stage_layers): a cache hit moves to the next image without reading
    # its manifest, so a fully cached stage reads no manifest at all.
    layers: list[dict] | None = field(default_factory=list)
    record: ImageRecord | None = None  # the record of ``image_id`` when already read
    cmd_set: bool = False  # CMD given in this stage (ENTRYPOINT then keeps it)
    meta: dict[str, str] = field(default_factory=dict)  # values of the ARGs before FROM
    lex: ShellLex = field(default_factory=ShellLex)

    @property
    def cfg(self) -> dict:
        return self.config.setdefault("config", {})

    def env(self) -> dict[str, str]:
        return dict(e.split("=", 1) if "=" in e else (e, "") for e in self.cfg.get("Env") or [])

    def scope(self) -> dict[str, str]:
        """Variables for substitution: ARGs in scope, overridden by ENV."""
        out = {k: v for k, v in self.args.items() if v is not None}
        out.update(self.env())
        return out

    def run_args(self) -> list[tuple[str, str]]:
        """ARGs with a value that ENV does not shadow: RUN's extra environment."""
        env = self.env()
        return sorted((k, v) for k, v in self.args.items() if v is not None and k not in env)


class Builder:
    def __init__(self, eng: Engine, opts: BuildOptions, out: Output | None = None):
        self.eng = eng
        self.opts = opts
        self._out = out
        self.build_root = Path(eng.config.root) / "build"
        self.cache = BuildCache(self.build_root, eng.images)
        self.warnings: list[str] = []
        self.step = 0
        self.total = 0
        self.cached = 0
        self.stage_images: dict[int, ImageRecord] = {}
        self.used_args: set[str] = set()
        self.ws: Workspace | None = None
        self.ctx: BuildContext | None = None
        self.named: dict[str, BuildContext] = {}
        self.orphans_checked = False
        self.df: Dockerfile | None = None
        self.monitors: list[int] = []  # conmon pids of RUN steps, finishing their exit commands
        self.build_id = ""  # set by the first RUN (see live_id)

    # -- output -------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        if self._out is not None:
            self._out((text + "\n").encode())

    def raw(self, data: bytes) -> None:
        if self._out is not None:
            self._out(data)

    # -- the whole build ----------------------------------------------------------------------
    def build(self, stream: BinaryIO | None = None) -> BuildResult:
        # Crashed builders' leftovers go first (a listing of a usually empty dir);
        # this build's own scratch space is made only when a step needs one
        # (see workspace()): a fully cached rebuild creates and deletes nothing.
        if _has_entries(self.build_root / "tmp"):
            from engine.build.rootfs import Workspace

            Workspace.remove_stale(self.build_root)
        try:
            # Shared hold on the store's GC lock for the whole build: a layer blob
            # written by a step must not be collected before its image is indexed
            # (a prune meanwhile skips its GC after a few seconds; the next one catches up).
            with self.eng.images.writing():
                df = self._load(stream)
                return self._run(df)
        finally:
            for c in [self.ctx, *self.named.values()]:
                if c is not None:
                    c.close()
            if self.ws is not None:
                self.ws.close()
            if self.build_id:
                from engine.build.run import unregister_build

                unregister_build(self.build_id)
            if self.monitors:
                from engine.build.run import wait_monitors

                wait_monitors(self.monitors)

    def _load(self, stream: BinaryIO | None) -> Dockerfile:
        o = self.opts
        text: str | None = None
        df_name = "Dockerfile"
        df_host: Path | None = None
        df_rel: str | None = None
        if o.context == "-":
            if stream is None:
                raise InvalidArgument("context '-' needs the tar (or Dockerfile) on stdin")
            root, text = tar_context(stream, self.workspace().new_dir("context"))
            if text is None:
                df_rel = o.dockerfile or "Dockerfile"
        else:
            root = Path(o.context)
            if not root.is_dir():
                raise NotFound(
                    f"unable to prepare context: path {o.context!r} not found", obj=o.context
                )
            if o.dockerfile == "-":
                if stream is None:
                    raise InvalidArgument("-f - needs the Dockerfile on stdin")
                text = stream.read().decode("utf-8", "replace")
            else:
                df_host = Path(o.dockerfile) if o.dockerfile else root / "Dockerfile"
                if not o.dockerfile and not df_host.exists() and (root / "dockerfile").exists():
                    df_host = root / "dockerfile"
                df_name = str(df_host.name)
                df_rel = rel_in_context(root, df_host)
                if df_rel is None:  # a Dockerfile outside the context: read it as given
                    try:
                        text = df_host.read_text(errors="replace")
                    except FileNotFoundError:
                        raise NotFound(
                            f"unable to prepare context: the Dockerfile {str(df_host)!r} was not found",
                            obj=str(df_host),
                        ) from None
        ctx = dir_context(root)
        self.ctx = ctx
        if text is None:
            assert df_rel is not None
            text = read_dockerfile(ctx, df_rel)
        patterns = read_patterns(ignore_text(ctx.rfd, df_rel, df_host))
        ctx.ignore = Matcher(patterns)  # the Dockerfile was read already, excluded or not
        df = parse(text, df_name)
        self.warnings += [f"{df_name}:{line}: {msg}" for line, msg in df.warnings]
        for name, spec in self.opts.build_contexts.items():
            if not spec.startswith("docker-image://"):
                named = self.named[name] = dir_context(Path(spec))
                # A local named context keeps its own .dockerignore (as in BuildKit).
                named.ignore = Matcher(read_patterns(ignore_text(named.rfd, None, None)))
        return df

    # -- stages ---------------------------------------------------------------------------------
    def _meta_scope(self, df: Dockerfile) -> dict[str, str]:
        """Values of the ARGs before the first FROM (usable in FROM lines)."""
        scope = platform_args()
        lex = ShellLex(df.escape)
        for ins in df.meta_args:
            for word in ins.args:
                name, eq, default = word.partition("=")
                if name in self.opts.build_args:
                    scope[name] = self.opts.build_args[name]
                    self.used_args.add(name)
                elif eq:
                    scope[name] = lex.word(default, scope)
        return scope

    def _needed(self, df: Dockerfile, meta: dict[str, str], target: Stage) -> list[Stage]:
        lex = ShellLex(df.escape)
        need = {target.index}
        for s in reversed(df.stages[: target.index + 1]):
            if s.index not in need:
                continue
            refs = [lex.word(s.base, meta)]
            refs += [
                lex.word(ins.flag("from") or "", meta)
                for ins in s.instructions
                if ins.keyword in ("COPY", "ADD") and ins.flag("from")
            ]
            for r in refs:
                dep = self.stage_ref(r, before=s.index)
                if dep is not None:
                    need.add(dep.index)
        return [s for s in df.stages if s.index in need]

    def stage_ref(self, ref: str, before: int) -> Stage | None:
        """The earlier stage ``ref`` names (by name or index), or None (an image)."""
        df = self.df
        assert df is not None
        if ref in self.opts.build_contexts:
            return None
        for s in df.stages[:before]:
            if s.name and s.name == ref.lower():
                return s
        if ref.isdigit():
            if int(ref) >= before:
                raise InvalidArgument(f"invalid stage reference {ref}: only earlier stages count")
            return df.stages[int(ref)]
        return None

    def _run(self, df: Dockerfile) -> BuildResult:
        o = self.opts
        self.df = df
        from engine.images.reference import parse_reference

        for t in o.tags:
            parse_reference(t)  # before any step: nothing is built for a name we cannot tag
        if o.network not in ("", "default", "none", "host"):
            self.eng.get_network(o.network)  # a missing network fails before any step
        meta = self._meta_scope(df)
        if o.target:
            target = df.stage(o.target)
            if target is None or (target.name == "" and not o.target.isdigit()):
                raise NotFound(f"target stage {o.target!r} could not be found", obj=o.target)
        else:
            target = df.stages[-1]
        stages = self._needed(df, meta, target)
        self.total = sum(1 + len(s.instructions) for s in stages) + (1 if o.labels else 0)
        final: ImageRecord | None = None
        state: StageState | None = None
        for s in stages:
            state = self._stage(df, s, meta)
            final = self._finish_stage(state)
            self.stage_images[s.index] = final
        assert state is not None
        if o.labels:
            text = "LABEL " + " ".join(
                f"{json.dumps(k)}={json.dumps(v)}" for k, v in sorted(o.labels.items())
            )
            self.begin(text)
            steps.label_flag(self, state, o.labels, text)
            final = self._finish_stage(state)
        assert final is not None
        unused = sorted(set(o.build_args) - self.used_args - set(platform_args()))
        if unused:
            self.warnings.append(f"One or more build-args {unused} were not consumed")
            self.say(f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed")
        for t in o.tags:
            # A cached rebuild usually finds its tags in place: no index rewrite then.
            if parse_reference(t).familiar() not in final.repo_tags:
                self.eng.images.tag(final.id, t)
        self.say(f"Successfully built {final.short_id}")
        for t in o.tags:
            self.say(f"Successfully tagged {parse_reference(t).familiar()}")  # as Docker names it
        return BuildResult(final.id, list(o.tags), self.step, self.cached, self.warnings)

    def begin(self, text: str) -> None:
        self.step += 1
        self.say(f"Step {self.step}/{self.total} : {text}")

    def _stage(self, df: Dockerfile, s: Stage, meta: dict[str, str]) -> StageState:
        lex = ShellLex(df.escape)
        used: set[str] = set()
        base = lex.word(s.base, meta, used)
        self.used_args |= used & set(self.opts.build_args)
        self.begin(s.from_instr.text)
        st = self._from(df, s, base)
        st.meta, st.lex = meta, lex
        triggers = list(st.cfg.get("OnBuild") or [])
        if triggers:
            st.cfg["OnBuild"] = None
            self.say(f"# Executing {len(triggers)} build trigger{'s' if len(triggers) > 1 else ''}")
            for text in triggers:
                ins = parse_line(text, s.from_instr.line, escape=df.escape, name="ONBUILD")
                steps.dispatch(self, st, ins)
        for ins in s.instructions:
            self.begin(ins.text)
            steps.dispatch(self, st, ins)
        return st

    def _from(self, df: Dockerfile, s: Stage, base: str) -> StageState:
        if base.lower() == "scratch":
            self.say(" ---> (scratch)")
            cfg = {
                "architecture": HOST_ARCH,
                "os": "linux",
                "config": {"Env": [steps.DEFAULT_PATH]},
                "history": [],
            }
            return StageState(s, "", cfg, layers=[])
        ref = self.stage_ref(base, before=s.index)
        if ref is not None:
            rec = self.stage_images[ref.index]
        else:
            rec = self.resolve_image(base, "FROM")
        self.say(f" ---> {rec.short_id}")
        return self.state_from_image(s, rec)

    def resolve_image(self, ref: str, what: str) -> ImageRecord:
        spec = self.opts.build_contexts.get(ref)
        if spec is not None:
            if not spec.startswith("docker-image://"):
                raise InvalidArgument(
                    f"{what} {ref}: build context {ref!r} is a directory, not an image", obj=ref
                )
            ref = spec[len("docker-image://") :]
        try:
            return self.eng.images.get(ref)
        except NotFound:
            raise NotFound(
                f"{what} {ref}: image {ref!r} not found locally (berth build uses local images"
                f" only: pull, load or build it first)",
                obj=ref,
            ) from None

    def state_from_image(self, s: Stage, rec: ImageRecord) -> StageState:
        # A copy: the record may be a stage's image that later stages start from too.
        return StageState(s, rec.id, copy.deepcopy(rec.config), layers=None, record=rec)

    def _manifest_layers(self, rec: ImageRecord) -> list[dict]:
        manifest = json.loads(self.eng.images.blobs.read(rec.manifest_digest))
        layers = [dict(d) for d in manifest.get("layers") or []]
        if any("docker" in d.get("mediaType", "") for d in layers):
            # A loaded Docker image: our OCI manifest names its layers the OCI way (as commit does).
            from engine.containers.commit import _OCI_LAYER_TYPES

            for d in layers:
                d["mediaType"] = _OCI_LAYER_TYPES.get(d.get("mediaType", ""), d.get("mediaType"))
        return layers

    def _finish_stage(self, st: StageState) -> ImageRecord:
        if not st.image_id:
            # FROM scratch and no step made an image: an empty image, as Docker makes.
            return self.commit(st, None, "", record_history=False)
        if st.record is not None and st.record.id == st.image_id:
            return st.record  # read by this step's cache lookup or commit just now
        return self.eng.images.get_by_id(st.image_id)

    def stage_layers(self, st: StageState) -> list[dict]:
        """The stage's layer descriptors, read from its image's manifest when a
        cache hit left them unread."""
        if st.layers is None:
            rec = st.record
            if rec is None or rec.id != st.image_id:
                rec = self.eng.images.get_by_id(st.image_id)
            st.layers = self._manifest_layers(rec)
        return st.layers

    # -- steps through the cache ---------------------------------------------------------------
    def cached_step(self, st: StageState, key_text: str, extra: object = None) -> tuple[str, bool]:
        """(the step's key, whether the cache had it: then ``st`` moved to that image)."""
        key = step_key(st.image_id, key_text, extra)
        if self.opts.no_cache:
            return key, False
        rec = self.cache.get(key)
        if rec is None:
            return key, False
        # The record was read just now for this lookup and is this step's alone:
        # its config is taken as it is (no copy), its manifest only if needed.
        st.image_id, st.config, st.layers, st.record = rec.id, rec.config, None, rec
        self.cached += 1
        self.say(" ---> Using cache")
        self.say(f" ---> {rec.short_id}")
        return key, True

    def commit(
        self,
        st: StageState,
        layer: tuple[str, int] | None,
        created_by: str,
        *,
        key: str = "",
        record_history: bool = True,
    ) -> ImageRecord:
        """Register the step's image (the parent's layers + ``layer``) and cache it."""
        from engine.images.content import Descriptor
        from engine.images.store import MT_OCI_CONFIG, MT_OCI_LAYER, MT_OCI_MANIFEST

        store = self.eng.images
        cfg = st.config
        created = now_rfc3339()
        cfg["created"] = created
        cfg.setdefault("architecture", HOST_ARCH)
        cfg.setdefault("os", "linux")
        diff_ids = list((cfg.get("rootfs") or {}).get("diff_ids") or [])
        layers = list(self.stage_layers(st))
        if layer is not None:
            diff_ids.append(layer[0])
            layers.append(Descriptor(MT_OCI_LAYER, layer[0], layer[1]).to_json())
        cfg["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
        if record_history:
            entry: dict = {"created": created, "created_by": created_by, "comment": "berth build"}
            if layer is None:
                entry["empty_layer"] = True
            cfg["history"] = [*(cfg.get("history") or []), entry]
        config_bytes = json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
        with store.writing():
            config_digest = store.blobs.put_bytes(config_bytes)
            manifest = {
                "schemaVersion": 2,
                "mediaType": MT_OCI_MANIFEST,
                "config": Descriptor(MT_OCI_CONFIG, config_digest, len(config_bytes)).to_json(),
                "layers": layers,
            }
            rec = store.register_manifest(
                json.dumps(manifest, separators=(",", ":")).encode(), [], parent=st.image_id
            )
        if key:
            self.cache.put(key, rec.id)
        # The registered record was read back fresh from the store: its config is
        # the one just written, its layers the ones just listed.
        st.image_id, st.config, st.layers, st.record = rec.id, rec.config, layers, rec
        self.say(f" ---> {rec.short_id}")
        return rec

    def workspace(self) -> Workspace:
        """This build's scratch space, made on first use."""
        if self.ws is None:
            from engine.build.rootfs import Workspace

            self.ws = Workspace(self.build_root)
        return self.ws

    def image_fs(self, st: StageState) -> ImageFS:
        """The stage's current filesystem, mounted writable (a new upper dir)."""
        from engine.build.rootfs import ImageFS

        dirs = self.eng.images.layer_dirs(st.image_id) if st.image_id else []
        return ImageFS(self.workspace(), dirs)

    def live_id(self) -> str:
        """This build's id on its RUN containers, live in this process until the build
        ends (another build's orphan sweep then leaves them alone)."""
        if not self.build_id:
            from engine.build.run import register_build

            self.build_id = register_build()
        return self.build_id

    def reap_orphans_once(self) -> None:
        if not self.orphans_checked:
            self.orphans_checked = True
            from engine.build.run import remove_orphans

            remove_orphans(self.eng)


def _has_entries(d: Path) -> bool:
    try:
        with os.scandir(d) as it:
            return any(True for _ in it)
    except FileNotFoundError:
        return False


def platform_args() -> dict[str, str]:
    """BuildKit's automatic platform ARGs (usable once declared, and in FROM)."""
    plat = f"linux/{HOST_ARCH}"
    return {
        "TARGETPLATFORM": plat,
        "TARGETOS": "linux",
        "TARGETARCH": HOST_ARCH,
        "TARGETVARIANT": "",
        "BUILDPLATFORM": plat,
        "BUILDOS": "linux",
        "BUILDARCH": HOST_ARCH,
        "BUILDVARIANT": "",
    }


def build(
    eng: Engine, opts: BuildOptions, stream: BinaryIO | None = None, out: Output | None = None
) -> BuildResult:
    started = time.monotonic()
    result = Builder(eng, opts, out).build(stream)
    eng.emit("image", "build", result.image_id, name=(result.tags or [result.image_id])[0],
             seconds=f"{time.monotonic() - started:.3f}", pid=str(os.getpid()))  # fmt: skip
    return result
