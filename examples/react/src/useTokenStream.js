// useTokenStream: one streamed answer as React state, on tokenrelay's JS client.
//
//   const { text, status, stats, error, start, stop } = useTokenStream();
//   start({ messages, model });      // status: idle -> streaming -> done | error | stopped
//
// Tokens are batched into one state update per animation frame, so a fast model does not
// re-render the tree once per token. Dropped connections are resumed by ResumableStream
// (status "reconnecting" meanwhile); stop() cancels the generation on the server.
import { useCallback, useEffect, useRef, useState } from "react";
import { ResumableStream } from "../../../src/tokenrelay/static/tokenrelay.js";

const IDLE = { text: "", status: "idle", error: null, stats: null };
const nextFrame = typeof requestAnimationFrame === "function"
  ? requestAnimationFrame : (callback) => setTimeout(callback, 16);

export function useTokenStream({ baseUrl = "" } = {}) {
  const [state, setState] = useState(IDLE);
  const streamRef = useRef(null);
  const pending = useRef({ text: "", tokens: 0, scheduled: false });

  const flush = useCallback(() => {
    const { text, tokens } = pending.current;
    pending.current = { text: "", tokens: 0, scheduled: false };
    if (text) {
      setState((s) => ({ ...s, text: s.text + text, stats: { ...s.stats, tokens: (s.stats?.tokens || 0) + tokens } }));
    }
  }, []);

  const start = useCallback(async (body) => {
    if (streamRef.current) await streamRef.current.cancel();
    const sentAt = performance.now();
    let firstTokenAt = null;
    setState({ ...IDLE, status: "streaming", stats: { tokens: 0 } });
    const stream = new ResumableStream(body, {
      onToken: (text) => {
        if (firstTokenAt === null) {
          firstTokenAt = performance.now();
          setState((s) => ({ ...s, stats: { ...s.stats, ttftMs: Math.round(firstTokenAt - sentAt) } }));
        }
        pending.current.text += text;
        pending.current.tokens += 1;
        if (!pending.current.scheduled) {
          pending.current.scheduled = true;
          nextFrame(flush);
        }
      },
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
    await stream.start();
    if (streamRef.current === stream) streamRef.current = null;
  }, [baseUrl, flush]);

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
