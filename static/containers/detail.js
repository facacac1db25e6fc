// Container detail: the header (state and actions) follows the container's events.
(function () {
  const header = document.getElementById("ctr-header");
  if (!header) return;
  const id = header.dataset.id;
  let timer = null, backoff = 500;
  function reload() {
    timer = null;
    htmx.ajax("GET", location.pathname + "?fragment=header", { target: "#ctr-header", swap: "outerHTML" });
  }
  function connect() {
    const ws = berthWs("/ws/containers/");
    ws.onopen = () => { backoff = 500; document.body.dataset.live = "1"; };
    ws.onmessage = (m) => {
      const ev = JSON.parse(m.data);
      if (ev.id === id && !timer) timer = setTimeout(reload, 150);
      if (ev.id === id) document.dispatchEvent(new CustomEvent("berth:container", { detail: ev }));
    };
    ws.onclose = (e) => {
      document.body.dataset.live = "0";
      if (e.code !== 4403) setTimeout(connect, backoff = Math.min(backoff * 2, 10000));
    };
  }
  connect();
  // An action refused by the engine (409) or the server: say why, next to the buttons.
  document.body.addEventListener("htmx:responseError", (e) => {
    const el = document.getElementById("action-error");
    if (el) el.textContent = e.detail.xhr.responseText || e.detail.xhr.statusText;
  });
  document.body.addEventListener("htmx:beforeRequest", () => {
    const el = document.getElementById("action-error");
    if (el) el.textContent = "";
  });
})();
