// A task's page: renders the snapshot of its progress entries, then follows the task over
// a websocket from the snapshot's last entry ID; reconnects from the last entry received
// until the final state arrives. Entries: {"event": "state", "state": ...} changes the
// state; {"id": layer, "status", "current", "total"} updates a layer's row (pull, push);
// {"line": text} appends to the output (build); {"summary": text} is shown as a line too.
(function () {
  "use strict";
  const box = document.getElementById("task");
  if (!box) return;
  const taskId = box.dataset.task;
  let after = box.dataset.after || "";
  const stateEl = document.getElementById("task-state");
  const errorEl = document.getElementById("task-error");
  const logEl = document.getElementById("task-log");
  const layers = document.querySelector("#task-layers tbody");
  const FINAL = ["success", "failure"];
  let finished = FINAL.includes(stateEl.textContent.trim());
  let delay = 500;

  function human(n) {
    const units = ["B", "kB", "MB", "GB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i ? n.toFixed(1) : n) + " " + units[i];
  }

  function layer(d) {
    let tr = layers.querySelector('tr[data-layer="' + CSS.escape(d.id) + '"]');
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.layer = d.id;
      for (let i = 0; i < 3; i++) tr.appendChild(document.createElement("td"));
      tr.children[0].textContent = d.id.slice(0, 12);
      tr.children[0].title = d.id;
      layers.appendChild(tr);
    }
    tr.children[1].textContent = d.status || "";
    if (d.total) {
      const pct = Math.min(100, Math.floor((100 * (d.current || 0)) / d.total));
      tr.children[2].innerHTML = "";
      const bar = document.createElement("progress");
      bar.max = 100; bar.value = pct;
      tr.children[2].appendChild(bar);
      tr.children[2].appendChild(document.createTextNode(
        " " + human(d.current || 0) + " / " + human(d.total)));
    } else if (d.current) {
      tr.children[2].textContent = human(d.current);
    }
  }

  function line(text) {
    const atEnd = logEl.scrollTop + logEl.clientHeight >= logEl.scrollHeight - 4;
    logEl.appendChild(document.createTextNode(text.endsWith("\n") ? text : text + "\n"));
    if (atEnd) logEl.scrollTop = logEl.scrollHeight;
  }

  function apply(entry) {
    after = entry.sid;
    const d = entry.data;
    if (d.event === "state") {
      stateEl.textContent = d.state;
      stateEl.className = "state task-" + d.state;
      if (d.error) { errorEl.textContent = d.error; line("error: " + d.error); }
      const dl = document.getElementById("task-download");
      if (d.result && d.result.Download && dl) {
        dl.querySelector("a").href = d.result.Download;
        dl.hidden = false;
      }
      if (FINAL.includes(d.state)) finished = true;
      return;
    }
    if (d.id && (d.status || d.total)) layer(d);
    if (d.line !== undefined) line(d.line);
    else if (d.summary) line(d.summary);
  }

  JSON.parse(document.getElementById("task-snapshot").textContent).forEach(apply);

  function connect() {
    if (finished) return;
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const q = after ? "?after=" + encodeURIComponent(after) : "";
    const ws = new WebSocket(scheme + location.host + "/ws/tasks/" + taskId + "/" + q);
    ws.onopen = () => { delay = 500; };
    ws.onmessage = (m) => apply(JSON.parse(m.data));
    ws.onclose = (e) => {
      if (finished || e.code === 4403 || e.code === 4404) return;
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }
  connect();
})();
