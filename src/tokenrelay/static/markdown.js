// Model output as safe, readable HTML for the chat page.
//
// marked renders, DOMPurify sanitises, highlight.js colours a code block whose fence names a
// language it knows, and remend closes the markdown that a live stream has opened but not yet
// closed (`**bold`, `` `code ``), so the growing end of an answer already reads as it will
// once complete. The page's own markup is added after the sanitiser, never from model text: a
// bar with the language and a copy button on each code block, a scroll box around each table.
// All four libraries are vendored (static/vendor/README.md): nothing loads from elsewhere.
import { marked } from "/static/vendor/marked.js";
import DOMPurify from "/static/vendor/purify.js";
import hljs from "/static/vendor/highlight.min.js";
import remend, { isWithinCodeBlock } from "/static/vendor/remend.js";

// Model output is untrusted. Raw HTML in it is shown as text (never parsed), and the rendered
// markdown goes through DOMPurify with a short list of tags: no img, iframe, style or form, so
// nothing can run script or load remote content; links only to http(s) and mailto.

const escapeHtml = (text) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// A fence naming a language highlight.js knows is coloured; any other keeps marked's own
// rendering (plain, escaped). Unlabelled code is not guessed at: a guess is often wrong, and
// costs a try of every language on each frame of a stream.
function highlightedCode({ text, lang }) {
  const name = (lang || "").trim().split(/\s+/)[0];
  if (!name || !hljs.getLanguage(name)) return false;
  const html = hljs.highlight(text, { language: name, ignoreIllegals: true }).value;
  return `<pre><code class="hljs language-${escapeHtml(name)}">${html}\n</code></pre>\n`;
}

marked.use({ gfm: true, renderer: { html: (token) => escapeHtml(token.text), code: highlightedCode } });

const PURIFY = {
  ALLOWED_TAGS: ["p", "br", "strong", "em", "del", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "table", "thead", "tbody", "tr", "th", "td", "a",
    "input", "span"],
  ALLOWED_ATTR: ["href", "title", "align", "start", "class", "type", "checked", "disabled"],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
  RETURN_DOM_FRAGMENT: true,
};
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
  if (node.tagName === "INPUT" && node.getAttribute("type") !== "checkbox") node.remove();
});

// --- The live end of a stream ----------------------------------------------------------------
// remend closes an opened emphasis, code span, strikethrough or link. A marker with nothing
// after it yet (`1. **`) has nothing to close around, so it is held back until its text comes
// rather than shown raw for a frame. Inside a code block nothing is touched.

const DANGLING_MARKER = /(^|\s)[*_~`]+$/;
const REMEND = {
  katex: false, // the page renders no math: `$$` is text
  singleTilde: false, // `20~25` renders the same live and complete
  handlers: [{
    name: "dangling-marker",
    handle: (text) => (isWithinCodeBlock(text, text.length - 1) ? text : text.replace(DANGLING_MARKER, "$1")),
  }],
};

// --- The page's own markup -------------------------------------------------------------------

function codeBar(code) {
  const language = [...(code?.classList || [])].find((name) => name.startsWith("language-"))?.slice(9) || "";
  const bar = document.createElement("div");
  bar.className = "code-bar";
  const label = document.createElement("span");
  label.className = "code-language";
  label.textContent = language;
  const copy = document.createElement("button");
  copy.type = "button";
  copy.className = "copy-code";
  copy.textContent = "Copy";
  copy.setAttribute("aria-label", language ? `Copy ${language} code` : "Copy code");
  bar.append(label, copy);
  return bar;
}

function wrap(node, className, ...before) {
  const box = document.createElement("div");
  box.className = className;
  node.replaceWith(box);
  box.append(...before, node);
}

function decorate(fragment) {
  for (const pre of fragment.querySelectorAll("pre")) wrap(pre, "code-block", codeBar(pre.querySelector("code")));
  for (const table of fragment.querySelectorAll("table")) wrap(table, "table-scroll");
  return fragment;
}

// The answer as a DocumentFragment, to put in the page. `live`: the text is a stream's so far.
export function markdownFragment(text, { live = false } = {}) {
  const source = live ? remend(text, REMEND) : text;
  return decorate(DOMPurify.sanitize(marked.parse(source), PURIFY));
}

// The same as HTML text (what the page shows for `text`, for tests and tools).
export function renderMarkdown(text, options = {}) {
  const box = document.createElement("div");
  box.append(markdownFragment(text, options));
  return box.innerHTML;
}

// --- Copy buttons ----------------------------------------------------------------------------
// One listener for every code block under `root`, present and future. The Clipboard API needs
// a secure context (https, or localhost); elsewhere the code is selected and copied the old
// way, or left selected for the reader's own Ctrl+C. `announce(message)` tells a screen reader.

async function copyText(text, code) {
  try {
    await navigator.clipboard.writeText(text);
    return "Copied";
  } catch (_) {
    const range = document.createRange();
    range.selectNodeContents(code);
    const selection = getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    return document.execCommand("copy") ? "Copied" : "Selected: press Ctrl+C to copy";
  }
}

export function enableCopyButtons(root, announce) {
  root.addEventListener("click", async (event) => {
    const button = event.target.closest(".copy-code");
    if (!button) return;
    const code = button.closest(".code-block").querySelector("pre code");
    const outcome = await copyText(code.textContent.replace(/\n$/, ""), code);
    button.textContent = outcome === "Copied" ? "Copied" : "Copy";
    announce(outcome);
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });
}
