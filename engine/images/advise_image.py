"""The advisor's findings for a built image, judged from its layers' files,
its config and its history (which entry made which layer)."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from engine.images import advise_rules as R
from engine.images.advise_fs import ImageFiles, installed_packages
from engine.images.advise_rules import Finding
from engine.units import human_size

EXAMPLES = 5  # paths shown per finding
# A full base matters when it costs at least this much over its slim variant.
FULL_BASE_MIN = 1 << 20
_ROOT_USERS = ("", "root", "0")


@dataclass(frozen=True)
class Step:
    """One history entry; ``layer`` is the index of the layer it made, or None."""

    index: int  # position in the config's history, oldest 0
    created_by: str
    layer: int | None


def steps(config: dict, n_layers: int) -> list[Step]:
    out, li = [], 0
    for i, h in enumerate(config.get("history") or []):
        empty = bool(h.get("empty_layer"))
        layer = None if empty or li >= n_layers else li
        li += 0 if layer is None else 1
        out.append(Step(i, str(h.get("created_by", "")), layer))
    for extra in range(li, n_layers):  # layers the history does not describe
        out.append(Step(len(out), "", extra))
    return out


def step_text(s: Step) -> str:
    return f"history #{s.index}: {short_cmd(s.created_by) or '(no instruction recorded)'}"


def short_cmd(created_by: str, width: int = 100) -> str:
    text = " ".join(redact(created_by).replace("/bin/sh -c #(nop) ", "").split())
    text = text.removesuffix(" # buildkit")
    return text if len(text) <= width else text[: width - 1] + "…"


def _n(count: int, what: str = "file") -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def _ex(path: str, size: int, layer: int) -> dict:
    return {"path": path, "size": size, "layer": layer}


def _texts(layers: list[int], st: list[Step]) -> list[str]:
    by_layer = {s.layer: s for s in st if s.layer is not None}
    return [step_text(by_layer[i]) for i in layers if i in by_layer]


def find_all(img: ImageFiles, config: dict, names: list[str]) -> list[Finding]:
    st = steps(config, len(img.layers))
    out: list[Finding] = []
    out += full_base(img, names, st)
    out += package_caches(img, st)
    out += wasted(img, st)
    out += merge_runs(st)
    out += context_junk(img, st)
    out += build_tools(img)
    out += runs_as_root(config)
    out += secrets_in_config(config, st)
    out += secret_files(img, st)
    out += add_not_copy(st)
    return out


def full_base(img: ImageFiles, names: list[str], st: list[Step]) -> list[Finding]:
    """By name (python:3.11 has a -slim variant), and by content: a Debian-family
    base layer still carrying the docs, man pages and locales -slim leaves out
    (which also gives the bytes when the name already told)."""
    by_name = None
    for name in names:
        better = R.slimmer_base(name)
        if better:
            by_name = Finding(
                R.FULL_BASE,
                "warning",
                f"{name} is a full image where a slim one exists",
                f"{better[1]} software without compilers, headers and docs.",
                f"build FROM {better[0]}",
            )
            break
    omitted = []
    if img.layers and "/var/lib/dpkg/status" in img.layers[0].files:
        omitted = [(p, s) for p, (li, s) in img.live.items() if li == 0 and R.slim_omits(p)]
    total = sum(s for _, s in omitted)
    omitted.sort(key=lambda x: -x[1])
    if total < FULL_BASE_MIN:
        return [by_name] if by_name else []
    f = by_name or Finding(
        R.FULL_BASE,
        "warning",
        "the base layer is a full Debian-family rootfs",
        f"layer 0 carries {human_size(total)} of documentation, man pages and locales "
        "that a -slim base (e.g. debian:bookworm-slim) leaves out.",
        "build FROM the -slim variant of the base image",
    )
    f.bytes, f.layers, f.text = total, [0], _texts([0], st)
    f.paths = [_ex(p, s, 0) for p, s in omitted[:EXAMPLES]]
    return [f]


def package_caches(img: ImageFiles, st: list[Step]) -> list[Finding]:
    """Bytes under package-manager cache paths, per layer that wrote them: they
    ship in that layer even when a later one deletes them."""
    hits: dict[tuple[str, int], list[tuple[str, int]]] = defaultdict(list)
    for layer in img.layers:
        for path, size in layer.files.items():
            cache = R.cache_of(path)
            if cache is not None and size:
                hits[(cache.name, layer.index)].append((path, size))
    out = []
    for (name, li), files in sorted(hits.items(), key=lambda kv: kv[0][1]):
        cache = next(c for c in R.CACHES if c.name == name)
        total = sum(s for _, s in files)
        later = [w for w in img.wasted if w.added == li and R.cache_of(w.path) is cache]
        note = " (a later layer deletes them, but they still ship in this one)" if later else ""
        files.sort(key=lambda x: -x[1])
        out.append(
            Finding(
                R.PACKAGE_CACHE,
                "warning",
                f"{name} left in layer {li}",
                f"{_n(len(files))}, {human_size(total)} of {name}{note}.",
                cache.fix,
                bytes=total,
                layers=[li],
                text=_texts([li], st),
                paths=[_ex(p, s, li) for p, s in files[:EXAMPLES]],
            )
        )
    return out


def wasted(img: ImageFiles, st: list[Step]) -> list[Finding]:
    """Files a layer ships that a later layer deletes or rewrites (chmod/chown
    copy a whole file up): one finding per (adding layer, removing layer)."""
    groups: dict[tuple[str, int, int], list[tuple[str, int]]] = defaultdict(list)
    for w in img.wasted:
        if w.size:
            groups[(w.how, w.added, w.removed)].append((w.path, w.size))
    out = []
    for (how, added, removed), files in sorted(groups.items(), key=lambda kv: kv[0][1:]):
        total = sum(s for _, s in files)
        files.sort(key=lambda x: -x[1])
        if how == "deleted":
            fid, title = R.DELETED_LATER, f"files added in layer {added} and deleted in {removed}"
            fix = "create and delete them in the same RUN (or a build stage) so no layer keeps them"
        else:
            fid, title = R.REPLACED_LATER, f"files of layer {added} rewritten in layer {removed}"
            fix = "set content, owner and mode where the files are added (COPY --chown/--chmod)"
        out.append(
            Finding(
                fid,
                "warning",
                title,
                f"{_n(len(files))}, {human_size(total)} still shipped in layer {added}.",
                fix,
                bytes=total,
                layers=[added, removed],
                text=_texts([added, removed], st),
                paths=[_ex(p, s, added) for p, s in files[:EXAMPLES]],
            )
        )
    return out


def is_run(created_by: str) -> bool:
    text = created_by.strip()
    if text.startswith("RUN "):
        return True  # buildkit
    if "#(nop)" in text:
        return False  # classic builder metadata, ADD and COPY
    return text.startswith(("/bin/sh -c ", "|")) or "/bin/sh -c " in text[:40]


def merge_runs(st: list[Step]) -> list[Finding]:
    out, group = [], []
    for s in [*st, None]:
        if s is not None and s.layer is not None and is_run(s.created_by):
            group.append(s)
            continue
        if len(group) >= 2:
            layers = [g.layer for g in group if g.layer is not None]
            out.append(
                Finding(
                    R.MERGE_RUNS,
                    "info",
                    f"{len(group)} consecutive RUN layers",
                    f"layers {layers[0]}–{layers[-1]} each come from their own RUN; files one of "
                    "them makes and a later one removes still ship.",
                    "join them into one RUN with && (and clean up at its end)",
                    layers=layers,
                    text=[step_text(g) for g in group],
                )
            )
        group = []
    return out


def context_junk(img: ImageFiles, st: list[Step]) -> list[Finding]:
    per: dict[tuple[str, int], int] = defaultdict(int)
    for path, (li, size) in img.live.items():
        parts = path.split("/")
        if ".git" in parts[:-1]:  # a repository's history: never needed at run time
            top = "/".join(parts[: parts.index(".git") + 1])
            per[(top, li)] += size
    out = []
    for (top, li), size in sorted(per.items(), key=lambda kv: -kv[1]):
        out.append(
            Finding(
                R.CONTEXT_JUNK,
                "warning",
                f"a .git directory was copied into the image ({top})",
                f"{human_size(size)} of repository history in layer {li}; the build "
                "context had no .dockerignore excluding it.",
                "add .git to .dockerignore",
                bytes=size,
                layers=[li],
                text=_texts([li], st),
                paths=[_ex(top, size, li)],
            )
        )
    return out


def build_tools(img: ImageFiles) -> list[Finding]:
    packages = installed_packages(img)
    tools = {n: s for n, s in packages.items() if R.is_build_package(n)}
    if tools:
        names = sorted(tools, key=lambda n: -tools[n])
        total = sum(tools.values())
        return [
            Finding(
                R.BUILD_TOOLS,
                "warning",
                f"build tools installed in the final image ({len(tools)} packages)",
                "installed: " + ", ".join(names[:12]) + (" …" if len(names) > 12 else "") + ".",
                "compile in a build stage and COPY --from it only what runs, "
                "or purge these packages in the RUN that used them",
                bytes=total,
                paths=[{"path": n, "size": tools[n], "layer": None} for n in names[:EXAMPLES]],
            )
        ]
    found = [p for p in R.BUILD_FILES if p in img.live]
    if not found:
        return []
    tree = img.live_under(R.BUILD_TREES)
    total = sum(img.live[p][1] for p in found) + sum(s for _, s in tree.values())
    return [
        Finding(
            R.BUILD_TOOLS,
            "warning",
            "a compiler toolchain is left in the final image",
            "found " + ", ".join(found) + ".",
            "compile in a build stage and COPY --from it only what runs",
            bytes=total,
            paths=[_ex(p, img.live[p][1], img.live[p][0]) for p in found],
        )
    ]


def runs_as_root(config: dict) -> list[Finding]:
    user = str((config.get("config") or {}).get("User") or "")
    name = user.split(":", 1)[0]
    if name not in _ROOT_USERS:
        return []
    return [
        Finding(
            R.RUNS_AS_ROOT,
            "warning",
            "the image runs as root",
            f"Config.User is {user or 'empty'}: processes run as uid 0 unless `run -u` says otherwise.",
            "add a USER (a non-root user, e.g. `USER 65534` or one made with useradd)",
            text=[f"Config.User: {user or '(not set)'}"],
        )
    ]


_ARG_PREFIX = re.compile(r"^(?:RUN )?\|(\d+) (.*)$", re.S)


def history_args(created_by: str) -> list[tuple[str, str]]:
    """Build args recorded in a RUN's history entry (``|2 A=1 B=2 /bin/sh -c ...``)."""
    m = _ARG_PREFIX.match(created_by.strip())
    if not m:
        return []
    words = m.group(2).split(" ")
    out = []
    for w in words[: int(m.group(1))]:
        k, _, v = w.partition("=")
        out.append((k, v))
    return out


