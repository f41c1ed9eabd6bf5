// The team page: members, where they run and whether each one's affinity rule holds, live.

import { renderScheduler } from "./dom.js";
import { LiveFragment, applyTasks } from "./fragment.js";
import { BoardStream } from "./live.js";

const container = document.getElementById("team-live");
const name = container.dataset.name;
const fragment = new LiveFragment(container);
let tasks = new Map();

const render = renderScheduler(() => {
  // One member moving can change every other member's affinity check: re-read them all.
  if (applyTasks(container, [...tasks.values()], (t) => t.team === name)) fragment.refresh(150);
  tasks = new Map();
});

new BoardStream({}, {
  onSnapshot: () => fragment.refresh(),
  onFrame: (msg) => {
    for (const task of msg.tasks) if (task.team === name) tasks.set(task.session_id, task);
    render();
  },
}).start();
