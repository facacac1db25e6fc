"""A registry that tries its luck: credentials sent only to the registry
itself (never to a redirect or upload Location on another host, never over
plain HTTP to a host not marked insecure, never to a plain-HTTP token realm
elsewhere); bounded reads of manifests and configs; layer paths that try
to leave the store."""

from __future__ import annotations

import json
import shutil

import pytest

from engine.errors import EngineError, InvalidArgument
from engine.images import reference as refs
from engine.registry.client import RegistryClient
from engine.registry.credentials import Credentials
from engine.registry.hosts import RegistryHosts
from engine.registry.progress import Progress
from engine.registry.pull import Puller
from tests.engine.registry._helpers import layer_tar, registry_client, store_snapshot, upload
from tests.engine.registry._proxy import RegistryProxy
from tests.engine.registry._servers import PASSWORD, USER, make_tls_pair

pytestmark = pytest.mark.root

CREDS = {"username": USER, "password": PASSWORD}


class Strict(RegistryHosts):
    """As for any host that is not loopback: only ``insecure`` may be plain HTTP."""

    def is_insecure(self, domain: str) -> bool:
        return domain in self.insecure


@pytest.fixture
def front(registry_plain):
    """A proxy in front of the plain registry that wants a Basic login."""
    p = RegistryProxy(registry_plain.host).start()
    p.require_basic(USER, PASSWORD)
    yield p
    p.stop()


@pytest.fixture
def elsewhere(registry_plain):
    """Another host (a CDN, an upload service): records what it was sent."""
    p = RegistryProxy(registry_plain.host).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def remote_image(registry_plain, tmp_path_factory):
    """busybox in the plain registry as hostile/busybox:latest (reached through proxies)."""
    from tests.conftest import _new_env, _teardown_env

    env = _new_env(tmp_path_factory.mktemp("hostile-source"))
    try:
        eng = env.engine()
        eng.bootstrap_image("busybox")
        eng.tag_image("busybox", f"{registry_plain.host}/hostile/busybox:latest")
        eng.push_image(f"{registry_plain.host}/hostile/busybox:latest")
        yield "hostile/busybox:latest"
    finally:
        _teardown_env(env)


def _is_blob_get(h) -> bool:
    return h.command == "GET" and "/blobs/sha256:" in h.path


def test_blob_redirect_to_another_host_carries_no_credentials(
    front, elsewhere, remote_image, fresh_env
):
    def redirect(h) -> bool:
        if not _is_blob_get(h):
            return False
        h.reply(307, {"Location": f"{elsewhere.url}{h.path}"})
        return True

    front.hook = redirect
    result = fresh_env.engine().pull_image(f"{front.host}/{remote_image}", credentials=CREDS)
    assert result["Status"].startswith("Downloaded newer image")
    assert [r for r in elsewhere.requests if r["method"] == "GET"], "the redirect was not followed"
    assert all(r["authorization"] is None for r in elsewhere.requests), elsewhere.requests
    assert any(r["authorization"] for r in front.requests)


def test_upload_location_on_another_host_carries_no_credentials(front, elsewhere, busybox_env):
    def move_uploads(h, status: int, headers: dict) -> None:
        if h.command == "POST" and "Location" in headers:
            headers["Location"] = headers["Location"].replace(front.netloc, elsewhere.netloc)

    front.rewrite = move_uploads
    ref = f"{front.host}/hostile/upload:latest"
    eng = busybox_env.engine()
    eng.tag_image("busybox", ref)
    eng.push_image(ref, credentials=CREDS)
    sent = [r for r in elsewhere.requests if r["method"] in ("PATCH", "PUT")]
    assert sent, "the upload did not go to its Location"
    assert all(r["authorization"] is None for r in elsewhere.requests), elsewhere.requests


@pytest.fixture
def tls_front(registry_plain, tmp_path):
    cert, key, ca = make_tls_pair(tmp_path)
    p = RegistryProxy(registry_plain.host, tls=(cert, key, ca)).start()
    p.require_basic(USER, PASSWORD)
    certs = tmp_path / "certs.d"
    (certs / p.netloc).mkdir(parents=True)
    shutil.copy(ca, certs / p.netloc / "ca.crt")
    p.hosts = Strict(certs_dirs=(certs,))
    yield p
    p.stop()


def _pull(env, proxy, hosts, name: str):
    client = RegistryClient(proxy.netloc, hosts=hosts, credentials=Credentials(USER, PASSWORD))
    with client:
        puller = Puller(env.engine().images, client, progress=Progress(None))
        return puller.pull(refs.parse_reference(f"{proxy.netloc}/{name}"))


