"""Live tokens written straight to uvicorn's transport, past its ASGI `send`.

Each ASGI body `send` is a coroutine. For a live token, `EagerSender` steps it by hand, and
uvicorn's `send` checks its connection's state, frames the chunk (chunked transfer encoding)
and calls `transport.write`. Only the framing and the write do any work for a token.
`LiveWriter` frames the chunk itself and calls the transport's `write`. That took 9–19% off
the server's CPU per relayed token and 15–20% per 20-token request (benchmarks/RESULTS.md,
2026-11-30), more than any other change left to make.

This reads uvicorn's connection state (`RequestResponseCycle`: `transport`, `flow`,
`disconnected`, `chunked_encoding`), which is not public API. So `direct_cycle` answers only
for that exact class's own `send`, on a response that went out chunked. Before each write,
`LiveWriter` checks what uvicorn's `send` checks first: the client's socket is not full
(`flow.write_paused`), and the client is still there. Everything else goes through ASGI
`send`, as before: another server, uvicorn's h11 protocol, a middleware wrapped around the
app, a full socket, a client that left. `tests/server/test_uvicorn_write.py` fails if a
uvicorn release changes what this relies on.
"""

from __future__ import annotations

from starlette.types import Send
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle  # httptools: ours too


def direct_cycle(send: Send) -> RequestResponseCycle | None:
    """uvicorn's connection state behind `send`, if live tokens may be written past it: `send`
    is uvicorn's (httptools) own, for a response that started, chunked, and is not complete."""
    cycle = getattr(send, "__self__", None)
    if type(cycle) is not RequestResponseCycle:
        return None
    if cycle.chunked_encoding is not True or cycle.response_complete:
        return None
    return cycle
