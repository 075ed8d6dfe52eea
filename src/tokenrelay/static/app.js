// The chat page. Built on /static/tokenrelay.js; markdown by marked, made safe by DOMPurify
// (both vendored: the page works offline and loads nothing from elsewhere).
import { marked } from "/static/vendor/marked.js";
import DOMPurify from "/static/vendor/purify.js";
import { ResumableStream, complete, streamingSupported } from "/static/tokenrelay.js";

const $ = (selector) => document.querySelector(selector);
const conversation = $("#conversation");
const prompt = $("#prompt");
const modelPicker = $("#model");
const sendButton = $("#send");
const stopButton = $("#stop");
const regenerateButton = $("#regenerate");
const connection = $("#connection");

// --- Safe markdown ---------------------------------------------------------------------------
// Model output is untrusted. Raw HTML in it is shown as text (never parsed), and the rendered
// markdown goes through DOMPurify with a short list of tags: no img, iframe, style or form, so
// nothing can run script or load remote content; links only to http(s) and mailto.

const escapeHtml = (text) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
marked.use({ gfm: true, renderer: { html: (token) => escapeHtml(token.text) } });

const PURIFY = {
  ALLOWED_TAGS: ["p", "br", "strong", "em", "del", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "table", "thead", "tbody", "tr", "th", "td", "a",
    "input"],
  ALLOWED_ATTR: ["href", "title", "align", "start", "class", "type", "checked", "disabled"],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
};
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
  if (node.tagName === "INPUT" && node.getAttribute("type") !== "checkbox") node.remove();
});

export function renderMarkdown(text) {
  return DOMPurify.sanitize(marked.parse(text), PURIFY);
}

// --- One answer on screen --------------------------------------------------------------------

class AnswerView {
  constructor() {
    const node = $("#assistant-template").content.firstElementChild.cloneNode(true);
    conversation.append(node);
    this.node = node;
    this.answer = node.querySelector(".answer");
    this.problem = node.querySelector(".problem");
    this.text = "";
    this.tokens = 0;
    this.sentAt = performance.now();
    this.firstTokenAt = null;
    this.frame = 0;
  }

  // Re-render at most once per frame: a token burst costs one parse, and no half state shows.
  append(text) {
    if (this.firstTokenAt === null) {
      this.firstTokenAt = performance.now();
      this.stat("ttft", `first token ${Math.round(this.firstTokenAt - this.sentAt)} ms`);
    }
    this.text += text;
    this.tokens += 1;
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  render() {
    this.frame = 0;
    this.answer.innerHTML = renderMarkdown(this.text);
    this.stat("count", `${this.tokens} tokens`);
    if (this.firstTokenAt !== null && this.tokens > 1) {
      const seconds = (performance.now() - this.firstTokenAt) / 1000;
      this.stat("rate", `${(this.tokens - 1) / Math.max(seconds, 0.001) | 0} tok/s`);
    }
    conversation.scrollTop = conversation.scrollHeight;
  }

  finish(state, done) {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.render();
    if (done) {
      this.stat("rate", `${done.tokens_per_second} tok/s`);
      this.stat("count", `${done.token_count} tokens`);
      if (done.ttft_ms != null && this.firstTokenAt === null) this.stat("ttft", `first token ${done.ttft_ms} ms`);
    }
    this.state(state);
  }

  fail(error) {
    this.problem.hidden = false;
    this.problem.textContent = error.request_id
      ? `${error.message} (request ${error.request_id})` : error.message;
  }

  state(label) { this.node.dataset.state = label; this.stat("state", label); }
  stat(name, value) { this.node.querySelector(`.${name}`).textContent = value; }
}

// --- The conversation ------------------------------------------------------------------------

const history = []; // {role, content}: what the next request sends
let current = null; // {stream, view} while an answer streams

function addUserMessage(text) {
  const node = document.createElement("article");
  node.className = "message user";
  node.textContent = text; // the user's own words: text, never markup
  conversation.append(node);
  history.push({ role: "user", content: text });
}

function setBusy(busy) {
  sendButton.disabled = busy;
  stopButton.disabled = !busy;
  regenerateButton.disabled = busy || history.length === 0;
}

async function answer() {
  const view = new AnswerView();
  const body = { messages: history.slice(), model: modelPicker.value || undefined };
  setBusy(true);
  view.state("waiting");
  try {
    if (!streamingSupported() || new URLSearchParams(location.search).has("nostream")) {
      await answerAtOnce(view, body);
    } else {
      await answerStreaming(view, body);
    }
  } finally {
    current = null;
    connection.textContent = "";
    if (view.text) history.push({ role: "assistant", content: view.text });
    setBusy(false);
    prompt.focus();
  }
}

async function answerStreaming(view, body) {
  let ending = null;
  const stream = new ResumableStream(body, {
    onStart: () => view.state("streaming"),
    onToken: (text) => view.append(text),
    onStatus: (message) => view.stat("state", message),
    onDone: (done) => { ending = "done"; view.finish("done", done); },
    onError: (error) => { ending = "error"; view.finish("error"); view.fail(error); },
    onCancelled: () => { ending = "stopped"; view.finish("stopped"); },
    onReconnecting: ({ attempt }) => {
      connection.textContent = `Connection lost; reconnecting (attempt ${attempt})…`;
      view.state("reconnecting");
    },
    onReconnected: () => { connection.textContent = ""; view.state("streaming"); },
  });
  current = { stream, view };
  await stream.start();
  if (!ending) view.finish("stopped");
}

async function answerAtOnce(view, body) {
  view.state("waiting (no streaming)");
  try {
    const result = await complete(body);
    view.text = result.content;
    view.tokens = result.token_count;
    view.finish("done", { tokens_per_second: "–", token_count: result.token_count, ttft_ms: result.ttft_ms });
  } catch (error) {
    view.finish("error");
    view.fail(error);
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
    const response = await fetch("/api/models");
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
stopButton.addEventListener("click", stop);
regenerateButton.addEventListener("click", regenerate);
$("#new-chat").addEventListener("click", () => {
  if (current) return;
  history.length = 0;
  conversation.replaceChildren();
  setBusy(false);
});
loadModels();
prompt.focus();
