"""How blobs move: parallel layer downloads with per-layer progress, layers
already here not fetched or unpacked again, push skipping blobs the registry
has (HEAD) and mounting them from another repository."""

from __future__ import annotations

import io
import threading

import pytest

from engine.cli.cmd_registry import ProgressPrinter
from engine.registry.progress import short_id
from tests.engine.registry._helpers import add_multilayer_image

pytestmark = pytest.mark.root


def test_parallel_multilayer_pull_with_progress(registry_plain, busybox_env, fresh_env):
    ref = f"{registry_plain.host}/xfer/multi:latest"
    add_multilayer_image(busybox_env, ref, sizes=(1_500_000, 2_000_000, 2_500_000))
    pushed = busybox_env.engine().push_image(ref)
    remote = [layer["Digest"] for layer in pushed["Layers"]]
    assert len(remote) == 4

    # The CLI (not a terminal): Docker's status lines, one per change, per layer.
    p = fresh_env.berth("pull", ref, check=True)
    for digest in remote:
        sid = short_id(digest)
        for status in (
            "Pulling fs layer",
            "Verifying Checksum",
            "Download complete",
            "Pull complete",
        ):
            assert f"{sid}: {status}" in p.stdout.splitlines(), (status, p.stdout)
    assert "Downloading" not in p.stdout  # byte counts only on a terminal

    # The facade: messages from several threads, byte counts for every layer.
    third = fresh_env.engine()
    third.remove_image(ref)
    third.images.gc()
    messages: list[dict] = []
    threads: set[int] = set()

    def progress(msg: dict) -> None:
        messages.append(msg)
        threads.add(threading.get_ident())

    result = third.pull_image(ref, progress=progress)
    assert [layer["Status"] for layer in result["Layers"]] == ["Pull complete"] * 4
    downloading = {m["id"] for m in messages if m.get("status") == "Downloading"}
    assert downloading == {short_id(d) for d in remote}
    finals = [
        m
        for m in messages
        if m.get("status") == "Downloading"
        and m["progressDetail"]["current"] == m["progressDetail"]["total"]
    ]
    assert len(finals) == 4
    assert len(threads) > 1, "layers were not fetched in parallel"
    assert messages[0] == {"status": "Pulling from xfer/multi", "id": "latest"}
    assert messages[-1]["status"] == f"Status: Downloaded newer image for {ref}"


def test_terminal_progress_redraws_lines_in_place():
    out = io.StringIO()
    printer = ProgressPrinter(out, tty=True)
    printer({"status": "Pulling from x", "id": "latest"})
    printer({"status": "Pulling fs layer", "progressDetail": {}, "id": "aaa"})
    printer({"status": "Pulling fs layer", "progressDetail": {}, "id": "bbb"})
    printer(
        {
            "status": "Downloading",
            "progressDetail": {"current": 5, "total": 10},
            "progress": "[==>  ]",
            "id": "aaa",
        }
    )
    text = out.getvalue()
    assert "aaa: Pulling fs layer\nbbb: Pulling fs layer\n" in text
    # Up two lines to aaa's, clear it, rewrite, then back down.
    assert "\x1b[2A\r\x1b[2Kaaa: Downloading [==>  ]\n\x1b[1B" in text


def test_layers_already_here_are_reused(registry_plain, busybox_env, fresh_env):
    reg = registry_plain
    ref = f"{reg.host}/xfer/reuse:latest"
    add_multilayer_image(busybox_env, ref)
    # As stored (uncompressed): the registry's blobs are the local blobs.
    busybox_env.engine().push_image(ref, compression="none")

    fresh = fresh_env.engine()
    fresh.bootstrap_image("busybox")
    base = fresh.images.get("busybox")
    base_dir = fresh.images.layers.get(base.chain_ids[0]).path
    inode = base_dir.stat().st_ino
    result = fresh.pull_image(ref)
    statuses = [layer["Status"] for layer in result["Layers"]]
    assert statuses == ["Already exists", "Pull complete", "Pull complete", "Pull complete"]
    assert result["Downloaded"] == sum(layer["Size"] for layer in result["Layers"][1:])
    assert fresh.images.layers.get(base.chain_ids[0]).path.stat().st_ino == inode
    assert fresh.images.get(ref).id == busybox_env.engine().images.get(ref).id

    # gzip'd on push: the base layer's blob differs, but its unpacked layer is shared.
    gz_ref = f"{reg.host}/xfer/reuse:gz"
    busybox_env.berth("tag", ref, gz_ref, check=True)
    busybox_env.engine().push_image(gz_ref)
    fresh.pull_image(gz_ref)
    assert fresh.images.layers.get(base.chain_ids[0]).path.stat().st_ino == inode
    assert fresh.images.get(gz_ref).id == fresh.images.get(ref).id


@pytest.mark.parametrize("kind", ["plain", "token"])
def test_push_skips_existing_blobs_and_mounts_across_repositories(kind, request, busybox_env):
    reg = request.getfixturevalue(f"registry_{kind}")
    if reg.needs_login:
        assert reg.login(busybox_env).returncode == 0
    first = f"{reg.host}/mount/{kind}-one:latest"
    second = f"{reg.host}/mount/{kind}-two:latest"
    add_multilayer_image(busybox_env, first)
    busybox_env.berth("tag", first, second, check=True)
    p1 = busybox_env.berth("push", first, check=True)
    assert (
        p1.stdout.count(": Pushed") >= 3
    )  # the random layers (busybox's may be there from other tests)

    again = busybox_env.berth("push", first, check=True)
    assert again.stdout.count(": Layer already exists") == 4
    assert ": Pushed" not in again.stdout

    p2 = busybox_env.berth("push", second, check=True)
    assert p2.stdout.count(f": Mounted from mount/{kind}-one") >= 3, p2.stdout
    assert ": Pushed" not in p2.stdout
    d1 = p1.stdout.split("digest: ")[1].split()[0]
    d2 = p2.stdout.split("digest: ")[1].split()[0]
    assert d1 == d2  # same content, same manifest
    if kind == "token":
        scopes = {s for r in reg.token.requests for s in r["scopes"]}
        assert f"repository:mount/{kind}-one:pull" in scopes
