// The board: fleet summary, node cards with load plots, and the filtered, paged task table,
// kept current by the live stream. State changes as frames arrive; the DOM is brought in line
// at most once per animation frame.

import { enableActions } from "./actions.js";
import {
  BOUND, TERMINAL, actionForm, age, badge, h, progressBar, renderScheduler, setText,
  shortId, syncChildren, updateBadge, updateProgress,
} from "./dom.js";
import { startCharts } from "./charts.js";
import { BoardStream } from "./live.js";
import { LoadHistory, loadPlot } from "./plot.js";

const root = document.getElementById("board");
const can = {
  control: root.dataset.canControl === "1",
  switch: root.dataset.canSwitch === "1",
  submit: root.dataset.canSubmit === "1",
};
const form = document.getElementById("filters");
const grid = document.getElementById("node-grid");
const rows = document.getElementById("task-rows");
const MAX_CARD_TASKS = 6;
// Past this many nodes the cards drop their plots and task lists: a fleet fits on a screen.
const COMPACT_FROM = 13;
// Names sort as people count: n1, n2, n10 (not n1, n10, n2).
const naturally = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" }).compare;
const groupSelect = document.getElementById("node-group");

const state = {
  summary: null,
  fallback: null,
  nodes: new Map(), // name → node
  bound: new Map(), // session id → task holding a node slot (for the cards)
  tasks: new Map(), // session id → task, the current page's rows
  order: [], // the page's session ids, newest first
  count: 0,
  page: 1,
  pages: 1,
  pageSize: 50,
  teams: [],
  errors: {},
};
const loads = new LoadHistory();
// How long frames take to apply (read by the browser tests, handy in a console).
const stats = { frames: 0, applyMs: [], renderMs: [] };
window.hivemindBoard = stats;
let filters = readFilters(new URLSearchParams(location.search));
let grouping = new URLSearchParams(location.search).get("group") || "";

// Filters

function readFilters(params) {
  return {
    status: params.getAll("status").flatMap((s) => s.split(",")).filter(Boolean),
    team: params.get("team") || "",
    node: params.get("node") || "",
    route: params.get("route") || "",
    q: (params.get("q") || "").trim(),
    page: Math.max(1, Number(params.get("page")) || 1),
  };
}

function streamParams() {
  return { tasks: 1, history: "*", ...filters };
}

function showFiltersInForm() {
  for (const box of form.querySelectorAll("input[name=status]")) {
    box.checked = filters.status.includes(box.value);
  }
  for (const name of ["team", "node", "route"]) ensureOption(form.elements[name], filters[name]);
  form.elements.q.value = filters.q;
}

function ensureOption(select, value) {
  if (value && ![...select.options].some((o) => o.value === value)) {
    select.append(h("option", { value, text: value }));
  }
  select.value = value;
}

function applyFilters(page = 1) {
  const data = new FormData(form);
  filters = {
    status: data.getAll("status"),
    team: data.get("team") || "",
    node: data.get("node") || "",
    route: data.get("route") || "",
    q: (data.get("q") || "").trim(),
    page,
  };
  const query = new URLSearchParams();
  for (const s of filters.status) query.append("status", s);
  for (const key of ["team", "node", "route", "q"]) if (filters[key]) query.set(key, filters[key]);
  if (grouping) query.set("group", grouping);
  if (page > 1) query.set("page", String(page));
  window.history.replaceState(null, "", query.toString() ? `?${query}` : location.pathname);
  stream.update(streamParams(), { history: "" });
}

// Applying the stream

function applySnapshot(msg) {
  state.summary = msg.summary;
  state.fallback = msg.fallback_mode;
  state.nodes = new Map(msg.nodes.map((n) => [n.name, n]));
  state.bound = new Map(msg.bound.map((t) => [t.session_id, t]));
  state.teams = msg.teams || [];
  state.errors = msg.errors || {};
  if (msg.history) {
    loads.series = new Map();
    loads.seen = new Map();
    loads.reset(msg.history);
  }
  if (msg.tasks) {
    state.tasks = new Map(msg.tasks.results.map((t) => [t.session_id, t]));
    state.order = msg.tasks.results.map((t) => t.session_id);
    state.count = msg.tasks.count;
    state.page = msg.tasks.page;
    state.pages = msg.tasks.pages;
    state.pageSize = msg.tasks.page_size;
    filters.page = msg.tasks.page;
  }
  schedule();
}

