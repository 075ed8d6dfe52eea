// useTokenStream: one streamed answer as React state, on tokenrelay's JS client.
//
//   const { text, reasoning, toolCalls, status, stats, error, start, stop } = useTokenStream();
//   start({ messages, model });      // status: idle -> streaming -> done | error | stopped
//
// Tokens, reasoning and tool-call pieces are batched into one state update per animation
// frame, so a fast model does not re-render the tree once per token. `reasoning` is the
// model's reasoning text; `toolCalls` the calls so far ({index, id, name, argumentsText,
// arguments, error, ended}, from the JS client's StreamedAnswer). Dropped connections are
// resumed by ResumableStream (status "reconnecting" meanwhile); stop() cancels the generation
// on the server.
import { useCallback, useEffect, useRef, useState } from "react";
import { ResumableStream } from "../../../src/tokenrelay/static/tokenrelay.js";

const IDLE = { text: "", reasoning: "", toolCalls: [], status: "idle", error: null, stats: null };
const nextFrame = typeof requestAnimationFrame === "function"
  ? requestAnimationFrame : (callback) => setTimeout(callback, 16);
const nothingPending = () => ({ text: "", tokens: 0, structured: false, scheduled: false });

// The answer's reasoning and calls as new objects: the client's fold changes its own in place,
// and React renders only what it sees replaced.
function structuredOf(answer) {
  return {
    reasoning: answer.reasoning.map((block) => block.content).join("\n\n"),
    toolCalls: answer.toolCalls.map((call) => ({ ...call })),
  };
}

export function useTokenStream({ baseUrl = "" } = {}) {
  const [state, setState] = useState(IDLE);
  const streamRef = useRef(null);
  const answerRef = useRef(null); // the stream's StreamedAnswer, kept after the stream ends
  const pending = useRef(nothingPending());

  const flush = useCallback(() => {
    const { text, tokens, structured } = pending.current;
    pending.current = nothingPending();
    const parts = structured && answerRef.current ? structuredOf(answerRef.current) : {};
    if (text || structured) {
      setState((s) => ({ ...s, ...parts, text: s.text + text, stats: { ...s.stats, tokens: (s.stats?.tokens || 0) + tokens } }));
    }
  }, []);

  const schedule = useCallback(() => {
    if (pending.current.scheduled) return;
    pending.current.scheduled = true;
    nextFrame(flush);
  }, [flush]);

  const start = useCallback(async (body) => {
    if (streamRef.current) await streamRef.current.cancel();
    const sentAt = performance.now();
    let firstTokenAt = null;
    setState({ ...IDLE, status: "streaming", stats: { tokens: 0 } });
    const structured = () => { pending.current.structured = true; schedule(); };
    const stream = new ResumableStream(body, {
      onToken: (text) => {
        if (firstTokenAt === null) {
          firstTokenAt = performance.now();
          setState((s) => ({ ...s, stats: { ...s.stats, ttftMs: Math.round(firstTokenAt - sentAt) } }));
        }
        pending.current.text += text;
        pending.current.tokens += 1;
        schedule();
      },
      onReasoning: structured,
      onToolCallStart: structured,
      onToolCallDelta: structured,
      onToolCallEnd: structured,
      onDone: (done) => {
        flush();
        setState((s) => ({ ...s, status: "done", stats: { ...s.stats, tokensPerSecond: done.tokens_per_second, tokens: done.token_count } }));
      },
      onError: (error) => { flush(); setState((s) => ({ ...s, status: "error", error })); },
      onCancelled: () => { flush(); setState((s) => ({ ...s, status: "stopped" })); },
      onReconnecting: () => setState((s) => ({ ...s, status: "reconnecting" })),
      onReconnected: () => setState((s) => ({ ...s, status: "streaming" })),
    }, { baseUrl });
    streamRef.current = stream;
    answerRef.current = stream.answer;
    await stream.start();
    if (streamRef.current === stream) streamRef.current = null;
  }, [baseUrl, flush, schedule]);

  const stop = useCallback(async () => {
    const stream = streamRef.current;
    if (!stream) return;
    streamRef.current = null;
    flush();
    setState((s) => ({ ...s, status: "stopped" }));
    await stream.cancel();
  }, [flush]);

  useEffect(() => () => { streamRef.current?.cancel(); }, []); // unmounted: stop paying

  return { ...state, start, stop };
}
