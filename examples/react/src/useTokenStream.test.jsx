// The hook and the chat component against a scripted server (fetch replaced), in jsdom.
import { act } from "react";
import { createRoot } from "react-dom/client";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Chat } from "./Chat.jsx";
import { useTokenStream } from "./useTokenStream.js";

globalThis.IS_REACT_ACT_ENVIRONMENT = true;

const encoder = new TextEncoder();
const sse = (seq, payload) => `id: str_t:${seq}\ndata: ${JSON.stringify(payload)}\n\n`;
const tokens = ["Hé", "llo ", "wörld", " 👋🏽", " <img src=x onerror=alert(1)>"];
const events = [
  sse(1, { type: "start", stream_id: "str_t", model: "sim/fast" }),
  ...tokens.map((t, i) => sse(i + 2, { type: "token", content: t })),
  sse(7, { type: "done", finish_reason: "stop", token_count: 5, tokens_per_second: 42.0 }),
];

// A body that arrives in awkward pieces: 3 bytes at a time splits multi-byte characters and
// lines; `failAfter` bytes, if set, ends it with a network error instead.
function body(text, { failAfter = Infinity } = {}) {
  const bytes = encoder.encode(text);
  let offset = 0;
  return new ReadableStream({
    pull(controller) {
      if (offset >= Math.min(bytes.length, failAfter)) {
        if (failAfter < bytes.length) controller.error(new TypeError("network error"));
        else controller.close();
        return;
      }
      controller.enqueue(bytes.slice(offset, offset + 3));
      offset += 3;
    },
  });
}

const sseResponse = (stream) =>
  new Response(stream, { status: 200, headers: { "content-type": "text/event-stream", "x-stream-id": "str_t" } });

let requests;
beforeEach(() => { requests = []; });
afterEach(() => { vi.unstubAllGlobals(); });

function serve(...responses) {
  vi.stubGlobal("fetch", vi.fn(async (url, init = {}) => {
    requests.push({ url, method: init.method || "GET", headers: init.headers || {} });
    if (init.method === "DELETE") return new Response('{"cancelled":true}', { status: 202 });
    return responses.shift()();
  }));
}

function mount(element) {
  const container = document.createElement("div");
  const root = createRoot(container);
  act(() => root.render(element));
  return { container, root };
}

function HookProbe({ onState }) {
  onState(useTokenStream());
  return null;
}

describe("useTokenStream", () => {
  it("gathers every token, whole characters, and the final stats", async () => {
    serve(() => sseResponse(body(events.join(""))));
    let state;
    mount(<HookProbe onState={(s) => { state = s; }} />);
    await act(() => state.start({ message: "hi", model: "sim/fast" }));
    await act(() => new Promise((r) => setTimeout(r, 50)));
    expect(state.text).toBe(tokens.join(""));
    expect(state.status).toBe("done");
    expect(state.stats.tokens).toBe(5);
    expect(state.stats.tokensPerSecond).toBe(42);
    expect(requests.map((r) => r.method)).toEqual(["POST"]);
  });

  it("resumes a dropped connection from the last event id, never re-POSTing", async () => {
    const firstPart = events.slice(0, 3).join(""); // start and two tokens arrive, then the drop
    const rest = events.slice(3).join("");
    let reconnect;
    const gate = new Promise((resolve) => { reconnect = resolve; });
    serve(
      () => sseResponse(body(firstPart + "id: str_t:4\nda", { failAfter: firstPart.length + 10 })),
      async () => { await gate; return sseResponse(body(rest)); },
    );
    let state;
    mount(<HookProbe onState={(s) => { state = s; }} />);
    let finished;
    act(() => { finished = state.start({ message: "hi" }); });
    await act(() => new Promise((r) => setTimeout(r, 600))); // past the first backoff (< 250 ms)
    expect(state.status).toBe("reconnecting");
    expect(state.text).toBe("Héllo ");
    reconnect();
    await act(() => finished);
    await act(() => new Promise((r) => setTimeout(r, 50)));
    expect(state.text).toBe(tokens.join(""));
    expect(state.status).toBe("done");
    expect(requests.map((r) => `${r.method} ${r.url}`)).toEqual([
      "POST /api/chat/stream",
      "GET /api/streams/str_t",
    ]);
    expect(requests[1].headers["last-event-id"]).toBe("str_t:3");
  });

  it("stop() cancels on the server and keeps the text so far", async () => {
    let release;
    const stalled = new ReadableStream({
      start(controller) {
        controller.enqueue(encoder.encode(events.slice(0, 3).join("")));
        release = () => controller.error(new TypeError("aborted"));
      },
    });
    serve(() => sseResponse(stalled));
    let state;
    mount(<HookProbe onState={(s) => { state = s; }} />);
    let finished;
    act(() => { finished = state.start({ message: "hi" }); });
    await act(() => new Promise((r) => setTimeout(r, 50)));
    await act(() => state.stop());
    release();
    await act(() => finished);
    expect(state.status).toBe("stopped");
    expect(state.text).toBe("Héllo ");
    expect(requests.map((r) => r.method)).toEqual(["POST", "DELETE"]);
  });
});

