// Events page: the server rendered the last events (newest first) and the log position
// they end at (data-after); this follows the log from there over a websocket and, if the
// connection drops, reconnects from the last event received: no gap, no duplicate.
(function () {
  "use strict";
  const table = document.getElementById("events");
  if (!table) return;
  const rows = document.getElementById("event-rows");
  const status = document.getElementById("events-status");
  const MAX_ROWS = 1000;
  let after = table.dataset.after || "0";
  let delay = 500;

  function cell(text, title) {
    const td = document.createElement("td");
    td.textContent = text;
    if (title) td.title = title;
    return td;
  }

  function add(ev) {
    const empty = rows.querySelector("tr.empty");
    if (empty) empty.remove();
    const tr = document.createElement("tr");
    tr.dataset.seq = ev.seq;
    const attrs = Object.entries(ev.attrs || {}).map(([k, v]) => k + "=" + v).join(" ");
    const name = (ev.attrs && ev.attrs.name) || ev.id;
    [cell(ev.seq), cell(ev.when), cell(ev.type), cell(ev.action),
     cell(name.length > 40 ? name.slice(0, 39) + "…" : name, ev.id), cell(ev.actor),
     cell(attrs)].forEach((td) => tr.appendChild(td));
    tr.lastChild.className = "attrs";
    rows.insertBefore(tr, rows.firstChild);
    while (rows.children.length > MAX_ROWS) rows.removeChild(rows.lastChild);
  }

  function connect() {
    const q = new URLSearchParams({ after: after });
    if (table.dataset.type) q.set("type", table.dataset.type);
    if (table.dataset.action) q.set("action", table.dataset.action);
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + "/ws/events/?" + q);
    ws.onopen = () => { status.textContent = "live"; delay = 500; };
    ws.onmessage = (m) => {
      const ev = JSON.parse(m.data);
      if (Number(ev.seq) <= Number(after)) return;
      after = String(ev.seq);
      add(ev);
    };
    ws.onclose = (e) => {
      if (e.code === 4403) { status.textContent = "not allowed"; return; }
      status.textContent = "reconnecting…";
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }
  connect();
})();
