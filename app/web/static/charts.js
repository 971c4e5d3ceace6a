// Small inline-SVG charts: a sparkline for tables and a line chart with axes for the detail page.
// No library: a few dozen lines are enough for percent-over-time series.

const NS = "http://www.w3.org/2000/svg";

function el(name, attrs = {}) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

// points: [{t: Date millis, v: number 0..100}], oldest first
export function sparkline(points, { width = 96, height = 24 } = {}) {
  const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "sparkline", role: "img" });
  const values = points.filter((p) => p.v !== null && p.v !== undefined);
  if (values.length < 2) {
    svg.append(el("line", { x1: 0, y1: height - 1, x2: width, y2: height - 1, class: "spark-empty" }));
    return svg;
  }
  const t0 = values[0].t, t1 = values[values.length - 1].t || t0 + 1;
  const x = (t) => ((t - t0) / Math.max(1, t1 - t0)) * (width - 2) + 1;
  const y = (v) => height - 1 - (Math.min(100, Math.max(0, v)) / 100) * (height - 2);
  const d = values.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join("");
  svg.append(el("path", { d: `${d}L${x(t1).toFixed(1)},${height}L1,${height}Z`, class: "spark-area" }));
  svg.append(el("path", { d, class: "spark-line" }));
  const title = el("title");
  title.textContent = `last ${values[values.length - 1].v.toFixed(1)}%`;
  svg.append(title);
  return svg;
}

// series: [{label, points: [{t, v}]}]; x spans [from, to] (millis), y spans 0..100 (percent)
export function lineChart(series, { from, to, width = 520, height = 150, unit = "%" } = {}) {
  const pad = { l: 36, r: 10, t: 10, b: 22 };
  const w = width - pad.l - pad.r, h = height - pad.t - pad.b;
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" });
  const x = (t) => pad.l + ((t - from) / Math.max(1, to - from)) * w;
  const y = (v) => pad.t + h - (Math.min(100, Math.max(0, v)) / 100) * h;
  for (const v of [0, 25, 50, 75, 100]) {
    svg.append(el("line", { x1: pad.l, x2: pad.l + w, y1: y(v), y2: y(v), class: "grid" }));
    const label = el("text", { x: pad.l - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" });
    label.textContent = `${v}${unit}`;
    svg.append(label);
  }
  const steps = 4;
  for (let i = 0; i <= steps; i++) {
    const t = from + ((to - from) * i) / steps;
    const label = el("text", { x: x(t), y: height - 6, class: "axis", "text-anchor": i === 0 ? "start" : i === steps ? "end" : "middle" });
    label.textContent = new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    svg.append(label);
  }
  series.forEach((s, index) => {
    const pts = s.points.filter((p) => p.v !== null && p.v !== undefined && p.t >= from);
    if (!pts.length) return;
    const d = pts.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join("");
    svg.append(el("path", { d, class: `series series-${index % 6}` }));
    const last = pts[pts.length - 1];
    svg.append(el("circle", { cx: x(last.t), cy: y(last.v), r: 3, class: `dot series-${index % 6}` }));
  });
  return svg;
}
