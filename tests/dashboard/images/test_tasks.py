"""Image tasks run by a real Celery worker against a real Redis, with a real registry
(Debian's docker-registry on 127.0.0.1): pull with per-layer progress, a page that
leaves in the middle of a pull and comes back, push, build with live output, export
and import, prune."""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from dashboard.accounts.models import AuditEntry
from dashboard.live import tasks_api
from dashboard.live.models import TaskRecord
from tests.dashboard.live.conftest import wait_for

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not shutil.which("docker-registry"), reason="needs docker-registry"),
]


class Registry:
    """`docker-registry serve` on 127.0.0.1:<free port>, storage in a temp dir."""

    def __init__(self, work: Path, start: bool = True) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.config = config = work / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {work / 'storage'}\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: {secrets.token_hex(16)}\n"
        )
        self.proc: subprocess.Popen | None = None
        if start:
            self.start()

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        wait_for(self._answers, 30, "docker-registry")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1).close()
            return True
        except OSError:
            return False

    def manifest_exists(self, repo: str, tag: str) -> bool:
        req = urllib.request.Request(
            f"http://{self.host}/v2/{repo}/manifests/{tag}",
            method="HEAD",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json,"
                     "application/vnd.docker.distribution.manifest.v2+json"},
        )  # fmt: skip
        try:
            urllib.request.urlopen(req, timeout=10).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("dash-registry"))
    try:
        yield reg
    finally:
        reg.stop()


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def push_big_image(env, registry: Registry, repo: str, layers: int, size: int) -> str:
    """An image of busybox plus ``layers`` layers of random data, pushed to the registry
    and removed here again (busybox stays); returns its reference in the registry."""
    eng = env.engine()
    base = eng.images.get("busybox:latest")
    blobs: list = [eng.images.blobs.path(d) for d in base.layer_digests]
    for i in range(layers):
        blobs.append(layer_tar({f"data/{i}.bin": os.urandom(size)}))
    ref = f"{registry.host}/{repo}:1"
    history = [{"created_by": "busybox"}] + [{"created_by": f"data {i}"} for i in range(layers)]
    cfg = {"config": {"Cmd": ["sh"]}, "history": history}
    eng.images.add_image(blobs, cfg, [ref])
    eng.push_image(ref)
    eng.remove_image(ref)
    return ref


def task_done(tid: str) -> TaskRecord | None:
    rec = TaskRecord.objects.get(pk=tid)
    return rec if rec.final else None


def run_task(client, url: str, data: dict, timeout: float = 120) -> TaskRecord:
    r = client.post(url, data)
    assert r.status_code == 302 and r.url.startswith("/tasks/"), r.content[:500]
    tid = r.url.split("/")[2]
    return wait_for(lambda: task_done(tid), timeout, f"task {url}")


def test_pull_from_a_registry_shows_each_layer(
    client_as, dash_engine, registry, start_worker, transactional_db
):
    ref = push_big_image(dash_engine, registry, "live/layers", layers=3, size=300_000)
    start_worker()
    rec = run_task(client_as("operator"), "/images/pull/", {"ref": ref})
    assert rec.state == "success", rec.error
    entries = [d for _sid, d in tasks_api.entries(rec.id)]
    layers = {d["id"] for d in entries if d.get("id") and d.get("total")}
    assert len(layers) == 4  # busybox and the three data layers, each with its bytes
    for layer in layers:
        done = [d for d in entries if d.get("id") == layer and d.get("total")]
        assert done[-1]["current"] == done[-1]["total"]
    assert any(d.get("status") == "Pull complete" for d in entries)
    assert rec.result["Id"] and ref in client_as("viewer").get("/images/").content.decode()


def _ws_app():
    from dashboard.routing import websocket_urlpatterns

    return URLRouter(websocket_urlpatterns)


