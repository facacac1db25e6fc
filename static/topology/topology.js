/* The live topology diagram (Cytoscape.js).
 *
 * The page embeds the graph it was rendered with (#topology-graph); ws/topology/
 * then sends a snapshot, diffs and traffic rates (dashboard/topology/consumers.py).
 * Diffs touch only the elements that changed: nodes that stay keep their places,
 * new ones are put next to what they connect to. No whole-graph layout runs after
 * the first drawing.
 */
(function () {
  "use strict";

  const root = document.getElementById("topology");
  if (!root) return;
  const initial = JSON.parse(document.getElementById("topology-graph").textContent);
  const state = { version: -1, ws: null, retry: 500, slots: {}, graph: { nodes: {}, edges: {} } };

  // -- styles ------------------------------------------------------------------------
  const style = [
    { selector: "node", style: {
      "label": "data(label)", "text-wrap": "wrap", "font-size": 10, "text-valign": "bottom",
      "text-margin-y": 4, "background-color": "#9aa7b5", "width": 26, "height": 26,
      "border-width": 1, "border-color": "#52606d" } },
    { selector: "node[kind = 'host']", style: { "shape": "round-rectangle", "width": 60,
      "height": 36, "background-color": "#3e4c59", "color": "#1f2933", "font-weight": "bold" } },
    { selector: "node[kind = 'hostif']", style: { "shape": "rectangle", "background-color": "#cbd2d9",
      "width": 22, "height": 14 } },
    { selector: "node[kind = 'network']", style: { "shape": "diamond", "background-color": "#2680c2",
      "width": 38, "height": 38 } },
    { selector: "node[kind = 'network'][driver != 'bridge']", style: { "background-color": "#7c5e10" } },
    { selector: "node[kind = 'container']", style: { "shape": "round-rectangle",
      "background-color": "#3ebd93", "width": 30, "height": 22 } },
    { selector: "node[kind = 'container'][state = 'paused']", style: { "background-color": "#f0b429" } },
    { selector: "node[kind = 'port']", style: { "shape": "tag", "background-color": "#f7c948",
      "width": 20, "height": 16 } },
    { selector: "node[state = 'missing'], node[state = 'down']", style: {
      "border-color": "#d64545", "border-width": 3 } },
    { selector: "edge", style: {
      "width": 2, "curve-style": "bezier", "line-color": "#9aa5b1", "font-size": 8,
      "label": "data(shown)", "text-rotation": "autorotate", "text-wrap": "wrap",
      "text-background-color": "#fff", "text-background-opacity": 0.8,
      "text-background-padding": 1, "min-zoomed-font-size": 7 } },
    { selector: "edge[kind = 'veth']", style: { "line-color": "#2680c2" } },
    { selector: "edge[kind = 'uplink']", style: { "line-color": "#52606d", "width": 3 } },
    { selector: "edge[?internal]", style: { "line-style": "dashed", "line-color": "#d64545" } },
    { selector: "edge[kind = 'shares']", style: { "line-style": "dotted", "line-color": "#8719e0",
      "target-arrow-shape": "triangle", "target-arrow-color": "#8719e0" } },
    { selector: "edge[kind = 'publish']", style: { "line-color": "#de911d",
      "target-arrow-shape": "triangle", "target-arrow-color": "#de911d" } },
    { selector: "edge[kind = 'listen']", style: { "line-color": "#de911d", "line-style": "dashed" } },
    { selector: "edge[kind = 'sublink'], edge[kind = 'parent']", style: { "line-color": "#7c5e10" } },
    { selector: "edge[state = 'missing'], edge[state = 'down'], edge[state = 'detached']",
      style: { "line-color": "#d64545", "line-style": "dashed" } },
    { selector: ".hidden", style: { "display": "none" } },
    { selector: ".dim", style: { "opacity": 0.25 } },
    { selector: ".match", style: { "border-color": "#e12d39", "border-width": 4 } },
    { selector: "edge.path", style: { "line-color": "#27ab83", "width": 5, "z-index": 10 } },
    { selector: "node.path", style: { "border-color": "#27ab83", "border-width": 4 } },
    { selector: "edge.break", style: { "line-color": "#e12d39", "width": 7, "line-style": "solid" } },
    { selector: "node.break", style: { "border-color": "#e12d39", "border-width": 6 } },
    { selector: ":selected", style: { "overlay-opacity": 0.15, "overlay-color": "#2680c2" } },
  ];

  const cy = window.cytoscape({ container: document.getElementById("cy"), style: style,
    wheelSensitivity: 0.3, minZoom: 0.05, maxZoom: 4 });

  // -- labels and rates ---------------------------------------------------------------
  function human(bps) {
    if (bps < 1) return "0 B/s";
    const u = ["B/s", "kB/s", "MB/s", "GB/s"];
    let i = 0;
    while (bps >= 1000 && i < u.length - 1) { bps /= 1000; i++; }
    return (bps >= 10 || i === 0 ? Math.round(bps) : bps.toFixed(1)) + " " + u[i];
  }

  function edgeData(e) {
    const d = Object.assign({}, e);
    d.shown = e.label || "";
    return d;
  }

  function applyRates(rates) {
    cy.batch(function () {
      cy.edges("[kind = 'veth'], [kind = 'uplink']").forEach(function (edge) {
        const r = rates[edge.id()];
        const base = edge.data("label") || "";
        if (!r) { edge.data("shown", base); edge.data("rate", ""); return; }
        const txt = "↑" + human(r.out) + " ↓" + human(r.in);
        edge.data("rate", txt);
        edge.data("shown", base + "\n" + txt);
      });
    });
  }

  // -- placing new nodes ---------------------------------------------------------------
  // A deterministic first layout: host in the middle, networks on a ring around it,
  // each network's containers fanned out beyond it, ports beyond their container.
  function angleOf(p) { return Math.atan2(p.y, p.x); }

  function neighbourOf(id, edges) {
    // The node a new node hangs off: its network for a container, its container for a port.
    const prefer = { veth: 1, sublink: 1, hostnet: 1, shares: 2, publish: 0, parent: 3, hostif: 3,
      uplink: 3, listen: 4 };
    let best = null, rank = 99;
    edges.forEach(function (e) {
      let other = null;
      if (e.source === id) other = e.target;
      else if (e.target === id) other = e.source;
      if (!other || other === id) return;
      const r = prefer[e.kind] === undefined ? 5 : prefer[e.kind];
      if (r < rank && cy.getElementById(other).nonempty()) { best = other; rank = r; }
    });
    return best;
  }

  function placeNear(anchorId, kind) {
    const a = cy.getElementById(anchorId);
    const p = a.position();
    let n = (state.slots[anchorId] = (state.slots[anchorId] || 0) + 1) - 1;
    const out = (p.x === 0 && p.y === 0) ? -Math.PI / 2 : angleOf(p);
    // Slots on arcs around the anchor, facing away from the host: the first straight
    // out, then alternately either side, ~70 px apart; a full arc (about 290 degrees)
    // moves on to a wider one.
    let dist = kind === "port" ? 60 : 120;
    for (;;) {
      const step = 70 / dist;
      const perArc = Math.max(1, Math.floor((1.6 * Math.PI) / step) + 1);
      if (n < perArc) {
        const ang = out + (n % 2 ? 1 : -1) * Math.ceil(n / 2) * step;
        return { x: p.x + dist * Math.cos(ang), y: p.y + dist * Math.sin(ang) };
      }
      n -= perArc;
      dist += 75;
    }
  }

  function firstPositions(g) {
    const pos = { host: { x: 0, y: 0 } };
    const nets = g.nodes.filter(function (n) { return n.kind === "network"; });
    const R = Math.max(240, nets.length * 65);
    nets.forEach(function (n, i) {
      const a = -Math.PI / 2 + (2 * Math.PI * (i + 0.5)) / Math.max(nets.length, 1);
      pos[n.id] = { x: R * Math.cos(a), y: R * Math.sin(a) };
    });
    g.nodes.filter(function (n) { return n.kind === "hostif"; }).forEach(function (n, i) {
      pos[n.id] = { x: -120 + 60 * i, y: 70 };
    });
    return pos;
  }

  // -- applying graphs and diffs -------------------------------------------------------
  function addNodes(nodes, edges, fixed) {
    // Nodes that hang off something already drawn are placed next to it; networks and
    // host interfaces first so containers find them.
    const order = { host: 0, hostif: 1, network: 2, container: 3, port: 4 };
    nodes = nodes.slice().sort(function (a, b) { return order[a.kind] - order[b.kind]; });
    let ringIdx = 0;
    nodes.forEach(function (n) {
      let p = fixed && fixed[n.id];
      if (!p) {
        const anchor = neighbourOf(n.id, edges);
        if (anchor) p = placeNear(anchor, n.kind);
        else {
          ringIdx++;
          p = { x: 300 * Math.cos(ringIdx), y: 300 * Math.sin(ringIdx) };
        }
      }
      cy.add({ group: "nodes", data: n, position: p });
      state.graph.nodes[n.id] = n;
    });
  }

  function addEdges(edges) {
    edges.forEach(function (e) {
      if (cy.getElementById(e.source).empty() || cy.getElementById(e.target).empty()) return;
      cy.add({ group: "edges", data: edgeData(e) });
      state.graph.edges[e.id] = e;
    });
  }

  function applyDiff(d) {
    cy.batch(function () {
      d.edges.remove.forEach(function (id) { cy.getElementById(id).remove(); delete state.graph.edges[id]; });
      d.nodes.remove.forEach(function (id) {
        cy.getElementById(id).remove(); delete state.graph.nodes[id]; delete state.slots[id];
      });
      d.nodes.update.forEach(function (n) { cy.getElementById(n.id).data(n); state.graph.nodes[n.id] = n; });
      // Placement looks at all edges of the change, added ones included.
      const allEdges = d.edges.add.concat(d.edges.update, Object.values(state.graph.edges));
      addNodes(d.nodes.add, allEdges, null);
      d.edges.update.forEach(function (e) {
        const el = cy.getElementById(e.id);
        if (el.nonempty()) { el.data(edgeData(e)); state.graph.edges[e.id] = e; }
      });
      addEdges(d.edges.add);
    });
    afterChange();
  }

  function diffFrom(g) {
    // The change from what is drawn to graph g (for a snapshot after reconnecting).
    const out = { nodes: { add: [], remove: [], update: [] }, edges: { add: [], remove: [], update: [] } };
    ["nodes", "edges"].forEach(function (part) {
      const have = state.graph[part], want = {};
      g[part].forEach(function (x) { want[x.id] = x; });
      Object.keys(have).forEach(function (id) { if (!want[id]) out[part].remove.push(id); });
      g[part].forEach(function (x) {
        if (!have[x.id]) out[part].add.push(x);
        else if (JSON.stringify(have[x.id]) !== JSON.stringify(x)) out[part].update.push(x);
      });
    });
    return out;
  }

  function first(g) {
    const fixed = firstPositions(g);
    cy.batch(function () {
      addNodes(g.nodes, g.edges, fixed);
      addEdges(g.edges);
    });
    cy.fit(undefined, 30);
    afterChange();
  }

  // -- listing, filter, search, reach selects -----------------------------------------
  const listing = document.getElementById("topology-listing");
  const netFilter = document.getElementById("net-filter");
  const search = document.getElementById("search");
  const srcSel = document.getElementById("reach-source");
  const tgtSel = document.getElementById("reach-target");

  function containersOf() {
    return Object.values(state.graph.nodes).filter(function (n) { return n.kind === "container"; })
      .sort(function (a, b) { return a.name < b.name ? -1 : 1; });
  }

  function renderListing() {
    // The diagram's content as text: for keyboards, screen readers and find-in-page.
    const rows = containersOf().map(function (n) {
      const links = Object.values(state.graph.edges).filter(function (e) { return e.source === n.id; })
        .map(function (e) {
          const t = state.graph.nodes[e.target];
          const where = t ? (t.kind === "network" ? (t.bridge || t.name) : t.name || t.label) : e.target;
          if (e.kind === "veth") return "veth " + e.host_ifname + " on " + where;
          if (e.kind === "shares") return "shares the network namespace of " + where;
          if (e.kind === "hostnet") return "host network";
          if (e.kind === "sublink") return t.driver + " on " + (t.parent || "?");
          return e.kind + " " + where;
        });
      const ports = Object.values(state.graph.edges)
        .filter(function (e) { return e.kind === "publish" && e.target === n.id; })
        .map(function (e) { return "publishes " + e.label; });
      const addrs = (n.addresses || []).map(function (a) { return a.ip + " (" + a.network + ")"; });
      return "<li data-node='" + esc(n.id) + "'><b>" + esc(n.name) + "</b> " +
        esc(addrs.join(", ")) + " — " + esc(links.concat(ports).join("; ")) + "</li>";
    });
    listing.innerHTML = rows.join("") || "<li>no running containers</li>";
    document.getElementById("count").textContent = rows.length + " running container" +
      (rows.length === 1 ? "" : "s");
  }

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function fillSelect(sel, items, blank) {
    // Only when the choices changed: rewriting them under a user's (or a test's) hand
    // would drop a choice being made.
    const html = "<option value=''>" + esc(blank || "—") + "</option>" + items.map(function (it) {
      return "<option value='" + esc(it[0]) + "'>" + esc(it[1]) + "</option>";
    }).join("");
    if (sel.dataset.choices === html) return;
    const keep = sel.value;
    sel.innerHTML = html;
    sel.dataset.choices = html;
    sel.value = items.some(function (it) { return it[0] === keep; }) ? keep : "";
  }

  function renderSelects() {
    const cs = containersOf().map(function (n) { return [n.name, n.name]; });
    const ports = Object.values(state.graph.nodes).filter(function (n) { return n.kind === "port"; })
      .map(function (n) { return [n.id, "host port " + n.label + " (" + n.container + ")"]; });
    fillSelect(srcSel, cs);
    fillSelect(tgtSel, cs.concat(ports));
    const nets = Object.values(state.graph.nodes).filter(function (n) { return n.kind === "network"; })
      .map(function (n) { return [n.name, n.name]; }).sort();
    fillSelect(netFilter, nets, "all networks");
  }

  function applyFilter() {
    const name = netFilter.value;
    cy.batch(function () {
      cy.elements().removeClass("hidden");
      if (!name) return;
      const net = cy.nodes("[kind = 'network']").filter(function (n) { return n.data("name") === name; });
      const members = net.neighborhood("node[kind = 'container']");
      // Containers sharing a member's namespace, and ports of members, stay too.
      const extra = members.neighborhood("node[kind = 'container'], node[kind = 'port']");
      const keep = net.union(members).union(extra).union(cy.getElementById("host"));
      cy.elements().not(keep).not(keep.edgesWith(keep)).addClass("hidden");
      cy.edges().filter(function (e) { return e.source().hasClass("hidden") || e.target().hasClass("hidden"); })
        .addClass("hidden");
    });
  }

  function applySearch() {
    const q = search.value.trim().toLowerCase();
    cy.nodes().removeClass("match");
    if (!q) return;
    const hits = cy.nodes("[kind = 'container']").filter(function (n) {
      return n.data("name").toLowerCase().indexOf(q) >= 0 || n.data("container_id").indexOf(q) === 0 ||
        (n.data("addresses") || []).some(function (a) { return a.ip.indexOf(q) === 0; });
    });
    hits.addClass("match");
    document.getElementById("search-count").textContent = q ? hits.length + " found" : "";
    if (hits.nonempty()) cy.animate({ center: { eles: hits }, duration: 200 });
  }

  function afterChange() {
    renderListing();
    renderSelects();
    applyFilter();
    applySearch();
    root.dataset.version = String(state.version);
  }

  netFilter.addEventListener("change", applyFilter);
  search.addEventListener("input", applySearch);

  // -- details and reach --------------------------------------------------------------
  cy.on("tap", "node", function (evt) {
    window.htmx.ajax("GET", root.dataset.nodeUrl.replace("__ID__", encodeURIComponent(evt.target.id())),
      { target: "#details", swap: "innerHTML" });
  });

  document.body.addEventListener("htmx:afterSwap", function (evt) {
    // A swap above the diagram moves it: Cytoscape caches where its canvas is, and
    // clicks would land beside the nodes until told.
    cy.resize();
    if (evt.detail.target.id !== "reach-result") return;
    const el = evt.detail.target.querySelector("[data-reach]");
    cy.elements().removeClass("path break");
    if (!el) return;
    const r = JSON.parse(el.dataset.reach);
    r.path.forEach(function (id) { cy.getElementById(id).addClass("path"); });
    if (r.break_at) cy.getElementById(r.break_at).addClass("break");
  });

  // Stop from the details panel: a plain POST to the containers page's action (not
  // htmx, which would be told to refresh this page); the diagram shows the result live.
  document.getElementById("details").addEventListener("click", function (evt) {
    const btn = evt.target.closest(".topo-stop");
    if (!btn || !window.confirm("Stop " + btn.dataset.name + "?")) return;
    const status = btn.parentNode.querySelector(".topo-stop-status");
    const headers = JSON.parse(document.body.getAttribute("hx-headers") || "{}");
    btn.disabled = true;
    status.textContent = "stopping…";
    fetch(btn.dataset.url, { method: "POST", headers: headers, credentials: "same-origin" })
      .then(function (r) { status.textContent = r.ok ? "stop requested" : "refused (" + r.status + ")"; })
      .catch(function (e) { status.textContent = "failed: " + e; btn.disabled = false; });
  });

  // -- export -------------------------------------------------------------------------
  function download(name, href) {
    const a = document.createElement("a");
    a.href = href; a.download = name; document.body.appendChild(a); a.click(); a.remove();
  }

  document.getElementById("export-png").addEventListener("click", function () {
    download("topology.png", cy.png({ full: true, scale: 2, bg: "#ffffff" }));
  });

  document.getElementById("export-svg").addEventListener("click", function () {
    const svg = window.berthTopologySvg(cy);
    download("topology.svg", URL.createObjectURL(new Blob([svg], { type: "image/svg+xml" })));
  });

  document.getElementById("fit").addEventListener("click", function () { cy.fit(cy.elements(":visible"), 30); });

  // -- websocket ----------------------------------------------------------------------
  function connect() {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host +
      "/ws/topology/");
    state.ws = ws;
    ws.onopen = function () { state.retry = 500; root.dataset.live = "1"; };
    ws.onmessage = function (m) {
      const msg = JSON.parse(m.data);
      if (msg.type === "snapshot") {
        state.version = msg.version;
        applyDiff(diffFrom(msg.graph));
        if (msg.rates) applyRates(msg.rates);
        root.dataset.synced = "1";
      } else if (msg.type === "diff") {
        if (msg.version !== state.version + 1 && state.version >= 0) {
          ws.send(JSON.stringify({ type: "resync" }));
          return;
        }
        state.version = msg.version;
        applyDiff(msg.diff);
      } else if (msg.type === "rates") {
        applyRates(msg.rates);
      }
    };
    ws.onclose = function () {
      root.dataset.live = "0";
      setTimeout(connect, state.retry);
      state.retry = Math.min(state.retry * 2, 10000);
    };
  }

  first(initial);
  // /topology/?network=NAME&q=TEXT: open filtered (links from the networks and
  // containers pages).
  if (root.dataset.network) { netFilter.value = root.dataset.network; applyFilter(); }
  if (root.dataset.search) { search.value = root.dataset.search; applySearch(); }
  connect();
  window.berthTopology = { cy: cy, state: state };
})();
