// The chat page. Built on /static/tokenrelay.js, with answers rendered by /static/markdown.js
// (vendored libraries: the page works offline and loads nothing from elsewhere).
import { enableCopyButtons, markdownFragment } from "/static/markdown.js";
import {
  ResumableStream, StreamedAnswer, authHeaders, complete, setApiKey, streamingSupported,
} from "/static/tokenrelay.js";

// --- The API key -----------------------------------------------------------------------------
// Asked for when the server answers 401, kept for this tab only (sessionStorage), and sent
// with every request (tokenrelay.js).
const KEY_STORE = "tokenrelay.key";
setApiKey(sessionStorage.getItem(KEY_STORE) || "");

function askForKey() {
  const key = window.prompt("This server needs an API key (tr-…). It is kept for this tab only.");
  if (!key) return false;
  sessionStorage.setItem(KEY_STORE, key.trim());
  setApiKey(key.trim());
  return true;
}

const $ = (selector) => document.querySelector(selector);
const conversation = $("#conversation");
const scroller = $("#chat"); // the conversation's scrolling box
const prompt = $("#prompt");
const modelPicker = $("#model");
const sendButton = $("#send");
const stopButton = $("#stop");
const regenerateButton = $("#regenerate");
const connection = $("#connection");
const demoToolsBox = $("#demo-tools");
const announcer = $("#announcer"); // a polite live region for short news (Copied)
const announce = (message) => { announcer.textContent = message; };

// --- Demo tools ------------------------------------------------------------------------------
// "Demo tools" sends these two with each request, and the page plays them itself with
// made-up results, so a model's calls get answers and the conversation goes on (sim/tools).

