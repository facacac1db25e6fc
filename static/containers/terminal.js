// Terminal tab: xterm.js over a websocket to `exec -it /bin/sh`. Output arrives as
// binary frames; we acknowledge the bytes once xterm has drawn them (the server stops
// reading the pty past its window). Resizes follow the element's size.
(function () {
  const el = document.getElementById("terminal");
  if (!el) return;
  const status = document.getElementById("term-status");
  const term = new Terminal({ convertEol: false, scrollback: 5000, fontSize: 14 });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(el);
  fit.fit();
  window.berthTerm = term;  // for tests and the console
  const ws = berthWs(el.dataset.ws + "?rows=" + term.rows + "&cols=" + term.cols);
  ws.binaryType = "arraybuffer";
  let received = 0;
  ws.onopen = () => { status.textContent = "connected"; el.dataset.connected = "1"; term.focus(); };
  ws.onmessage = (m) => {
    if (typeof m.data === "string") {
      const msg = JSON.parse(m.data);
      if (msg.error) status.textContent = msg.error;
      if ("exit" in msg) status.textContent = "exited (" + msg.exit + ")";
      return;
    }
    const bytes = new Uint8Array(m.data);
    received += bytes.length;
    const upTo = received;
    term.write(bytes, () => ws.send(JSON.stringify({ ack: upTo })));
  };
  ws.onclose = (e) => {
    el.dataset.connected = "0";
    if (e.code === 4403) status.textContent = "refused: the terminal needs the operator role";
    else if (!/exited/.test(status.textContent)) status.textContent = "disconnected";
  };
  term.onData((d) => { if (ws.readyState === 1) ws.send(JSON.stringify({ in: d })); });
  const resize = () => {
    fit.fit();
    if (ws.readyState === 1) ws.send(JSON.stringify({ resize: [term.rows, term.cols] }));
  };
  window.addEventListener("resize", resize);
  new ResizeObserver(resize).observe(el);
})();
