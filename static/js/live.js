// The one live connection every page uses: a reconnecting websocket to /ws/board/.
//
// The server sends a full snapshot on connect and on request, then numbered frames (the latest
// state of whatever changed in the last ~100 ms). After any reconnect, and whenever a frame
// number is skipped, the page gets a fresh snapshot, so it is never left stale or wrong.

const BASE_DELAY = 500; // ms before the first reconnect attempt
const MAX_DELAY = 5000; // backoff ceiling: an operator should not wait long after a restart
const PING_EVERY = 20000;
const SILENCE_LIMIT = 45000; // no message for this long: the connection is dead, replace it

function encode(params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    const text = Array.isArray(value) ? value.join(",") : String(value);
    if (text) query.set(key, text);
  }
  return query.toString();
}

export class BoardStream {
  // params: what the snapshots should hold (tasks, status, team, node, route, q, page,
  // history, watch); handlers: onSnapshot(msg), onFrame(msg), onState(state).
  constructor(params, { onSnapshot, onFrame, onState = () => {} }) {
    this.params = { ...params };
    this.onSnapshot = onSnapshot;
    this.onFrame = onFrame;
    this.onState = onState;
    this.seq = 0;
    this.attempt = 0;
    this.snapshots = 0;
    this.ws = null;
    this.stopped = false;
    this.lastMessage = 0;
    this.timer = null;
    setInterval(() => this.keepAlive(), PING_EVERY);
  }

  start() {
    this.connect();
    return this;
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws/board/?${encode(this.params)}`;
  }

  connect() {
    clearTimeout(this.timer);
    if (this.stopped) return;
    this.setState(this.snapshots ? "reconnecting" : "connecting");
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.addEventListener("message", (event) => this.receive(ws, event));
    ws.addEventListener("close", () => this.closed(ws));
  }

  closed(ws) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.setState(this.snapshots ? "reconnecting" : "connecting");
    // Exponential backoff with jitter, so a fleet of open boards does not stampede a hub
    // that has just restarted.
    const ceiling = Math.min(MAX_DELAY, BASE_DELAY * 2 ** this.attempt);
    this.attempt += 1;
    if (this.attempt % 3 === 0) this.checkSession();
    if (!this.stopped) this.timer = setTimeout(() => this.connect(), ceiling * (0.5 + Math.random() / 2));
  }

  // The hub refuses the socket of a user logged out elsewhere or stripped of the view
  // permission, which looks like any failed connection. Ask over HTTP, and stop retrying then.
  async checkSession() {
    try {
      const response = await fetch("/board/snapshot.json", { credentials: "same-origin", redirect: "manual" });
      if (response.type === "opaqueredirect" || response.status === 403) {
        clearTimeout(this.timer);
        this.stopped = true;
        this.setState("signed-out");
        const next = encodeURIComponent(location.pathname + location.search);
        if (response.type === "opaqueredirect") location.assign(`/accounts/login/?next=${next}`);
      }
    } catch {
      // The hub is down: keep retrying.
    }
  }

  receive(ws, event) {
    if (ws !== this.ws) return;
    this.lastMessage = Date.now();
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    if (msg.type === "snapshot") {
      this.seq = msg.seq;
      this.attempt = 0; // the connection proved itself
      this.snapshots += 1;
      this.setState("live");
      this.onSnapshot(msg);
    } else if (msg.type === "frame") {
      const gap = msg.seq !== this.seq + 1;
      this.seq = msg.seq;
      if (gap) this.requestSnapshot();
      this.onFrame(msg);
    }
  }

  // Change what snapshots hold (new filters, another page) and get one now; `once` overrides
  // params for this request only (the board skips the load history it already has).
  update(params, once = {}) {
    this.params = { ...params };
    this.requestSnapshot(once);
  }

  requestSnapshot(once = {}) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: "snapshot", ...this.params, ...once }));
    }
    // Otherwise the next connection's URL carries the params and the snapshot comes by itself.
  }

  keepAlive() {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (this.lastMessage && Date.now() - this.lastMessage > SILENCE_LIMIT) {
      ws.close();
      this.closed(ws);
      return;
    }
    ws.send(JSON.stringify({ type: "ping" }));
  }

  setState(state) {
    const el = document.getElementById("live-status");
    if (el) {
      el.hidden = false;
      el.dataset.state = state;
      el.dataset.snapshots = String(this.snapshots);
      const words = { live: "Live", connecting: "Connecting…", reconnecting: "Reconnecting…", "signed-out": "Not signed in" };
      el.textContent = words[state] || state;
      el.title = state === "live" ? "Receiving live updates" : "Not receiving updates; retrying";
    }
    this.onState(state);
  }
}
