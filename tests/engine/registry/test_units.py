"""The registry pieces that need no registry: challenges, credentials file,
platforms, manifest checks, gzip streams, progress messages, the blob-info cache."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import stat
import struct
import time
import zlib

import pytest

from engine.errors import InvalidArgument, NotFound, Unsupported
from engine.registry import auth
from engine.registry import manifests as mf
from engine.registry.blobinfo import BlobInfoCache
from engine.registry.credentials import DOCKER_HUB_KEY, Credentials, CredentialStore, server_key
from engine.registry.progress import Progress, bar, short_id
from engine.registry.unpack import OUT_STEP, Gunzip


def test_parse_challenges():
    [c] = auth.parse_challenges(
        [
            'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"'
        ]
    )
    assert c.scheme == "bearer"
    assert c.params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:a/b:pull,push",
    }
    both = auth.parse_challenges(
        ['Basic realm="x", Bearer realm="https://t/token",error="invalid_token"']
    )
    assert [c.scheme for c in both] == ["basic", "bearer"]
    assert both[1].params["error"] == "invalid_token"
    assert auth.pick(both).scheme == "bearer"
    assert auth.pick(auth.parse_challenges(["Basic realm=simple"])).params == {"realm": "simple"}
    assert auth.pick(auth.parse_challenges(["Negotiate"])) is None


def test_token_url_and_response():
    c = auth.Challenge("bearer", {"realm": "https://t/token?x=1", "service": "svc"})
    url = auth.token_url(c, ["repository:b:pull", "repository:a:pull,push"])
    assert (
        url
        == "https://t/token?x=1&service=svc&scope=repository%3Aa%3Apull%2Cpush&scope=repository%3Ab%3Apull"
    )
    tok = auth.parse_token_response(b'{"access_token": "abc", "expires_in": 5}', "r")
    assert tok.value == "abc" and tok.valid()  # at least 60 s, as Docker
    with pytest.raises(Exception, match="without a token"):
        auth.parse_token_response(b"{}", "https://t/token")


def _jwt(claims: dict) -> str:
    def part(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


def test_expired_at():
    assert auth.expired_at(_jwt({"exp": 1_000_000_000})) == "2001-09-09T01:46:40Z"
    assert auth.expired_at(_jwt({"exp": time.time() + 100})) is None
    assert auth.expired_at("opaque-token") is None


def test_server_keys():
    assert server_key("docker.io") == DOCKER_HUB_KEY
    assert server_key("") == DOCKER_HUB_KEY
    assert server_key("https://index.docker.io/v1/") == DOCKER_HUB_KEY
    assert server_key("https://Reg.Example:5000/v2/") == "reg.example:5000"
    assert server_key("127.0.0.1:5000") == "127.0.0.1:5000"


def test_credentials_file(tmp_path):
    path = tmp_path / "conf" / "auth.json"
    store = CredentialStore(path, tmp_path / "locks" / "auth.lock")
    assert store.get("reg:5000") is None
    store.store("http://reg:5000/", Credentials("bob", "p:a:s:s"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.get("reg:5000") == Credentials("bob", "p:a:s:s")
    assert "p:a:s:s" not in repr(store.get("reg:5000"))
    data = json.loads(path.read_text())
    data["credHelpers"] = {"x": "y"}  # keys Berth does not know are kept
    path.write_text(json.dumps(data))
    store.store("docker.io", Credentials("hub", "pw"))
    assert json.loads(path.read_text())["credHelpers"] == {"x": "y"}
    assert store.servers() == [DOCKER_HUB_KEY, "reg:5000"]
    assert store.remove("reg:5000") is True
    assert store.remove("reg:5000") is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("{not json")
    with pytest.raises(InvalidArgument, match="cannot read the credentials file"):
        store.get("x")


def test_platforms():
    assert str(mf.Platform.parse("linux/arm64/v8")) == "linux/arm64"
    assert str(mf.Platform.parse("linux/arm")) == "linux/arm/v7"
    assert str(mf.Platform.parse("amd64")) == "linux/amd64"
    assert mf.Platform.parse("linux/x86_64").architecture == "amd64"
    with pytest.raises(InvalidArgument, match="os/arch"):
        mf.Platform.parse("linux/")
    index = {
        "manifests": [
            {
                "digest": "sha256:" + "1" * 64,
                "platform": {"os": "linux", "architecture": "arm", "variant": "v6"},
            },
            {
                "digest": "sha256:" + "2" * 64,
                "platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
            },
            {"digest": "sha256:" + "3" * 64, "platform": {"os": "linux", "architecture": "arm64"}},
        ]
    }
    assert mf.select_platform(index, mf.Platform.parse("linux/arm/v7"), "x")["digest"].endswith(
        "2" * 64
    )
    assert mf.select_platform(index, mf.Platform.parse("linux/arm/v6"), "x")["digest"].endswith(
        "1" * 64
    )
    assert mf.select_platform(index, mf.Platform.parse("linux/arm64/v8"), "x")["digest"].endswith(
        "3" * 64
    )
    with pytest.raises(
        NotFound, match=r"no matching manifest for linux/amd64 .* \(it has: linux/arm/v6"
    ):
        mf.select_platform(index, mf.Platform.parse("linux/amd64"), "x")


def test_manifest_checks():
    with pytest.raises(Unsupported, match="schema 1"):
        mf.parse(json.dumps({"schemaVersion": 1, "name": "x"}).encode(), "", "img")
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        mf.parse(b"{", mf.MT_OCI_MANIFEST, "img")
    good = {"digest": "sha256:" + "a" * 64, "size": 3}
    doc = {"config": good, "layers": [{**good, "mediaType": mf.MT_OCI_LAYER_ZSTD}]}
    with pytest.raises(Unsupported, match="zstd"):
        mf.check_image(doc, "img")
    with pytest.raises(InvalidArgument, match="invalid image manifest"):
        mf.check_image({"config": {"digest": "sha256:../../etc", "size": 1}}, "img")
    assert mf.media_type({"manifests": []}, "") == mf.MT_OCI_INDEX


class _Chunks:
    """``next_input`` for Gunzip: ``data`` in pieces of ``step`` bytes."""

    def __init__(self, data: bytes, step: int = 7):
        self.data, self.step = memoryview(data), step

    def __call__(self) -> memoryview:
        piece, self.data = self.data[: self.step], self.data[self.step :]
        return piece


@pytest.fixture(params=["zlib", "isal"])
def inflate_lib(request, monkeypatch):
    """Gunzip inflates with zlib, or with ISA-L where the isal package is installed."""
    from engine.registry import unpack

    lib = zlib if request.param == "zlib" else pytest.importorskip("isal.isal_zlib")
    monkeypatch.setattr(unpack, "_inflate_lib", lib)
    return lib


def _gunzip(data: bytes, step: int = 7) -> tuple[bytes, Gunzip]:
    g = Gunzip(_Chunks(data, step), "layer")
    out = bytearray()
    while chunk := g.next_chunk():
        assert len(chunk) <= OUT_STEP
        out += chunk
    return bytes(out), g


def _member(payload: bytes, flags: int = 0, fields: bytes = b"") -> bytes:
    """A gzip member with the optional header fields ``fields`` (flags say which)."""
    z = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = z.compress(payload) + z.flush()
    header = b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\0\xff" + fields
    return header + body + struct.pack("<II", zlib.crc32(payload), len(payload) & 0xFFFFFFFF)


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_gunzip_members_padding_and_header_fields(step, inflate_lib):
    data = gzip.compress(b"hello ") + gzip.compress(b"world") + b"\0" * 10
    out, g = _gunzip(data, step)
    assert out == b"hello world"
    assert g.digest == "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    # FEXTRA, FNAME, FCOMMENT and FHCRC, each of them cut by the reads when step is small.
    payload = bytes(range(256)) * 400 + b"a" * 100_000
    fields = struct.pack("<H", 5) + b"extra" + b"layer.tar\0" + b"a comment\0" + b"\xab\xcd"
    named = _member(payload, 0x04 | 0x08 | 0x10 | 0x02, fields)
    out, _ = _gunzip(named + gzip.compress(bytes(3_000_000)), step)
    assert out == payload + bytes(3_000_000)


def test_gunzip_bounds_what_a_step_hands_out(inflate_lib):
    # 20 MB of zeros are 20 kB of gzip: output comes in bounded steps, whole.
    out, g = _gunzip(gzip.compress(bytes(20_000_000)) * 2, 1 << 18)
    assert out == bytes(40_000_000)


@pytest.mark.parametrize(
    "data, why",
    [
        (gzip.compress(b"x" * 1000)[:-6], "truncated gzip"),
        (gzip.compress(b"x" * 1000)[:-12], "truncated gzip"),
        (b"\x1f\x8b\x08", "truncated gzip"),
        (b"", "truncated gzip"),
        (b"PK\x03\x04 not gzip", "not a gzip stream"),
        (b"\x1f\x8b\x09" + bytes(20), "unknown compression method"),
        (gzip.compress(b"y" * 1000)[:-4] + b"\x01\0\0\0", "length does not match"),
        (gzip.compress(b"x") + b"\0\0" + gzip.compress(b"y"), "after the zero padding"),
        (b"\x1f\x8b\x08\x08" + bytes(6) + b"n" * 1_100_000, "header longer"),
        (b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 50, "corrupt gzip stream"),
    ],
)
def test_gunzip_refuses_broken_streams(data, why, inflate_lib):
    for step in (7, 1 << 20):
        with pytest.raises(InvalidArgument, match=why):
            _gunzip(data, step)


def test_gunzip_leaves_the_crc_to_the_digests(inflate_lib):
    """The CRC-32 is not computed: a flipped CRC still inflates to the same bytes,
    whose diff ID (and the blob's digest) say whether they are the right ones."""
    bad = bytearray(gzip.compress(b"y" * 1000))
    bad[-8] ^= 0xFF
    out, g = _gunzip(bytes(bad))
    assert out == b"y" * 1000
    assert g.digest == "sha256:" + hashlib.sha256(out).hexdigest()


def test_progress_messages():
    assert short_id("sha256:" + "ab" * 32) == "abababababab"
    assert bar(5, 10).startswith("[" + "=" * 25 + ">")
    assert bar(10, 10).endswith("10B/10B")
    got = []
    p = Progress(got.append, interval=60)
    p.bytes("l1", "Downloading", 1, 10)
    p.bytes("l1", "Downloading", 2, 10)  # throttled
    p.bytes("l1", "Downloading", 10, 10)  # the last one always goes
    assert [m["progressDetail"]["current"] for m in got] == [1, 10]

    def broken(msg):
        raise RuntimeError("listener gone")

    q = Progress(broken)
    q.status("still fine")  # a broken listener does not break the transfer
    q.layer("x", "Pull complete")


def test_blobinfo_cache(tmp_path):
    cache = BlobInfoCache(tmp_path / "registry" / "blobinfo.json", tmp_path / "lock")
    d = "sha256:" + "c" * 64
    cache.record(locations=[(d, "reg:5000", "a/b"), (d, "reg:5000", "c/d"), (d, "reg:5000", "a/b")])
    assert cache.locations(d) == [("reg:5000", "a/b"), ("reg:5000", "c/d")]
    cache.record(
        compressed=[("sha256:" + "d" * 64, {"digest": d, "size": 5, "mediaType": "m", "x": 1})]
    )
    fresh = BlobInfoCache(tmp_path / "registry" / "blobinfo.json", tmp_path / "lock")
    assert fresh.compressed("sha256:" + "d" * 64) == [{"digest": d, "size": 5, "mediaType": "m"}]
    (tmp_path / "registry" / "blobinfo.json").write_text("garbage")
    assert (
        BlobInfoCache(tmp_path / "registry" / "blobinfo.json", tmp_path / "lock").locations(d) == []
    )


def test_credentials_file_concurrent_logins_stay_private(tmp_path):
    """Logins at once (each its own lock fd, as separate processes have), an
    open umask, a file another tool left world-readable and the staging file
    of a login that was killed: every login kept, mode 0600, no staging file."""
    import os
    import threading

    path = tmp_path / "auth.json"
    path.write_text('{"auths": {}}')
    os.chmod(path, 0o644)
    # What a login killed between writing and renaming leaves: a password in a stray file.
    (tmp_path / ".auth.json.tmp-0123abcd").write_text('{"auths": {"x": {"auth": "c2VjcmV0"}}}')
    old = os.umask(0)
    try:
        threads = [
            threading.Thread(
                target=lambda i=i: CredentialStore(path, tmp_path / "auth.lock").store(
                    f"reg{i}:5000", Credentials(f"u{i}", f"p{i}")
                )
            )
            for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        os.umask(old)
    store = CredentialStore(path, tmp_path / "auth.lock")
    assert store.servers() == sorted(f"reg{i}:5000" for i in range(8))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auth.json", "auth.lock"]
