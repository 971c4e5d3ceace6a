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

// Money over a month: cumulative spend stacked by series (filled areas), horizontal reference lines (budgets)
// and a dashed forecast segment. series: [{label, points: [{t, v}]}] with the same t in every series, oldest
// first; lines: [{label, value}]; forecast: {from: {t, v}, to: {t, v}} or null. x spans [from, to] (millis).
export function stackedChart(series, { from, to, lines = [], forecast = null, width = 760, height = 260 } = {}) {
  const pad = { l: 56, r: 12, t: 14, b: 24 };
  const w = width - pad.l - pad.r, h = height - pad.t - pad.b;
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart chart-money", role: "img" });
  const times = series.length ? series[0].points.map((p) => p.t) : [];
  const totals = times.map((_, i) => series.reduce((sum, s) => sum + (s.points[i]?.v || 0), 0));
  const top = Math.max(1e-6, ...totals, ...lines.map((l) => l.value), forecast ? forecast.to.v : 0) * 1.12;
  const x = (t) => pad.l + ((t - from) / Math.max(1, to - from)) * w;
  const y = (v) => pad.t + h - (Math.max(0, v) / top) * h;
  const money = (v) => (top < 10 ? `$${v.toFixed(2)}` : `$${Math.round(v).toLocaleString()}`);
  for (let i = 0; i <= 4; i++) {
    const v = (top / 1.12) * (i / 4);
    svg.append(el("line", { x1: pad.l, x2: pad.l + w, y1: y(v), y2: y(v), class: "grid" }));
    const label = el("text", { x: pad.l - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" });
    label.textContent = money(v);
    svg.append(label);
  }
  const days = Math.round((to - from) / 86_400_000);
  const step = days > 20 ? 7 : days > 8 ? 2 : 1;
  for (let d = 0; d <= days; d += step) {
    const t = from + d * 86_400_000;
    const label = el("text", { x: x(t), y: height - 6, class: "axis", "text-anchor": d === 0 ? "start" : "middle" });
    label.textContent = new Date(t).toLocaleDateString([], { month: "short", day: "numeric", timeZone: "UTC" });
    svg.append(label);
  }
  const base = times.map(() => 0);
  series.forEach((s, index) => {
    if (!times.length) return;
    const upper = s.points.map((p, i) => base[i] + (p.v || 0));
    const forward = times.map((t, i) => `${i ? "L" : "M"}${x(t).toFixed(1)},${y(upper[i]).toFixed(1)}`).join("");
    const back = times.map((t, i) => `L${x(t).toFixed(1)},${y(base[i]).toFixed(1)}`).reverse().join("");
    svg.append(el("path", { d: `${forward}${back}Z`, class: `area series-${index % 6}`, "data-series": s.label }));
    upper.forEach((v, i) => { base[i] = v; });
  });
  for (const line of lines) {
    svg.append(el("line", { x1: pad.l, x2: pad.l + w, y1: y(line.value), y2: y(line.value), class: "budget-line",
                            "data-budget": line.label }));
    const label = el("text", { x: pad.l + w - 4, y: y(line.value) - 5, class: "axis budget-label", "text-anchor": "end" });
    label.textContent = `${line.label} ${money(line.value)}`;
    svg.append(label);
  }
  if (forecast) {
    svg.append(el("line", { x1: x(forecast.from.t), y1: y(forecast.from.v), x2: x(forecast.to.t), y2: y(forecast.to.v),
                            class: "forecast-line" }));
  }
  return svg;
}
