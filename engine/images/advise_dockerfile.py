"""The advisor's findings for a Dockerfile and its build context, from the
text alone (nothing is built): each finding names the lines it concerns, and
the bytes where the context tells them (what a COPY/ADD sends).

Only the stages that end in the image count for size: the target (last)
stage and the stages it is built ``FROM``; a build stage's compilers and
caches never ship. Secrets and ``ADD`` are judged in every stage (they sit
in the Dockerfile, and build-stage history leaks too).
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidArgument, NotFound
from engine.images import advise_commands as C
from engine.images import advise_rules as R
from engine.images.advise_context import Context, key_files, read_context
from engine.images.advise_rules import Finding
from engine.units import human_size

if TYPE_CHECKING:
    from engine.build.dockerfile import Dockerfile, Instruction, Stage
    from engine.images.store import ImageStore

LARGE_CONTEXT = 10 * 1024 * 1024  # a context this big without .dockerignore is worth a look
_LAYER_MAKERS = ("RUN", "COPY", "ADD")
_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


def advise_dockerfile(
    path: str, context: str | None = None, top: int = 10, store: ImageStore | None = None
) -> dict[str, Any]:
    from engine.build.dockerfile import parse

    file = Path(path)
    if file.is_dir():
        file = file / "Dockerfile"
    if not file.is_file():
        raise NotFound(f"no Dockerfile at {path}", obj=path)
    ctx_dir = Path(context) if context else file.parent
    if not ctx_dir.is_dir():
        raise InvalidArgument(f"build context {ctx_dir} is not a directory", obj=str(ctx_dir))
    df = parse(file.read_text(errors="replace"), name=str(file))
    ctx = read_context(ctx_dir, file)
    a = _Analysis(df, ctx, store)
    findings = a.findings()
    from engine.images.advise import _ordered, savings

    copied = a.copied_files()
    largest = sorted(copied.items(), key=lambda kv: -kv[1][0])[:top]
    return {
        "kind": "dockerfile",
        "target": str(file),
        "context": {
            "path": str(ctx_dir),
            "size": ctx.size,
            "files": len(ctx.files),
            "ignored_bytes": ctx.ignored_bytes,
            "dockerignore": str(ctx.dockerignore) if ctx.dockerignore else None,
            "truncated": ctx.truncated,
        },
        "stages": [
            {
                "index": s.index,
                "name": s.name,
                "base": s.base,
                "image": a.word(s.base),
                "line": s.from_instr.line,
            }
            for s in df.stages  # fmt: skip
        ],
        "size": sum(r["size"] or 0 for r in a.rows),
        "layers": a.rows,
        "largest_files": [{"path": p, "size": s, "line": ln} for p, (s, ln) in largest if s],
        "findings": [f.to_dict() for f in _ordered(findings)],
        "savings": savings(findings),
    }


def _text(ins: Instruction) -> str:
    return " ".join(ins.text.split())


def _cmd(ins: Instruction) -> str:
    return " ".join(ins.args)


class _Analysis:
    def __init__(self, df: Dockerfile, ctx: Context, store: ImageStore | None):
        from engine.build.shell import ShellLex

        self.df, self.ctx, self.store = df, ctx, store
        self.lex = ShellLex(df.escape)
        self.meta: dict[str, str] = {}
        for ins in df.meta_args:
            self._arg(ins, self.meta, {})
        # The variables in force at each instruction (ARG and ENV of its stage),
        # so `COPY app $APP_HOME/` lands where the build would put it.
        self.env_at: dict[int, dict[str, str]] = {}
        for stage in df.stages:
            env: dict[str, str] = {}
            for ins in stage.instructions:
                self.env_at[id(ins)] = dict(env)
                if ins.keyword == "ARG":
                    self._arg(ins, env, self.meta)
                elif ins.keyword == "ENV":
                    for k, v in ins.pairs:
                        env[k] = self.word(v, env)
        self.chain = self._chain()
        self.rows = self.layer_rows()

    def _arg(self, ins: Instruction, env: dict[str, str], outer: dict[str, str]) -> None:
        for a in ins.args:
            k, eq, v = a.partition("=")
            if eq:
                env[k] = self.word(v, env)
            elif k in outer:
                env[k] = outer[k]  # a global ARG redeclared in the stage

    def word(self, text: str, env: dict[str, str] | None = None) -> str:
        """``text`` with its variables substituted; left as written when one of
        them is unknown here (set by the base image or --build-arg), rather than
        guessed empty."""
        env = self.meta if env is None else env
        if any(name not in env for name in _VAR.findall(text)):
            return text
        try:
            return self.lex.word(text, env)
        except InvalidArgument:
            return text

    def iword(self, ins: Instruction, text: str) -> str:
        """A word of ``ins`` expanded with the variables in force there."""
        return self.word(text, self.env_at.get(id(ins), {}))

    def _chain(self) -> list[Stage]:
        """The target stage and the stages it is built FROM, root first."""
        chain = [self.df.stages[-1]]
        while True:
            base = self.word(chain[0].base).lower()
            parent = next((s for s in self.df.stages[: chain[0].index] if s.name == base), None)
            if parent is None or parent in chain:
                return chain
            chain.insert(0, parent)

    def shipped(self) -> list[Instruction]:
        return [i for s in self.chain for i in s.instructions]

    # -- what COPY/ADD bring from the context ------------------------------------------------
    def from_context(self, ins: Instruction) -> bool:
        return ins.keyword in ("COPY", "ADD") and ins.flag("from") is None

    def sources(self, ins: Instruction) -> list[str]:
        return [self.iword(ins, a) for a in ins.args[:-1]]

    def copies(self, ins: Instruction, workdir: str) -> dict[str, tuple[str, int]]:
        """image path -> (context path, bytes) for a COPY/ADD from the context."""
        dest = self.iword(ins, ins.args[-1])
        if not dest.startswith("/"):
            dest = posixpath.join(workdir, dest)
        srcs = self.sources(ins)
        out: dict[str, tuple[str, int]] = {}
        for src in srcs:
            if "://" in src:
                continue
            picked = self.ctx.select(src)
            norm = posixpath.normpath(src.lstrip("/") or ".")
            for rel, size in picked.items():
                if norm != "." and rel == norm and not any(c in src for c in "*?["):
                    into_dir = dest.endswith("/") or len(srcs) > 1
                    target = posixpath.join(dest, posixpath.basename(rel)) if into_dir else dest
                elif norm == "." or any(c in src for c in "*?["):
                    target = posixpath.join(dest, rel)
                else:
                    target = posixpath.join(dest, posixpath.relpath(rel, norm))
                out[posixpath.normpath(target)] = (rel, size)
        return out

    def walk(self):
        """(instruction, WORKDIR in force) for the shipped stages, in order."""
        workdir = "/"
        for ins in self.shipped():
            if ins.keyword == "WORKDIR":
                w = self.iword(ins, ins.args[0])
                workdir = posixpath.normpath(posixpath.join(workdir, w))
            yield ins, workdir

    def copied_files(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for ins, wd in self.walk():
            if self.from_context(ins):
                for target, (_rel, size) in self.copies(ins, wd).items():
                    out[target] = (size, ins.line)
        return out

    def layer_rows(self) -> list[dict[str, Any]]:
        rows = []
        base = self.word(self.chain[0].base)
        if self.store is not None and base.lower() != "scratch":
            try:
                rec = self.store.get(base)
                rows.append({"line": self.chain[0].from_instr.line,
                             "instruction": f"FROM {base}", "size": rec.size})  # fmt: skip
            except (NotFound, InvalidArgument):
                pass
        for ins, wd in self.walk():
            if ins.keyword in _LAYER_MAKERS:
                size = None
                if self.from_context(ins):
                    size = sum(s for _, s in self.copies(ins, wd).values())
                rows.append({"line": ins.line, "instruction": _text(ins), "size": size})
        return rows

    # -- findings -----------------------------------------------------------------------------
    def findings(self) -> list[Finding]:
        out: list[Finding] = []
        for rule in (
            self.full_base,
            self.caches,
            self.add_then_delete,
            self.merge_runs,
            self.no_dockerignore,
            self.build_tools,
            self.runs_as_root,
            self.secrets,
            self.secret_files,
            self.add_not_copy,
        ):
            out += rule()
        return out

    def _f(self, fid: str, sev: str, title: str, detail: str, fix: str, ins: list, **kw) -> Finding:
        return Finding(fid, sev, title, detail, fix, lines=[i.line for i in ins],
                       text=[_text(i) for i in ins], **kw)  # fmt: skip

    def full_base(self) -> list[Finding]:
        """By the base's name; and, when the base image is in the local store, by
        what its layers hold (docs a -slim base leaves out, installed compilers),
        with the bytes — they ship in every image built FROM it."""
        root = self.chain[0]
        base = self.word(root.base)
        better = R.slimmer_base(base)
        out = []
        if better:
            out.append(self._f(R.FULL_BASE, "warning", f"{base} is a full image where a slim one exists",
                               f"{better[1]} software without compilers, headers and docs.",
                               f"FROM {better[0]}", [root.from_instr]))  # fmt: skip
        for f in self._base_content():
            if f.id == R.FULL_BASE and out:
                out[0].bytes, out[0].paths = f.bytes, f.paths  # the name said so; now the bytes
                continue
            f.title = f"base image {base}: {f.title}"
            f.lines, f.text, f.layers = [root.from_instr.line], [_text(root.from_instr)], []
            out.append(f)
        return out

    def _base_content(self) -> list[Finding]:
        from engine.images import advise_image as AI
        from engine.images.advise_fs import scan_image

        base = self.word(self.chain[0].base)
        if self.store is None or base.lower() == "scratch":
            return []
        try:
            rec = self.store.get(base)
        except (NotFound, InvalidArgument):
            return []
        img = scan_image(self.store.layer_dirs(rec))
        steps = AI.steps(rec.config, len(img.layers))
        return AI.full_base(img, [], steps) + AI.build_tools(img)

    def _env_text(self, upto: Instruction) -> str:
        text = []
        for ins in self.shipped():
            if ins is upto:
                break
            if ins.keyword in ("ENV", "ARG"):
                text.append(_text(ins))
        return " ".join(text)

    def caches(self) -> list[Finding]:
        out = []
        for ins in self.shipped():
            if ins.keyword != "RUN" or "type=cache" in (ins.flag("mount") or ""):
                continue
            cmd = _cmd(ins)
            for c in R.CACHES:
                if c.name == "apt archives":
                    continue  # Debian's official images clean these themselves (docker-clean)
                if not any(w in cmd for w in c.fills):
                    continue
                if any(w in cmd or w in self._env_text(ins) for w in c.cleans):
                    continue
                out.append(self._f(R.PACKAGE_CACHE, "warning", f"{c.name} left in this RUN's layer",
                                   f"the RUN fills the {c.name} and does not clean it in the "
                                   "same step; a later RUN cannot take the bytes back.",
                                   c.fix, [ins]))  # fmt: skip
        return out

    def add_then_delete(self) -> list[Finding]:
        out = []
        earlier: list[tuple[Instruction, str]] = []
        for ins, wd in self.walk():
            if ins.keyword == "RUN":
                for target in C.rm_targets(_cmd(ins), wd, lambda w, i=ins: self.iword(i, w)):
                    hit = self._made_earlier(target, earlier)
                    if hit is None:
                        continue
                    src, size, example = hit
                    what = f" ({human_size(size)})" if size else ""
                    out.append(self._f(R.DELETED_LATER, "warning",
                                       f"{target} added in one step and deleted in a later one",
                                       f"what line {src.line} made{what} stays in its layer; "
                                       f"deleting it at line {ins.line} only hides it.",
                                       "create, use and delete them in one RUN (or in a build "
                                       "stage, copying out only the result)",
                                       [src, ins], bytes=size or None, paths=example))  # fmt: skip
            if ins.keyword in _LAYER_MAKERS:
                earlier.append((ins, wd))
        return out

    def _made_earlier(self, target: str, earlier: list[tuple[Instruction, str]]):
        """The latest earlier step that made ``target``: a COPY/ADD whose files it
        covers (with their bytes), else a RUN that writes it or fills that cache."""
        for ins, wd in reversed(earlier):
            if self.from_context(ins):
                hit = {p: v for p, v in self.copies(ins, wd).items() if C.covers(target, p)}
                if hit:
                    size = sum(s for _, s in hit.values())
                    top = sorted(hit.items(), key=lambda kv: -kv[1][1])[:5]
                    return (
                        ins,
                        size,
                        [{"path": p, "size": s, "line": ins.line} for p, (_, s) in top],
                    )
        literal = target.split("*", 1)[0].rstrip("/")
        writes = re.compile(C.WRITES + re.escape(literal) + r"(?:[/\s'\"]|$)")
        for ins, _wd in reversed(earlier):
            if ins.keyword != "RUN":
                continue
            cmd = _cmd(ins)
            if len(literal) > 4 and literal not in C.SHARED_DIRS and writes.search(cmd):
                return ins, 0, []
            for c in R.CACHES:
                if any(w in cmd for w in c.fills) and any(
                    p.startswith(literal) or literal.startswith(p) for p in c.patterns
                ):
                    return ins, 0, []
        return None

    def merge_runs(self) -> list[Finding]:
        out = []
        for stage in self.chain:
            group: list[Instruction] = []
            for ins in [*stage.instructions, None]:
                if ins is not None and ins.keyword == "RUN":
                    group.append(ins)
                    continue
                if len(group) >= 2:
                    out.append(self._f(R.MERGE_RUNS, "info", f"{len(group)} consecutive RUN instructions",
                                       "each RUN makes its own layer; files one makes and a "
                                       "later one removes still ship.",
                                       "join them into one RUN with && (and clean up at its end)",
                                       group))  # fmt: skip
                group = []
        return out

    def no_dockerignore(self) -> list[Finding]:
        ctx = self.ctx
        if ctx.dockerignore is not None or ctx.size < LARGE_CONTEXT:
            return []
        junk = ctx.junk()
        whole = [i for i, _ in self.walk() if self.from_context(i) and
                 any(posixpath.normpath(s.lstrip("/") or ".") == "." for s in self.sources(i))]  # fmt: skip
        detail = f"the context ({ctx.path}) is {human_size(ctx.size)} in {len(ctx.files)} files"
        if junk:
            detail += "; of that " + ", ".join(f"{k} {human_size(v)}" for k, v in
                                               sorted(junk.items(), key=lambda kv: -kv[1]))  # fmt: skip
        if whole:
            detail += "; `COPY .` puts all of it in the image"
        return [self._f(R.NO_DOCKERIGNORE, "warning", "no .dockerignore and a large build context",
                        detail + ".", "add a .dockerignore (e.g. .git, node_modules, build output)",
                        whole, bytes=sum(junk.values()) or None,
                        paths=[{"path": k, "size": v, "line": None} for k, v in junk.items()])]  # fmt: skip

    def build_tools(self) -> list[Finding]:
        runs = [i for i in self.shipped() if i.keyword == "RUN"]
        purged: set[str] = set()
        for ins in runs:
            for seg in C.SEP.split(_cmd(ins)):
                if C.PURGE.search(seg):
                    purged |= {w.split("=")[0] for w in seg.split()[2:]}
        out = []
        single = len(self.df.stages) == 1
        for ins in runs:
            tools = []
            for seg in C.SEP.split(_cmd(ins)):
                m = C.INSTALL.search(seg)
                if not m:
                    continue
                words = seg[m.end() :].split()
                virtual = C.virtual(words)
                if virtual and virtual in purged:
                    continue
                tools += [w for w in C.packages(words) if R.is_build_package(w) and w not in purged]
            if tools:
                where = "a single-stage image" if single else "the final stage"
                out.append(self._f(R.BUILD_TOOLS, "warning", f"build tools installed in {where}",
                                   "installs " + ", ".join(dict.fromkeys(tools)) + " and never "
                                   "removes them; they ship in the image.",
                                   "compile in a build stage and COPY --from it only what runs",
                                   [ins]))  # fmt: skip
        return out

    def runs_as_root(self) -> list[Finding]:
        users = [i for i in self.shipped() if i.keyword == "USER"]
        if users:
            user = self.iword(users[-1], users[-1].args[0])
            if user.split(":", 1)[0] not in ("root", "0", ""):
                return []
            return [self._f(R.RUNS_AS_ROOT, "warning", "the image runs as root",
                            f"the last USER is {user}.", "switch to a non-root USER at the end",
                            [users[-1]])]  # fmt: skip
        if self._base_user():
            return []
        final = self.df.stages[-1].from_instr
        return [self._f(R.RUNS_AS_ROOT, "warning", "the image runs as root",
                        "no USER instruction: processes run as uid 0 (unless the base image "
                        "sets a USER).", "add `USER <non-root user>` to the final stage",
                        [final])]  # fmt: skip

    def _base_user(self) -> str:
        if self.store is None:
            return ""
        try:
            rec = self.store.get(self.word(self.chain[0].base))
        except (NotFound, InvalidArgument):
            return ""
        user = str((rec.config.get("config") or {}).get("User") or "")
        return "" if user.split(":", 1)[0] in ("root", "0") else user

    def secrets(self) -> list[Finding]:
        out = []
        for ins in self.df.instructions:
            found: list[tuple[str, str]] = []  # (name, value as written)
            if ins.keyword == "ARG":
                found = [(a.split("=", 1)[0], a.partition("=")[2]) for a in ins.args]
                found = [(k, v) for k, v in found if R.secret_name(k)]
            elif ins.keyword in ("ENV", "LABEL"):
                found = [(k, v) for k, v in ins.pairs if R.secret_name(self.iword(ins, k))
                         and self.iword(ins, v)]  # fmt: skip
            for name, value in found:
                f = self._f(R.SECRET_IN_CONFIG, "warning",
                            f"secret-looking {ins.keyword} {self.iword(ins, name)}",
                            f"{ins.keyword} {name}" + (f"={R.masked(self.iword(ins, value))}" if value
                                                       else " (no default)")
                            + ": ENV and LABEL values are in the image config, ARG values in "
                            "its history, for anyone who can pull it.",
                            "pass secrets with RUN --mount=type=secret or at run time", [ins])  # fmt: skip
                # Never repeat the value: the report may be shown to others (dashboard).
                f.text = [C.hide(t, [v for _, v in found]) for t in f.text]
                out.append(f)
        return out

    def secret_files(self) -> list[Finding]:
        out = []
        for ins, wd in self.walk():
            if not self.from_context(ins):
                continue
            picked = {rel: size for _t, (rel, size) in self.copies(ins, wd).items()}
            for rel, size, kind in key_files(self.ctx, picked):
                out.append(self._f(R.SECRET_IN_FILE, "warning", f"{kind} {rel} copied into the image",
                                   "anyone with the image can extract it, even if a later "
                                   "step deletes it.",
                                   "keep it out of the context (.dockerignore) and mount it "
                                   "with RUN --mount=type=secret", [ins],
                                   paths=[{"path": rel, "size": size, "line": ins.line}]))  # fmt: skip
        return out

    def add_not_copy(self) -> list[Finding]:
        out = []
        for ins in self.df.instructions:
            if ins.keyword != "ADD" or ins.flag("checksum") is not None:
                continue
            srcs = self.sources(ins)
            if any("://" in s or s.startswith("git@") for s in srcs):
                continue
            if any(s.lower().endswith(R.TAR_SUFFIXES) for s in srcs):
                continue
            out.append(self._f(R.ADD_NOT_COPY, "info", "ADD used where COPY suffices",
                               "the sources are local files, not tar archives or URLs: ADD's "
                               "extra behaviour is not needed and can surprise.",
                               "use COPY", [ins]))  # fmt: skip
        return out
