// The node page: status, load and its tasks live, with a large load plot.

import { enableActions } from "./actions.js";
import { renderScheduler, setText } from "./dom.js";
import { LiveFragment, applyTasks } from "./fragment.js";
import { BoardStream } from "./live.js";
import { LoadHistory, legend, loadPlot } from "./plot.js";

const container = document.getElementById("node-live");
const name = container.dataset.name;
const plotBox = document.getElementById("load-plot");
const fragment = new LiveFragment(container);
const loads = new LoadHistory();
let node = null;
let nodeChanged = false;
let tasks = new Map();

const render = renderScheduler(() => {
  if (applyTasks(container, [...tasks.values()], (t) => t.node === name)) fragment.refresh(100);
  tasks = new Map();
  if (!node || !nodeChanged) return;
  nodeChanged = false;
  const card = container.querySelector("[data-node]");
  const control = `${node.config_generation}-${node.reported?.generation ?? ""}-${node.refusals}`;
  if (card && (card.dataset.status !== node.status || card.dataset.control !== control)) {
    fragment.refresh();
  }
  if (card) {
    const meter = card.querySelector("[role=meter]");
    meter.setAttribute("aria-valuenow", node.running);
    meter.setAttribute("aria-valuemax", node.capacity);
    meter.querySelector(".load-fill").style.width = `${Math.min(100, (100 * node.running) / Math.max(1, node.capacity))}%`;
    setText(card.querySelector("[data-field=load]"), `${node.running} / ${node.capacity} running`);
    setText(card.querySelector("[data-field=usage]"), `${Math.round(node.cpu)}% · ${Math.round(node.mem)}%`);
  }
  plotBox.replaceChildren(
    loadPlot(loads.points(name), { width: 800, height: 220, capacity: node.capacity, large: true }),
    legend(),
  );
});

new BoardStream({ history: name }, {
  onSnapshot: (msg) => {
    node = msg.nodes.find((n) => n.name === name) || null;
    if (msg.history) {
      loads.series = new Map();
      loads.seen = new Map();
      loads.reset(msg.history);
    }
    nodeChanged = true;
    fragment.refresh();
    render();
  },
  onFrame: (msg) => {
    for (const n of msg.nodes) {
      if (n.name !== name) continue;
      node = n;
      loads.add(n);
      nodeChanged = true;
    }
    for (const task of msg.tasks) tasks.set(task.session_id, task);
    render();
  },
}).start();

enableActions(container);
container.addEventListener("action:done", () => fragment.refresh());