const DEMO_TOOLS = [
  {
    name: "get_weather",
    description: "The current weather in a city (a demo: the answer is made up)",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
  {
    name: "get_time",
    description: "The local time in a city (a demo: the answer is the browser's clock)",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
];
const MAX_TOOL_ROUNDS = 4; // a model that keeps calling tools is stopped here

function demoResult(call) {
  if (call.error) return { content: `The arguments were rejected (${call.error}).`, is_error: true };
  const city = String(call.arguments?.city ?? "");
  if (call.name === "get_weather") {
    return { content: JSON.stringify({ city, forecast: "sunny", temperature_c: 21 }), is_error: false };
  }
  if (call.name === "get_time") {
    return { content: JSON.stringify({ city, time: new Date().toLocaleTimeString() }), is_error: false };
  }
  return { content: `There is no tool named ${call.name}.`, is_error: true };
}

// --- One answer on screen --------------------------------------------------------------------
// Reasoning and tool calls are model output shown as plain text (textContent), never parsed.

const CALL_STATES = { invalid_json: "invalid JSON", schema_mismatch: "arguments do not match the schema" };

class AnswerView {
  constructor() {
    const node = $("#assistant-template").content.firstElementChild.cloneNode(true);
    const following = nearBottom();
    conversation.append(node);
    if (following) scroller.scrollTop = scroller.scrollHeight;
    this.node = node;
    this.answer = node.querySelector(".answer");
    this.problem = node.querySelector(".problem");
    this.reasoningBox = node.querySelector(".reasoning");
    this.reasoningText = node.querySelector(".reasoning-text");
    this.callList = node.querySelector(".tool-calls");
    this.callViews = new Map(); // by call index: {node, endShown}
    this.folded = new StreamedAnswer(); // replaced by the stream's own, which it renders
    this.renderedText = null;
    this.tokens = 0;
    this.sentAt = performance.now();
    this.firstTokenAt = null;
    this.frame = 0;
    this.live = false; // streaming: the text's end may hold markdown not yet closed
  }

  get text() { return this.folded.text; }

  // Re-render at most once per frame: a token burst costs one parse, and no half state shows.
  append() {
    if (this.firstTokenAt === null) {
      this.firstTokenAt = performance.now();
      this.stat("ttft", `first token ${Math.round(this.firstTokenAt - this.sentAt)} ms`);
    }
    this.tokens += 1;
    this.schedule();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  // Streaming: the answer is busy, so a screen reader reads it once complete rather than
  // every frame's re-render.
  begin() {
    this.live = true;
    this.answer.setAttribute("aria-busy", "true");
    this.state("streaming");
  }

  render() {
    this.frame = 0;
    const following = nearBottom(); // the reader who scrolled up to read is left there
    const { text, reasoning, toolCalls } = this.folded;
    const rendering = `${this.live}:${text}`;
    if (rendering !== this.renderedText) { // reasoning and calls stream with the text unchanged
      const focused = this.focusedButton();
      this.answer.replaceChildren(markdownFragment(text, { live: this.live }));
      this.answer.querySelectorAll(".copy-code")[focused]?.focus({ preventScroll: true });
      this.renderedText = rendering;
    }
    if (reasoning.length) this.renderReasoning(reasoning);
    for (const call of toolCalls) this.renderCall(call);
    this.stat("count", `${this.tokens} tokens`);
    if (this.firstTokenAt !== null && this.tokens > 1) {
      const seconds = (performance.now() - this.firstTokenAt) / 1000;
      this.stat("rate", `${(this.tokens - 1) / Math.max(seconds, 0.001) | 0} tok/s`);
    }
    if (following) scroller.scrollTop = scroller.scrollHeight;
  }

  // Which copy button has the focus (its index in the answer), so a re-render gives it back.
  focusedButton() {
    if (!this.answer.contains(document.activeElement)) return -1;
    return [...this.answer.querySelectorAll(".copy-code")].indexOf(document.activeElement);
  }

  renderReasoning(blocks) {
    this.reasoningBox.hidden = false;
    this.reasoningText.textContent = blocks
      .map((block) => (block.redacted ? "[a block the provider redacted]" : block.content))
      .join("\n\n");
  }

  renderCall(call) {
    let view = this.callViews.get(call.index);
    if (!view) {
      const node = $("#tool-call-template").content.firstElementChild.cloneNode(true);
      node.querySelector(".tool-name").textContent = call.name;
      this.callList.append(node);
      view = { node, endShown: false };
      this.callViews.set(call.index, view);
    }
    if (view.endShown) return;
    const { node } = view;
    const args = node.querySelector(".tool-arguments");
    node.querySelector(".tool-state").textContent = call.ended
      ? (CALL_STATES[call.error] || call.error || "called") : "calling…";
    node.dataset.state = call.ended ? (call.error ? "error" : "ended") : "streaming";
    // Once ended and parsed, the arguments are shown pretty-printed; before, as they stream.
    args.textContent = call.ended && call.error !== "invalid_json"
      ? JSON.stringify(call.arguments, null, 2) : call.argumentsText;
    view.endShown = call.ended;
  }

  showResult(call, result) {
    const node = this.callViews.get(call.index)?.node.querySelector(".tool-result");
    if (!node) return;
    node.hidden = false;
    node.textContent = `${result.is_error ? "Demo error" : "Demo result"}: ${result.content}`;
  }

  finish(state, done) {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.live = false;
    this.answer.removeAttribute("aria-busy");
    this.render();
    if (done) {
      this.stat("rate", `${done.tokens_per_second} tok/s`);
      this.stat("count", `${done.token_count} tokens`);
      if (done.ttft_ms != null && this.firstTokenAt === null) this.stat("ttft", `first token ${done.ttft_ms} ms`);
    }
    this.state(state);
  }

  // The server's message, and its request id to quote when asking about it.
  fail(error) {
    this.unauthorized = error.status === 401;
    this.problem.hidden = false;
    this.problem.querySelector(".problem-message").textContent = error.message;
    const requestId = this.problem.querySelector(".request-id");
    requestId.hidden = !error.request_id;
    requestId.querySelector("code").textContent = error.request_id || "";
  }

  remove() { this.node.remove(); }

  state(label) { this.node.dataset.state = label; this.stat("state", label); }
  stat(name, value) { this.node.querySelector(`.${name}`).textContent = value; }
}

function nearBottom() {
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
}

// The decode rate the server reports for a stream (first token to last), from what
// POST /api/chat returns whole: the answer's tokens over its time after the first token
// (the page's own wall time if the server's is too short to measure).
function rateOf(result, wallSeconds) {
  const tokens = result.usage?.completion_tokens ?? result.token_count ?? 0;
  const decodeSeconds = (result.elapsed_seconds ?? 0) - (result.ttft_ms ?? 0) / 1000;
  const seconds = decodeSeconds > 0 ? decodeSeconds : wallSeconds;
  return tokens > 1 && seconds > 0 ? Math.round(((tokens - 1) / seconds) * 10) / 10 : 0;
}

// --- The conversation ------------------------------------------------------------------------

const history = []; // the messages the next request sends
let current = null; // {stream, view} while an answer streams

function addUserMessage(text) {
  const node = document.createElement("article");
  node.className = "message user";
  node.textContent = text; // the user's own words: text, never markup
  conversation.append(node);
  scroller.scrollTop = scroller.scrollHeight; // who asks follows the answer
  history.push({ role: "user", content: text });
}

function setBusy(busy) {
  sendButton.disabled = busy;
  stopButton.disabled = !busy;
  regenerateButton.disabled = busy || history.length === 0;
}

function requestBody() {
  const body = { messages: history.slice(), model: modelPicker.value || undefined };
  if (demoToolsBox.checked) body.tools = DEMO_TOOLS;
  return body;
}

// One answer; when it ends by calling the demo tools, their results go back and the model
// answers again (up to MAX_TOOL_ROUNDS times).
async function answer() {
  setBusy(true);
  try {
    for (let round = 0; round < MAX_TOOL_ROUNDS; round++) {
      let view = new AnswerView();
      const body = requestBody();
      let folded = await answerOnce(view, body);
      if (view.unauthorized && askForKey()) { // asked once per answer; then it tries again
        view.remove();
        view = new AnswerView();
        folded = await answerOnce(view, body);
      }
      const results = body.tools && folded?.ending?.finish_reason === "tool_calls"
        ? answerCalls(view, folded) : [];
      remember(folded, results);
      if (!results.length) break;
    }
  } finally {
    setBusy(false);
    // Back to the message box, unless the reader went elsewhere (a Copy button, a link).
    const focus = document.activeElement;
    if (!focus || focus === document.body || $("#composer").contains(focus)) prompt.focus();
  }
}

async function answerOnce(view, body) {
  view.state("waiting");
  try {
    if (!streamingSupported() || new URLSearchParams(location.search).has("nostream")) {
      return await answerAtOnce(view, body);
    }
    return await answerStreaming(view, body);
  } finally {
    current = null;
    connection.textContent = "";
  }
}

function answerCalls(view, folded) {
  return folded.toolCalls.filter((call) => call.ended).map((call) => {
    const result = demoResult(call);
    view.showResult(call, result);
    return { role: "tool", tool_call_id: call.id, ...result };
  });
}

// The turn goes into the history; its tool calls only with their results (a call left
// unanswered, by Stop or an error, would make the next request invalid for the provider).
function remember(folded, results) {
  if (!folded) return;
  const message = folded.message();
  if (!results.length) delete message.tool_calls;
  if (message.content || message.tool_calls) history.push(message, ...results);
}

async function answerStreaming(view, body) {
  let ending = null;
  const stream = new ResumableStream(body, {
    onStart: () => view.begin(),
    onToken: () => view.append(),
    onReasoning: () => view.schedule(),
    onToolCallStart: () => view.schedule(),
    onToolCallDelta: () => view.schedule(),
    onToolCallEnd: () => view.schedule(),
    onStatus: (message) => view.stat("state", message),
    onDone: (done) => { ending = "done"; view.finish("done", done); },
    onError: (error) => { ending = "error"; view.finish("error"); view.fail(error); },
    onCancelled: () => { ending = "stopped"; view.finish("stopped"); },
    onReconnecting: ({ attempt }) => {
      connection.textContent = `Connection lost; reconnecting (attempt ${attempt})…`;
      view.state("reconnecting");
    },
    onReconnected: () => { connection.textContent = ""; view.begin(); },
  });
  view.folded = stream.answer;
  current = { stream, view };
  await stream.start();
  if (!ending) view.finish("stopped");
  return stream.answer;
}

async function answerAtOnce(view, body) {
  view.state("waiting (no streaming)");
  try {
    const result = await complete(body);
    const wallSeconds = (performance.now() - view.sentAt) / 1000;
    view.folded = StreamedAnswer.fromResponse(result);
    view.tokens = result.token_count;
    const rate = rateOf(result, wallSeconds);
    view.finish("done", { tokens_per_second: rate, token_count: result.token_count, ttft_ms: result.ttft_ms });
    return view.folded;
  } catch (error) {
    view.finish("error");
    view.fail(error);
    return null;
  }
}

function send() {
  const text = prompt.value.trim();
  if (!text || current) return;
  prompt.value = "";
  addUserMessage(text);
  answer();
}

async function stop() {
  if (!current) return;
  const { stream, view } = current;
  stopButton.disabled = true;
  view.finish("stopped");
  await stream.cancel();
}

function regenerate() {
  if (current || history.length === 0) return;
  if (history[history.length - 1].role === "assistant") {
    history.pop();
    conversation.querySelector(".message.assistant:last-of-type")?.remove();
  }
  answer();
}

async function loadModels() {
  try {
    let response = await fetch("/api/models", { headers: authHeaders() });
    if (response.status === 401 && askForKey()) {
      response = await fetch("/api/models", { headers: authHeaders() });
    }
    const { default: preferred, models } = await response.json();
    for (const { id } of models) {
      const option = new Option(id, id, false, id === preferred);
      modelPicker.append(option);
    }
  } catch (_) {
    connection.textContent = "Cannot list models; the server's default will answer.";
  }
}

$("#composer").addEventListener("submit", (event) => { event.preventDefault(); send(); });
prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
// Esc stops the answer that is streaming, wherever the focus is (a closing dialog's Esc
// is the browser's and never reaches here), but not the Esc that cancels a composition in
// an input method (Japanese, Chinese, Korean typing).
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && current && !event.isComposing) {
    event.preventDefault();
    stop();
  }
});
for (const suggestion of document.querySelectorAll(".suggestion")) {
  suggestion.addEventListener("click", () => {
    prompt.value = suggestion.textContent;
    send();
  });
}
enableCopyButtons(conversation, announce);
stopButton.addEventListener("click", stop);
regenerateButton.addEventListener("click", regenerate);
$("#new-chat").addEventListener("click", () => {
  if (current) return;
  history.length = 0;
  conversation.replaceChildren();
  setBusy(false);
  prompt.focus();
});
loadModels();
prompt.focus();