def test_https_registry_cannot_redirect_to_plain_http(
    tls_front, elsewhere, remote_image, fresh_env
):
    # Sanity: over HTTPS with the CA in certs.d the pull works.
    assert _pull(fresh_env, tls_front, tls_front.hosts, remote_image).image_id
    fresh_env.engine().remove_image(f"{tls_front.netloc}/{remote_image}")
    fresh_env.engine().images.gc()

    # Same host and port, plain HTTP: the Authorization header would cross the wire in clear.
    def downgrade(h) -> bool:
        if not _is_blob_get(h):
            return False
        h.reply(307, {"Location": f"http://{tls_front.netloc}{h.path}"})
        return True

    tls_front.hook = downgrade
    with pytest.raises(EngineError) as exc:
        _pull(fresh_env, tls_front, tls_front.hosts, remote_image)
    msg = str(exc.value)
    assert "plain HTTP" in msg and tls_front.netloc in msg, msg
    assert "\n" not in msg

    # Another host, plain HTTP: refused before connecting (it is not marked insecure).
    def elsewhere_http(h) -> bool:
        if not _is_blob_get(h):
            return False
        # A pre-signed URL, as CDNs use: its signature is a credential too.
        signed = f"{elsewhere.url}/b/1?s=s3cr3t&X-Amz-Credential=AKIA"
        h.reply(307, {"Location": signed})
        return True

    tls_front.hook = elsewhere_http
    with pytest.raises(EngineError, match="plain HTTP") as exc:
        _pull(fresh_env, tls_front, tls_front.hosts, remote_image)
    assert "s3cr3t" not in str(exc.value) and "AKIA" not in str(exc.value), str(exc.value)
    assert elsewhere.requests == []
    assert not fresh_env.engine().images.exists(f"{tls_front.netloc}/{remote_image}")


def test_token_realm_over_plain_http_elsewhere_gets_no_password(
    registry_plain, elsewhere, remote_image, fresh_env
):
    front = RegistryProxy(registry_plain.host).start()
    try:
        front.require_bearer("t0ken", realm=f"{elsewhere.url}/token")
        # The registry itself is marked insecure (plain HTTP); the realm's host is not.
        hosts = Strict(insecure=(front.netloc,))
        with pytest.raises(EngineError) as exc:
            _pull(fresh_env, front, hosts, remote_image)
        msg = str(exc.value)
        assert "token" in msg and elsewhere.netloc in msg and "plain HTTP" in msg, msg
        assert elsewhere.requests == [], "the password went to a plain-HTTP realm"
    finally:
        front.stop()


def test_endless_manifest_is_cut_off(registry_plain, fresh_env):
    sent = {"bytes": 0}

    def endless(h) -> bool:
        if h.command != "GET" or "/manifests/" not in h.path:
            return False
        h.send_response(200)
        h.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        chunk = b" " * 65536
        try:
            while sent["bytes"] < 64 << 20:
                h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent["bytes"] += len(chunk)
            h.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client hung up: what we want
        h.close_connection = True
        return True

    with RegistryProxy(registry_plain.host) as proxy:
        proxy.hook = endless
        with pytest.raises(InvalidArgument, match="larger than 4194304 bytes"):
            fresh_env.engine().pull_image(f"{proxy.netloc}/hostile/endless:latest")
    assert sent["bytes"] < 16 << 20, f"the client read {sent['bytes']} bytes of a manifest"


def test_oversized_config_is_refused(registry_plain, fresh_env):
    repo = "hostile/bigconfig"
    layer = layer_tar({"a": b"x"})
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"padding": "x" * (5 << 20)}},
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    with registry_client(registry_plain.host) as client:
        from engine.images.content import sha256_bytes

        config["rootfs"]["diff_ids"] = [sha256_bytes(layer)]
        cfg = json.dumps(config).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": upload(client, repo, cfg),
                "size": len(cfg),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": upload(client, repo, layer),
                    "size": len(layer),
                }
            ],
        }
        body = json.dumps(manifest).encode()
        client.put_manifest(repo, "latest", body, manifest["mediaType"], what=repo)
    before = store_snapshot(fresh_env)
    with pytest.raises(InvalidArgument, match="image config .* is larger than"):
        fresh_env.engine().pull_image(f"{registry_plain.host}/{repo}:latest")
    assert store_snapshot(fresh_env)[:2] == before[:2]


