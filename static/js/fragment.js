// Detail pages (task, node, team) are rendered by the server. Their changing part is re-read
// as an HTML fragment when something structural moves (a status, a route, a node); progress
// and messages are patched in place from the frames without a request.

import { setText, updateProgress } from "./dom.js";

export class LiveFragment {
  constructor(container, { onSwap = () => {} } = {}) {
    this.container = container;
    this.url = container.dataset.url;
    this.onSwap = onSwap;
    this.busy = false;
    this.again = false;
    this.timer = null;
  }

  // Re-read soon; calls within `delay` ms collapse into one request.
  refresh(delay = 0) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.load(), delay);
  }

  async load() {
    if (this.busy) {
      this.again = true; // one more read after this one, so the last change is never missed
      return;
    }
    this.busy = true;
    try {
      const response = await fetch(this.url, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (response.ok && !response.redirected) {
        const html = await response.text();
        this.container.innerHTML = html;
        this.onSwap(this.container);
      }
    } catch {
      // Offline for a moment: the snapshot after the reconnect triggers a fresh read.
    } finally {
      this.busy = false;
      if (this.again) {
        this.again = false;
        this.load();
      }
    }
  }
}

// Patch the rows of `root` from task frames. True when a task changed in a way only a fresh
// fragment can show (status, route, node, attempt), or when a task the page should list
// (`relevant`) is not on it yet.
export function applyTasks(root, tasks, relevant) {
  let stale = false;
  for (const task of tasks) {
    const rows = root.querySelectorAll(`[data-session-id="${task.session_id}"]`);
    if (!rows.length) {
      if (relevant(task)) stale = true;
      continue;
    }
    for (const row of rows) {
      const moved = row.dataset.status !== task.status
        || row.dataset.route !== (task.route || "")
        || row.dataset.onNode !== (task.node || "")
        || row.dataset.attempts !== String(task.attempts);
      if (moved) {
        stale = true;
        continue;
      }
      for (const bar of row.querySelectorAll("[role=progressbar]")) {
        updateProgress(bar, task.progress, task.status);
      }
      const message = row.querySelector("[data-field=message]");
      if (message) setText(message, task.message);
    }
  }
  return stale;
}
