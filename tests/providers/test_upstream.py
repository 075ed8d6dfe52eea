"""The upstream client against scripted servers: what real upstreams and networks do.

The provider contract suite runs the providers against the real mock upstream; these tests
cover what the mock cannot be made to do: answer with garbage, split events at every byte,
speak TLS, sit behind a proxy, hold a body open after the last event.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
import trustme

from tests.realserver import MockUpstream
from tokenrelay.errors import GenerationError
from tokenrelay.providers import upstream
from tokenrelay.providers.base import GenerationRequest
from tokenrelay.providers.content import Message
from tokenrelay.providers.openai import OpenAIProvider
from tokenrelay.settings import UpstreamSection

pytestmark = pytest.mark.anyio

Handler = Callable[["Peer"], Awaitable[None]]
REQUEST = GenerationRequest("m", (Message("user", "hi"),))
CHUNKED_OK = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    """One piece of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def openai_events(words: list[str]) -> list[bytes]:
    """An OpenAI stream answering `words`, each event as its SSE bytes."""
    chunks = [
        orjson.dumps({"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]})
        for w in words
    ]
    chunks.append(orjson.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    return [b"data: " + c + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]


def whole_answer(words: list[str]) -> bytes:
    body = b"".join(openai_events(words))
    head = f"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


class Peer:
    """The server's side of one connection, recording each request it reads."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen):
        self.reader, self.writer, self._seen = reader, writer, seen

    async def request(self) -> bytes:
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        request = head + await self.reader.readexactly(length)
        self._seen.requests.append(request)
        return request

    def write(self, data: bytes) -> None:
        self.writer.write(data)


@dataclass
class Seen:
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0


@asynccontextmanager
async def scripted_server(
    handler: Handler, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[str, Seen]]:
    """A server running `handler` per connection; yields its URL and what it saw."""
    seen = Seen()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        try:
            await handler(Peer(reader, writer, seen))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ssl_context)
    port = server.sockets[0].getsockname()[1]
    scheme = "https" if ssl_context else "http"
    async with server:
        yield f"{scheme}://localhost:{port}/v1", seen
        server.close()


def provider(url: str) -> OpenAIProvider:
    return OpenAIProvider("up", UpstreamSection(base_url=url), "sk-x")


async def answer(up: OpenAIProvider) -> str:
    async with aclosing(up.stream(REQUEST)) as deltas:
        return "".join([delta.text async for delta in deltas])


async def failure(up: OpenAIProvider) -> GenerationError:
    with pytest.raises(GenerationError) as caught:
        await answer(up)
    return caught.value


def answering(words: list[str]) -> Handler:
    async def handler(peer: Peer) -> None:
        while True:
            await peer.request()
            peer.write(whole_answer(words))
            await peer.writer.drain()

    return handler


async def test_the_request_is_a_plain_post_with_the_key_and_the_body() -> None:
    async with scripted_server(answering(["one"])) as (url, seen):
        up = provider(url)
        assert await answer(up) == "one"
        await up.aclose()
    head, _, body = seen.requests[0].partition(b"\r\n\r\n")
    lines = [line.lower() for line in head.decode().split("\r\n")]
    assert lines[0] == "post /v1/chat/completions http/1.1"
    assert f"host: {url.split('/')[2]}" in lines
    assert "authorization: bearer sk-x" in lines
    assert "accept: text/event-stream" in lines
    assert not any(line.startswith("accept-encoding") for line in lines)  # no compression
    assert orjson.loads(body)["stream"] is True


async def test_connections_are_kept_alive_and_reused() -> None:
    async with scripted_server(answering(["a", "b"])) as (url, seen):
        up = provider(url)
        for _ in range(3):
            assert await answer(up) == "ab"
        assert len(seen.requests) == 3
        assert seen.connections == 1
        await up.aclose()


async def test_a_connection_that_closes_before_answering_is_a_network_error() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()  # and close without a word

    async with scripted_server(handler) as (url, _):
        up = provider(url)
        assert (await failure(up)).error_type == "network_error"
        await up.aclose()


async def test_a_refused_connection_is_a_network_error_without_the_address() -> None:
    async def handler(peer: Peer) -> None:
        pass

    async with scripted_server(handler) as (url, _):
        pass  # closed now: its port refuses
    up = provider(url)
    error = await failure(up)
    assert error.error_type == "network_error"
    assert "localhost" not in str(error)
    assert url.split(":")[-1].split("/")[0] not in str(error)
    await up.aclose()


@pytest.mark.parametrize(
    "answer_bytes",
    [b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", b"SMTP ready\r\n\r\n"],
    ids=["bad-length", "not-http"],
)
async def test_a_malformed_answer_is_a_network_error(answer_bytes: bytes) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        peer.write(answer_bytes)
        await asyncio.sleep(1)

    async with scripted_server(handler) as (url, _):
        up = provider(url)
        assert (await failure(up)).error_type == "network_error"
        await up.aclose()


async def test_a_body_cut_before_done_is_a_network_error() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        peer.write(CHUNKED_OK + chunk(openai_events(["half"])[0]))
        await peer.writer.drain()  # then the connection closes mid-body

    async with scripted_server(handler) as (url, _):
        up = provider(url)
        assert (await failure(up)).error_type == "network_error"
        await up.aclose()


async def test_chunked_events_split_at_every_byte_come_out_whole() -> None:
    words = ["héllo", " wörld", " 日本語"]
    body = b"".join(openai_events(words))

    async def handler(peer: Peer) -> None:
        await peer.request()
        peer.write(CHUNKED_OK)
        for byte in body:
            peer.write(chunk(bytes([byte])))
            await peer.writer.drain()
        peer.write(b"0\r\n\r\n")
        await asyncio.sleep(1)

    async with scripted_server(handler) as (url, _):
        up = provider(url)
        assert await answer(up) == "".join(words)
        await up.aclose()


async def test_an_error_status_reads_a_capped_body_and_keeps_no_message() -> None:
    body = b'{"error": {"type": "rate_limit_error", "message": "SECRET ' + b"x" * 200_000 + b'"}}'

    async def handler(peer: Peer) -> None:
        await peer.request()
        head = f"HTTP/1.1 429 Too Many\r\nretry-after: 2\r\ncontent-length: {len(body)}\r\n\r\n"
        peer.write(head.encode() + body)
        await peer.writer.drain()

    async with scripted_server(handler) as (url, _):
        up = provider(url)
        error = await failure(up)
        assert error.error_type == "rate_limit"
        assert error.retry_after == 2.0
        assert "SECRET" not in str(error)
        await up.aclose()


async def test_cancelling_mid_stream_closes_the_connection() -> None:
    gone = asyncio.Event()

    async def handler(peer: Peer) -> None:
        await peer.request()
        peer.write(CHUNKED_OK + chunk(openai_events(["tick"])[0]))
        await peer.writer.drain()
        await peer.reader.read()  # EOF: the client left
        gone.set()

    async with scripted_server(handler) as (url, _):
        up = provider(url)
        started = asyncio.Event()

        async def consume() -> None:
            async with aclosing(up.stream(REQUEST)) as deltas:
                async for _ in deltas:
                    started.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.wait_for(gone.wait(), 5)
        await up.aclose()


async def test_https_upstreams_verify_the_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)

    async with scripted_server(answering(["secure"]), server_context) as (url, _):
        # Not trusted: certifi's bundle does not know this authority.
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        untrusted = provider(url)
        assert (await failure(untrusted)).error_type == "network_error"
        await untrusted.aclose()
        # Trusted through SSL_CERT_FILE, as the SDKs and OpenSSL read it.
        bundle = tmp_path / "ca.pem"
        authority.cert_pem.write_to_path(str(bundle))
        monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
        trusted = provider(url)
        assert await answer(trusted) == "secure"
        await trusted.aclose()


async def test_a_proxy_from_the_environment_carries_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTP_PROXY is honoured (trust_env): the request goes to the proxy, in absolute form."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    async with scripted_server(answering(["proxied"])) as (proxy_url, seen):
        monkeypatch.setenv("HTTP_PROXY", proxy_url.removesuffix("/v1"))
        up = provider("http://upstream.internal:8000/v1")
        assert await answer(up) == "proxied"
        await up.aclose()
    request_line = seen.requests[0].split(b"\r\n")[0]
    assert request_line == b"POST http://upstream.internal:8000/v1/chat/completions HTTP/1.1"


def test_header_values_with_line_breaks_are_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        OpenAIProvider("up", UpstreamSection(base_url="http://127.0.0.1:1"), "k\r\nx: y")


@pytest.mark.parametrize("ending", ["late", "never"])
async def test_the_body_after_done_is_read_so_the_connection_is_reused(ending: str) -> None:
    """OpenAI's [DONE] may come a packet before the chunked terminator. Reading that tail
    (briefly) keeps the connection: no new TCP and TLS handshake for the next stream."""

    async def handler(peer: Peer) -> None:
        while True:
            await peer.request()
            peer.write(CHUNKED_OK)
            for event in openai_events(["Hello", " there"]):
                peer.write(chunk(event))
            await peer.writer.drain()
            if ending == "never":
                await asyncio.sleep(5)  # holds the body open: cut off after the grace
                return
            await asyncio.sleep(0.02)
            peer.write(b"0\r\n\r\n")

    async with scripted_server(handler) as (url, seen):
        up = provider(url)
        for _ in range(2):
            started = time.monotonic()
            assert await answer(up) == "Hello there"
            assert time.monotonic() - started < 1.0  # the grace is 0.1 s, never the 5 s
        assert seen.connections == (1 if ending == "late" else 2)
        assert len(seen.requests) == 2
        await up.aclose()


def test_each_event_loop_gets_its_own_connections(mock: MockUpstream) -> None:
    """A provider outlives an event loop (tests, a worker's restart): each loop pools its own
    connections, and `aclose` releases the running loop's."""
    up = OpenAIProvider("up", UpstreamSection(base_url=f"{mock.url}/v1"), None)
    request = GenerationRequest("fast", (Message("user", "hi"),), max_tokens=3)

    async def once() -> str:
        try:
            async with aclosing(up.stream(request)) as deltas:
                return "".join([delta.text async for delta in deltas])
        finally:
            await up.aclose()

    first = asyncio.run(once())
    assert first
    assert asyncio.run(once()) == first


async def test_an_idle_connection_is_let_go_before_a_server_would_close_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: the pool kept idle connections for 15 s, and uvicorn (vLLM's server) closes
    them after 5 s: a POST sent as the server closed one failed (a network error in
    bench_vs_nginx's slow section). Idle connections now go after KEEPALIVE, under 5 s."""
    assert upstream.KEEPALIVE < 5.0
    monkeypatch.setattr(upstream, "KEEPALIVE", 0.2)
    async with scripted_server(answering(["again"])) as (url, seen):
        up = provider(url)
        assert await answer(up) == "again"
        assert await answer(up) == "again"  # at once: the same connection
        await asyncio.sleep(0.5)  # idle past KEEPALIVE: let go
        assert await answer(up) == "again"
        assert seen.connections == 2
        await up.aclose()


async def test_regression_a_cancel_during_the_tail_read_closes_the_connection() -> None:
    """A cancel while the body's end was read after [DONE] left the response neither
    released nor closed: its connection was left to the garbage collector."""
    gone = asyncio.Event()

    async def handler(peer: Peer) -> None:
        await peer.request()
        peer.write(CHUNKED_OK + b"".join(chunk(e) for e in openai_events(["done"])))
        await peer.writer.drain()  # and the chunked terminator never comes
        await peer.reader.read()  # EOF: the client closed the connection
        gone.set()

    async with scripted_server(handler) as (url, _):
        up = provider(url)
        finished = asyncio.Event()

        async def consume() -> None:
            async with aclosing(up.stream(REQUEST)) as deltas:
                async for delta in deltas:
                    if delta.finish_reason:
                        finished.set()  # the next step reads the tail

        task = asyncio.create_task(consume())
        await asyncio.wait_for(finished.wait(), 5)
        await asyncio.sleep(0.02)  # inside the 0.1 s tail read
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.wait_for(gone.wait(), 5)
        await up.aclose()
