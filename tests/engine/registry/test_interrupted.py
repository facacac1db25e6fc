"""Pulls that are cut short or run twice at once: a pull killed in the
middle of a layer leaves nothing behind once it is retried, and two pulls of
the same image at the same time both succeed with one copy of each layer."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.conftest import BERTH
from tests.engine.registry._helpers import add_multilayer_image, store_snapshot
from tests.engine.registry._proxy import RegistryProxy

pytestmark = pytest.mark.root


def _leftovers(env) -> tuple[set[str], set[str]]:
    """(staging files, temporary layer directories) of an engine's store."""
    _blobs, layers, tmp = store_snapshot(env)
    return tmp, {name for name in layers if ".tmp-" in name}


def test_killed_pull_heals_on_retry(registry_plain, busybox_env, fresh_env):
    ref_path = "interrupted/multi:latest"
    add_multilayer_image(busybox_env, f"{registry_plain.host}/{ref_path}", sizes=(3_000_000,))
    busybox_env.engine().push_image(f"{registry_plain.host}/{ref_path}")

    with RegistryProxy(registry_plain.host) as proxy:
        proxy.throttle = lambda h: 0.05 if "/blobs/sha256:" in h.path else 0.0
        ref = f"{proxy.netloc}/{ref_path}"
        p = subprocess.Popen(
            [*BERTH, "pull", "-q", ref],
            env=fresh_env.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while proxy.sent_slowly < 1_000_000 and time.monotonic() < deadline:
                assert p.poll() is None, "the pull ended before it could be interrupted"
                time.sleep(0.02)
            assert proxy.sent_slowly >= 1_000_000
        finally:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
        staging, layer_tmp = _leftovers(fresh_env)
        assert staging or layer_tmp, "the kill left nothing to heal (test did not interrupt)"

        proxy.throttle = None
        retry = fresh_env.berth("pull", "-q", ref)
        assert retry.returncode == 0, retry.stderr
        assert retry.stdout.strip() == ref
    assert _leftovers(fresh_env) == (set(), set())
    run = fresh_env.berth("run", "--rm", ref, "wc", "-c", "/data/layer0.bin")
    assert run.stdout.split() == ["3000000", "/data/layer0.bin"], run.stderr


def test_two_pulls_of_the_same_image_at_once(registry_plain, busybox_env, fresh_env):
    ref = f"{registry_plain.host}/interrupted/twice:latest"
    add_multilayer_image(busybox_env, ref, sizes=(1_000_000, 1_500_000))
    busybox_env.engine().push_image(ref)
    procs = [
        subprocess.Popen(
            [*BERTH, "pull", "-q", ref],
            env=fresh_env.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == ref, (out, err)
    eng = fresh_env.engine()
    rec = eng.images.get(ref)
    assert len(rec.layer_digests) == 3
    assert _leftovers(fresh_env) == (set(), set())
    run = fresh_env.berth("run", "--rm", ref, "ls", "/data")
    assert run.stdout.split() == ["layer0.bin", "layer1.bin"], (run.returncode, run.stderr)


@pytest.mark.parametrize("honours_range", [True, False])
def test_connection_cut_mid_blob_is_resumed(registry_plain, busybox_env, fresh_env, honours_range):
    """A registry (or a proxy on the way) that drops the connection half-way
    through a layer: the rest is fetched with a Range request, verified as a
    whole; from the start again where the Range is ignored (a 200 answer)."""
    import http.client

    ref_path = f"interrupted/cut{int(honours_range)}:latest"
    add_multilayer_image(busybox_env, f"{registry_plain.host}/{ref_path}", sizes=(2_000_000,))
    pushed = busybox_env.engine().push_image(f"{registry_plain.host}/{ref_path}")
    big = pushed["Layers"][-1]["Digest"]
    cut: list[str] = []
    ranges: list[str] = []

    def cut_once(h) -> bool:
        if h.command != "GET" or not h.path.endswith(big):
            return False
        if h.headers.get("Range"):
            ranges.append(h.headers["Range"])
            if honours_range:
                return False  # the real registry answers the Range request
        elif cut:
            return False
        conn = http.client.HTTPConnection(registry_plain.host, timeout=30)
        conn.request("GET", h.path)
        data = conn.getresponse().read()
        conn.close()
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if h.headers.get("Range"):  # ignored: the whole blob again
            h.wfile.write(data)
            return True
        h.wfile.write(data[: len(data) // 2])
        h.wfile.flush()
        h.close_connection = True
        cut.append(h.path)
        return True

    with RegistryProxy(registry_plain.host) as proxy:
        proxy.hook = cut_once
        result = fresh_env.engine().pull_image(f"{proxy.netloc}/{ref_path}")
    assert cut and ranges and ranges[0].startswith("bytes=") and ranges[0] != "bytes=0-"
    assert [layer["Status"] for layer in result["Layers"]][-1] == "Pull complete"
    assert _leftovers(fresh_env) == (set(), set())
