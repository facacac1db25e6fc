// Logs tab: lines stream from the log file over a websocket. We acknowledge each batch
// once it is drawn (the server pauses past its window). Search highlights matches;
// timestamps and the stream filter are options of the stream (or of the drawing).
(function () {
  const pre = document.getElementById("log");
  if (!pre) return;
  const $ = (id) => document.getElementById(id);
  const MAX_LINES = 5000;  // lines kept on the page; older ones are dropped
  let ws = null, lines = [], count = 0;

  function esc(s) {
    return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  }
  function render(l) {
    const div = document.createElement("div");
    div.className = "line " + l[1];
    div.dataset.text = l[2];
    const ts = document.createElement("span");
    ts.className = "ts";
    ts.textContent = l[0] + " ";
    const text = document.createElement("span");
    text.className = "text";
    div.append(ts, text);
    paint(div);
    return div;
  }
  function paint(div) {
    const q = $("log-search").value;
    const text = div.dataset.text, span = div.querySelector(".text");
    if (!q) { span.textContent = text; return 0; }
    const parts = text.split(q);
    span.innerHTML = parts.map(esc).join("<mark>" + esc(q) + "</mark>");
    return parts.length - 1;
  }
  function repaint() {
    let n = 0;
    pre.querySelectorAll("div.line").forEach((d) => { n += paint(d); });
    $("log-matches").textContent = $("log-search").value ? n + " matches" : "";
  }
  function showTs() { pre.classList.toggle("no-ts", !$("log-ts").checked); }

  function connect() {
    if (ws) { ws.onclose = null; ws.close(); }
    pre.textContent = "";
    count = 0;
    const p = new URLSearchParams();
    const tail = $("log-tail").value.trim();
    if (tail) p.set("tail", tail);
    if ($("log-since").value.trim()) p.set("since", $("log-since").value.trim());
    p.set("stream", $("log-stream").value);
    p.set("follow", $("log-follow").checked ? "1" : "0");
    $("log-download").href = pre.dataset.download + "?stream=" + $("log-stream").value + "&timestamps=" + ($("log-ts").checked ? "1" : "0");
    ws = berthWs(pre.dataset.ws + "?" + p);
    $("log-status").textContent = "connecting…";
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.lines) {
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 20;
        const frag = document.createDocumentFragment();
        for (const l of msg.lines) frag.append(render(l));
        pre.append(frag);
        count += msg.lines.length;
        while (pre.childElementCount > MAX_LINES) pre.firstElementChild.remove();
        if (atBottom) pre.scrollTop = pre.scrollHeight;
        if ($("log-search").value) repaint();
        // Drawn: tell the server it may send more.
        requestAnimationFrame(() => ws.send(JSON.stringify({ ack: msg.end })));
      }
      if ("running" in msg) $("log-status").textContent = msg.running ? "following" : "container stopped (still watching)";
      if (msg.done) $("log-status").textContent = "end of log";
    };
    ws.onclose = (e) => { if (e.code >= 4000) $("log-status").textContent = "closed (" + e.code + ")"; };
  }
  ["log-tail", "log-since", "log-stream", "log-follow"].forEach((id) => $(id).addEventListener("change", connect));
  $("log-search").addEventListener("input", repaint);
  $("log-ts").addEventListener("change", showTs);
  showTs();
  connect();
})();
