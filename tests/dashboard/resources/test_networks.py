"""Networks pages on an engine whose host is a test-made network namespace: each role
both ways, errors next to the field, connect/disconnect of a running container, and
the host changes (bridge, rules, veths) in the audit log."""

from __future__ import annotations

import subprocess

import pytest

from dashboard.accounts.models import AuditEntry

pytestmark = [pytest.mark.django_db, pytest.mark.root]


def links(env) -> str:
    return subprocess.run(
        ["ip", "-n", env.host_netns, "-br", "link"], capture_output=True, text=True, check=True
    ).stdout


def test_roles_both_ways(client_as, dash_net):
    eng = dash_net.engine()
    for role in ("admin", "operator", "viewer"):
        r = client_as(role).get("/networks/")
        assert r.status_code == 200 and "bridge" in r.content.decode()
        assert ("Create network" in r.content.decode()) == (role != "viewer")
    v = client_as("viewer")
    assert v.post("/networks/create/", {"name": "vnet", "driver": "bridge"}).status_code == 403
    assert "vnet" not in {n["Name"] for n in eng.list_networks()}
    eng.create_network("keepnet")
    assert v.get("/networks/keepnet/").status_code == 200
    assert v.post("/networks/keepnet/remove/").status_code == 403
    assert v.post("/networks/keepnet/connect/", {"container": "x"}).status_code == 403
    assert v.post("/networks/keepnet/disconnect/", {"container": "x"}).status_code == 403
    assert "keepnet" in {n["Name"] for n in eng.list_networks()}


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_create_inspect_remove_with_host_changes(client_as, dash_net, role):
    c = client_as(role)
    r = c.post(
        "/networks/create/",
        {"name": "webnet", "driver": "bridge", "subnet": "10.77.5.0/24",
         "gateway": "10.77.5.254", "internal": "on"},
    )  # fmt: skip
    assert r.status_code == 302
    n = dash_net.engine().inspect_network("webnet")
    assert n["Internal"] is True
    assert n["IPAM"]["Config"] == [{"Subnet": "10.77.5.0/24", "Gateway": "10.77.5.254"}]
    bridge = dash_net.engine().get_network("webnet").bridge
    assert bridge in links(dash_net)
    body = client_as("viewer").get("/networks/webnet/").content.decode()
    assert "10.77.5.254" in body and bridge in body
    e = AuditEntry.objects.get(action="network.create")
    assert e.actor == role and e.result == "ok"
    assert e.host_changes[0]["change"] == "bridge set up"
    assert e.host_changes[0]["bridge"] == bridge
    assert e.host_changes[0]["address"] == "10.77.5.254/24"
    # The audit page shows them.
    assert f"bridge={bridge}" in client_as("viewer").get("/audit/").content.decode()
    r = c.post("/networks/webnet/remove/")
    assert r.status_code == 302 and bridge not in links(dash_net)
    e = AuditEntry.objects.get(action="network.remove")
    assert e.host_changes == [{"change": "bridge removed", "name": "webnet"}]


def test_create_errors_next_to_the_field(client_as, dash_net):
    c = client_as("operator")
    r = c.post("/networks/create/", {"name": "n1", "driver": "bridge", "subnet": "10.1.2.0/33"})
    assert r.status_code == 400 and 'id="subnet-error"' in r.content.decode()
    r = c.post(
        "/networks/create/",
        {"name": "n1", "driver": "bridge", "subnet": "10.1.2.0/24", "gateway": "10.9.9.1"},
        HTTP_HX_REQUEST="true",
    )
    body = r.content.decode()
    assert r.status_code == 200 and 'id="gateway-error"' in body  # the engine's error
    c.post("/networks/create/", {"name": "dupnet", "driver": "bridge"})
    r = c.post("/networks/create/", {"name": "dupnet", "driver": "bridge"})
    body = r.content.decode()
    assert 'id="name-error"' in body and "network with name dupnet already exists" in body
    r = c.post("/networks/create/", {"name": "x", "driver": "overlay"})
    assert r.status_code == 400 and 'id="driver-error"' in r.content.decode()
    fails = AuditEntry.objects.filter(action="network.create").exclude(result="ok")
    assert any("already exists" in e.result for e in fails)


