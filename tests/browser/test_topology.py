"""The topology page in headless Chromium against the real stack, whose engine's host is
a test-made network namespace: changes made from the CLI appear without a reload, and
"can A reach B?" answers with the network doctor's reason."""

from __future__ import annotations

import secrets

import pytest

from tests.browser import topology_fixtures as _fixtures
from tests.browser.conftest import free_port

# The module's own stack (engine host = a test-made netns) and pages logged in to it.
net_stack = _fixtures.net_stack
net_page_as = _fixtures.net_page_as

pytestmark = [pytest.mark.browser, pytest.mark.root]

WAIT = 30_000  # ms: generous; speed is the benchmark's business

EDGES = """() => berthTopology.cy.edges().map(e => ({
  kind: e.data('kind'), label: e.data('label'), s: e.source().data('name'),
  t: e.target().data('name'), bridge: e.target().data('bridge') || ''}))"""


def _name(prefix: str) -> str:
    return prefix + secrets.token_hex(3)


@pytest.fixture
def cli(net_stack):
    """The real CLI against the stack's engine; removes what the test made."""
    made: dict[str, list[str]] = {"ctr": [], "net": []}
    berth = net_stack.engine_env.berth

    def run(*args: str):
        if args[0] == "run" and "--name" in args:
            made["ctr"].append(args[args.index("--name") + 1])
        if args[:2] == ("network", "create"):
            made["net"].append(args[-1])
        return berth(*args, check=True)

    yield run
    for c in made["ctr"]:
        berth("rm", "-f", c)
    for n in made["net"]:
        berth("network", "rm", n)


def _open(page, net_stack):
    page.goto(net_stack.url("/topology/"))
    # Live, and the server's snapshot applied over the graph the page came with.
    page.wait_for_selector("#topology[data-live='1'][data-synced='1']", timeout=WAIT)
    page.evaluate("() => { window.__sameLoad = true; }")


def _joined(page, ctr: str, network: str) -> None:
    page.wait_for_function(
        """([c, n]) => berthTopology.cy.edges("[kind = 'veth']").some(e =>
             e.source().data('name') === c && e.target().data('name') === n)""",
        arg=[ctr, network],
        timeout=WAIT,
    )


def test_containers_appear_on_their_bridge_and_leave_without_a_reload(net_stack, net_page_as, cli):
    page = net_page_as("viewer")
    _open(page, net_stack)
    net, c1, c2 = _name("tn"), _name("tc"), _name("tc")
    cli("network", "create", "--subnet", "10.97.0.0/24", net)
    for c in (c1, c2):
        cli("run", "-d", "--name", c, "--network", net, "busybox", "sleep", "300")
    _joined(page, c1, net)
    _joined(page, c2, net)
    edges = [e for e in page.evaluate(EDGES) if e["kind"] == "veth" and e["s"] in (c1, c2)]
    bridge = (
        net_stack.engine().inspect_network(net)["Options"].get("com.docker.network.bridge.name")
        or edges[0]["bridge"]
    )
    assert {e["bridge"] for e in edges} == {bridge} and len(edges) == 2
    # The host-side veth names are on the diagram and in the listing under it.
    listing = page.inner_text("#topology-listing")
    assert c1 in listing and f"on {bridge}" in listing
    pos = page.evaluate("(c) => berthTopology.cy.nodes().filter(n => n.data('name') === c)"
                        "[0].position()", c1)  # fmt: skip

    cli("stop", "-t", "1", c2)
    page.wait_for_function(
        "(c) => berthTopology.cy.nodes().filter(n => n.data('name') === c).length === 0",
        arg=c2,
        timeout=WAIT,
    )
    assert c2 not in page.inner_text("#topology-listing")
    # Same page load all along, and the container that stayed did not move.
    assert page.evaluate("() => window.__sameLoad === true")
    after = page.evaluate("(c) => berthTopology.cy.nodes().filter(n => n.data('name') === c)"
                          "[0].position()", c1)  # fmt: skip
    assert after == pos


def test_a_published_port_is_an_edge_from_host_port_to_container(net_stack, net_page_as, cli):
    page = net_page_as("operator")
    _open(page, net_stack)
    net, web, port = _name("tn"), _name("tw"), free_port()
    cli("network", "create", "--subnet", "10.98.0.0/24", net)
    cli("run", "-d", "--name", web, "--network", net, "-p", f"127.0.0.1:{port}:80",
        "busybox", "httpd", "-f", "-p", "80")  # fmt: skip
    page.wait_for_function(
        """(w) => berthTopology.cy.edges("[kind = 'publish']").some(e =>
             e.target().data('name') === w)""",
        arg=web,
        timeout=WAIT,
    )
    (pub,) = [e for e in page.evaluate(EDGES) if e["kind"] == "publish" and e["t"] == web]
    assert pub["label"].startswith(f"127.0.0.1:{port} → 10.98.0.") and pub["label"].endswith(
        ":80/tcp"
    )
    assert f"publishes 127.0.0.1:{port}" in page.inner_text("#topology-listing")


