"""The registry pieces that need no registry: challenges, credentials file,
platforms, manifest checks, gzip streams, progress messages, the blob-info cache."""

from __future__ import annotations

import base64
import gzip
import io
import json
import stat
import time

import pytest

from engine.errors import InvalidArgument, NotFound, Unsupported
from engine.registry import auth
from engine.registry import manifests as mf
from engine.registry.blobinfo import BlobInfoCache
from engine.registry.credentials import DOCKER_HUB_KEY, Credentials, CredentialStore, server_key
from engine.registry.progress import Progress, bar, short_id
from engine.registry.unpack import Gunzip


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


class _Chunks(io.RawIOBase):
    def __init__(self, data: bytes, step: int = 7):
        self.data, self.step = data, step

    def readinto(self, b) -> int:
        n = min(len(b), self.step, len(self.data))
        b[:n] = self.data[:n]
        self.data = self.data[n:]
        return n


def test_gunzip_members_padding_and_truncation():
    data = gzip.compress(b"hello ") + gzip.compress(b"world") + b"\0" * 10
    g = Gunzip(_Chunks(data), "layer")
    out = io.BufferedReader(g).read()
    assert out == b"hello world"
    assert g.digest == "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    with pytest.raises(InvalidArgument, match="truncated gzip"):
        io.BufferedReader(Gunzip(_Chunks(gzip.compress(b"x" * 1000)[:-6]), "layer")).read()
    with pytest.raises(InvalidArgument, match="corrupt gzip"):
        bad = bytearray(gzip.compress(b"y" * 1000))
        bad[-8] ^= 0xFF  # the CRC
        io.BufferedReader(Gunzip(_Chunks(bytes(bad)), "layer")).read()


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
