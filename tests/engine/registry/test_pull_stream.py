"""The streaming pull: layers fetched, verified and unpacked in one pass, with the
network on a thread of its own (prefetch, when fewer layers stream than there
are cores) or not. Either way a tampered blob is refused wherever the damage
is (mid-deflate, in a stored block, in the gzip trailer) and nothing is left."""

from __future__ import annotations

import os

import pytest

from engine.errors import InvalidArgument
from engine.images import layers as layer_tars
from tests.engine.registry._helpers import add_multilayer_image, store_snapshot

pytestmark = pytest.mark.root


@pytest.fixture(params=["prefetch", "one-thread"])
def prefetch(request, monkeypatch):
    # The puller prefetches when the layers streaming at once are fewer than the cores.
    cores = 64 if request.param == "prefetch" else 1
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    return request.param == "prefetch"


def _files(root) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def test_streamed_layers_are_whole(registry_plain, busybox_env, fresh_env, prefetch):
    ref = f"{registry_plain.host}/stream/whole:{'pre' if prefetch else 'one'}"
    made = add_multilayer_image(busybox_env, ref, sizes=(3_000_000, 700_000))
    busybox_env.engine().push_image(ref)
    got = fresh_env.engine().pull_image(ref)
    assert got["Id"] == made["id"]
    src, dst = busybox_env.engine().images, fresh_env.engine().images
    for a, b in zip(src.layer_dirs(ref), dst.layer_dirs(ref), strict=True):
        assert _files(a) == _files(b)


@pytest.mark.parametrize("where", ["start", "middle", "trailer"])
def test_tampered_layer_is_refused_wherever_the_damage(
    registry_plain, busybox_env, fresh_env, prefetch, where
):
    reg = registry_plain
    ref = f"{reg.host}/stream/tamper-{where}:{'pre' if prefetch else 'one'}"
    add_multilayer_image(busybox_env, ref, sizes=(2_000_000,))
    pushed = busybox_env.engine().push_image(ref)
    tampered = pushed["Layers"][-1]["Digest"]
    path = reg.registry.blob_path(tampered)
    data = bytearray(path.read_bytes())
    at = {"start": 40, "middle": len(data) // 2, "trailer": len(data) - 2}[where]
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    before = store_snapshot(fresh_env)
    with pytest.raises(InvalidArgument, match=f"blob {tampered} of .* failed verification"):
        fresh_env.engine().pull_image(ref, concurrency=1)
    assert not fresh_env.engine().images.exists(ref)
    blobs, layers, tmp = store_snapshot(fresh_env)
    assert (blobs, layers) == before[:2], "the failed pull left blobs or layers behind"
    assert not tmp


def test_prefetch_hands_reader_errors_to_the_consumer():
    from engine.registry.unpack import Prefetch

    class Src:
        def __init__(self):
            self.n = 0

        def readinto(self, b):
            self.n += 1
            if self.n == 3:
                raise InvalidArgument("the registry went away")
            b[:4] = b"abcd"
            return 4

    pipe = Prefetch(Src(), name="test-fetch", size=16, depth=2)
    try:
        assert bytes(pipe.next_chunk()) == b"abcd"
        assert bytes(pipe.next_chunk()) == b"abcd"
        with pytest.raises(InvalidArgument, match="went away"):
            pipe.next_chunk()
        assert len(pipe.next_chunk()) == 0  # and then nothing more
    finally:
        pipe.close()


def test_prefetch_stops_when_the_consumer_does():
    from engine.registry.unpack import Prefetch

    class Endless:
        def readinto(self, b):
            b[:1] = b"x"
            return 1

    pipe = Prefetch(Endless(), name="test-fetch", size=16, depth=2)
    assert bytes(pipe.next_chunk()) == b"x"
    pipe.close()  # returns: the reader stops at its next buffer
    assert not pipe._thread.is_alive()


def test_tar_source_reads_across_any_chunking(tmp_path):
    """The same layer, handed to the extractor in chunks of 1 byte, 7 bytes and 1 MiB."""
    from tests.engine.registry._helpers import layer_tar

    files = {f"d/f{i}": os.urandom(1000 * i) for i in range(5)}
    files["d/" + "long-name-" * 20] = b"pax path"
    tar = layer_tar(files)
    for step in (1, 7, 1 << 20):
        pieces = iter([memoryview(tar)[i : i + step] for i in range(0, len(tar), step)])
        dest = tmp_path / f"step{step}"
        dest.mkdir()
        src = layer_tars.TarSource(lambda pieces=pieces: next(pieces, b""))
        layer_tars.extract_layer_from(src, dest)
        assert src.offset == len(tar)  # drained to the end, end-of-archive blocks too
        assert {k: (dest / k).read_bytes() for k in files} == files


@pytest.mark.parametrize("prefetch", [True, False], ids=["prefetch", "one-thread"])
def test_bad_tar_is_reported_even_when_the_connection_then_breaks(tmp_path, prefetch):
    """The layer's tar is broken from its first block, and the registry's connection
    breaks further on: reading the rest of the blob (to tell a tampered blob from a
    bad image) fails too, but the error the user gets is the tar's."""
    import gzip
    import hashlib

    from engine.registry.unpack import fetch_and_unpack

    blob = gzip.compress(b"\x01" * 1024 + os.urandom(2_000_000), compresslevel=1)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()

    class Resp:
        status = 200

        def __init__(self, offset):
            self.pos, self.sent = offset, 0

        def readinto(self, b):
            if self.pos > 0 or self.sent >= 64 * 1024:
                raise ConnectionResetError(104, "Connection reset by peer")
            n = min(len(b), 64 * 1024 - self.sent)
            b[:n] = blob[self.pos + self.sent : self.pos + self.sent + n]
            self.sent += n
            return n

        def release(self):
            pass

        def close(self):
            pass

    class Client:
        def get_blob(self, repo, dg, offset=0):
            if offset:
                raise ConnectionRefusedError(111, "Connection refused")
            return Resp(offset)

    class Layers:
        def install(self, chain_id, diff_id, fill):
            d = tmp_path / "layer"
            d.mkdir()
            fill(d)

    with open(tmp_path / "blob", "wb") as out, pytest.raises(InvalidArgument) as got:
        fetch_and_unpack(
            Client(), "r", {"digest": digest, "size": len(blob)}, gzipped=True,
            blob_out=out, layers=Layers(), chain_id="c", diff_id="sha256:" + "0" * 64,
            what="img", prefetch=prefetch,
        )  # fmt: skip
    assert f"layer {digest} of img: malformed tar stream" in str(got.value), got.value
