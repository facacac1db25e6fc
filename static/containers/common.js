// Shared by the containers pages: a websocket URL on this page's host.
window.berthWs = function (path) {
  const proto = location.protocol === "https:" ? "wss://" : "ws://";
  return new WebSocket(proto + location.host + path);
};
