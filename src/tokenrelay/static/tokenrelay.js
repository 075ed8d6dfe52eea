// tokenrelay's browser client: an ES module, no dependencies, no build step.
//
//   import { streamChat, ResumableStream, StreamedAnswer, complete } from "/static/tokenrelay.js";
//
// streamChat(body, handlers) streams one answer over fetch + ReadableStream.
// ResumableStream does the same, and when the connection drops it resumes from the last event
// id (GET /api/streams/{id} with Last-Event-ID) with exponential backoff. It never POSTs a
// generation twice. complete(body) is the non-streaming fallback (POST /api/chat).
// setApiKey(key) sends a key with every request; eventSourceUrl(fields) makes an EventSource
// URL, with a stream token when a key is set.
//
// Handlers (all optional): onStart(data), onToken(text, data), onJson(partial, data),
// onStatus(message, data), onDone(data), onError(error), onCancelled(data),
// onReasoning(text, data), onToolCallStart(call, data), onToolCallDelta(call, data),
// onToolCallEnd(call, data), onUsage(usage, data), onLogprobs(entries, data),
// and for ResumableStream onReconnecting({attempt, delayMs}), onReconnected({attempt}).
// Event handlers get the event's id ("<stream_id>:<seq>") last. An error is the server's:
// {error_type, message, retryable, request_id?, status?}; its request_id is the one to quote
// to the server's operator: from the error body, else the x-request-id header of the request
// that started the stream (an error event mid-stream carries none of its own). A `call` is the tool call folded so
// far (see StreamedAnswer): {index, id, name, argumentsText, arguments, error, ended}.

const TERMINAL = new Set(["done", "error", "cancelled"]);

// An API key, when the server asks for one (401): sent as `Authorization: Bearer` with every
// request. EventSource cannot send it; eventSourceUrl() trades it for a short-lived token.
let apiKey = "";
export function setApiKey(key) { apiKey = key || ""; }
export function authHeaders() { return apiKey ? { authorization: `Bearer ${apiKey}` } : {}; }

// The URL for `new EventSource(...)` that starts a stream with these query fields, with a
// stream token when a key is set (POST /api/stream-tokens; a token lives a minute).
export async function eventSourceUrl(fields, { baseUrl = "" } = {}) {
  const params = new URLSearchParams(fields);
  if (apiKey) {
    const response = await fetch(`${baseUrl}/api/stream-tokens`, { method: "POST", headers: authHeaders() });
    if (!response.ok) throw Object.assign(new Error("tokenrelay error"), await errorOf(response));
    const { token } = await response.json();
    if (token) params.set("token", token);
  }
  return `${baseUrl}/api/chat/stream?${params}`;
}

// A stream's answer assembled from its events, kept by both streamChat and ResumableStream:
// the text, the reasoning blocks ({content, signature, redacted}; the last may still be
// growing) and the tool calls in the order they started. The rules are the server's, so it
// folds to what POST /api/chat returns whole: a reasoning block ends at its signature, at a
// redacted block, when a tool call starts, or when the stream ends.
export class StreamedAnswer {
  constructor() {
    this.text = "";
    this.reasoning = [];
    this.toolCalls = [];
    this.usage = null; // the latest count: the upstream's early one, then the final one
    this.ending = null; // the terminal event's payload
    this.openBlock = null; // the reasoning block being written
    this.callsByIndex = new Map();
  }

  // The same shape from POST /api/chat's whole answer (what complete() resolves with).
  static fromResponse(body) {
    const answer = new StreamedAnswer();
    answer.text = body.content || "";
    answer.reasoning = (body.reasoning || []).map(({ content = "", signature = "", redacted = "" }) =>
      ({ content, signature, redacted }));
    (body.tool_calls || []).forEach((call, index) => answer.call({ ...call, phase: "end", index }));
    answer.usage = body.usage || null;
    answer.ending = { type: "done", finish_reason: body.finish_reason, usage: body.usage };
    return answer;
  }

