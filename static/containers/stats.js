// Stats tab: one sample a second from the container's shared sampler, drawn with uPlot.
(function () {
  const now = document.getElementById("stats-now");
  if (!now) return;
  const KEEP = 120;  // samples on the charts (two minutes)
  const data = { t: [], cpu: [], mem: [], lim: [], rx: [], tx: [], rd: [], wr: [], pids: [] };
  let last = null;
  const width = () => Math.min(560, document.body.clientWidth - 40);
  function chart(id, title, series) {
    const el = document.getElementById(id);
    return new uPlot({ title, width: width(), height: 180, series: [{}, ...series.map(([label, stroke]) => ({ label, stroke }))] },
      [[], ...series.map(() => [])], el);
  }
  const charts = {
    cpu: chart("chart-cpu", "CPU %", [["cpu %", "#1d3557"]]),
    mem: chart("chart-mem", "Memory (MiB)", [["used", "#e63946"], ["limit", "#999"]]),
    net: chart("chart-net", "Network (kB/s)", [["rx", "#2a9d8f"], ["tx", "#e76f51"]]),
    blk: chart("chart-blk", "Block I/O (kB/s)", [["read", "#2a9d8f"], ["write", "#e76f51"]]),
    pids: chart("chart-pids", "PIDs", [["pids", "#6d597a"]]),
  };
  const MiB = 1024 * 1024;
  function rate(cur, prev, key, dt) { return prev && dt > 0 ? Math.max(0, (cur[key] - prev[key]) / dt / 1000) : 0; }
  function push(s) {
    const dt = last ? s.t - last.t : 0;
    data.t.push(s.t); data.cpu.push(s.cpu); data.mem.push(s.mem / MiB); data.lim.push(s.mem_limit / MiB);
    data.rx.push(rate(s, last, "rx", dt)); data.tx.push(rate(s, last, "tx", dt));
    data.rd.push(rate(s, last, "rd", dt)); data.wr.push(rate(s, last, "wr", dt)); data.pids.push(s.pids);
    for (const k in data) if (data[k].length > KEEP) data[k].shift();
    last = s;
    charts.cpu.setData([data.t, data.cpu]);
    charts.mem.setData([data.t, data.mem, data.lim]);
    charts.net.setData([data.t, data.rx, data.tx]);
    charts.blk.setData([data.t, data.rd, data.wr]);
    charts.pids.setData([data.t, data.pids]);
    now.textContent = s.running
      ? `CPU ${s.cpu.toFixed(2)}% · memory ${(s.mem / MiB).toFixed(1)} MiB of ${(s.mem_limit / MiB).toFixed(0)} MiB · PIDs ${s.pids}`
      : "not running";
    now.dataset.samples = String(data.t.length);
  }
  let backoff = 500;
  function connect() {
    const ws = berthWs(now.dataset.ws);
    ws.onmessage = (m) => { const s = JSON.parse(m.data); if (s.error) now.textContent = s.error; else push(s); };
    ws.onclose = (e) => { if (e.code < 4000) setTimeout(connect, backoff = Math.min(backoff * 2, 10000)); };
  }
  connect();
})();