// The count, the page and its order are the server's (frames carry them whenever the page
// changed): the board never counts or filters by itself, so it cannot drift.
function applyFrame(msg) {
  const started = performance.now();
  if (msg.summary) state.summary = msg.summary;
  if (msg.fallback_mode) state.fallback = msg.fallback_mode;
  for (const node of msg.nodes) {
    state.nodes.set(node.name, node);
    loads.add(node);
  }
  for (const task of msg.tasks) {
    if (BOUND.has(task.status) && task.node) state.bound.set(task.session_id, task);
    else state.bound.delete(task.session_id);
    // Rows on the page take the new state; a row entering the page comes in msg.page.order
    // and, when this frame already carries it, not again in msg.page.rows.
    if (state.tasks.has(task.session_id) || msg.page) state.tasks.set(task.session_id, task);
  }
  if (msg.page) applyPage(msg.page);
  schedule();
  stats.frames += 1;
  stats.applyMs.push(performance.now() - started);
  if (stats.applyMs.length > 200) stats.applyMs.shift();
}

function applyPage(page) {
  const known = state.tasks;
  state.tasks = new Map();
  for (const row of page.rows) known.set(row.session_id, row);
  for (const sid of page.order) if (known.has(sid)) state.tasks.set(sid, known.get(sid));
  state.order = page.order.filter((sid) => state.tasks.has(sid));
  state.count = page.count;
  state.page = page.page;
  state.pages = page.pages;
  filters.page = page.page;
}

// Rendering

const schedule = renderScheduler(render);

function render() {
  const started = performance.now();
  renderSummary();
  renderFallback();
  renderFilterOptions();
  renderNodes();
  renderTasks();
  stats.renderMs.push(performance.now() - started);
  if (stats.renderMs.length > 200) stats.renderMs.shift();
}

function renderSummary() {
  const s = state.summary;
  if (!s) return;
  setText(root.querySelector('[data-summary="nodes"]'), `${s.nodes_ready} / ${s.nodes_total}`);
  for (const key of ["tasks_queued", "tasks_running", "tasks_failed"]) {
    setText(root.querySelector(`[data-summary="${key}"]`), s[key]);
  }
  // Red only when something failed: a red zero reads as an alarm.
  root.querySelector(".tile-failed").classList.toggle("tile-alarm", s.tasks_failed > 0);
  renderLocal(s);
}

function renderLocal(s) {
  const card = document.getElementById("local-card");
  if (s.local_slots === undefined) return;
  const meter = card.querySelector(".load");
  meter.setAttribute("aria-valuenow", s.local_running);
  meter.setAttribute("aria-valuemax", s.local_slots);
  meter.querySelector(".load-fill").style.width = `${Math.min(100, (100 * s.local_running) / Math.max(1, s.local_slots))}%`;
  setText(card.querySelector('[data-local="running"]'), `${s.local_running} / ${s.local_slots} running`);
  setText(card.querySelector('[data-local="queued"]'),
    s.local_queued ? `${s.local_queued} queued for a slot` : "nothing queued");
}

function renderFallback() {
  const f = state.fallback || { enabled: false, changed_by: "" };
  setText(root.querySelector('[data-summary="fallback"]'), f.enabled ? "on" : "off");
  root.querySelector(".tile-fallback").classList.toggle("tile-warning", f.enabled);
  const banner = document.getElementById("fallback-banner");
  banner.hidden = !f.enabled;
  setText(banner, f.enabled
    ? `Fallback mode is on${f.changed_by ? ` (switched by ${f.changed_by})` : ""}: every golem and auto task runs locally.`
    : "");
  const holder = document.getElementById("fallback-switch");
  if (!can.switch || holder.dataset.enabled === String(f.enabled)) return;
  holder.dataset.enabled = String(f.enabled);
  holder.replaceChildren(actionForm("/fallback-mode/", f.enabled ? "Turn fallback mode off" : "Turn fallback mode on", {
    cls: "small",
    fields: { enabled: f.enabled ? "0" : "1" },
    confirm: f.enabled
      ? "Turn fallback mode off? Golem and auto tasks go to nodes again."
      : "Turn fallback mode on? Every golem and auto task runs locally until it is turned off; running remote tasks carry on.",
  }));
}

