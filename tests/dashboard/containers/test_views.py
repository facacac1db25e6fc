"""Containers pages with the three standing users, each permission both ways, against
a real engine with real busybox containers."""

from __future__ import annotations

import time

import pytest

from dashboard.accounts.models import AuditEntry

pytestmark = pytest.mark.timeout(120)


def state_of(ctr_env, ref: str) -> str:
    from engine.containers.inspect import docker_state

    return docker_state(ctr_env.engine().get_container(ref))


# -- list --------------------------------------------------------------------------------


def test_list_requires_login(client, db):
    r = client.get("/containers/")
    assert r.status_code == 302 and r.url.startswith("/login/")


@pytest.mark.parametrize(
    "method,url",
    [
        ("get", "/containers/"),
        ("get", "/containers/run/"),
        ("post", "/containers/run/"),
        ("post", "/containers/bulk/"),
        ("get", "/containers/x/"),
        ("get", "/containers/x/logs/"),
        ("get", "/containers/x/terminal/"),
        ("get", "/containers/x/logs/download/"),
        ("post", "/containers/x/action/stop/"),
    ],
)
def test_every_page_and_action_needs_a_login(client, db, method, url):
    r = getattr(client, method)(url)
    assert r.status_code == 302 and r.url.startswith("/login/")


@pytest.mark.parametrize("role", ["admin", "operator", "viewer"])
def test_list_shows_containers_to_every_role(client_as, make_ctr, role):
    up = make_ctr("sleep", "60")
    down = make_ctr("true", start=False)
    body = client_as(role).get("/containers/").content.decode()
    assert up.name in body and down.name in body
    # Bulk actions only for those who may act.
    assert ('name="action" value="stop"' in body) == (role != "viewer")
    assert ('name="ids"' in body) == (role != "viewer")


def test_list_filters_by_state_and_search(client_as, make_ctr):
    up = make_ctr("sleep", "60")
    down = make_ctr("true", start=False)
    c = client_as("viewer")
    body = c.get("/containers/?state=running").content.decode()
    assert up.name in body and down.name not in body
    body = c.get("/containers/?state=created").content.decode()
    assert down.name in body and up.name not in body
    body = c.get(f"/containers/?q={up.name}").content.decode()
    assert up.name in body and down.name not in body
    body = c.get(f"/containers/?q={down.id[:8]}").content.decode()
    assert down.name in body and up.name not in body
    # htmx asks for the rows only
    frag = c.get("/containers/?state=running&fragment=rows", HTTP_HX_REQUEST="true")
    assert b"<html" not in frag.content and up.name.encode() in frag.content
    r = c.get("/containers/?state=bogus")
    assert r.status_code == 400 and b"bogus" in r.content


def test_bulk_actions_operator_yes_viewer_no(client_as, make_ctr, ctr_env):
    a, b = make_ctr("sleep", "60"), make_ctr("sleep", "60")
    r = client_as("viewer").post("/containers/bulk/", {"action": "stop", "ids": [a.id, b.id]})
    assert r.status_code == 403
    assert state_of(ctr_env, a.id) == "running"
    r = client_as("operator").post("/containers/bulk/", {"action": "kill", "ids": [a.id, b.id]})
    assert r.status_code == 302
    assert state_of(ctr_env, a.id) == "exited" and state_of(ctr_env, b.id) == "exited"
    r = client_as("operator").post("/containers/bulk/", {"action": "remove", "ids": [a.id, b.id]})
    assert r.status_code == 302
    assert ctr_env.engine().containers(all=True) == []
    entries = AuditEntry.objects.filter(action="container.remove", actor="operator")
    assert {e.target for e in entries} == {a.name, b.name}
    r = client_as("operator").post("/containers/bulk/", {"action": "explode", "ids": [a.id]})
    assert r.status_code == 400 and b"explode" in r.content


# -- run form ----------------------------------------------------------------------------


def run_form(**kw) -> dict:
    d = {"image": "busybox", "restart": "no", "start": "on"}
    d.update(kw)
    return d


def test_viewer_cannot_see_or_post_the_run_form(client_as, ctr_env):
    c = client_as("viewer")
    assert c.get("/containers/run/").status_code == 403
    assert c.post("/containers/run/", run_form(name="nope")).status_code == 403
    assert ctr_env.engine().containers(all=True) == []


