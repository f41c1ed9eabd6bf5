// The board's last-hour charts as inline SVG, from /board/charts.json (computed by the hub):
// tasks finished per minute by status, the queue depth, the fallback rate, and p50 / p95 run
// time per agent. No chart library: a few paths and rectangles.

const SVG = "http://www.w3.org/2000/svg";
const STATUS_CLASS = { succeeded: "bar-ok", failed: "bar-bad", cancelled: "bar-off" };
const REFRESH_MS = 15000;

function svg(tag, attrs = {}, text = "") {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  if (text) el.textContent = text;
  return el;
}

function frame(width, height, label) {
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart-svg", role: "img", "aria-label": label });
  root.append(svg("title", {}, label));
  return root;
}

function axis(root, width, height, max, unit) {
  root.append(svg("line", { x1: 0, x2: width, y1: height - 14, y2: height - 14, class: "grid" }));
  root.append(svg("text", { x: 2, y: 10, class: "axis" }, `${max}${unit}`));
  root.append(svg("text", { x: 2, y: height - 2, class: "axis" }, "−60m"));
  root.append(svg("text", { x: width - 2, y: height - 2, class: "axis", "text-anchor": "end" }, "now"));
}

export function throughputChart(data, width = 360, height = 110) {
  const statuses = Object.keys(STATUS_CLASS);
  const totals = data.queued.map((_, i) => statuses.reduce((sum, s) => sum + data.finished[s][i], 0));
  const max = Math.max(1, ...totals);
  const done = totals.reduce((a, b) => a + b, 0);
  const root = frame(width, height, `Tasks finished per minute, last hour: ${done} in all, at most ${max} a minute`);
  const inner = height - 16;
  const bar = width / totals.length;
  totals.forEach((_, i) => {
    let y = inner;
    for (const status of statuses) {
      const n = data.finished[status][i];
      if (!n) continue;
      const h = (n / max) * (inner - 12);
      y -= h;
      root.append(svg("rect", { x: i * bar + 0.5, y, width: Math.max(1, bar - 1), height: h, class: STATUS_CLASS[status] }));
    }
  });
  axis(root, width, height, max, "/min");
  return root;
}

export function lineChart(values, { width = 360, height = 110, label, unit = "", scale = 1 } = {}) {
  const known = values.filter((v) => v !== null);
  const max = Math.max(unit === "%" ? 0.05 : 1, ...known);
  const root = frame(width, height, label);
  const inner = height - 16;
  const x = (i) => (i + 0.5) * (width / values.length);
  const y = (v) => inner - (v / max) * (inner - 12);
  let d = "";
  values.forEach((v, i) => {
    if (v === null) return;
    d += `${d && values[i - 1] !== null ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
  });
  if (d) root.append(svg("path", { d, class: "chart-line" }));
  axis(root, width, height, Math.round(max * scale * 10) / 10, unit);
  return root;
}

function seconds(value) {
  return value < 10 ? `${value.toFixed(2)} s` : value < 120 ? `${value.toFixed(1)} s` : `${Math.round(value / 60)} min`;
}

export function durationChart(durations, width = 360) {
  const rowH = 18;
  const height = Math.max(1, durations.length) * rowH + 4;
  const root = frame(width, height, `Run time per agent, last hour: ${durations.map((d) => `${d.agent} p50 ${seconds(d.p50)}, p95 ${seconds(d.p95)}`).join("; ") || "no runs"}`);
  const max = Math.max(0.001, ...durations.map((d) => d.p95));
  const left = 70;
  const span = width - left - 110;
  durations.forEach((d, i) => {
    const y = i * rowH + 3;
    root.append(svg("text", { x: 0, y: y + 11, class: "axis" }, d.agent));
    root.append(svg("rect", { x: left, y: y + 2, width: Math.max(1, (d.p95 / max) * span), height: 10, class: "bar-p95" }));
    root.append(svg("rect", { x: left, y: y + 2, width: Math.max(1, (d.p50 / max) * span), height: 10, class: "bar-p50" }));
    root.append(svg("text", { x: width, y: y + 11, class: "axis", "text-anchor": "end" }, `${seconds(d.p50)} / ${seconds(d.p95)}`));
  });
  return root;
}

// Fetch and draw into #charts now and every REFRESH_MS (slow-moving figures: no stream).
export function startCharts(box) {
  if (!box) return;
  const draw = async () => {
    try {
      const response = await fetch("/board/charts.json", { credentials: "same-origin" });
      if (!response.ok) return;
      const data = await response.json();
      box.querySelector('[data-chart="throughput"]').replaceChildren(throughputChart(data));
      box.querySelector('[data-chart="queue"]').replaceChildren(
        lineChart(data.queued, { label: `Queue depth, last hour: ${data.queued[data.queued.length - 1]} now` }));
      const rates = data.fallback_rate.map((r) => (r === null ? null : 100 * r));
      box.querySelector('[data-chart="fallbacks"]').replaceChildren(
        lineChart(rates, { label: "Share of node-bound attempts that fell back, per minute", unit: "%" }));
      box.querySelector('[data-chart="durations"]').replaceChildren(durationChart(data.durations));
      box.dataset.drawn = String(Number(box.dataset.drawn || 0) + 1);
    } catch {
      // The hub is away: the stream shows it; the charts catch up on the next round.
    }
  };
  draw();
  setInterval(draw, REFRESH_MS);
}
