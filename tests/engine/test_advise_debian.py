"""`image advise` on a real Debian rootfs with gcc (debootstrap, made once per
host and shared with the builder's tests through the same cache archive)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

CACHE_DIR = Path(os.environ.get("BERTH_TEST_CACHE", "/var/cache/berth-tests"))
DEBIAN_REF = "berth-test/debian-gcc:bookworm"  # the builder's tests' image: one cache for both


@pytest.fixture
def debian_env(eng_env):
    from engine.images.bootstrap import cached_debian_archive

    if not shutil.which("debootstrap"):
        pytest.skip("debootstrap is not installed")
    archive = cached_debian_archive(CACHE_DIR, DEBIAN_REF, ["gcc", "libc6-dev"])
    eng_env.berth("load", "-i", str(archive), check=True, timeout=600)
    return eng_env


def test_debian_with_gcc(debian_env, tmp_path):
    p = debian_env.berth("image", "advise", "--format", "json", DEBIAN_REF, timeout=300)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    found = {f["id"]: f for f in r["findings"]}
    assert set(found) == {"build-tools", "full-base", "runs-as-root"}
    tools = {x["path"] for x in found["build-tools"]["paths"]}
    assert "gcc-12" in tools and found["build-tools"]["bytes"] > 50_000_000
    assert "gcc-12-base" not in found["build-tools"]["detail"]  # a runtime dependency
    assert found["full-base"]["bytes"] > 5_000_000
    assert all(x["path"].startswith("/usr/share/") for x in found["full-base"]["paths"])
    assert r["largest_files"][0]["path"].startswith(("/usr/lib/gcc/", "/usr/bin/"))
    # A Dockerfile FROM it: the base's size is the first row; the base sets no USER.
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {DEBIAN_REF}\nCOPY . /src\nRUN make -C /src\n")
    (ctx / "Makefile").write_text("all:\n\ttrue\n")
    p = debian_env.berth("image", "advise", "--format", "json", str(ctx))
    d = json.loads(p.stdout)
    assert d["layers"][0] == {"line": 1, "instruction": f"FROM {DEBIAN_REF}", "size": r["size"]}
    found = {f["id"]: f for f in d["findings"]}
    assert set(found) == {"runs-as-root", "full-base", "build-tools"}  # the base's content
    assert found["build-tools"]["lines"] == [1] and found["full-base"]["lines"] == [1]
    assert found["build-tools"]["bytes"] == next(
        f["bytes"] for f in r["findings"] if f["id"] == "build-tools"
    )