  // Fold one event's payload in; returns the call it touched, for tool_call events.
  add(payload) {
    switch (payload.type) {
      case "token": this.text += payload.content; break;
      case "reasoning": this.reason(payload); break;
      case "tool_call": return this.call(payload);
      case "usage": this.usage = payload.usage; break;
      case "done": case "error": case "cancelled":
        this.openBlock = null;
        this.ending = payload;
        this.usage = payload.usage || this.usage;
        break;
      default: break;
    }
    return undefined;
  }

  reason({ content, signature, redacted }) {
    if (redacted) {
      this.openBlock = null;
      this.reasoning.push({ content: "", signature: "", redacted });
      return;
    }
    if (!this.openBlock && (content || signature)) {
      this.openBlock = { content: "", signature: "", redacted: "" };
      this.reasoning.push(this.openBlock);
    }
    if (content) this.openBlock.content += content;
    if (signature) {
      this.openBlock.signature = signature;
      this.openBlock = null;
    }
  }

  call(payload) {
    let call = this.callsByIndex.get(payload.index);
    if (!call) {
      this.openBlock = null;
      call = { index: payload.index, id: payload.id || "", name: payload.name || "",
        argumentsText: "", arguments: undefined, error: "", ended: false };
      this.callsByIndex.set(payload.index, call);
      this.toolCalls.push(call);
    }
    if (payload.phase === "delta") call.argumentsText += payload.arguments;
    if (payload.phase === "end") {
      call.id = payload.id || call.id;
      call.name = payload.name || call.name;
      call.arguments = payload.arguments;
      call.error = payload.error || "";
      if (payload.arguments_text !== undefined) call.argumentsText = payload.arguments_text;
      call.ended = true;
    }
    return call;
  }

  // This answer as the assistant turn of the next request's messages. Calls that never ended
  // are left out (their arguments are incomplete); invalid JSON goes back as its text.
  message() {
    const message = { role: "assistant", content: this.text };
    const calls = this.toolCalls.filter((call) => call.ended).map((call) => ({
      id: call.id,
      name: call.name,
      arguments: call.error === "invalid_json" ? call.argumentsText : call.arguments,
    }));
    if (calls.length) message.tool_calls = calls;
    if (this.reasoning.length) {
      message.reasoning = this.reasoning.map(({ content, signature, redacted }) =>
        (redacted ? { redacted } : { content, signature }));
    }
    return message;
  }
}

// An incremental parser for text/event-stream (the WHATWG rules): feed it decoded text in
// pieces of any size; it returns the events each piece completes. Lines may end in \r\n, \n or
// \r, and a \r at the end of a piece may be the first half of a \r\n.
export class SSEParser {
  constructor() {
    this.buffer = "";
    this.data = [];
    this.eventType = "";
    this.lastEventId = "";
    this.retry = null;
    this.pendingCR = false;
  }

  feed(text) {
    if (this.pendingCR && text.startsWith("\n")) text = text.slice(1);
    this.pendingCR = false;
    this.buffer += text;
    const events = [];
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const ch = this.buffer[i];
      if (ch !== "\n" && ch !== "\r") continue;
      const line = this.buffer.slice(start, i);
      if (ch === "\r") {
        if (i + 1 === this.buffer.length) this.pendingCR = true;
        else if (this.buffer[i + 1] === "\n") i++;
      }
      start = i + 1;
      const event = this.line(line);
      if (event) events.push(event);
    }
    this.buffer = this.buffer.slice(start);
    return events;
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return null; // a comment: keep-alive pings
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.eventType = value;
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
    return null;
  }

  dispatch() {
    const type = this.eventType || "message";
    this.eventType = "";
    if (this.data.length === 0) return null;
    const data = this.data.join("\n");
    this.data = [];
    return { type, data, id: this.lastEventId };
  }
}

const TOOL_CALL_HANDLERS = { start: "onToolCallStart", delta: "onToolCallDelta", end: "onToolCallEnd" };

