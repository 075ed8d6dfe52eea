import { useState } from "react";
import { useTokenStream } from "./useTokenStream.js";

// A minimal chat on useTokenStream. The answer, its reasoning and its tool calls are shown as
// plain text (React escapes it), so model output cannot inject markup; render markdown only
// through a sanitizer (see tokenrelay's own page, /static/app.js). With `tools`, the model may
// call them; this example shows the calls and leaves running them to you.
export function Chat({ model = "sim/default", baseUrl = "", tools }) {
  const [turns, setTurns] = useState([]);
  const [draft, setDraft] = useState("");
  const { text, reasoning, toolCalls, status, stats, error, start, stop } = useTokenStream({ baseUrl });
  const busy = status === "streaming" || status === "reconnecting";

  async function send(event) {
    event.preventDefault();
    const question = draft.trim();
    if (!question || busy) return;
    const history = text ? [...turns, { role: "assistant", content: text }] : turns;
    const next = [...history, { role: "user", content: question }];
    setTurns(next);
    setDraft("");
    await start({ messages: next, model, tools });
  }

  return (
    <section aria-label="Chat">
      {turns.map((turn, i) => (
        <p key={i} className={turn.role}>{turn.content}</p>
      ))}
      {reasoning && (
        <details data-testid="reasoning">
          <summary>Reasoning</summary>
          <p>{reasoning}</p>
        </details>
      )}
      <div aria-live="polite" data-testid="answer">{text}</div>
      {toolCalls.map((call) => (
        <details key={call.index} open data-testid="tool-call">
          <summary>{call.name} {call.ended ? call.error || "called" : "calling…"}</summary>
          <pre>{call.ended && call.error !== "invalid_json" ? JSON.stringify(call.arguments, null, 2) : call.argumentsText}</pre>
        </details>
      ))}
      {error && <p role="alert">{error.message}</p>}
      <p data-testid="status">
        {status}
        {stats?.ttftMs != null && ` · first token ${stats.ttftMs} ms`}
        {stats?.tokens ? ` · ${stats.tokens} tokens` : ""}
        {stats?.tokensPerSecond != null && ` · ${stats.tokensPerSecond} tok/s`}
      </p>
      <form onSubmit={send}>
        <textarea aria-label="Message" value={draft} onChange={(e) => setDraft(e.target.value)} />
        <button type="submit" disabled={busy}>Send</button>
        <button type="button" onClick={stop} disabled={!busy}>Stop</button>
      </form>
    </section>
  );
}