def test_builtin_network_cannot_be_removed(client_as, dash_net):
    r = client_as("admin").post("/networks/bridge/remove/")
    assert r.status_code == 409 and "pre-defined network" in r.content.decode()


def test_connect_and_disconnect_running_container(client_as, dash_net):
    dash_net.berth("run", "-d", "--name", "app1", "busybox", "sleep", "300", check=True)
    eng = dash_net.engine()
    eng.create_network("backnet", subnet="10.77.9.0/24")
    c = client_as("operator")
    r = c.post("/networks/backnet/connect/", {"container": "app1", "ip": "10.77.9.50"})
    assert r.status_code == 302
    eps = eng.inspect_network("backnet")["Containers"]
    assert [e["IPv4Address"] for e in eps.values()] == ["10.77.9.50/24"]
    body = client_as("viewer").get("/networks/backnet/").content.decode()
    assert "app1" in body and "10.77.9.50/24" in body
    e = AuditEntry.objects.get(action="network.connect")
    veth = e.host_changes[-1]
    assert veth["change"] == "veth added" and veth["ip"] == "10.77.9.50"
    assert veth["host_ifname"] in links(dash_net)
    # Errors next to the field: connecting again, and a container that does not exist.
    r = c.post("/networks/backnet/connect/", {"container": "app1"})
    assert r.status_code == 400 and "already exists in network backnet" in r.content.decode()
    r = c.post("/networks/backnet/connect/", {"container": "ghost"})
    assert r.status_code == 400 and 'id="container-error"' in r.content.decode()
    r = c.post("/networks/backnet/disconnect/", {"container": "app1"})
    assert r.status_code == 302
    assert eng.inspect_network("backnet")["Containers"] == {}
    e = AuditEntry.objects.get(action="network.disconnect", result="ok")
    assert e.host_changes[-1]["change"] == "veth removed"
    assert veth["host_ifname"] not in links(dash_net)


def test_cli_network_actions_imported_with_host_changes(client_as, dash_net):
    dash_net.berth("network", "create", "--subnet", "10.77.11.0/24", "clinet", check=True)
    body = client_as("viewer").get("/audit/", {"source": "cli"}).content.decode()
    assert "network.create" in body and "clinet" in body
    e = AuditEntry.objects.get(action="network.create", target="clinet")
    assert e.source == "cli" and e.host_changes[0]["address"] == "10.77.11.1/24"


def test_cli_container_start_imported_with_its_veth(client_as, dash_net):
    dash_net.berth("run", "-d", "--name", "cliapp", "busybox", "sleep", "300", check=True)
    client_as("viewer").get("/audit/")  # imports
    e = AuditEntry.objects.get(action="container.start", target="cliapp")
    assert e.source == "cli"
    veth = e.host_changes[0]
    assert veth["change"] == "veth added" and veth["bridge"] == f"{dash_net.prefix}0"
    assert veth["host_ifname"] in links(dash_net)
    # Consequences are not actions: no entry of their own.
    assert not AuditEntry.objects.filter(action__in=["network.endpoint_up", "network.host_changes"])


def test_refused_input_is_audited(client_as, dash_net):
    c = client_as("operator")
    bad = {"name": "n1", "driver": "bridge", "subnet": "10.0.0.0/99"}
    r = c.post("/networks/create/", bad, REMOTE_ADDR="192.0.2.5")
    assert r.status_code == 400
    c.post("/networks/bridge/connect/", {"container": "c1", "ip": "1.2.3"})
    e = AuditEntry.objects.get(action="network.create")
    assert e.actor == "operator" and e.address == "192.0.2.5" and e.target == "n1"
    assert e.result.startswith("refused: subnet: ") and "is not an IPv4 subnet" in e.result
    assert e.params == {"name": "n1", "driver": "bridge", "subnet": "10.0.0.0/99"}
    e = AuditEntry.objects.get(action="network.connect")
    assert e.target == "bridge" and "ip: '1.2.3' is not an IPv4 address" in e.result
