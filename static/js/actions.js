// Action buttons (cancel, force fallback, cordon, …) are plain POST forms marked data-action
// (data-confirm: a question asked first; data-follow: go to the answer's url).
// This sends them in the background and shows the answer; the live stream then shows the
// change itself. Without this script they still work as ordinary forms.

import { h } from "./dom.js";

export function toast(message, kind = "ok") {
  const region = document.getElementById("toasts");
  if (!region) return;
  const item = h("div", { class: `toast toast-${kind}`, text: message });
  region.append(item);
  setTimeout(() => item.remove(), kind === "ok" ? 4000 : 8000);
}

async function send(form) {
  const buttons = form.querySelectorAll("button");
  buttons.forEach((b) => { b.disabled = true; });
  try {
    // getAttribute: a field named "action" would shadow form.action.
    const response = await fetch(form.getAttribute("action"), {
      method: "POST",
      body: new FormData(form),
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    const type = response.headers.get("Content-Type") || "";
    const body = type.includes("application/json") ? await response.json() : null;
    if (response.status === 403) toast("You are not allowed to do that.", "error");
    else if (body) toast(body.message, body.ok ? "ok" : "error");
    else toast(`The hub answered ${response.status}; reload the page and try again.`, "error");
    form.dispatchEvent(new CustomEvent("action:done", { bubbles: true, detail: body }));
    // A form that makes something new (a retry) takes the reader there.
    if (body && body.ok && body.url && "follow" in form.dataset) location.assign(body.url);
  } catch {
    toast("Could not reach the hub; try again when the page shows Live.", "error");
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

export function enableActions(root = document) {
  root.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-action]");
    if (!form) return;
    event.preventDefault();
    // Actions that cannot be undone say what they will do, and wait for a yes.
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    send(form);
  });
}
