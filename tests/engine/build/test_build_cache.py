"""The build cache: hits on an unchanged rebuild, misses from the first changed input on."""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.engine.build.conftest import write_tree

pytestmark = pytest.mark.root

DOCKERFILE = """\
FROM busybox
ARG FLAVOR=plain
ENV APP=/app
WORKDIR /app
COPY config/ ./config/
COPY main.sh .
RUN echo "ran with $FLAVOR" && cat config/settings > /app/settings.copy
CMD ["sh", "/app/main.sh"]
"""


def _build(env, ctx, *flags: str):
    p = env.berth("build", *flags, "-t", "cached:latest", str(ctx))
    assert p.returncode == 0, p.stdout + p.stderr
    steps = re.findall(r"^Step (\d+)/\d+ : (\w+)", p.stdout, re.M)
    # Which steps were served from the cache, by step number.
    hits = []
    for block in re.split(r"^Step ", p.stdout, flags=re.M)[1:]:
        if " ---> Using cache" in block:
            hits.append(int(block.split("/", 1)[0]))
    image = re.search(r"Successfully built (\w+)", p.stdout).group(1)
    return steps, hits, image, p.stdout


def _ctx(tmp_path):
    return write_tree(
        tmp_path / "ctx",
        {
            "Dockerfile": DOCKERFILE,
            ".dockerignore": "*.tmp\n",
            "config/settings": "mode=1\n",
            "config/extra/more": "more\n",
            "main.sh": "echo main\n",
            "notes.tmp": "scratch notes\n",
        },
    )


def test_unchanged_rebuild_reuses_every_step(busybox_env, tmp_path):
    ctx = _ctx(tmp_path)
    steps, hits, first, out = _build(busybox_env, ctx)
    assert hits == [] and "ran with plain" in out
    steps, hits, second, out = _build(busybox_env, ctx)
    assert hits == list(range(2, len(steps) + 1))  # every step after FROM
    assert second == first and "ran with plain" not in out
    # Touching files (new mtimes, same content) and changing an ignored file: still all hits.
    for f in ("config/settings", "main.sh"):
        os.utime(ctx / f, (1_000_000, 1_000_000))
    (ctx / "notes.tmp").write_text("other scratch\n")
    _, hits, third, _ = _build(busybox_env, ctx)
    assert hits == list(range(2, len(steps) + 1)) and third == first


def test_one_changed_file_rebuilds_from_its_step_on(busybox_env, tmp_path):
    ctx = _ctx(tmp_path)
    steps, _, first, _ = _build(busybox_env, ctx)
    copy_main = next(int(n) for n, k in steps if k == "COPY" and n != "5")  # COPY main.sh
    # Same size and mtime, different content: only hashing the content notices.
    st = os.stat(ctx / "main.sh")
    (ctx / "main.sh").write_text("echo MAIN\n")
    os.utime(ctx / "main.sh", ns=(st.st_atime_ns, st.st_mtime_ns))
    _, hits, second, out = _build(busybox_env, ctx)
    assert hits == list(range(2, copy_main))
    assert second != first and "ran with plain" in out  # the RUN after it ran again
    assert busybox_env.berth("run", "--rm", "cached:latest", check=True).stdout == "MAIN\n"
    # A file inside a copied directory, and a mode change, are changes too.
    (ctx / "config/extra/more").write_text("changed\n")
    _, hits, _, _ = _build(busybox_env, ctx)
    assert hits == list(range(2, copy_main - 1))
    os.chmod(ctx / "main.sh", 0o755)
    _, hits, _, _ = _build(busybox_env, ctx)
    assert hits == list(range(2, copy_main))


def test_a_step_after_cache_hits_keeps_every_layer(busybox_env, tmp_path):
    """The hits before a changed step are taken without reading their manifests;
    the image the changed step makes still lists every layer below it."""
    ctx = _ctx(tmp_path)
    steps, _, first, _ = _build(busybox_env, ctx)
    layers = _inspect(busybox_env, first)["RootFS"]["Layers"]
    # Only the extra LABEL step (--label: one more step at the end) misses.
    _, hits, labelled, _ = _build(busybox_env, ctx, "--label", "team=build")
    assert hits == list(range(2, len(steps) + 1)) and labelled != first
    img = _inspect(busybox_env, labelled)
    assert img["RootFS"]["Layers"] == layers and img["Config"]["Labels"] == {"team": "build"}
    out = busybox_env.berth(
        "run", "--rm", "cached:latest", "cat", "/app/config/extra/more", "/app/settings.copy",
        check=True,
    ).stdout  # fmt: skip
    assert out == "more\nmode=1\n"
    # A changed file: the COPY after the hits makes one new layer on the same lower ones.
    (ctx / "main.sh").write_text("echo changed\n")
    _, _, changed, _ = _build(busybox_env, ctx)
    new_layers = _inspect(busybox_env, changed)["RootFS"]["Layers"]
    assert len(new_layers) == len(layers) and new_layers[:-2] == layers[:-2]
    assert new_layers[-2:] != layers[-2:]  # main.sh's COPY and the RUN after it