@pytest.mark.asyncio
async def test_task_page_closed_during_a_pull_and_reopened_follows_it_to_the_end(
    client_as, dash_engine, registry, start_worker, users, transactional_db, monkeypatch
):
    """Connect, read some progress of a real pull, disconnect in the middle, reconnect
    from the last entry ID received: every entry of the stream exactly once."""
    ref = await sync_to_async(push_big_image)(
        dash_engine, registry, "live/rejoin", layers=6, size=4_000_000
    )
    # One layer at a time: a pull long enough to leave in the middle of.
    await sync_to_async(start_worker)({"BERTH_MAX_CONCURRENT_DOWNLOADS": "1"})
    tid = await sync_to_async(tasks_api.start)(
        users["operator"], "image.pull", "long.image_pull", {"ref": ref}, ref
    )
    seen: list[tuple[str, dict]] = []

    comm = WebsocketCommunicator(_ws_app(), f"/ws/tasks/{tid}/")
    comm.scope["user"] = users["viewer"]
    assert (await comm.connect(timeout=10))[0]
    while not any(d.get("total") for _s, d in seen):  # the first bytes of a layer
        msg = json.loads(await comm.receive_from(timeout=60))
        seen.append((msg["sid"], msg["data"]))
    await comm.disconnect()
    left_at = len(seen)
    assert not any(d.get("state") == "success" for _s, d in seen)

    time.sleep(0.5)  # the pull goes on without a page
    comm = WebsocketCommunicator(_ws_app(), f"/ws/tasks/{tid}/?after={seen[-1][0]}")
    comm.scope["user"] = users["viewer"]
    assert (await comm.connect(timeout=10))[0]
    while seen[-1][1].get("state") not in ("success", "failure"):
        msg = json.loads(await comm.receive_from(timeout=120))
        seen.append((msg["sid"], msg["data"]))
    await comm.disconnect()

    stream = await sync_to_async(tasks_api.entries)(tid)
    assert seen == stream, "gap or duplicate"
    assert seen[-1][1]["state"] == "success", seen[-1]
    assert len(stream) > left_at + 1  # the second page saw the pull's later progress
    layers = {d["id"] for _s, d in stream[left_at:] if d.get("total")}
    assert len(layers) >= 2


def test_pull_retried_until_the_registry_is_back(
    client_as, dash_engine, start_worker, transactional_db, tmp_path
):
    (tmp_path / "late").mkdir()
    reg = Registry(tmp_path / "late")
    try:
        ref = push_big_image(dash_engine, reg, "live/late", layers=1, size=1000)
        reg.stop()  # its storage keeps the image; the port is free now
        start_worker()
        r = client_as("operator").post("/images/pull/", {"ref": ref})
        tid = r.url.split("/")[2]
        retry = wait_for(
            lambda: [d for _s, d in tasks_api.entries(tid) if d.get("retry")], 60, "a retry"
        )
        assert retry[0]["state"] == "pending" and "retry 1/3" in retry[0]["reason"]
        reg.start()
        rec = wait_for(lambda: task_done(tid), 120, "the retried pull")
        assert rec.state == "success", rec.error
        assert rec.attempts >= 2 and rec.result["Reference"] == ref
    finally:
        reg.stop()


def test_push_to_a_registry(client_as, dash_engine, registry, start_worker, transactional_db):
    ref = f"{registry.host}/live/pushed:1"
    dash_engine.engine().tag_image("busybox:latest", ref)
    start_worker()
    rec = run_task(client_as("operator"), "/images/push/", {"ref": ref})
    assert rec.state == "success", rec.error
    assert rec.result["Digest"].startswith("sha256:")
    assert AuditEntry.objects.get(action="image.push").result == "ok"
    assert registry.manifest_exists("live/pushed", "1")


def test_push_of_an_unknown_image_fails_with_the_engines_message(
    client_as, dash_engine, registry, start_worker, transactional_db
):
    start_worker()
    rec = run_task(client_as("operator"), "/images/push/", {"ref": f"{registry.host}/no/pe:1"})
    assert rec.state == "failure" and "does not exist locally" in rec.error
    # The audit entry of the request says how it ended.
    entry = AuditEntry.objects.get(action="image.push")
    assert entry.params["task"] == rec.id and "does not exist locally" in entry.result


