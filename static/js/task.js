// The task page: live progress and status, the streaming log, and a fresh fragment (placement,
// timeline, output, buttons) whenever the task moves on.

import { enableActions } from "./actions.js";
import { renderScheduler } from "./dom.js";
import { LiveFragment, applyTasks } from "./fragment.js";
import { BoardStream } from "./live.js";

const container = document.getElementById("task-live");
const sid = container.dataset.session;
let pinned = true; // keep the log scrolled to its end unless the reader scrolled up

function logBox() {
  return container.querySelector("#task-log");
}

function followLog() {
  const box = logBox();
  if (!box) return;
  countLines(box);
  box.addEventListener("scroll", () => {
    pinned = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
  });
  if (pinned) box.scrollTop = box.scrollHeight;
}

// Only the last lines stay on the page, as the hub keeps them: a chatty agent must not grow
// the page without bound. ``shown`` counts the box's lines, so trimming costs nothing until due.
let shown = 0;

function countLines(box) {
  shown = box.textContent.split("\n").length - 1;
}

function tail(box, added) {
  shown += added;
  const max = Number(box.dataset.maxLines) || 2000;
  if (shown <= max) return;
  const kept = box.textContent.split("\n");
  kept.pop(); // the text ends with a newline
  box.textContent = kept.slice(-max).map((line) => `${line}\n`).join("");
  shown = Math.min(max, kept.length);
}

const fragment = new LiveFragment(container, { onSwap: followLog });
let latest = null;
let lines = [];

const render = renderScheduler(() => {
  if (latest && applyTasks(container, [latest], (t) => t.session_id === sid)) fragment.refresh(50);
  latest = null;
  const box = logBox();
  if (box && lines.length) {
    box.append(document.createTextNode(lines.map((line) => `${line}\n`).join("")));
    tail(box, lines.length);
    if (pinned) box.scrollTop = box.scrollHeight;
  }
  lines = [];
});

new BoardStream({ watch: sid }, {
  // Also right after the first connect: it covers what changed between the page's render and
  // the socket's subscription.
  onSnapshot: () => fragment.refresh(),
  onFrame: (msg) => {
    for (const task of msg.tasks) if (task.session_id === sid) latest = task;
    if (msg.logs && msg.logs[sid]) lines.push(...msg.logs[sid]);
    render();
  },
}).start();

enableActions(container);
container.addEventListener("action:done", () => fragment.refresh());
followLog();