// An answer that reasons, then calls a tool (markup in both, which must stay text).
const agentEvents = [
  sse(1, { type: "start", stream_id: "str_t", model: "sim/think+tools" }),
  sse(2, { type: "reasoning", content: "Check the <b>weather</b>" }),
  sse(3, { type: "reasoning", content: " first.", signature: "sig" }),
  sse(4, { type: "token", content: "Let me check." }),
  sse(5, { type: "tool_call", phase: "start", index: 0, id: "call_w", name: "get_weather" }),
  sse(6, { type: "tool_call", phase: "delta", index: 0, arguments: '{"city": ' }),
  sse(7, { type: "tool_call", phase: "delta", index: 0, arguments: '"<i>Lima</i>"}' }),
  sse(8, { type: "tool_call", phase: "end", index: 0, id: "call_w", name: "get_weather", arguments: { city: "<i>Lima</i>" } }),
  sse(9, { type: "done", finish_reason: "tool_calls", token_count: 1, tokens_per_second: 0 }),
];

describe("reasoning and tool calls", () => {
  it("the hook gives the reasoning text and each call, its arguments parsed at the end", async () => {
    serve(() => sseResponse(body(agentEvents.join(""))));
    let state;
    mount(<HookProbe onState={(s) => { state = s; }} />);
    await act(() => state.start({ message: "weather?", tools: [{ name: "get_weather" }] }));
    await act(() => new Promise((r) => setTimeout(r, 50)));
    expect(state.reasoning).toBe("Check the <b>weather</b> first.");
    expect(state.text).toBe("Let me check.");
    expect(state.toolCalls).toEqual([{
      index: 0, id: "call_w", name: "get_weather", argumentsText: '{"city": "<i>Lima</i>"}',
      arguments: { city: "<i>Lima</i>" }, error: "", ended: true,
    }]);
    expect(state.status).toBe("done");
  });

  it("Chat shows the reasoning collapsed and the call's arguments, as text", async () => {
    serve(() => sseResponse(body(agentEvents.join(""))));
    const { container } = mount(<Chat model="sim/think+tools" tools={[{ name: "get_weather" }]} />);
    const textarea = container.querySelector("textarea");
    await act(async () => {
      const setValue = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, "value").set;
      setValue.call(textarea, "Weather in Lima?");
      textarea.dispatchEvent(new Event("input", { bubbles: true }));
    });
    await act(async () => {
      container.querySelector("form").dispatchEvent(new Event("submit", { bubbles: true, cancelable: true }));
      await new Promise((r) => setTimeout(r, 50));
    });
    const reasoning = container.querySelector("[data-testid=reasoning]");
    expect(reasoning.open).toBe(false);
    expect(reasoning.textContent).toContain("Check the <b>weather</b> first.");
    const call = container.querySelector("[data-testid=tool-call]");
    expect(call.querySelector("summary").textContent).toBe("get_weather called");
    expect(call.querySelector("pre").textContent).toBe(JSON.stringify({ city: "<i>Lima</i>" }, null, 2));
    expect(container.querySelector("b, i")).toBeNull();
  });
});

describe("Chat", () => {
  it("shows model output as text: markup in an answer stays inert", async () => {
    serve(() => sseResponse(body(events.join(""))));
    const { container } = mount(<Chat model="sim/fast" />);
    const textarea = container.querySelector("textarea");
    await act(async () => {
      const setValue = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, "value").set;
      setValue.call(textarea, "Say hello");
      textarea.dispatchEvent(new Event("input", { bubbles: true }));
    });
    await act(async () => {
      container.querySelector("form").dispatchEvent(new Event("submit", { bubbles: true, cancelable: true }));
      await new Promise((r) => setTimeout(r, 50));
    });
    const answer = container.querySelector("[data-testid=answer]");
    expect(answer.textContent).toBe(tokens.join(""));
    expect(answer.querySelector("img")).toBeNull();
    expect(container.querySelector("[data-testid=status]").textContent).toMatch(/^done · first token \d+ ms · 5 tokens · 42 tok\/s$/);
  });
});
