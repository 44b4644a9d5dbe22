// The one client every page uses: JSON calls and the job event stream, both with the
// API key (kept in sessionStorage only) as the Authorization header. On a 401 it asks
// the app for a key (one prompt, however many calls are waiting) and tries again.

const KEY_STORE = "keiko.key";

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY_STORE);
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
}

// Set by the app: ({wrong}) => Promise that resolves once the user has entered a key.
let askForKey = null;
let pendingAsk = null;

export function onUnauthorized(fn) {
  askForKey = fn;
}

async function newKey(keyUsed) {
  if (!askForKey) return false;
  if (getKey() !== keyUsed) return true; // another call got a new key meanwhile: retry
  if (!pendingAsk) {
    pendingAsk = askForKey({ wrong: keyUsed !== null }).finally(() => {
      pendingAsk = null;
    });
  }
  await pendingAsk;
  return true;
}

function authHeaders(extra = {}) {
  const key = getKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function errorOf(response) {
  let detail = response.statusText || `HTTP ${response.status}`;
  try {
    const body = await response.json();
    if (body && "detail" in body) detail = body.detail;
  } catch {
    // not JSON: keep the status text
  }
  return new ApiError(response.status, detail);
}

async function call(method, path, { json, form, signal, raw = false } = {}) {
  for (;;) {
    const keyUsed = getKey();
    const init = { method, signal, headers: authHeaders({ Accept: "application/json" }) };
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    } else if (form !== undefined) {
      init.body = form;
    }
    const response = await fetch(path, init);
    if (response.status === 401 && (await newKey(keyUsed))) continue;
    if (!response.ok) throw await errorOf(response);
    if (raw) return response;
    return response.status === 204 ? null : response.json();
  }
}

const TERMINAL = new Set(["succeeded", "failed", "cancelled", "pruned"]);

// Server-Sent Events over fetch (EventSource cannot send an Authorization header).
// Calls onEvent({type, id, data}) for each event; reconnects with Last-Event-ID after a
// dropped connection; resolves once a terminal `status` event has come and the server
// has closed the stream, or when `signal` aborts.
async function events(jobId, { onEvent, onOpen, signal, lastEventId = null } = {}) {
  let lastId = lastEventId;
  let retryMs = 1000;
  let finished = false;
  while (!signal?.aborted) {
    const keyUsed = getKey();
    const headers = authHeaders({ Accept: "text/event-stream" });
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    let response;
    try {
      response = await fetch(`/jobs/${encodeURIComponent(jobId)}/events`, { headers, signal });
    } catch (err) {
      if (signal?.aborted) return;
      await sleep(retryMs, signal);
      retryMs = Math.min(retryMs * 2, 10000);
      continue;
    }
    if (response.status === 401 && (await newKey(keyUsed))) continue;
    if (!response.ok) throw await errorOf(response);
    onOpen?.();
    retryMs = 1000;
    try {
      for await (const ev of parseSSE(response.body, signal)) {
        if (ev.id !== null) lastId = ev.id;
        if (ev.retry !== null) retryMs = ev.retry;
        let data = ev.data;
        try {
          data = JSON.parse(ev.data);
        } catch {
          // keep the text
        }
        if (ev.type === "status" && TERMINAL.has(data?.status)) finished = true;
        try {
          await onEvent({ type: ev.type, id: ev.id, data }); // in order: a rewind before what follows
        } catch (err) {
          console.error("event handler failed", ev.type, err); // the stream goes on
        }
      }
    } catch (err) {
      if (signal?.aborted) return;
      // dropped mid-stream: reconnect below
    }
    if (finished || signal?.aborted) return;
    await sleep(retryMs, signal);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

// The text/event-stream format (WHATWG HTML, "Server-sent events"): lines of
// `field: value`, an empty line ends an event, lines starting with ':' are comments.
async function* parseSSE(body, signal) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  signal?.addEventListener("abort", () => reader.cancel().catch(() => {}));
  let buffer = "";
  let type = "";
  let data = [];
  let id = null;
  let retry = null;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop(); // a partial line waits for the next chunk
      for (const line of lines) {
        if (line === "") {
          if (data.length) {
            yield { type: type || "message", data: data.join("\n"), id, retry };
          }
          type = "";
          data = [];
          retry = null;
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        let value = colon === -1 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") type = value;
        else if (field === "data") data.push(value);
        else if (field === "id" && !value.includes("\0")) id = value;
        else if (field === "retry" && /^\d+$/.test(value)) retry = Number(value);
      }
    }
  } finally {
    reader.releaseLock?.();
  }
}

export const api = {
  get: (path, opts) => call("GET", path, opts),
  post: (path, body, opts) => call("POST", path, { ...opts, json: body ?? {} }),
  postForm: (path, formData, opts) => call("POST", path, { ...opts, form: formData }),
  del: (path, opts) => call("DELETE", path, opts),
  raw: (path, opts) => call("GET", path, { ...opts, raw: true }),
  events,
};
