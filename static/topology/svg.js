/* A small SVG writer for the topology diagram (cytoscape-svg is not available):
 * straight edges with their labels, nodes as their shapes with their colours and
 * labels, from the positions on the page. Hidden elements (network filter) are left out.
 */
(function () {
  "use strict";

  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c];
    });
  }

  function text(x, y, label, size, anchor) {
    const lines = String(label || "").split("\n");
    return "<text x='" + x.toFixed(1) + "' y='" + y.toFixed(1) + "' font-size='" + size +
      "' text-anchor='" + (anchor || "middle") + "' font-family='sans-serif'>" +
      lines.map(function (l, i) {
        return "<tspan x='" + x.toFixed(1) + "' dy='" + (i ? size + 1 : 0) + "'>" + esc(l) + "</tspan>";
      }).join("") + "</text>";
  }

  function shape(n) {
    const p = n.position(), w = n.width(), h = n.height();
    const fill = n.style("background-color"), stroke = n.style("border-color");
    const sw = parseFloat(n.style("border-width")) || 1;
    const attrs = " fill='" + fill + "' stroke='" + stroke + "' stroke-width='" + sw + "'";
    const s = n.style("shape");
    if (s === "ellipse") {
      return "<ellipse cx='" + p.x + "' cy='" + p.y + "' rx='" + w / 2 + "' ry='" + h / 2 + "'" + attrs + "/>";
    }
    if (s === "diamond") {
      const pts = [[p.x, p.y - h / 2], [p.x + w / 2, p.y], [p.x, p.y + h / 2], [p.x - w / 2, p.y]];
      return "<polygon points='" + pts.map(function (q) { return q.join(","); }).join(" ") + "'" + attrs + "/>";
    }
    const r = s.indexOf("round") === 0 ? 4 : 0;
    return "<rect x='" + (p.x - w / 2) + "' y='" + (p.y - h / 2) + "' width='" + w + "' height='" + h +
      "' rx='" + r + "'" + attrs + "/>";
  }

  window.berthTopologySvg = function (cy) {
    const nodes = cy.nodes(":visible"), edges = cy.edges(":visible");
    const bb = cy.elements(":visible").boundingBox({ includeLabels: true });
    const pad = 20;
    const out = [
      "<?xml version='1.0' encoding='UTF-8'?>",
      "<svg xmlns='http://www.w3.org/2000/svg' viewBox='" + [bb.x1 - pad, bb.y1 - pad, bb.w + 2 * pad,
        bb.h + 2 * pad].map(function (v) { return v.toFixed(1); }).join(" ") + "' width='" +
        Math.round(bb.w + 2 * pad) + "' height='" + Math.round(bb.h + 2 * pad) + "'>",
      "<title>Berth topology</title>",
      "<rect x='" + (bb.x1 - pad) + "' y='" + (bb.y1 - pad) + "' width='" + (bb.w + 2 * pad) +
        "' height='" + (bb.h + 2 * pad) + "' fill='#ffffff'/>",
    ];
    edges.forEach(function (e) {
      const a = e.source().position(), b = e.target().position();
      const dash = e.style("line-style") === "solid" ? "" : " stroke-dasharray='5,3'";
      out.push("<g class='edge' data-id='" + esc(e.id()) + "'><line x1='" + a.x + "' y1='" + a.y +
        "' x2='" + b.x + "' y2='" + b.y + "' stroke='" + e.style("line-color") + "' stroke-width='" +
        (parseFloat(e.style("width")) || 1) + "'" + dash + "/>" +
        (e.data("shown") ? text((a.x + b.x) / 2, (a.y + b.y) / 2, e.data("shown"), 8) : "") + "</g>");
    });
    nodes.forEach(function (n) {
      const p = n.position();
      out.push("<g class='node' data-id='" + esc(n.id()) + "'>" + shape(n) +
        text(p.x, p.y + n.height() / 2 + 12, n.data("label"), 10) + "</g>");
    });
    out.push("</svg>");
    return out.join("\n");
  };
})();
