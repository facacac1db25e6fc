"""The topology pages over HTTP, for the three standing users and for strangers, with a
real engine behind them (containers in a test-made host namespace)."""

from __future__ import annotations

import json
import os

import pytest

pytestmark = [pytest.mark.root, pytest.mark.django_db]

URLS = ["/topology/", "/topology/graph.json", "/topology/node/host/", "/topology/reach/?source=a&target=b",
        "/topology/anatomy/a/"]  # fmt: skip


def test_anonymous_is_sent_to_login_and_a_user_without_a_role_is_refused(engine_root, db):
    from django.contrib.auth.models import User
    from django.test import Client

    anon = Client()
    for url in URLS:
        r = anon.get(url)
        assert r.status_code == 302 and r["Location"].startswith("/login/"), url
    nobody = Client()
    nobody.force_login(User.objects.create_user("nobody", password="x-123456"))
    for url in URLS:
        assert nobody.get(url).status_code == 403, url


def test_the_page_and_json_show_containers_on_their_bridge(wired, client_as):
    for role in ("viewer", "operator", "admin"):
        r = client_as(role).get("/topology/")
        assert r.status_code == 200
        body = r.content.decode()
        assert 'id="topology-graph"' in body and "cytoscape.min.js" in body
    g = client_as("viewer").get("/topology/graph.json").json()
    names = {n["name"] for n in g["nodes"] if n["kind"] == "container"}
    assert names == {"a", "b", "x"}
    front = next(n for n in g["nodes"] if n["kind"] == "network" and n["name"] == "front")
    a = next(n for n in g["nodes"] if n.get("name") == "a" and n["kind"] == "container")
    (veth,) = [e for e in g["edges"] if e["kind"] == "veth" and e["source"] == a["id"]]
    assert veth["target"] == front["id"] and veth["host_ifname"].startswith(wired.prefix)


def test_node_details_offer_actions_only_from_operator_up(wired, client_as):
    g = client_as("viewer").get("/topology/graph.json").json()
    a = next(n for n in g["nodes"] if n.get("name") == "a" and n["kind"] == "container")
    url = f"/topology/node/{a['id']}/"
    viewer = client_as("viewer").get(url).content.decode()
    assert "10.95.0." in viewer and "/logs/" in viewer and "/topology/anatomy/a/" in viewer
    assert "/stop/" not in viewer and "/terminal/" not in viewer
    for role in ("operator", "admin"):
        page = client_as(role).get(url).content.decode()
        assert f"/containers/{a['container_id']}/action/stop/" in page and "/terminal/" in page
    assert client_as("viewer").get("/topology/node/ctr:nosuch/").status_code == 404


def test_reach_names_isolation_between_networks(wired, client_as):
    c = client_as("viewer")
    r = c.get("/topology/reach/?source=a&target=b&format=json").json()
    assert r["ok"] is True
    r = c.get("/topology/reach/", {"source": "a", "target": "x"})
    html = r.content.decode()
    assert r.status_code == 200 and "No:" in html and "isolation" in html
    data = json.loads(html.split('data-reach="', 1)[1].split('"', 1)[0].replace("&quot;", '"'))
    assert data["ok"] is False and data["break_at"].startswith("uplink:")
    bad = c.get("/topology/reach/?source=nosuch&target=a&format=json")
    assert bad.status_code == 400 and "nosuch" in bad.json()["error"]
    # From the dashboard, probes stay on the diagram: no arbitrary address to probe.
    bad = c.get("/topology/reach/?source=a&target=10.96.0.1:22&format=json")
    assert bad.status_code == 400 and "not a container or a published port" in bad.json()["error"]
    assert c.get("/topology/reach/?source=a&target=b:80&format=json").json()["check"] == "listening"


def test_anatomy_is_read_from_the_kernel(wired, client_as):
    eng = wired.engine()
    a = eng.get_container("a")
    html = client_as("viewer").get("/topology/anatomy/a/").content.decode()
    net_ino = os.stat(f"/proc/{a.pid}/ns/net").st_ino
    assert f"<code>{net_ino}</code>" in html
    assert "seccomp" in html and "sleep 300" in html
    host_if = eng.container_endpoints(a.id)[0].host_ifname
    assert f"<code>{host_if}</code>" in html  # eth0's host end, beside its bridge
    data = client_as("viewer").get("/topology/anatomy/a/?format=json").json()
    # Found by the kernel's peer index, and the bridge it is on in the host netns.
    (eth0,) = [i for i in data["Interfaces"] if i["Name"] == "eth0"]
    bridge = eng.get_network("front").bridge
    assert eth0["HostEnd"] == {"Kind": "veth", "HostIfname": host_if, "Bridge": bridge,
                               "Role": "veth host end", "State": "up"}  # fmt: skip
    assert "HostEnd" not in next(i for i in data["Interfaces"] if i["Name"] == "lo")
    # A volume is named, and links to its page.
    wired.berth("run", "-d", "--name", "v", "--network", "none", "-v", "vnotes:/data",
                "busybox", "sleep", "300", check=True)  # fmt: skip
    html = client_as("viewer").get("/topology/anatomy/v/").content.decode()
    assert 'volume <a href="/volumes/vnotes/">vnotes</a>' in html
    wired.berth("stop", "-t", "1", "b", check=True)
    r = client_as("viewer").get("/topology/anatomy/b/")
    assert r.status_code == 409 and "not running" in r.content.decode()
    assert client_as("viewer").get("/topology/anatomy/nosuch/").status_code == 404