def test_build_from_a_pasted_dockerfile_streams_its_output(
    client_as, dash_engine, start_worker, transactional_db
):
    start_worker()
    dockerfile = "FROM busybox\nRUN echo built-by-the-dashboard\nLABEL made=dash\n"
    rec = run_task(
        client_as("operator"),
        "/images/build/",
        {"dockerfile_text": dockerfile, "tags": "dash/built:1"},
        timeout=180,
    )
    assert rec.state == "success", rec.error
    lines = [d["line"] for _s, d in tasks_api.entries(rec.id) if "line" in d]
    assert "built-by-the-dashboard" in lines
    info = dash_engine.engine().inspect_image("dash/built:1")
    assert info["Config"]["Labels"]["made"] == "dash"
    assert not list((dash_engine.root / "dashboard" / "transfers").glob("*.upload"))


def test_build_from_an_uploaded_context(client_as, dash_engine, start_worker, transactional_db):
    from django.core.files.uploadedfile import SimpleUploadedFile

    start_worker()
    ctx = layer_tar(
        {"Dockerfile": b"FROM busybox\nCOPY hello.txt /hello.txt\n", "hello.txt": b"hi there\n"}
    )
    upload = SimpleUploadedFile("ctx.tar", ctx, content_type="application/x-tar")
    rec = run_task(
        client_as("operator"), "/images/build/", {"context": upload, "tags": "dash/ctx:1"}
    )
    assert rec.state == "success", rec.error
    hist = dash_engine.engine().image_history("dash/ctx:1")
    assert any("hello.txt" in h["CreatedBy"] for h in hist)


def test_failing_build_fails_its_task_with_the_step(
    client_as, dash_engine, start_worker, transactional_db
):
    start_worker()
    rec = run_task(
        client_as("operator"),
        "/images/build/",
        {"dockerfile_text": "FROM busybox\nRUN exit 3\n", "tags": "dash/bad:1"},
    )
    assert rec.state == "failure" and "non-zero code: 3" in rec.error


def test_export_then_import_and_prune(client_as, dash_engine, start_worker, transactional_db):
    from django.core.files.uploadedfile import SimpleUploadedFile

    start_worker()
    c = client_as("operator")
    rec = run_task(c, "/images/export/", {"refs": "busybox:latest"})
    assert rec.state == "success", rec.error
    r = c.get(rec.result["Download"])
    archive = b"".join(r.streaming_content)
    assert r.status_code == 200 and len(archive) == rec.result["Size"]
    assert "manifest.json" in tarfile.open(fileobj=io.BytesIO(archive)).getnames()

    # A rootfs tar imported as a new image, then pruned as an unused image with --all.
    rootfs = layer_tar({"etc/motd": b"imported\n"})
    upload = SimpleUploadedFile("rootfs.tar", rootfs)
    rec = run_task(c, "/images/import/", {"archive": upload, "mode": "rootfs", "ref": "dash/imp:1"})
    assert rec.state == "success", rec.error and rec.result["Loaded"] == ["dash/imp:1"]
    tags = {t for i in dash_engine.engine().list_images() for t in i["RepoTags"]}
    assert "dash/imp:1" in tags

    rec = run_task(c, "/images/prune/", {"all": "1", "confirm": "yes"})
    assert rec.state == "success", rec.error
    assert rec.result["Deleted"] >= 2 and dash_engine.engine().list_images() == []


def test_run_of_an_image_not_here_pulls_it_in_a_task(
    client_as, dash_engine, registry, start_worker, transactional_db
):
    """The run form with a registry image that is not local: a long task pulls it (per
    layer, as the images page shows) and then runs it; audited when it ends."""
    ref = push_big_image(dash_engine, registry, "live/runme", layers=1, size=50_000)
    start_worker()
    name = "pulled-" + secrets.token_hex(3)
    rec = run_task(
        client_as("operator"),
        "/containers/run/",
        {"image": ref, "name": name, "command": "sleep 300", "start": "on", "restart": "no"},
    )
    assert rec.state == "success", rec.error
    assert rec.result["container"] == name
    entries = [d for _sid, d in tasks_api.entries(rec.id)]
    assert any(d.get("status") == "Pull complete" for d in entries)
    c = dash_engine.engine().get_container(name)
    assert c.state == "running"
    entry = AuditEntry.objects.get(action="container.run", target=name)
    assert entry.result == "ok" and entry.actor == "operator"
    dash_engine.berth("rm", "-f", name, check=True)