// `folded`: what the event changed in the answer (a tool call's state).
function dispatchEvent(payload, id, handlers, folded) {
  const call = (name, ...args) => handlers[name] && handlers[name](...args);
  switch (payload.type) {
    case "start": return call("onStart", payload, id);
    case "token": return call("onToken", payload.content, payload, id);
    case "reasoning": return call("onReasoning", payload.content, payload, id);
    case "tool_call": return call(TOOL_CALL_HANDLERS[payload.phase], folded, payload, id);
    case "usage": return call("onUsage", payload.usage, payload, id);
    case "logprobs": return call("onLogprobs", payload.content, payload, id);
    case "json": return call("onJson", payload.partial, payload, id);
    case "status": return call("onStatus", payload.message, payload, id);
    case "done": return call("onDone", payload, id);
    case "error": return call("onError", payload, id);
    case "cancelled": return call("onCancelled", payload, id);
    default: return undefined; // a newer server's event: ignored, as the protocol allows
  }
}

async function errorOf(response) {
  let error = { error_type: "http_error", message: `HTTP ${response.status}`, retryable: false };
  try {
    const body = await response.json();
    if (body && body.error) {
      error = { ...body.error, error_type: body.error.type, retryable: !!body.error.retryable };
    }
  } catch (_) { /* not JSON: keep the generic error */ }
  return withRequestId({ ...error, status: response.status }, response.headers.get("x-request-id"));
}

function withRequestId(error, requestId) {
  return error.request_id || !requestId ? error : { ...error, request_id: requestId };
}

// Read one response's events; returns the terminal payload, or null if the body ended first.
// An error event gets the request id of the stream's first response (progress.requestId).
async function readEvents(response, handlers, progress) {
  progress.requestId = progress.requestId || response.headers.get("x-request-id") || "";
  const reader = response.body.getReader();
  const decoder = new TextDecoder("utf-8"); // {stream: true} keeps split multi-byte characters
  const parser = new SSEParser();
  for (;;) {
    const { value, done } = await reader.read();
    const text = done ? decoder.decode() : decoder.decode(value, { stream: true });
    for (const event of parser.feed(text)) {
      let payload = JSON.parse(event.data);
      if (payload.type === "error") payload = withRequestId(payload, progress.requestId);
      if (event.id) progress.lastEventId = event.id;
      if (payload.type === "start") progress.streamId = payload.stream_id;
      dispatchEvent(payload, event.id, handlers, progress.answer.add(payload));
      if (TERMINAL.has(payload.type)) {
        reader.cancel().catch(() => {});
        return payload;
      }
    }
    if (done) return null;
  }
}

function jsonPost(url, body, signal) {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream", ...authHeaders() },
    body: JSON.stringify(body),
    signal,
  });
}

// Stream one answer. Resolves with {streamId, lastEventId, answer, ending} (answer: the
// StreamedAnswer; ending: the terminal payload, or null if the connection ended first). An
// HTTP refusal goes to onError.
export async function streamChat(body, handlers = {}, { baseUrl = "", signal } = {}) {
  const progress = { streamId: "", lastEventId: "", requestId: "", answer: new StreamedAnswer() };
  const response = await jsonPost(`${baseUrl}/api/chat/stream`, body, signal);
  if (!response.ok) {
    const error = await errorOf(response);
    handlers.onError && handlers.onError(error);
    return { ...progress, ending: error };
  }
  progress.streamId = response.headers.get("x-stream-id") || "";
  const ending = await readEvents(response, handlers, progress);
  return { ...progress, ending };
}

// The non-streaming fallback: the whole answer at once, or throws the server's error.
export async function complete(body, { baseUrl = "", signal } = {}) {
  const response = await jsonPost(`${baseUrl}/api/chat`, body, signal);
  if (!response.ok) throw Object.assign(new Error("tokenrelay error"), await errorOf(response));
  return response.json();
}

export function streamingSupported() {
  return typeof ReadableStream !== "undefined" && "body" in Response.prototype;
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
});

