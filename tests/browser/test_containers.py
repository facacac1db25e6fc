"""The containers pages in headless Chromium against the whole real stack: run a
busybox container from the form, watch its logs live, type in its terminal, stop it
and see the state change without a reload; a viewer gets no terminal."""

from __future__ import annotations

import re
import time

import pytest

pytestmark = pytest.mark.timeout(240)


def terminal_lines(page) -> list[str]:
    """The text of every line in the xterm.js buffer."""
    return page.evaluate(
        """() => { const b = window.berthTerm.buffer.active, out = [];
                   for (let i = 0; i < b.length; i++) out.push(b.getLine(i).translateToString(true));
                   return out; }"""
    )


def wait_until(fn, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_run_logs_terminal_stop(live_stack, page_as, unique_name):
    page = page_as("operator")
    page.goto(live_stack.url("/containers/"))
    page.click("#run-link")
    page.fill("#id_image", "busybox")
    page.fill("#id_name", unique_name)
    page.fill(
        "#id_command", "sh -c 'i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.5; done'"
    )
    page.fill("#id_labels", "made-by=browser-test")
    page.click("#run-submit")
    page.wait_for_url(re.compile(rf"/containers/{unique_name}/$"))
    assert page.locator("#ctr-state").inner_text() == "running"

    # Logs: the lines it prints show up, and new ones keep coming while we watch.
    page.click("#tab-logs")
    page.wait_for_selector("#log .line")
    first = page.locator("#log .line .text").last.inner_text()
    n = int(first.removeprefix("tick-"))
    page.wait_for_function(
        "n => [...document.querySelectorAll('#log .line .text')].some(e => e.textContent === 'tick-' + n)",
        arg=n + 2,
    )
    # Search highlights the matches.
    page.fill("#log-search", f"tick-{n}")
    assert page.locator("#log mark").first.inner_text() == f"tick-{n}"
    # Timestamps are hidden until asked for; stderr only shows nothing (it writes none).
    assert not page.locator("#log .line .ts").first.is_visible()
    page.check("#log-ts")
    assert page.locator("#log .line .ts").first.is_visible()
    page.select_option("#log-stream", "stderr")
    page.wait_for_selector("#log-status:has-text('following')")
    assert page.locator("#log .line").count() == 0
    page.select_option("#log-stream", "both")
    page.wait_for_selector("#log .line")

    # Terminal: type, see the output.
    page.click("#tab-terminal")
    page.wait_for_selector("#terminal[data-connected='1']")
    page.wait_for_function("() => window.berthTerm.buffer.active.getLine(0) !== undefined")
    wait_until(lambda: any("#" in ln for ln in terminal_lines(page)), "the shell's prompt")
    page.click("#terminal")
    page.keyboard.type("echo hello\n")
    wait_until(lambda: "hello" in [ln.strip() for ln in terminal_lines(page)], "hello")

    # Stop from the page: the state changes without a reload (the marker survives).
    page.click("#tab-summary")
    page.evaluate("() => { window.__sameDocument = 1; }")
    page.fill("input[name=timeout]", "1")
    page.click("#act-stop")
    page.wait_for_function("() => document.getElementById('ctr-state').textContent === 'exited'")
    assert page.evaluate("() => window.__sameDocument") == 1
    assert live_stack.engine().get_container(unique_name).state == "exited"

    # The list, open in another tab, follows a start made elsewhere (here: the engine,
    # as the CLI would), through the events relay, without a reload.
    lst = page.context.new_page()
    lst.goto(live_stack.url("/containers/"))
    lst.fill("#q", unique_name)  # the search narrows the rows as one types
    lst.wait_for_function("() => document.querySelectorAll('#rows tr').length === 1")
    row = lst.locator(f"#rows tr:has-text('{unique_name}') td.state")
    assert row.inner_text() == "exited"
    lst.wait_for_selector("body[data-live='1']")
    lst.evaluate("() => { window.__sameDocument = 1; }")
    live_stack.engine().start_container(unique_name)
    lst.wait_for_function(
        "name => [...document.querySelectorAll('#rows tr')].some(r => r.textContent.includes(name)"
        " && r.querySelector('td.state').textContent === 'running')",
        arg=unique_name,
    )
    assert lst.evaluate("() => window.__sameDocument") == 1
    live_stack.engine().remove_container(unique_name, force=True)


def test_run_form_shows_errors_next_to_fields(live_stack, page_as, unique_name):
    page = page_as("operator")
    page.goto(live_stack.url("/containers/run/"))
    page.fill("#id_image", "busybox")
    page.fill("#id_name", unique_name)
    page.fill("#id_memory", "lots")
    page.check("#id_privileged", force=True) if page.locator(
        "#id_privileged"
    ).is_enabled() else None
    page.click("#run-submit")
    page.wait_for_selector("#error-memory")
    assert "invalid memory limit" in page.locator("#error-memory").inner_text()
    # The admin-only options are offered to admins only.
    assert page.locator("fieldset[disabled] #id_privileged").count() == 1


def test_viewer_finds_no_terminal_and_gets_403(live_stack, page_as, unique_name):
    from engine.containers.options import CreateOptions

    eng = live_stack.engine()
    c = eng.create_container(
        CreateOptions(image="busybox", command=["sleep", "300"], name=unique_name)
    )
    eng.start_container(c.id)
    try:
        page = page_as("viewer")
        page.goto(live_stack.url(f"/containers/{unique_name}/"))
        assert page.locator("#ctr-state").inner_text() == "running"
        assert page.locator("#tab-terminal").count() == 0
        assert page.locator("#act-stop").count() == 0  # no actions either
        r = page.goto(live_stack.url(f"/containers/{unique_name}/terminal/"))
        assert r.status == 403
        # Forcing the websocket does not open a shell either.
        page.goto(live_stack.url(f"/containers/{unique_name}/logs/"))
        got = page.evaluate(
            """id => new Promise(done => {
                 const ws = new WebSocket(`ws://${location.host}/ws/containers/${id}/terminal/`);
                 ws.onopen = () => done("open");
                 ws.onclose = (e) => done("closed " + e.code);
               })""",
            c.id,
        )
        assert got.startswith("closed"), got
        # ...while the logs websocket works for a viewer.
        page.wait_for_selector("#log-status:has-text('following')")
        # Stats: live charts, one sample a second.
        page.goto(live_stack.url(f"/containers/{unique_name}/stats/"))
        page.wait_for_function(
            "() => Number(document.getElementById('stats-now').dataset.samples || 0) >= 2"
        )
        assert page.locator("#chart-mem canvas").count() == 1
        assert "memory" in page.locator("#stats-now").inner_text()
    finally:
        eng.remove_container(c.id, force=True)
