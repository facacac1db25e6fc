"""`image advise` on an image made by `berth build` (real RUN steps in
containers) and on the Dockerfile it was built from: both sides find the same
problems, the image side with bytes, the Dockerfile side with line numbers."""

from __future__ import annotations

import json

DOCKERFILE = """\
FROM busybox
ARG API_TOKEN=abc12345678
RUN mkdir -p /var/lib/apt/lists && dd if=/dev/zero of=/var/lib/apt/lists/big bs=1000 count=200
RUN dd if=/dev/zero of=/tmp/blob bs=1000 count=300
RUN rm /tmp/blob
ADD app.txt /app/
"""

TIDY = """\
FROM busybox
COPY app.txt /app/
RUN dd if=/dev/zero of=/tmp/blob bs=1000 count=300 && rm /tmp/blob
USER 65534
"""


def build(env, ctx, tag: str) -> None:
    p = env.berth("build", "-q", "-t", tag, str(ctx), timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr


def advise(env, target: str) -> dict:
    p = env.berth("image", "advise", "--format", "json", target)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def by_id(report: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in report["findings"]:
        out.setdefault(f["id"], []).append(f)
    return out


def test_built_image_and_its_dockerfile(busybox_env, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "app.txt").write_text("hello\n")
    build(busybox_env, ctx, "built:1")
    img = by_id(advise(busybox_env, "built:1"))
    (cache,) = img["package-cache"]
    assert cache["bytes"] == 200_000 and cache["layers"] == [1]
    (gone,) = img["deleted-in-later-layer"]
    assert gone["bytes"] == 300_000 and gone["layers"] == [2, 3]
    assert gone["paths"][0]["path"] == "/tmp/blob"
    (merge,) = img["merge-runs"]
    assert merge["layers"] == [1, 2, 3]
    (secret,) = img["secret-in-config"]
    assert secret["detail"].count("ARG API_TOKEN") == 1  # recorded by three RUNs, told once
    assert "abc12345678" not in json.dumps(img)
    assert img["add-instead-of-copy"][0]["layers"] == [4]
    assert "runs-as-root" in img

    df = by_id(advise(busybox_env, str(ctx)))
    assert df["deleted-in-later-layer"][0]["lines"] == [4, 5]
    assert df["merge-runs"][0]["lines"] == [3, 4, 5]
    assert df["secret-in-config"][0]["lines"] == [2]
    assert df["add-instead-of-copy"][0]["lines"] == [6]
    assert df["runs-as-root"][0]["lines"] == [1]


def test_tidy_build_has_no_size_findings(busybox_env, tmp_path):
    ctx = tmp_path / "tidy"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(TIDY)
    (ctx / "app.txt").write_text("hello\n")
    build(busybox_env, ctx, "tidy:1")
    report = advise(busybox_env, "tidy:1")
    assert report["findings"] == [] and report["savings"] == 0
    assert [layer["size"] for layer in report["layers"]][1:] == [6, 0]
    assert advise(busybox_env, str(ctx))["findings"] == []
