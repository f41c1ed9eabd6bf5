// Node load plots as plain SVG: CPU and memory lines (0–100 %) over the last five minutes,
// with slot use (running / capacity) as a shaded area behind them.

const SVG = "http://www.w3.org/2000/svg";
const BUCKET = 5000; // ms, as the server buckets its history
export const WINDOW = 300000; // ms shown

function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  return el;
}

// Per-node history: the server's buckets, extended by the heartbeats frames bring.
export class LoadHistory {
  constructor() {
    this.series = new Map();
    this.seen = new Map();
  }

  reset(history) {
    for (const [name, points] of Object.entries(history || {})) {
      this.series.set(name, points.map(([t, cpu, mem, running]) => ({ t, cpu, mem, running, n: 1 })));
    }
  }

  add(node) {
    // Node events also come for cordons and binds: only a new heartbeat is a new sample.
    if (!node.last_heartbeat || this.seen.get(node.name) === node.last_heartbeat) return false;
    this.seen.set(node.name, node.last_heartbeat);
    const t = Math.floor(Date.parse(node.last_heartbeat) / BUCKET) * BUCKET;
    const points = this.series.get(node.name) || [];
    const last = points[points.length - 1];
    if (last && last.t === t) {
      last.cpu = (last.cpu * last.n + node.cpu) / (last.n + 1);
      last.mem = (last.mem * last.n + node.mem) / (last.n + 1);
      last.running = Math.max(last.running, node.running);
      last.n += 1;
    } else if (!last || t > last.t) {
      points.push({ t, cpu: node.cpu, mem: node.mem, running: node.running, n: 1 });
    }
    // Trim against the newest sample, not the browser clock: a skewed clock cannot empty it.
    const start = t - WINDOW;
    while (points.length && points[0].t < start) points.shift();
    this.series.set(node.name, points);
    return true;
  }

  points(name) {
    return this.series.get(name) || [];
  }
}

function path(points, x, y) {
  return points.map((p, i) => `${i ? "L" : "M"}${x(p).toFixed(1)},${y(p).toFixed(1)}`).join("");
}

function describe(points) {
  if (!points.length) return "No load samples yet";
  const last = points[points.length - 1];
  return `CPU ${Math.round(last.cpu)}%, memory ${Math.round(last.mem)}%, ${last.running} running`;
}

// A plot of `points` sized width × height; `large` adds grid lines and axis labels and always
// spans the whole window. Small plots span the history there is (at least a minute), so a node
// that joined a moment ago does not show as a sliver at the right edge.
export function loadPlot(points, { width = 240, height = 48, capacity = 1, large = false } = {}) {
  const pad = large ? { l: 36, r: 8, t: 8, b: 20 } : { l: 0, r: 0, t: 2, b: 2 };
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: large ? "plot-svg plot-svg-large" : "plot-svg",
    role: "img",
    preserveAspectRatio: "none",
  });
  const title = svg("title");
  const end = points.length ? points[points.length - 1].t : Date.now();
  const span = large || !points.length ? WINDOW
    : Math.max(60000, Math.min(WINDOW, end - points[0].t + BUCKET));
  title.textContent = `${describe(points)} (last ${Math.round(span / 60000)} min)`;
  root.append(title);
  root.setAttribute("aria-label", title.textContent);
  const innerW = width - pad.l - pad.r;
  const innerH = height - pad.t - pad.b;
  const x = (p) => pad.l + ((p.t - (end - span)) / span) * innerW;
  const y = (value) => pad.t + innerH - (Math.max(0, Math.min(100, value)) / 100) * innerH;

  if (large) {
    for (const level of [0, 25, 50, 75, 100]) {
      root.append(svg("line", { x1: pad.l, x2: width - pad.r, y1: y(level), y2: y(level), class: "grid" }));
      const label = svg("text", { x: pad.l - 6, y: y(level) + 4, class: "axis", "text-anchor": "end" });
      label.textContent = `${level}%`;
      root.append(label);
    }
    for (let minute = 5; minute >= 0; minute -= 1) {
      const at = pad.l + ((WINDOW - minute * 60000) / WINDOW) * innerW;
      const label = svg("text", { x: at, y: height - 4, class: "axis", "text-anchor": "middle" });
      label.textContent = minute ? `−${minute}m` : "now";
      root.append(label);
    }
  }
  if (points.length) {
    const slots = (p) => y((100 * p.running) / Math.max(1, capacity));
    const base = y(0);
    const area = `${path(points, x, slots)}L${x(points[points.length - 1]).toFixed(1)},${base}L${x(points[0]).toFixed(1)},${base}Z`;
    root.append(svg("path", { d: area, class: "area-running" }));
    root.append(svg("path", { d: path(points, x, (p) => y(p.mem)), class: "line-mem" }));
    root.append(svg("path", { d: path(points, x, (p) => y(p.cpu)), class: "line-cpu" }));
  }
  return root;
}

export function legend() {
  const el = document.createElement("span");
  el.className = "legend";
  el.innerHTML = '<span class="key key-cpu">CPU</span> <span class="key key-mem">memory</span> <span class="key key-running">slots in use</span>';
  return el;
}
