// Re-fetches a fragment when engine events of some types arrive, e.g. the images list
// when a pull, build, tag or removal finishes anywhere (dashboard, CLI).
// <tbody data-refresh-on="image" data-refresh-url="/images/"> ... </tbody>
(function () {
  "use strict";
  document.querySelectorAll("[data-refresh-on]").forEach(function (el) {
    let timer = null;
    let delay = 500;
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    function refresh() {
      timer = null;
      if (window.htmx) htmx.ajax("GET", el.dataset.refreshUrl, { target: el, swap: "innerHTML" });
    }
    function connect() {
      const q = new URLSearchParams({ type: el.dataset.refreshOn });
      const ws = new WebSocket(scheme + location.host + "/ws/events/?" + q);
      ws.onopen = () => { delay = 500; };
      // Several events in a burst (a prune) cause one refresh.
      ws.onmessage = () => { if (!timer) timer = setTimeout(refresh, 300); };
      ws.onclose = (e) => {
        if (e.code === 4403) return;
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 10000);
      };
    }
    connect();
  });
})();