def _inspect(env, ref: str) -> dict:
    return json.loads(env.berth("image", "inspect", ref, check=True).stdout)[0]


def test_build_args_miss_where_used_and_no_cache(busybox_env, tmp_path):
    ctx = _ctx(tmp_path)
    steps, _, _, _ = _build(busybox_env, ctx)
    run_step = next(int(n) for n, k in steps if k == "RUN")
    # A different ARG value: the ARG step itself hits, the RUN (which sees it) misses.
    _, hits, _, out = _build(busybox_env, ctx, "--build-arg", "FLAVOR=spicy")
    assert hits == list(range(2, run_step)) and "ran with spicy" in out
    _, hits, _, _ = _build(busybox_env, ctx, "--build-arg", "FLAVOR=spicy")
    assert hits == list(range(2, len(steps) + 1))
    _, hits, _, out = _build(busybox_env, ctx, "--no-cache")
    assert hits == [] and "ran with plain" in out


def test_cache_survives_and_heals_when_images_go(busybox_env, tmp_path):
    ctx = _ctx(tmp_path)
    steps, _, _, _ = _build(busybox_env, ctx)
    eng = busybox_env.engine()
    # Removing the tagged image and pruning drops the cached images: then misses, no errors.
    eng.remove_image("cached:latest")
    eng.prune_images(all=True)
    eng.bootstrap_image("busybox")  # pruned too (unused); same content, same ID
    _, hits, _, out = _build(busybox_env, ctx)
    assert hits == [] and "ran with plain" in out
    _, hits, _, _ = _build(busybox_env, ctx)
    assert hits == list(range(2, len(steps) + 1))  # the new entries serve the next build
    cache = busybox_env.root / "build" / "cache"
    # builder prune empties the cache (images stay until image prune).
    p = busybox_env.berth("builder", "prune", "-f", check=True)
    assert "Removed" in p.stdout and not list(cache.iterdir())
    _, hits, _, _ = _build(busybox_env, ctx)
    assert hits == []


def test_run_shell_and_exec_forms_never_share_a_cache_entry(busybox_env, tmp_path):
    # Both print as "/bin/sh -c touch /made", but the exec form runs `touch` with no
    # operand (/made is $0) and fails: a cache hit would hand back the shell form's layer.
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN touch /made\n"})
    p = busybox_env.berth("build", "-q", str(ctx))
    assert p.returncode == 0, p.stderr
    (ctx / "Dockerfile").write_text('FROM busybox\nRUN ["/bin/sh", "-c", "touch", "/made"]\n')
    p = busybox_env.berth("build", str(ctx))
    assert " ---> Using cache" not in p.stdout
    assert p.returncode == 1 and "returned a non-zero code: 1" in p.stderr


def test_env_and_label_values_with_spaces_never_share_a_cache_entry(busybox_env, tmp_path):
    # ENV A="1 B=2" and ENV A=1 B=2 both read "ENV A=1 B=2", but set different variables.
    ctx = write_tree(
        tmp_path / "ctx", {"Dockerfile": 'FROM busybox\nENV A="1 B=2"\nLABEL l="x y=z"\n'}
    )
    assert busybox_env.berth("build", "-q", str(ctx)).returncode == 0
    (ctx / "Dockerfile").write_text("FROM busybox\nENV A=1 B=2\nLABEL l=x y=z\n")
    p = busybox_env.berth("build", "-q", "-t", "spaced", str(ctx))
    assert p.returncode == 0, p.stderr
    cfg = json.loads(busybox_env.berth("image", "inspect", "spaced", check=True).stdout)[0]
    assert cfg["Config"]["Env"][-2:] == ["A=1", "B=2"]
    assert cfg["Config"]["Labels"] == {"l": "x", "y": "z"}
