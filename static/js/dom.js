// Small DOM helpers shared by the pages: element building, keyed list updates, formatting,
// and a render scheduler that coalesces bursts into one render per animation frame.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// Make container's children follow `keys` in order: reuse each key's element (update() keeps
// it current), create missing ones, drop the rest. Rows under the pointer stay the same nodes,
// so a click never lands on a row that was just replaced.
export function syncChildren(container, keys, { key, create, update }) {
  const existing = new Map();
  for (const child of container.children) existing.set(key(child), child);
  let cursor = container.firstElementChild;
  for (const k of keys) {
    let el = existing.get(k);
    if (el) existing.delete(k);
    else el = create(k);
    update(el, k);
    if (el !== cursor) container.insertBefore(el, cursor);
    else cursor = cursor.nextElementSibling;
  }
  for (const stale of existing.values()) stale.remove();
}

export function setText(el, text) {
  const value = text === undefined || text === null ? "" : String(text);
  if (el && el.textContent !== value) el.textContent = value;
}

export function percent(value) {
  const n = Math.round(Number(value) || 0);
  return Math.max(0, Math.min(100, n));
}

export function progressBar(pct, status) {
  const el = h("div", {
    class: "progress",
    role: "progressbar",
    "aria-label": "Progress",
    "aria-valuemin": 0,
    "aria-valuemax": 100,
  }, h("span", { class: "progress-fill" }), h("span", { class: "progress-text" }));
  updateProgress(el, pct, status);
  return el;
}

export function updateProgress(el, pct, status) {
  const value = percent(pct);
  if (el.getAttribute("aria-valuenow") !== String(value)) {
    el.setAttribute("aria-valuenow", String(value));
    el.querySelector(".progress-fill").style.width = `${value}%`;
    setText(el.querySelector(".progress-text"), `${value}%`);
  }
  if (status) el.className = `progress status-${status}`;
}

export function badge(status) {
  return h("span", { class: `badge status-${status}`, dataset: { field: "status" }, text: status });
}

export function updateBadge(el, status) {
  if (el.textContent !== status) {
    el.textContent = status;
    el.className = `badge status-${status}`;
  }
}

export function shortId(sid) {
  return String(sid).split("-")[0];
}

export function age(iso, now = Date.now()) {
  if (!iso) return "";
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

export function csrfToken() {
  const input = document.querySelector("input[name=csrfmiddlewaretoken]");
  return input ? input.value : "";
}

// A POST form the action script (actions.js) sends in the background.
export function actionForm(url, label, { cls = "", fields = {}, confirm = "" } = {}) {
  const form = h("form", { method: "post", action: url, "data-action": true, class: "inline" },
    h("input", { type: "hidden", name: "csrfmiddlewaretoken", value: csrfToken() }),
    h("input", { type: "hidden", name: "next", value: location.pathname + location.search }),
    h("button", { type: "submit", class: cls, text: label }));
  for (const [name, value] of Object.entries(fields)) {
    form.prepend(h("input", { type: "hidden", name, value }));
  }
  if (confirm) form.dataset.confirm = confirm;
  return form;
}

// Coalesce many change notifications into one render per animation frame.
export function renderScheduler(render) {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      render();
    });
  };
}

export const BOUND = new Set(["scheduled", "running"]);
export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
