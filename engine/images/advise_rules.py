"""What the image advisor knows: its finding shape and the tables both sides
(an image's layers, a Dockerfile's text) judge by — slim variants of base
images, package-manager caches, build tools, secret-looking names, key files."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import asdict, dataclass, field
from typing import Any

# Finding IDs, stable for programs (the dashboard keys its help text on these).
FULL_BASE = "full-base"
PACKAGE_CACHE = "package-cache"
DELETED_LATER = "deleted-in-later-layer"
REPLACED_LATER = "replaced-in-later-layer"
MERGE_RUNS = "merge-runs"
NO_DOCKERIGNORE = "no-dockerignore"
CONTEXT_JUNK = "context-junk-in-image"
BUILD_TOOLS = "build-tools"
RUNS_AS_ROOT = "runs-as-root"
SECRET_IN_CONFIG = "secret-in-config"
SECRET_IN_FILE = "secret-in-file"
ADD_NOT_COPY = "add-instead-of-copy"


@dataclass
class Finding:
    id: str
    severity: str  # "warning" (costs size or safety for sure) | "info" (worth a look)
    title: str
    detail: str
    fix: str
    bytes: int | None = None  # what the fix would save, when it can be computed
    lines: list[int] = field(default_factory=list)  # Dockerfile line numbers (1-based)
    text: list[str] = field(default_factory=list)  # those lines / history entries, verbatim
    layers: list[int] = field(default_factory=list)  # layer indexes, lowest 0
    paths: list[dict[str, Any]] = field(default_factory=list)  # examples: path, size, layer

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- base images ----------------------------------------------------------------------------

# Official images with a "-slim" variant of every tag: same software, without
# compilers, headers, docs and the rest of buildpack-deps.
SLIM_VARIANTS = ("debian", "python", "node", "ruby", "perl", "openjdk", "rust", "php")
# Toolchain images: build in a stage FROM them, run from something small.
BUILD_BASES = {
    "buildpack-deps": "debian:<codename>-slim",
    "golang": "a scratch, distroless or alpine final stage",
    "gcc": "debian:<codename>-slim",
    "maven": "eclipse-temurin:<version>-jre",
    "gradle": "eclipse-temurin:<version>-jre",
}
ALREADY_SMALL = ("slim", "alpine", "minimal", "distroless", "busybox", "scratch", "micro")


def slimmer_base(ref: str) -> tuple[str, str] | None:
    """``python:3.11`` -> ("python:3.11-slim", why); None when the base is already small
    or we know no smaller variant. ``ref`` is an image reference as written."""
    text = ref.strip()
    if not text or text.lower() == "scratch" or "$" in text:
        return None
    name, _, digest = text.partition("@")
    repo, tag = name, "latest"
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = name.rsplit(":", 1)
    short = repo.rsplit("/", 1)[-1].lower()
    if "/" in repo and not repo.startswith(("library/", "docker.io/library/")):
        return None  # not an official image: we do not know its variants
    if any(word in tag.lower() for word in ALREADY_SMALL) or any(w in short for w in ALREADY_SMALL):
        return None
    if short in SLIM_VARIANTS:
        slim_tag = "slim" if tag == "latest" else f"{tag}-slim"
        return f"{repo}:{slim_tag}", f"{short}:{tag} is the full variant; {slim_tag} has the same"
    if short in BUILD_BASES:
        return BUILD_BASES[short], f"{short} is a build-toolchain image"
    return None


# Paths a Debian "-slim" rootfs leaves out (docs except copyright, man, info, locales).
SLIM_OMITS = (
    "/usr/share/doc",
    "/usr/share/man",
    "/usr/share/info",
    "/usr/share/locale",
    "/usr/share/groff",
    "/usr/share/lintian",
    "/usr/share/linda",
)


def slim_omits(path: str) -> bool:
    if path.startswith("/usr/share/doc/") and path.endswith("/copyright"):
        return False
    return path.startswith(tuple(p + "/" for p in SLIM_OMITS))


# -- package-manager caches ---------------------------------------------------------------


@dataclass(frozen=True)
class Cache:
    name: str
    patterns: tuple[str, ...]  # path prefixes, shell wildcards per component
    fix: str
    # Words in a RUN command that fill this cache, and words that show it was cleaned.
    fills: tuple[str, ...]
    cleans: tuple[str, ...]


CACHES = (
    Cache(
        "apt lists",
        ("/var/lib/apt/lists",),
        "end the RUN that runs apt-get update with `&& rm -rf /var/lib/apt/lists/*`",
        ("apt-get update", "apt update"),
        ("/var/lib/apt/lists",),
    ),
    Cache(
        "apt archives",
        ("/var/cache/apt",),
        "run `apt-get clean` (or rm -rf /var/cache/apt/*) in the same RUN as apt-get install",
        ("apt-get install", "apt install", "apt-get upgrade", "apt-get dist-upgrade"),
        ("apt-get clean", "/var/cache/apt", "apt clean"),
    ),
    Cache(
        "pip cache",
        ("/root/.cache/pip", "/home/*/.cache/pip"),
        "use `pip install --no-cache-dir` (or ENV PIP_NO_CACHE_DIR=1)",
        ("pip install", "pip3 install", "python -m pip install", "python3 -m pip install"),
        ("--no-cache-dir", "pip cache purge", ".cache/pip", "PIP_NO_CACHE_DIR"),
    ),
    Cache(
        "apk cache",
        ("/var/cache/apk", "/etc/apk/cache"),
        "use `apk add --no-cache`",
        ("apk add", "apk update", "apk upgrade"),
        ("--no-cache", "/var/cache/apk"),
    ),
    Cache(
        "npm cache",
        ("/root/.npm", "/home/*/.npm"),
        "run `npm cache clean --force` in the same RUN (or use a cache mount)",
        ("npm install", "npm ci", "npm i "),
        ("npm cache clean", "/.npm"),
    ),
    Cache(
        "yarn cache",
        ("/usr/local/share/.cache/yarn", "/root/.cache/yarn", "/home/*/.cache/yarn"),
        "run `yarn cache clean` in the same RUN",
        ("yarn install", "yarn add"),
        ("yarn cache clean",),
    ),
    Cache(
        "dnf/yum cache",
        ("/var/cache/dnf", "/var/cache/yum"),
        "run `dnf clean all` (or `yum clean all`) in the same RUN",
        ("dnf install", "yum install", "microdnf install"),
        ("clean all", "/var/cache/dnf", "/var/cache/yum"),
    ),
)


def under(path: str, pattern: str) -> bool:
    """Is ``path`` inside ``pattern`` (a path prefix with per-component wildcards)?"""
    want = pattern.strip("/").split("/")
    have = path.strip("/").split("/")
    if len(have) <= len(want):
        return False  # the prefix itself (a directory) holds no bytes
    return all(fnmatch.fnmatchcase(h, w) for h, w in zip(have, want, strict=False))


# The literal heads of every cache pattern: one startswith() rules out most paths.
_CACHE_HEADS = tuple(p.split("*", 1)[0] for c in CACHES for p in c.patterns)


def cache_of(path: str) -> Cache | None:
    if not path.startswith(_CACHE_HEADS):
        return None
    for c in CACHES:
        if any(under(path, p) for p in c.patterns):
            return c
    return None


# -- build tools ----------------------------------------------------------------------------

BUILD_PACKAGES = {
    "build-essential",
    "build-base",
    "alpine-sdk",
    "gcc",
    "g++",
    "cpp",
    "clang",
    "make",
    "cmake",
    "autoconf",
    "automake",
    "libtool",
    "pkg-config",
    "pkgconf",
    "bison",
    "flex",
    "gfortran",
    "binutils",
    "musl-dev",
    "linux-headers",
    "libc6-dev",
    "libc-dev",
    "libc-dev-bin",
}
# Versioned compilers (gcc-12, clang-16) and binutils' parts; "gcc-12-base" is
# not one: libgcc-s1, which every C program needs, depends on it.
_BUILD_RE = re.compile(
    r"^(gcc|g\+\+|cpp|clang|gfortran)-\d[\w.]*$|^binutils-[\w.-]+$|-(dev|devel)(:\w+)?$"
)
# Files that betray a toolchain when no package database says so.
BUILD_FILES = ("/usr/bin/gcc", "/usr/bin/cc", "/usr/bin/g++", "/usr/bin/make", "/usr/bin/ld")
BUILD_TREES = ("/usr/lib/gcc", "/usr/libexec/gcc", "/usr/include")


def is_build_package(name: str) -> bool:
    name = name.split(":", 1)[0].split("=", 1)[0].strip().lower()
    return name in BUILD_PACKAGES or bool(_BUILD_RE.search(name))


# -- secrets ----------------------------------------------------------------------------------

# Docker's SecretsUsedInArgOrEnv check: a name part that is one of these words...
_SECRET_WORDS = {
    "apikey",
    "auth",
    "credential",
    "credentials",
    "key",
    "password",
    "pword",
    "passwd",
    "passphrase",
    "secret",
    "token",
}
# ...unless another part says it names something public, or where a secret lives.
_NOT_SECRET_WORDS = {"public", "pub", "gpg", "file", "path", "dir", "url", "id", "name", "type"}


def secret_name(name: str) -> bool:
    parts = [p for p in re.split(r"[^a-z0-9]+", name.lower()) if p]
    joined = "".join(parts)
    if any(p in _NOT_SECRET_WORDS for p in parts):
        return False
    return any(p in _SECRET_WORDS for p in parts) or any(
        w in joined for w in ("apikey", "accesskey", "privatekey", "secretkey", "password")
    )


def masked(value: str) -> str:
    """Never print a secret: show how long it is and its first character at most."""
    if not value:
        return "(empty)"
    return f"{value[:1]}… ({len(value)} characters)" if len(value) > 6 else "***"


# Files that hold credentials when their content says so: basename -> marker bytes.
KEY_FILES = {
    ".netrc": (b"password",),
    ".git-credentials": (b"@",),
    ".pypirc": (b"password",),
    ".npmrc": (b"_authToken", b"_auth", b"_password"),
    "credentials": (b"aws_secret_access_key",),
    "config.json": (b'"auth"',),  # ~/.docker/config.json
}
KEY_MARKER = b"PRIVATE KEY-----"
_KEY_NAME_RE = re.compile(r"^id_(rsa|dsa|ecdsa|ed25519)$|\.(pem|key|p8)$|^private[-_]?key")


# Keys that ship with test suites and examples are public fixtures, not secrets.
_FIXTURE_DIRS = {"test", "tests", "testdata", "testing", "fixtures", "examples", "dummyserver"}


def key_file_markers(path: str) -> tuple[bytes, ...] | None:
    """The content markers to look for in ``path``, or None if its name never holds a key."""
    base = path.rsplit("/", 1)[-1]
    if base not in KEY_FILES and not _KEY_NAME_RE.search(base):
        return None
    if path.startswith("/usr/share/doc/") or _FIXTURE_DIRS.intersection(path.split("/")[:-1]):
        return None
    if _KEY_NAME_RE.search(base):
        return (KEY_MARKER,)
    if base == "config.json" and not path.endswith("/.docker/config.json"):
        return None
    if base == "credentials" and not path.endswith("/.aws/credentials"):
        return None
    return KEY_FILES.get(base)


# -- context junk -----------------------------------------------------------------------------

# Directories a .dockerignore usually keeps out of the context (and the image).
CONTEXT_JUNK_DIRS = (".git", "node_modules", "__pycache__", ".venv", "venv", ".tox", ".mypy_cache")
TAR_SUFFIXES = (
    ".tar",
    ".tar.gz",
    ".tgz",
    ".tar.bz2",
    ".tbz2",
    ".tbz",
    ".tar.xz",
    ".txz",
    ".tar.zst",
)
