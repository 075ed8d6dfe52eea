"""What the durable path costs per token, without the socket and without a client on the CPU.

`bench_log` measures real servers, but on a shared 2-core machine the load generator competes
with the server, and one round can cost 50% more than the next. Here both paths run in one
process, as ASGI responses driven by a stand-in server (a `send` that keeps nothing, a
`receive` that never disconnects), with N concurrent `sim/fast+endless` streams:

    no log      benchmarks/direct_relay.DirectRelay: provider -> encode -> send
    memory log  StreamManager.start + EventStreamResponse: the producer task, the memory log,
                live delivery to the caught-up subscriber, the same encoder and send

The socket write and HTTP framing (about 5-10 µs per token in `bench_log`) are the same for
both and are left out, so the ratio here is stricter than a server's. Modes alternate;
figures are CPU time (process_time) per token, median of rounds.

    .venv/bin/python -m benchmarks.bench_log_path --streams 200 --tokens 200 --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from starlette.types import Message as ASGIMessage
from starlette.types import Receive, Send

from benchmarks.direct_relay import DirectRelay
from tokenrelay.providers.base import GenerationRequest, Message
from tokenrelay.providers.sim import SimProvider
from tokenrelay.server.app import tune_gc
from tokenrelay.server.responses import EventStreamResponse
from tokenrelay.streams.log_memory import MemoryStreamLog
from tokenrelay.streams.manager import StreamManager, StreamSettings

SCOPE: dict[str, Any] = {"type": "http", "method": "POST", "path": "/api/chat/stream"}


class StandInServer:
    """The ASGI side of one connection, as cheap as a server can be: counts body bytes."""

    def __init__(self) -> None:
        self.body_bytes = 0
        self._disconnected = asyncio.Event()

    async def send(self, message: ASGIMessage) -> None:
        if message["type"] == "http.response.body":
            self.body_bytes += len(message["body"])

    async def receive(self) -> ASGIMessage:
        await self._disconnected.wait()  # never set: the client stays to the end
        return {"type": "http.disconnect"}


def _wrapped(send: Send) -> Send:
    """One wrapper per middleware that wraps `send` in the app (Starlette's two and ours)."""

    async def wrapper(message: ASGIMessage) -> None:
        await send(message)

    return wrapper


async def _serve(respond: Callable[[Receive, Send], Awaitable[None]]) -> int:
    server = StandInServer()
    await respond(server.receive, _wrapped(_wrapped(_wrapped(server.send))))
    return server.body_bytes


def _request(tokens: int) -> GenerationRequest:
    return GenerationRequest("fast+endless", (Message("user", "Explain relays"),), tokens)


async def no_log(streams: int, tokens: int) -> None:
    provider = SimProvider()

    async def one(receive: Receive, send: Send) -> None:
        await DirectRelay(provider, _request(tokens), "sim/fast+endless")(SCOPE, receive, send)

    await asyncio.gather(*(_serve(one) for _ in range(streams)))


async def memory_log(streams: int, tokens: int) -> None:
    provider = SimProvider()
    manager = StreamManager(MemoryStreamLog(max_bytes=8 << 20, ttl=600.0), StreamSettings())

    async def one(receive: Receive, send: Send) -> None:
        stream_id = await manager.start(_request(tokens), provider, "sim/fast+endless")
        await EventStreamResponse(manager, stream_id)(SCOPE, receive, send)

    await asyncio.gather(*(_serve(one) for _ in range(streams)))
    await manager.close()


async def measure(streams: int, tokens: int, rounds: int) -> dict[str, list[float]]:
    modes = {"no log (direct relay)": no_log, "memory log": memory_log}
    figures: dict[str, list[float]] = {name: [] for name in modes}
    for run in modes.values():
        await run(10, tokens)  # warm-up
    for _ in range(rounds):
        for name, run in modes.items():
            started = time.process_time()
            await run(streams, tokens)
            figures[name].append((time.process_time() - started) * 1e6 / (streams * tokens))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    tune_gc()  # the collector as `tokenrelay serve` sets it
    figures = uvloop.run(measure(args.streams, args.tokens, args.rounds))
    base = statistics.median(figures["no log (direct relay)"])
    print(f"{args.streams} streams x {args.tokens} tokens, in-process, {args.rounds} rounds")
    for name, values in figures.items():
        median = statistics.median(values)
        print(
            f"  {name:24s} {median:5.2f} us/token  ({median / base:4.2f}x)  "
            f"rounds {', '.join(f'{v:.2f}' for v in values)}"
        )


if __name__ == "__main__":
    main()