def test_operator_runs_a_container_with_options(client_as, ctr_env):
    c = client_as("operator")
    assert c.get("/containers/run/").status_code == 200
    form = run_form(
        name="web1", command="sh -c 'echo started; sleep 60'", env="A=1\nPASSWORD=hunter2",
        labels="tier=web", memory="64m", cpus="0.5", pids_limit="50", workdir="/tmp",
        user="1000", restart="on-failure:3", network="none",
    )  # fmt: skip
    r = c.post("/containers/run/", form)
    assert r.status_code == 302 and r.url == "/containers/web1/", r.content.decode()[-2000:]
    info = ctr_env.engine().inspect_container("web1")
    assert info["State"]["Running"]
    assert "A=1" in info["Config"]["Env"] and info["Config"]["Labels"] == {"tier": "web"}
    assert info["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert info["HostConfig"]["NanoCpus"] == 500_000_000 and info["HostConfig"]["PidsLimit"] == 50
    assert info["Config"]["WorkingDir"] == "/tmp" and info["Config"]["User"] == "1000"
    assert info["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    entry = AuditEntry.objects.get(action="container.run", target="web1")
    assert entry.actor == "operator" and entry.result == "ok"
    assert "PASSWORD=****" in entry.params["env"] and "hunter2" not in str(entry.params)


@pytest.mark.parametrize(
    "field,value,words",
    [
        ("image", "nosuchimage", "nosuchimage"),
        ("name", "bad name!", "invalid container name"),
        ("memory", "lots", "invalid memory limit"),
        ("cpus", "-1", "must be positive"),
        ("ports", "99999999:80", "port"),
        ("volumes", "relative/path", "must be an absolute path"),
        ("restart", "sometimes", "invalid restart policy"),
        ("env", "JUSTANAME", "expected NAME=value"),
        ("workdir", "tmp", "absolute path"),
        ("pids_limit", "many", "positive number"),
    ],
)
def test_run_form_errors_next_to_the_field(client_as, ctr_env, field, value, words):
    r = client_as("operator").post("/containers/run/", run_form(**{field: value}))
    assert r.status_code == 200
    body = r.content.decode()
    start = body.find(f'id="error-{field}"')
    assert start >= 0, body[-3000:]
    assert words in body[start : start + 400]
    assert ctr_env.engine().containers(all=True) == []


@pytest.mark.parametrize(
    "extra",
    [
        {"privileged": "on"},
        {"cap_add": "NET_ADMIN"},
        {"pid_host": "on"},
        {"network": "host"},
        {"volumes": "/etc:/hostetc"},
    ],
)
def test_admin_only_options_refused_for_operator_on_the_server(client_as, ctr_env, extra):
    r = client_as("operator").post("/containers/run/", run_form(name="x1", **extra))
    assert r.status_code == 200 and "needs the admin role" in r.content.decode()
    assert ctr_env.engine().containers(all=True) == []
    assert AuditEntry.objects.filter(action="container.run", result="refused").exists()


def test_admin_may_use_admin_only_options(client_as, ctr_env):
    r = client_as("admin").post(
        "/containers/run/",
        run_form(name="adm1", command="sleep 60", cap_add="NET_ADMIN", volumes="/etc:/hostetc:ro"),
    )
    assert r.status_code == 302, r.content.decode()[-2000:]
    info = ctr_env.engine().inspect_container("adm1")
    assert info["HostConfig"]["CapAdd"] == ["NET_ADMIN"]
    assert info["HostConfig"]["Binds"] == ["/etc:/hostetc:ro"]


def test_operator_may_bind_under_an_allowed_root(client_as, ctr_env, tmp_path, settings):
    allowed = tmp_path / "shared"
    (allowed / "data").mkdir(parents=True)
    settings.BERTH_ALLOWED_BIND_ROOTS = str(allowed)
    r = client_as("operator").post(
        "/containers/run/", run_form(name="bind1", start="", volumes=f"{allowed}/data:/data")
    )
    assert r.status_code == 302, r.content.decode()[-2000:]
    # ...but not a symlink inside it that leads out.
    (allowed / "out").symlink_to("/etc")
    r = client_as("operator").post(
        "/containers/run/", run_form(name="bind2", start="", volumes=f"{allowed}/out:/x")
    )
    assert r.status_code == 200 and "needs the admin role" in r.content.decode()


# -- detail and actions --------------------------------------------------------------------

TABS = ["summary", "logs", "stats", "top", "inspect", "mounts", "networks"]


@pytest.mark.parametrize("role", ["admin", "operator", "viewer"])
def test_every_role_reads_every_tab(client_as, make_ctr, role):
    ctr = make_ctr("sleep", "60")
    c = client_as(role)
    for tab in TABS:
        r = c.get(f"/containers/{ctr.name}/{tab}/")
        assert r.status_code == 200, (tab, r.content[-1000:])
        assert ctr.name.encode() in r.content
    page = c.get(f"/containers/{ctr.name}/")
    assert page.status_code == 200
    # Its anatomy and its place on the diagram are one click away, and answer.
    anatomy = f"/topology/anatomy/{ctr.name}/"
    assert anatomy.encode() in page.content and b"/topology/?q=" in page.content
    assert c.get(anatomy).status_code == 200
    top = c.get(f"/containers/{ctr.name}/top/").content.decode()
    assert "sleep 60" in top
    inspect = c.get(f"/containers/{ctr.name}/inspect/").content.decode()
    assert ctr.id in inspect and "HostConfig" in inspect
    # fragment for htmx
    frag = c.get(f"/containers/{ctr.name}/inspect/?fragment=tab", HTTP_HX_REQUEST="true")
    assert b"<html" not in frag.content and ctr.id.encode() in frag.content


def test_terminal_tab_operator_yes_viewer_no(client_as, make_ctr):
    ctr = make_ctr("sleep", "60")
    assert client_as("viewer").get(f"/containers/{ctr.name}/terminal/").status_code == 403
    body = client_as("viewer").get(f"/containers/{ctr.name}/").content.decode()
    assert "tab-terminal" not in body
    r = client_as("operator").get(f"/containers/{ctr.name}/terminal/")
    assert r.status_code == 200 and b'id="terminal"' in r.content


def test_unknown_container_and_tab_are_404(client_as, ctr_env):
    c = client_as("viewer")
    assert c.get("/containers/nosuch/").status_code == 404
    assert c.get("/containers/nosuch/logs/").status_code == 404


@pytest.mark.parametrize("action", ["kill", "pause", "restart", "remove"])
def test_actions_viewer_refused(client_as, make_ctr, ctr_env, action):
    ctr = make_ctr("sleep", "60")
    r = client_as("viewer").post(f"/containers/{ctr.name}/action/{action}/")
    assert r.status_code == 403
    assert state_of(ctr_env, ctr.id) == "running"


def test_lifecycle_actions_by_operator(client_as, make_ctr, ctr_env):
    ctr = make_ctr("sleep", "60")
    c = client_as("operator")
    url = f"/containers/{ctr.name}/action/"
    assert c.post(url + "pause/").status_code == 302
    assert state_of(ctr_env, ctr.id) == "paused"
    assert c.post(url + "unpause/").status_code == 302
    assert state_of(ctr_env, ctr.id) == "running"
    pid = ctr_env.engine().get_container(ctr.id).pid
    assert c.post(url + "restart/", {"timeout": "1"}).status_code == 302
    again = ctr_env.engine().get_container(ctr.id)
    assert again.state == "running" and again.pid != pid
    assert c.post(url + "kill/", {"signal": "TERM"}, HTTP_HX_REQUEST="true").status_code == 204
    ctr_env.engine().wait_container(ctr.id)
    assert state_of(ctr_env, ctr.id) == "exited"
    assert c.post(url + "start/").status_code == 302
    assert state_of(ctr_env, ctr.id) == "running"
    assert c.post(url + "stop/", {"timeout": "soon"}).status_code == 400
    r = c.post(url + "remove/", HTTP_HX_REQUEST="true")
    assert r.status_code == 204 and r["HX-Redirect"] == "/containers/"
    assert ctr_env.engine().containers(all=True) == []
    actions = set(AuditEntry.objects.filter(actor="operator").values_list("action", flat=True))
    assert {"container.pause", "container.unpause", "container.restart", "container.start",
            "container.kill", "container.remove"} <= actions  # fmt: skip


def test_stop_with_timeout_runs_as_a_task_on_a_real_worker(
    client_as, make_ctr, ctr_env, start_worker
):
    from dashboard.live.models import TaskRecord

    ctr = make_ctr("sleep", "60")  # sleep ignores SIGTERM as PID 1: the timeout matters
    start_worker()
    c = client_as("operator")
    r = c.post(f"/containers/{ctr.name}/action/stop/", {"timeout": "1"}, HTTP_HX_REQUEST="true")
    assert r.status_code == 204  # answered at once; the worker stops it
    deadline = time.monotonic() + 60
    while state_of(ctr_env, ctr.id) != "exited" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state_of(ctr_env, ctr.id) == "exited"
    rec = TaskRecord.objects.get(kind="container.stop")
    assert rec.target == ctr.name and rec.username == "operator"
    while AuditEntry.objects.filter(action="container.stop").count() == 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    e = AuditEntry.objects.get(action="container.stop")
    assert e.actor == "operator" and e.result == "ok" and e.params == {"timeout": 1.0}
    # a viewer may not
    r = client_as("viewer").post(f"/containers/{ctr.name}/action/stop/", {"timeout": "1"})
    assert r.status_code == 403


def test_action_errors_are_shown_and_audited(client_as, make_ctr):
    ctr = make_ctr("true", start=False)
    r = client_as("operator").post(f"/containers/{ctr.name}/action/pause/", follow=True)
    assert b"is not running" in r.content
    r = client_as("operator").post(f"/containers/{ctr.name}/action/pause/", HTTP_HX_REQUEST="true")
    assert r.status_code == 409 and b"is not running" in r.content
    e = AuditEntry.objects.filter(action="container.pause").first()
    assert "not running" in e.result


def test_logs_download(client_as, make_ctr, ctr_env):
    ctr = make_ctr("sh", "-c", "echo out-line; echo err-line >&2")
    ctr_env.engine().wait_container(ctr.id)
    r = client_as("viewer").get(f"/containers/{ctr.name}/logs/download/")
    assert r.status_code == 200
    assert f'filename="{ctr.name}.log"' in r["Content-Disposition"]
    text = b"".join(r.streaming_content).decode()
    assert "stdout out-line" in text and "stderr err-line" in text
    r = client_as("viewer").get(f"/containers/{ctr.name}/logs/download/?stream=stderr&timestamps=0")
    assert b"".join(r.streaming_content).decode() == "err-line\n"
