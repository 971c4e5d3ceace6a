// The one way the dashboard talks to the API: fetch with the session's token, RFC 9457 problems as ApiError.

const TOKEN_KEY = "onebox.token";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.code = problem.code;
    this.errors = problem.errors || [];
  }
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
  },
  // The token's claims, for display only (the server verifies it on every call).
  get claims() {
    try {
      const part = this.token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part + "=".repeat((4 - part.length % 4) % 4)));
    } catch { return null; }
  },
};

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

function authHeaders(extra = {}) {
  const headers = { Accept: "application/json", ...extra };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  return headers;
}

export async function api(path, { method = "GET", body, headers = {}, signal } = {}) {
  const init = { method, headers: authHeaders(headers), signal };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = { title: text }; }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data || { title: response.statusText });
    if (response.status === 401 && session.token) onUnauthorized(error);
    throw error;
  }
  return data;
}

// A binary answer (a chart) as a data: URI, the only image source the page's CSP allows besides 'self'
// (an <img> cannot send the Authorization header).
export async function dataUri(path) {
  const response = await fetch(path, { headers: authHeaders({ Accept: "image/png" }) });
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => ({})));
  const blob = await response.blob();
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

// A download (a report) fetched with the token, saved under `filename`.
export async function download(path, filename) {
  const response = await fetch(path, { headers: authHeaders({ Accept: "*/*" }) });
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => ({})));
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

// Server-Sent Events over fetch(): EventSource cannot send an Authorization header, and a token in the
// URL would end up in access logs. Reconnects with Last-Event-ID; after repeated failures it gives up and
// calls onFallback so the page can poll instead. `path` follows another stream of the same shape (a QA
// run's: its events are `event: qa`).
export function streamEvents(instanceId, { onStatus, onEvent, onEnd, onState, onFallback, path }) {
  const controller = new AbortController();
  let lastId = null;
  let failures = 0;
  let stopped = false;

  function dispatch(message) {
    if (message.id !== undefined) lastId = message.id;
    if (!message.event) return;
    const data = message.data ? JSON.parse(message.data) : null;
    if (message.event === "status") onStatus?.(data);
    else if (message.event === "instance" || message.event === "qa") onEvent?.(data);
    else if (message.event === "end") { stopped = true; onEnd?.(data); }
  }

  async function connectOnce() {
    const headers = authHeaders({ Accept: "text/event-stream" });
    if (lastId) headers["Last-Event-ID"] = lastId;
    const response = await fetch(path || `/v1/instances/${encodeURIComponent(instanceId)}/events/stream`,
                                 { headers, signal: controller.signal, cache: "no-store" });
    if (!response.ok || !response.body) {
      const error = new ApiError(response.status, await response.json().catch(() => ({})));
      if (response.status === 401 || response.status === 404) stopped = true;
      throw error;
    }
    onState?.("live");
    failures = 0;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let message = {};
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let newline;
      while ((newline = buffer.search(/\r?\n/)) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + (buffer[newline] === "\r" ? 2 : 1));
        if (line === "") { dispatch(message); message = {}; continue; }
        if (line.startsWith(":")) continue; // keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") message.data = message.data === undefined ? val : `${message.data}\n${val}`;
        else if (field === "id" || field === "event") message[field] = val;
      }
    }
  }

  (async () => {
    while (!stopped && !controller.signal.aborted) {
      try {
        await connectOnce();
      } catch (error) {
        if (controller.signal.aborted) return;
        failures += 1;
        if (stopped) { onFallback?.(error); return; }
      }
      if (stopped || controller.signal.aborted) return;
      if (failures >= 3) { onState?.("polling"); onFallback?.(); return; }
      onState?.("reconnecting");
      await new Promise((r) => setTimeout(r, 1000 * Math.max(1, failures)));
    }
  })();

  return { close: () => { stopped = true; controller.abort(); } };
}