def redact(created_by: str) -> str:
    """The history entry with secret-looking build-arg values masked."""
    for k, v in history_args(created_by):
        if v and R.secret_name(k):
            created_by = created_by.replace(f"{k}={v}", f"{k}={R.masked(v)}", 1)
    return created_by


def secrets_in_config(config: dict, st: list[Step]) -> list[Finding]:
    conf = config.get("config") or {}
    hits: list[tuple[str, str, str]] = []  # (where, name, value)
    for item in conf.get("Env") or []:
        k, _, v = str(item).partition("=")
        if v and R.secret_name(k):
            hits.append(("ENV", k, v))
    for k, v in (conf.get("Labels") or {}).items():
        if v and R.secret_name(k):
            hits.append(("LABEL", k, str(v)))
    texts = []
    for s in st:
        for k, v in history_args(s.created_by):
            if v and R.secret_name(k):
                if ("ARG", k, v) not in hits:  # every RUN after the ARG records it again
                    hits.append(("ARG", k, v))
                texts.append(f"history #{s.index}: build arg {k} recorded")
    if not hits:
        return []
    return [
        Finding(
            R.SECRET_IN_CONFIG,
            "warning",
            f"secret-looking values in the image config ({len(hits)})",
            "; ".join(f"{w} {k}={R.masked(v)}" for w, k, v in hits)
            + ". Anyone who can pull the image can read them (inspect, history).",
            "pass secrets at run time (env, files) or with build secrets "
            "(RUN --mount=type=secret), never ENV/ARG/LABEL",
            text=[f"{w} {k}" for w, k, _ in hits] + texts,
        )
    ]