function renderFilterOptions() {
  fillSelect(form.elements.team, state.teams, filters.team);
  fillSelect(form.elements.node, [...state.nodes.keys()].sort(naturally), filters.node);
  const keys = new Set();
  for (const node of state.nodes.values()) Object.keys(node.labels || {}).forEach((k) => keys.add(k));
  fillSelect(groupSelect, [...keys].sort(naturally), grouping, "nothing");
  const errors = Object.values(state.errors);
  const box = document.getElementById("filter-errors");
  box.hidden = !errors.length;
  setText(box, errors.join("; "));
}

function fillSelect(select, names, current, none = "any") {
  const wanted = [...new Set([...names, ...(current ? [current] : [])])];
  const key = wanted.join("\n");
  if (select.dataset.options === key) return;
  select.dataset.options = key;
  select.replaceChildren(h("option", { value: "", text: none }), ...wanted.map((n) => h("option", { value: n, text: n })));
  select.value = current;
}

// The grid's keys: node names, naturally sorted, with a heading before each group when the
// cards are grouped by a label key ("group:<value>").
function gridKeys() {
  const names = [...state.nodes.keys()].sort(naturally);
  if (!grouping) return names;
  const value = (name) => (state.nodes.get(name).labels || {})[grouping] ?? "";
  names.sort((a, b) => naturally(value(a) || "\uffff", value(b) || "\uffff") || naturally(a, b));
  const keys = [];
  let last = null;
  for (const name of names) {
    if (value(name) !== last) keys.push(`group:${(last = value(name))}`);
    keys.push(name);
  }
  return keys;
}

function renderNodes() {
  document.getElementById("nodes-empty").hidden = state.nodes.size > 0;
  grid.classList.toggle("compact", state.nodes.size >= COMPACT_FROM);
  const byNode = new Map();
  for (const task of state.bound.values()) {
    if (!byNode.has(task.node)) byNode.set(task.node, []);
    byNode.get(task.node).push(task);
  }
  syncChildren(grid, gridKeys(), {
    key: (el) => el.dataset.key,
    create: (key) => key.startsWith("group:") ? createGroupHeading(key) : createNodeCard(key),
    update: (el, key) => {
      if (key.startsWith("group:")) return;
      updateNodeCard(el, state.nodes.get(key), byNode.get(key) || []);
    },
  });
}

function createGroupHeading(key) {
  const value = key.slice("group:".length);
  const text = value ? `${grouping}=${value}` : `no ${grouping} label`;
  return h("h3", { class: "node-group", dataset: { key }, text });
}

function createNodeCard(name) {
  const link = h("a", { href: `/nodes/${encodeURIComponent(name)}/`, text: name });
  return h("article", { class: "node-card", dataset: { node: name, key: name }, "aria-label": `Node ${name}` },
    h("header", { class: "node-head" }, h("h3", {}, link), badge("")),
    h("div", { class: "labels" }),
    h("div", { class: "load-row" },
      h("div", { class: "load", role: "meter", "aria-label": "Slots in use", "aria-valuemin": 0 },
        h("span", { class: "load-fill" })),
      h("span", { class: "load-text" })),
    h("div", { class: "plot" }),
    h("div", { class: "usage muted" }),
    h("ul", { class: "node-tasks" }));
}