// One answer that survives dropped connections. `start()` resolves with the terminal payload
// (done, error or cancelled), or null after cancel(); `answer` is the StreamedAnswer so far.
// Generation is started with on_disconnect "detach" (unless the body says otherwise), so it
// waits for the resume.
export class ResumableStream {
  constructor(body, handlers = {}, options = {}) {
    this.body = { on_disconnect: "detach", ...body };
    this.handlers = handlers;
    this.baseUrl = options.baseUrl || "";
    this.maxResumes = options.maxResumes ?? 6;
    this.baseDelayMs = options.baseDelayMs ?? 250;
    this.maxDelayMs = options.maxDelayMs ?? 8000;
    this.progress = { streamId: "", lastEventId: "", requestId: "", answer: new StreamedAnswer() };
    this.controller = new AbortController();
    this.cancelled = false;
    this.resumes = 0;
  }

  get streamId() { return this.progress.streamId; }
  get lastEventId() { return this.progress.lastEventId; }
  get requestId() { return this.progress.requestId; } // the x-request-id of the stream's start
  get answer() { return this.progress.answer; } // the StreamedAnswer, across resumes

  async start() {
    let response = null;
    let failures = 0;
    for (;;) {
      try {
        response = response || await this.request();
        this.progress.streamId = this.progress.streamId || response.headers.get("x-stream-id") || "";
        if (this.cancelled) { // Stop came before the server named the stream: cancel it now
          await this.sendCancel();
          return null;
        }
        if (response.status === 204) return { type: "done" }; // it had ended; we had it all
        if (!response.ok) {
          const error = await errorOf(response);
          this.call("onError", error);
          return error;
        }
        const before = this.progress.lastEventId;
        const ending = await readEvents(response, this.handlers, this.progress);
        if (ending) return ending;
        if (this.progress.lastEventId !== before) failures = 0;
      } catch (err) {
        if (this.cancelled) return null;
        if (!this.progress.streamId) { // nothing to resume; never POST the generation again
          const error = { error_type: "connection_lost", message: "The connection was lost before the answer started.", retryable: true };
          this.call("onError", error);
          return error;
        }
      }
      if (this.cancelled) return null;
      response = null;
      failures += 1;
      if (failures > this.maxResumes) {
        const error = withRequestId({ error_type: "connection_lost",
          message: "The connection was lost and could not be resumed.", retryable: true }, this.progress.requestId);
        this.call("onError", error);
        return error;
      }
      const delayMs = Math.random() * Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (failures - 1));
      this.call("onReconnecting", { attempt: failures, delayMs });
      await sleep(delayMs, this.controller.signal);
      if (this.cancelled) return null;
      this.resumes += 1;
      try {
        response = await this.resumeRequest();
        this.call("onReconnected", { attempt: failures });
      } catch (_) {
        response = null; // still down: back off again
      }
    }
  }

  request() {
    return jsonPost(`${this.baseUrl}/api/chat/stream`, this.body, this.controller.signal);
  }

  resumeRequest() {
    const id = encodeURIComponent(this.progress.streamId);
    const headers = this.progress.lastEventId ? { "last-event-id": this.progress.lastEventId } : {};
    return fetch(`${this.baseUrl}/api/streams/${id}`, {
      headers: { accept: "text/event-stream", ...headers, ...authHeaders() },
      signal: this.controller.signal,
    });
  }

  // Stop: cancel on the server (the upstream stops), then drop the connection. Before the
  // server has named the stream (its response headers), the cancel is sent as soon as it does.
  async cancel() {
    if (this.cancelled) return false;
    this.cancelled = true;
    if (!this.progress.streamId) return true;
    return this.sendCancel();
  }

  async sendCancel() {
    let cancelled = false;
    try {
      const id = encodeURIComponent(this.progress.streamId);
      const response = await fetch(`${this.baseUrl}/api/streams/${id}`, { method: "DELETE", headers: authHeaders() });
      cancelled = response.status === 202;
    } catch (_) { /* unreachable: the server's detach window ends the generation */ }
    this.controller.abort();
    return cancelled;
  }

  call(name, arg) {
    if (this.handlers[name]) this.handlers[name](arg);
  }
}