def test_can_a_reach_b_names_isolation_between_networks(net_stack, net_page_as, cli):
    page = net_page_as("viewer")
    _open(page, net_stack)
    n1, n2, a, b = _name("tn"), _name("tn"), _name("ta"), _name("tb")
    cli("network", "create", "--subnet", "10.99.1.0/24", n1)
    cli("network", "create", "--subnet", "10.99.2.0/24", n2)
    cli("run", "-d", "--name", a, "--network", n1, "busybox", "sleep", "300")
    cli("run", "-d", "--name", b, "--network", n2, "busybox", "sleep", "300")
    _joined(page, b, n2)
    page.select_option("#reach-source", a)
    page.select_option("#reach-target", b)
    page.click(".topo-reach button[type=submit]")
    result = page.locator("#reach-result .reach")
    result.wait_for(timeout=WAIT)
    text = result.inner_text()
    assert text.startswith("No:") and "isolation" in text
    assert n1 in text and n2 in text
    # The diagram marks where it breaks: the host's way into the other network.
    broken = page.evaluate("() => berthTopology.cy.$('.break').map(e => e.data('kind'))")
    assert broken == ["uplink"]
    # The answer pushed the diagram down the page: a click still lands on its node.
    _click_node(page, a)
    assert a in page.inner_text("#details .topo-node")


def test_clicking_a_node_shows_details_and_actions_by_role(net_stack, net_page_as, cli):
    net, c = _name("tn"), _name("tc")
    cli("network", "create", "--subnet", "10.99.3.0/24", net)
    cli("run", "-d", "--name", c, "--network", net, "busybox", "sleep", "300")
    for role, stop in (("viewer", 0), ("operator", 1)):
        page = net_page_as(role)
        _open(page, net_stack)
        _joined(page, c, net)
        _click_node(page, c)
        details = page.locator("#details .topo-node")
        assert c in details.inner_text() and "10.99.3." in details.inner_text()
        assert page.locator("#details a", has_text="Anatomy").count() == 1
        assert page.locator("#details button", has_text="Stop").count() == stop


def test_export_svg_holds_the_drawing(net_stack, net_page_as, cli):
    net, c = _name("tn"), _name("tc")
    cli("network", "create", "--subnet", "10.99.4.0/24", net)
    cli("run", "-d", "--name", c, "--network", net, "busybox", "sleep", "300")
    page = net_page_as("viewer")
    _open(page, net_stack)
    _joined(page, c, net)
    with page.expect_download() as dl:
        page.click("#export-svg")
    svg = open(dl.value.path()).read()
    assert svg.count("<svg") == 1 and c in svg and "<line" in svg
    with page.expect_download() as dl:
        page.click("#export-png")
    assert open(dl.value.path(), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def _click_node(page, name: str) -> None:
    page.evaluate("(c) => berthTopology.cy.fit(berthTopology.cy.nodes().filter(n => "
                  "n.data('name') === c), 200)", name)  # fmt: skip
    box = page.locator("#cy").bounding_box()
    rp = page.evaluate("(c) => berthTopology.cy.nodes().filter(n => n.data('name') === c)"
                       "[0].renderedPosition()", name)  # fmt: skip
    page.mouse.click(box["x"] + rp["x"], box["y"] + rp["y"])
    page.locator("#details .topo-node").wait_for(timeout=WAIT)


def test_an_operator_stops_a_container_from_its_node(net_stack, net_page_as, cli):
    net, c = _name("tn"), _name("tc")
    cli("network", "create", "--subnet", "10.99.5.0/24", net)
    cli("run", "-d", "--name", c, "--network", net, "busybox", "sleep", "300")
    page = net_page_as("operator")
    _open(page, net_stack)
    _joined(page, c, net)
    _click_node(page, c)
    page.once("dialog", lambda d: d.accept())
    page.click("#details button.topo-stop")
    page.wait_for_function(
        "() => !document.querySelector('#details .topo-stop-status').textContent.endsWith('…')"
    )
    status = page.inner_text("#details .topo-stop-status")
    assert status == "stop requested", status + "\n" + net_stack.output()[-6000:]
    page.wait_for_function(
        "(c) => berthTopology.cy.nodes().filter(n => n.data('name') === c).length === 0",
        arg=c,
        timeout=WAIT,
    )
    assert page.evaluate("() => window.__sameLoad === true")
    assert net_stack.engine().get_container(c).state == "exited"


def test_filter_by_network_and_find_a_container(net_stack, net_page_as, cli):
    n1, n2, a, b = _name("tn"), _name("tn"), _name("tf"), _name("tg")
    cli("network", "create", "--subnet", "10.99.6.0/24", n1)
    cli("network", "create", "--subnet", "10.99.7.0/24", n2)
    cli("run", "-d", "--name", a, "--network", n1, "busybox", "sleep", "300")
    cli("run", "-d", "--name", b, "--network", n2, "busybox", "sleep", "300")
    page = net_page_as("viewer")
    _open(page, net_stack)
    _joined(page, a, n1)
    _joined(page, b, n2)
    # Cytoscape applies style (display) changes on its next frame: wait for them.
    visible = "([c, yes]) => berthTopology.cy.nodes().some(n => n.data('name') === c && n.visible() === yes)"
    page.select_option("#net-filter", n1)
    page.wait_for_function(visible, arg=[b, False], timeout=WAIT)
    page.wait_for_function(visible, arg=[a, True], timeout=WAIT)
    page.select_option("#net-filter", label="all networks")
    page.wait_for_function(visible, arg=[b, True], timeout=WAIT)
    page.fill("#search", b)
    assert page.inner_text("#search-count") == "1 found"
    matched = page.evaluate("() => berthTopology.cy.$('.match').map(n => n.data('name'))")
    assert matched == [b]
    # A link from another page can open it filtered.
    page.goto(net_stack.url(f"/topology/?network={n2}"))
    page.wait_for_function(visible, arg=[a, False], timeout=WAIT)
    page.wait_for_function(visible, arg=[b, True], timeout=WAIT)
    assert page.locator("#net-filter").input_value() == n2