def secret_files(img: ImageFiles, st: list[Step]) -> list[Finding]:
    """Private keys and credential files, one finding per layer that holds any:
    a file deleted by a later layer is still in this one."""
    gone = {(w.path, w.added) for w in img.wasted}
    out = []
    for layer in img.layers:
        found: list[tuple[str, int, str]] = []
        for path, size in layer.files.items():
            markers = R.key_file_markers(path)
            if not markers or size > (256 << 10):
                continue
            if any(m in layer.read(path, 256 << 10) for m in markers):
                found.append(
                    (path, size, "private key" if R.KEY_MARKER in markers else "credentials")
                )
        if not found:
            continue
        later = [p for p, _, _ in found if (p, layer.index) in gone]
        note = (
            f" ({', '.join(later)} deleted in a later layer, but still in this one)"
            if later
            else ""
        )
        what = (
            found[0][2] + f" {found[0][0]}"
            if len(found) == 1
            else f"{len(found)} key or credential files"
        )
        out.append(
            Finding(
                R.SECRET_IN_FILE,
                "warning",
                f"{what} in layer {layer.index}",
                f"anyone with the image can extract {'it' if len(found) == 1 else 'them'}{note}.",
                "mount secrets at build time (RUN --mount=type=secret) or at run time; "
                "keep them out of the context with .dockerignore",
                layers=[layer.index],
                text=_texts([layer.index], st),
                paths=[_ex(p, n, layer.index) for p, n, _ in found],
            )
        )
    return out


_ADD_RE = re.compile(r"^(?:/bin/sh -c #\(nop\) )?ADD (.*?)(?: # buildkit)?$", re.S)


def add_not_copy(st: list[Step]) -> list[Finding]:
    out = []
    for s in st:
        m = _ADD_RE.match(s.created_by.strip())
        if not m or s.layer in (None, 0):
            continue  # layer 0's ADD is how base images are made (a rootfs tar)
        words = [w for w in m.group(1).split() if not w.startswith("--")]
        if " in " in m.group(1) or len(words) < 2:
            continue  # classic "ADD file:<hash> in /dest": the source name is lost
        sources = words[:-1]
        if any("://" in w or w.lower().endswith(R.TAR_SUFFIXES) for w in sources):
            continue
        out.append(
            Finding(
                R.ADD_NOT_COPY,
                "info",
                "ADD used where COPY suffices",
                f"ADD {' '.join(sources)}: local files that are not tar archives; "
                "ADD's extra magic (URLs, tar extraction) is not wanted here.",
                "use COPY",
                layers=[s.layer] if s.layer is not None else [],
                text=[step_text(s)],
            )
        )
    return out
