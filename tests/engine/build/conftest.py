"""Fixtures of the builder's tests: a Debian image with gcc, made once per host.

The Debian base comes from ``debootstrap --include=gcc,libc6-dev`` (minutes the
first time), saved as an archive under /var/cache/berth-tests and loaded into
each test's own engine (seconds). The mirror is the one this host's apt uses.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CACHE_DIR = Path(os.environ.get("BERTH_TEST_CACHE", "/var/cache/berth-tests"))
DEBIAN_REF = "berth-test/debian-gcc:bookworm"


@pytest.fixture(scope="session")
def debian_archive() -> Path:
    import shutil

    from engine.images.bootstrap import cached_debian_archive

    if not shutil.which("debootstrap"):
        pytest.skip("debootstrap is not installed")
    return cached_debian_archive(CACHE_DIR, DEBIAN_REF, ["gcc", "libc6-dev"])


@pytest.fixture
def debian_env(busybox_env, debian_archive):
    """An engine holding busybox:latest and the Debian+gcc image."""
    with open(debian_archive, "rb") as f:
        busybox_env.engine().load_images(f)
    return busybox_env


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    """Create files (parents too) under root; returns root."""
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    return root


def berth_binary(env, *args: str, input: bytes, timeout: float = 300):
    """The CLI with binary stdin (a context tar); stdout/stderr decoded as text."""
    import subprocess

    from tests.conftest import BERTH, REPO

    p = subprocess.run(
        [*BERTH, *args], env=env.env, input=input, capture_output=True, timeout=timeout,
        cwd=str(REPO),
    )  # fmt: skip
    p.stdout, p.stderr = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    return p
