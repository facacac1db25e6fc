// Containers list: live updates. The server says which container changed (from the
// engine's events); we reload the rows with the page's current filter, keeping the
// checked boxes. Reloads are coalesced: a burst of events costs one request.
(function () {
  const rows = document.getElementById("rows");
  const filter = document.getElementById("filter");
  if (!rows || !filter) return;
  let timer = null, ws = null, backoff = 500;

  function reload() {
    timer = null;
    const checked = new Set([...rows.querySelectorAll("input[name=ids]:checked")].map(i => i.value));
    const params = new URLSearchParams(new FormData(filter));
    params.set("fragment", "rows");
    htmx.ajax("GET", location.pathname + "?" + params, { target: "#rows", swap: "innerHTML" }).then(() => {
      rows.querySelectorAll("input[name=ids]").forEach(i => { if (checked.has(i.value)) i.checked = true; });
    });
  }

  function connect() {
    ws = berthWs("/ws/containers/");
    ws.onopen = () => { backoff = 500; document.body.dataset.live = "1"; };
    ws.onmessage = () => { if (!timer) timer = setTimeout(reload, 150); };
    ws.onclose = (e) => {
      document.body.dataset.live = "0";
      if (e.code !== 4403) setTimeout(connect, backoff = Math.min(backoff * 2, 10000));
    };
  }
  connect();

  const all = document.getElementById("select-all");
  if (all) all.addEventListener("change", () => {
    rows.querySelectorAll("input[name=ids]").forEach(i => { i.checked = all.checked; });
  });
})();