def _tars_escaping_to(outside) -> dict[str, bytes]:
    """One layer per way out: each stops the extractor at its first bad entry."""
    import io
    import tarfile

    up = "../" * 12 + str(outside).lstrip("/")

    def tar(*entries: tuple) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            for name, kind, link, data in entries:
                info = tarfile.TarInfo(name)
                info.type, info.linkname, info.mode = kind, link, 0o644
                info.size = len(data) if kind == tarfile.REGTYPE else 0
                t.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        return buf.getvalue()

    reg, sym, lnk = tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
    return {
        "abslink": tar(("abs", sym, str(outside), b""), ("abs/via-abs-link", reg, "", b"x")),
        "rellink": tar(("rel", sym, up, b""), ("rel/via-rel-link", reg, "", b"x")),
        "dotdot": tar((f"{up}/via-dotdot", reg, "", b"x")),
        "absname": tar((f"/{str(outside).lstrip('/')}/via-abs-name", reg, "", b"x")),
        "hardlink": tar(("hard", lnk, f"{outside}/secret", b""), ("hard", reg, "", b"overwritten")),
        "hardlink-up": tar(("hard", lnk, f"{up}/secret", b""), ("hard", reg, "", b"overwritten")),
    }


def test_layer_paths_never_leave_the_store(registry_plain, fresh_env, tmp_path):
    """A layer from a registry goes through the engine's safe extractor:
    links and ``..`` resolve inside the layer, never outside it."""
    from tests.engine.registry._helpers import push_raw_image

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    eng = fresh_env.engine()
    for name, layer in _tars_escaping_to(outside).items():
        with registry_client(registry_plain.host) as client:
            push_raw_image(
                client, f"hostile/{name}", "latest", architecture="amd64", layers=[layer]
            )
        try:
            eng.pull_image(f"{registry_plain.host}/hostile/{name}:latest")
        except EngineError as e:
            assert "\n" not in str(e)
            assert str(e).startswith("layer sha256:") and f"hostile/{name}" in str(e), str(e)
        assert sorted(p.name for p in outside.iterdir()) == ["secret"], name
        assert (outside / "secret").read_bytes() == b"secret", name
    written = [p for p in tmp_path.rglob("via-*")]
    layers = fresh_env.root / "images" / "layers"
    assert all(layers in p.parents for p in written), written


def test_corrupt_gzip_layer_with_right_digest(registry_plain, fresh_env):
    """A registry serving exactly what its manifest names, which is not gzip:
    one clear error naming the layer once, nothing left behind."""
    import os

    from engine.images.content import sha256_bytes

    repo = "hostile/notgzip"
    junk = b"\x1f\x8b\x08\x00" + os.urandom(2000)
    with registry_client(registry_plain.host) as client:
        cfg = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [sha256_bytes(b"whatever")]},
            }
        ).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": upload(client, repo, cfg),
                "size": len(cfg),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": upload(client, repo, junk),
                    "size": len(junk),
                }
            ],
        }
        body = json.dumps(manifest).encode()
        client.put_manifest(repo, "latest", body, manifest["mediaType"], what=repo)
    before = store_snapshot(fresh_env)
    with pytest.raises(InvalidArgument) as exc:
        fresh_env.engine().pull_image(f"{registry_plain.host}/{repo}:latest")
    msg = str(exc.value)
    layer = manifest["layers"][0]["digest"]
    assert msg.startswith(f"layer {layer} of {registry_plain.host}/{repo}:latest: "), msg
    assert msg.count(layer) == 1 and "gzip" in msg, msg
    assert store_snapshot(fresh_env)[:2] == before[:2]
    assert not store_snapshot(fresh_env)[2]


def test_tag_list_pages_that_never_end(registry_plain, fresh_env, monkeypatch):
    """``pull -a`` against a registry whose tag list always has a next page:
    a clear error after a bounded number of pages, not a loop."""
    import engine.registry.client

    monkeypatch.setattr(engine.registry.client, "MAX_TAG_PAGES", 30)  # 1000 by default
    pages = {"n": 0}

    def forever(h) -> bool:
        if h.command != "GET" or "/tags/list" not in h.path:
            return False
        pages["n"] += 1
        n = pages["n"]
        body = json.dumps({"name": "hostile/tags", "tags": [f"t{n}"]}).encode()
        link = f'</v2/hostile/tags/tags/list?n=1&last=t{n}>; rel="next"'
        h.reply(200, {"Content-Type": "application/json", "Link": link}, body)
        return True

    with RegistryProxy(registry_plain.host) as proxy:
        proxy.hook = forever
        with pytest.raises(EngineError, match="tag list") as exc:
            fresh_env.engine().pull_image(f"{proxy.netloc}/hostile/tags", all_tags=True)
    assert "\n" not in str(exc.value) and "did not end after 30 pages" in str(exc.value)
    assert pages["n"] == 30