function updateNodeCard(el, node, tasks) {
  el.dataset.status = node.status;
  el.className = `node-card status-${node.status}`;
  updateBadge(el.querySelector("[data-field=status]"), node.status);
  const labels = Object.entries(node.labels || {}).sort().map(([k, v]) => `${k}=${v}`);
  const labelBox = el.querySelector(".labels");
  if (labelBox.dataset.key !== labels.join(",")) {
    labelBox.dataset.key = labels.join(",");
    labelBox.replaceChildren(...labels.map((l) => h("span", { class: "label", text: l })));
  }
  const meter = el.querySelector(".load");
  meter.setAttribute("aria-valuenow", node.running);
  meter.setAttribute("aria-valuemax", node.capacity);
  meter.querySelector(".load-fill").style.width = `${Math.min(100, (100 * node.running) / Math.max(1, node.capacity))}%`;
  setText(el.querySelector(".load-text"), `${node.running} / ${node.capacity} running`);
  setText(el.querySelector(".usage"), `CPU ${Math.round(node.cpu)}% · memory ${Math.round(node.mem)}%`);
  if (grid.classList.contains("compact")) return; // no plot, no task list
  const points = loads.points(node.name);
  const last = points[points.length - 1];
  const plotKey = last ? `${points.length}:${last.t}:${last.n}:${node.capacity}` : "none";
  const plot = el.querySelector(".plot");
  if (plot.dataset.key !== plotKey) {
    plot.dataset.key = plotKey;
    plot.replaceChildren(loadPlot(points, { capacity: node.capacity }));
  }
  const list = el.querySelector(".node-tasks");
  const shown = tasks.slice(0, MAX_CARD_TASKS);
  syncChildren(list, shown.map((t) => t.session_id).concat(tasks.length > shown.length ? ["more"] : []), {
    key: (li) => li.dataset.key,
    create: (sid) => sid === "more"
      ? h("li", { class: "muted", dataset: { key: "more" } })
      : h("li", { dataset: { key: sid } },
        h("a", { href: `/tasks/${sid}/`, class: "mono" }), " ", progressBar(0)),
    update: (li, sid) => {
      if (sid === "more") {
        setText(li, `and ${tasks.length - shown.length} more`);
        return;
      }
      const task = state.bound.get(sid);
      setText(li.querySelector("a"), `${task.agent_id} ${shortId(sid)}`);
      updateProgress(li.querySelector("[role=progressbar]"), task.progress, task.status);
    },
  });
}

function renderTasks() {
  setText(document.getElementById("task-count"), `(${state.count})`);
  document.getElementById("tasks-empty").hidden = state.order.length > 0;
  syncChildren(rows, state.order, {
    key: (tr) => tr.dataset.sessionId,
    create: createRow,
    update: (tr, sid) => updateRow(tr, state.tasks.get(sid)),
  });
  setText(document.getElementById("page-info"), `Page ${state.page} of ${state.pages}`);
  document.getElementById("page-prev").disabled = state.page <= 1;
  document.getElementById("page-next").disabled = state.page >= state.pages;
}

function createRow(sid) {
  const tr = h("tr", { dataset: { sessionId: sid } });
  for (let i = 0; i < 9; i += 1) tr.append(h("td"));
  tr.cells[1].append(progressBar(0));
  tr.cells[3].append(h("a", { class: "mono", href: `/tasks/${sid}/`, title: sid, text: shortId(sid) }));
  tr.cells[7].append(h("time"));
  tr.cells[8].className = "actions";
  return tr;
}

function link(path, text) {
  return text ? h("a", { href: `${path}${encodeURIComponent(text)}/`, text }) : "—";
}

function updateRow(tr, task) {
  tr.dataset.status = task.status;
  updateProgress(tr.cells[1].firstElementChild, task.progress, task.status);
  const time = tr.cells[7].firstElementChild;
  time.setAttribute("datetime", task.created_at);
  setText(time, age(task.created_at));
  const fellBack = task.route === "local" && Boolean(task.fallback_reason);
  const key = [task.status, task.agent_id, task.team, task.route, task.node, task.error, fellBack].join("|");
  if (tr.dataset.key === key) return;
  tr.dataset.key = key;
  tr.cells[0].replaceChildren(badge(task.status));
  tr.cells[0].title = task.error || task.fallback_reason || "";
  setText(tr.cells[2], task.agent_id);
  tr.cells[4].replaceChildren(link("/teams/", task.team));
  if (fellBack) {
    tr.cells[5].replaceChildren("local ", h("span", {
      class: "badge fellback", text: "fell back", title: task.fallback_reason,
    }));
  } else {
    setText(tr.cells[5], task.route || "—");
  }
  tr.cells[6].replaceChildren(link("/nodes/", task.node));
  const actions = [];
  if (can.control && !TERMINAL.has(task.status)) {
    actions.push(actionForm(`/tasks/${task.session_id}/cancel/`, "Cancel", {
      cls: "small danger",
      confirm: `Cancel ${task.agent_id} ${shortId(task.session_id)}? It stops where it is.`,
    }));
    if (task.route !== "local") {
      const lost = task.progress ? ` (its ${Math.round(task.progress)}% so far is lost)` : "";
      actions.push(actionForm(`/tasks/${task.session_id}/fallback/`, "Force fallback", {
        cls: "small",
        confirm: `Force ${task.agent_id} ${shortId(task.session_id)} to run locally? It restarts from zero on the hub${lost}.`,
      }));
    }
  }
  if (can.submit && (task.status === "failed" || task.status === "cancelled")) {
    actions.push(actionForm(`/tasks/${task.session_id}/retry/`, "Retry", { cls: "small" }));
  }
  tr.cells[8].replaceChildren(...actions);
}

function tickAges() {
  const now = Date.now();
  for (const time of rows.querySelectorAll("time[datetime]")) {
    setText(time, age(time.getAttribute("datetime"), now));
  }
}

// Bulk actions: on every task the filters select (all pages), after a confirmation that
// names how many the server says it will touch.

function filterQuery() {
  const query = new URLSearchParams();
  for (const s of filters.status) query.append("status", s);
  for (const key of ["team", "node", "route", "q"]) if (filters[key]) query.set(key, filters[key]);
  return query;
}

async function bulk(kind) {
  const query = filterQuery();
  query.set("action", kind);
  const preview = await fetch(`/tasks/bulk/preview.json?${query}`, {
    credentials: "same-origin",
    cache: "no-store", // the count of now, never a cached one
  });
  if (!preview.ok) return;
  const { count, limit } = await preview.json();
  const what = kind === "cancel" ? "not yet ended" : "failed or cancelled";
  if (!count) {
    window.alert(`No task matching these filters is ${what}.`);
    return;
  }
  const verb = kind === "cancel" ? "Cancel" : "Retry";
  const capped = count >= limit ? ` (at most ${limit} at a time)` : "";
  if (!window.confirm(`${verb} ${count} task${count === 1 ? "" : "s"} matching these filters${capped}?`)) return;
  const form = actionForm("/tasks/bulk/", verb);
  for (const [name, value] of query) form.prepend(h("input", { type: "hidden", name, value }));
  form.hidden = true;
  root.append(form);
  form.requestSubmit();
  form.addEventListener("action:done", () => form.remove());
}

// Wiring

showFiltersInForm();
enableActions(root);
form.addEventListener("submit", (event) => {
  event.preventDefault();
  applyFilters();
});
form.addEventListener("change", () => applyFilters());
let typing = null;
form.elements.q.addEventListener("input", () => {
  clearTimeout(typing);
  typing = setTimeout(() => applyFilters(), 300);
});
for (const button of root.querySelectorAll("[data-bulk]")) {
  button.addEventListener("click", () => bulk(button.dataset.bulk));
}
groupSelect.addEventListener("change", () => {
  grouping = groupSelect.value;
  applyFilters(state.page);
  schedule();
});
document.getElementById("page-prev").addEventListener("click", () => applyFilters(state.page - 1));
document.getElementById("page-next").addEventListener("click", () => applyFilters(state.page + 1));
setInterval(tickAges, 5000);
startCharts(document.getElementById("charts"));

const stream = new BoardStream(streamParams(), { onSnapshot: applySnapshot, onFrame: applyFrame }).start();

// A socket that never opens (a proxy without websocket support) still gets a readable board.
setTimeout(async () => {
  if (stream.snapshots) return;
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(streamParams())) {
    if (Array.isArray(value)) value.forEach((v) => query.append(key, v));
    else if (value) query.set(key, value);
  }
  const response = await fetch(`/board/snapshot.json?${query}`, { credentials: "same-origin" });
  if (response.ok && !stream.snapshots) applySnapshot(await response.json());
}, 4000);
