"""The lean upstream transport against scripted servers: what real upstreams and networks do.

The provider contract suite already runs both transports against the real mock upstream;
these tests cover what the mock cannot be made to do: close a kept-alive connection under
the client, answer with garbage, end a body by closing, speak TLS, or outrun the reader.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from contextvars import ContextVar
from pathlib import Path

import orjson
import pytest
import trustme

from tokenrelay.errors import GenerationError
from tokenrelay.providers.base import Delta, GenerationRequest, Message
from tokenrelay.providers.http1 import Http1Connection, Http1Events
from tokenrelay.providers.openai import OpenAIProvider
from tokenrelay.providers.upstream import (
    TRANSPORT_FAILURES,
    Transport,
    UpstreamClient,
    UpstreamConfig,
    proxied,
)
from tokenrelay.providers.upstream_httpx import HttpxEvents
from tokenrelay.sse import ServerSentEvent

pytestmark = pytest.mark.anyio

Handler = Callable[["Peer"], Awaitable[None]]


def sse_response(events: list[str]) -> bytes:
    body = b"".join(f"data: {e}\n\n".encode() for e in events)
    head = f"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


CHUNKED_OK = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """One piece of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class Peer:
    """The server's side of one connection, recording each request it reads."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: list[bytes]
    ) -> None:
        self.reader, self.writer, self._seen = reader, writer, seen

    async def request(self) -> bytes:
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        request = head + await self.reader.readexactly(length)
        self._seen.append(request)
        return request

    def write(self, data: bytes) -> None:
        self.writer.write(data)


@asynccontextmanager
async def scripted_server(
    handler: Handler, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A server running `handler` per connection; yields its URL and the requests it read."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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


def client(url: str, max_connections: int = 100, transport: Transport = "auto") -> UpstreamClient:
    headers = {"authorization": "Bearer sk-x"}
    config = UpstreamConfig(
        "up", url, headers, max_connections=max_connections, transport=transport
    )
    return UpstreamClient(config)


async def events(up: UpstreamClient) -> AsyncGenerator[ServerSentEvent, None]:
    """What UpstreamProvider.stream does with a request, short of the wire decoding."""
    batches, call = up.request("/chat/completions", {"model": "m"})
    try:
        async with aclosing(batches):
            async for batch in batches:
                for event in batch:
                    yield event
    except TRANSPORT_FAILURES as exc:
        raise call.failure(exc) from None


async def collect(up: UpstreamClient) -> list[str]:
    async with aclosing(events(up)) as stream:
        return [event.data async for event in stream]


def pool_of(up: UpstreamClient) -> Http1Events:
    assert isinstance(up.transport, Http1Events)
    return up.transport


async def test_request_is_a_plain_post_with_host_and_key_and_body() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        peer.write(sse_response(["one"]))

    async with scripted_server(handler) as (url, seen):
        up = client(url)
        assert await collect(up) == ["one"]
        await up.aclose()
    head, _, body = seen[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/chat/completions HTTP/1.1"
    assert f"Host: {url.split('/')[2]}" in lines
    assert "authorization: Bearer sk-x" in lines
    assert "Accept: text/event-stream" in lines
    assert body == b'{"model":"m"}'


async def test_connections_are_kept_alive_and_reused() -> None:
    async def handler(peer: Peer) -> None:
        while True:
            await peer.request()
            peer.write(sse_response(["a", "b"]))

    async with scripted_server(handler) as (url, seen):
        up = client(url)
        for _ in range(3):
            assert await collect(up) == ["a", "b"]
        assert len(seen) == 3
        assert pool_of(up).pool.opened == 1
        await up.aclose()


async def test_a_kept_alive_connection_the_server_closed_is_retried_once_on_a_new_one() -> None:
    """The keep-alive race: the server answers, then closes without saying so beforehand."""

    async def handler(peer: Peer) -> None:
        await peer.request()
        peer.write(sse_response(["fresh"]))  # keep-alive promised, then the server closes
        await peer.writer.drain()

    async with scripted_server(handler) as (url, seen):
        up = client(url)
        assert await collect(up) == ["fresh"]
        # At once: the server's close has not reached the idle connection yet, so the
        # request goes out on it and meets the close.
        assert await collect(up) == ["fresh"]
        assert len(seen) == 2
        assert pool_of(up).pool.opened == 2
        await up.aclose()


async def test_a_new_connection_that_closes_before_answering_is_a_network_error() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()  # and close without a word: never retried (it may have run)

    async with scripted_server(handler) as (url, seen):
        up = client(url)
        with pytest.raises(GenerationError) as caught:
            await collect(up)
        assert caught.value.error_type == "network_error"
        assert len(seen) == 1
        await up.aclose()


async def test_a_refused_connection_is_a_network_error_without_the_address() -> None:
    async def handler(peer: Peer) -> None:
        pass

    async with scripted_server(handler) as (url, _):
        pass  # closed now: its port refuses
    up = client(url)
    with pytest.raises(GenerationError) as caught:
        await collect(up)
    assert caught.value.error_type == "network_error"
    assert "localhost" not in str(caught.value)
    assert url.split(":")[-1].split("/")[0] not in str(caught.value)
    await up.aclose()


@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", b"SMTP ready\r\n\r\n"],
    ids=["bad-length", "not-http"],
)
async def test_a_malformed_answer_is_a_network_error(answer: bytes) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        peer.write(answer)
        await asyncio.sleep(1)

    async with scripted_server(handler) as (url, _):
        up = client(url)
        with pytest.raises(GenerationError) as caught:
            await collect(up)
        assert caught.value.error_type == "network_error"
        await up.aclose()


async def test_a_body_ended_by_closing_the_connection_is_complete() -> None:
    """No content-length, not chunked: HTTP/1.0 style, the close marks the end."""

    async def handler(peer: Peer) -> None:
        await peer.request()
        peer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")
        for word in ("split", "by", "close"):
            peer.write(f"data: {word}\n\n".encode())
            await peer.writer.drain()
            await asyncio.sleep(0.01)

    async with scripted_server(handler) as (url, _):
        up = client(url)
        assert await collect(up) == ["split", "by", "close"]
        assert not pool_of(up).pool._idle  # not reusable: it is closed
        await up.aclose()


async def test_chunked_events_split_at_every_byte_come_out_whole() -> None:
    events = ["héllo", '{"a": 1}', "日本語"]
    body = b"".join(f"data: {e}\n\n".encode() for e in events)

    async def handler(peer: Peer) -> None:
        await peer.request()
        peer.write(CHUNKED_OK)
        for byte in body:
            peer.write(chunk(bytes([byte])))
            await peer.writer.drain()
        peer.write(b"0\r\n\r\n")
        await asyncio.sleep(1)

    async with scripted_server(handler) as (url, _):
        up = client(url)
        assert await collect(up) == events
        await up.aclose()


async def test_an_error_status_reads_a_capped_body_and_keeps_no_message() -> None:
    body = b'{"error": {"type": "rate_limit_error", "message": "SECRET ' + b"x" * 200_000 + b'"}}'

    async def handler(peer: Peer) -> None:
        await peer.request()
        head = f"HTTP/1.1 429 Too Many\r\nretry-after: 2\r\ncontent-length: {len(body)}\r\n\r\n"
        peer.write(head.encode() + body)
        await peer.writer.drain()

    async with scripted_server(handler) as (url, _):
        up = client(url)
        with pytest.raises(GenerationError) as caught:
            await collect(up)
        assert caught.value.error_type == "rate_limit"
        assert caught.value.retry_after == 2.0
        assert "SECRET" not in str(caught.value)
        assert not pool_of(up).pool._idle  # the rest of the body was not drained
        await up.aclose()


@pytest.fixture
def connections_made(monkeypatch: pytest.MonkeyPatch) -> list[Http1Connection]:
    """Every Http1Connection made in the test, to look inside the one it is reading."""
    made: list[Http1Connection] = []
    connection_made = Http1Connection.connection_made

    def recording(self: Http1Connection, transport: asyncio.BaseTransport) -> None:
        made.append(self)
        connection_made(self, transport)

    monkeypatch.setattr(Http1Connection, "connection_made", recording)
    return made


def answering_at_once(events: list[str]) -> Handler:
    """A server that writes the whole answer at once, then holds the connection open."""

    async def handler(peer: Peer) -> None:
        await peer.request()
        peer.write(sse_response(events))
        await peer.writer.drain()
        await asyncio.sleep(2)

    return handler


async def test_a_consumer_that_falls_behind_pauses_reading_and_loses_nothing(
    connections_made: list[Http1Connection],
) -> None:
    # 2 MB: more than one read holds, so reads continue while the consumer sleeps.
    sent = [f"{i:06d} " + "x" * 100 for i in range(20_000)]
    async with scripted_server(answering_at_once(sent)) as (url, _):
        up = client(url)
        seen: list[str] = []
        paused = False
        async with aclosing(events(up)) as stream:
            async for event in stream:
                seen.append(event.data)
                if len(seen) == 1:
                    await asyncio.sleep(0.3)  # slow consumer: the reads pile up, then stop
                    paused = any(c._paused for c in connections_made)
        assert seen == sent
        assert paused
        await up.aclose()


async def test_the_pool_cap_waits_then_times_out_as_an_upstream_timeout() -> None:
    release = asyncio.Event()

    async def handler(peer: Peer) -> None:
        await peer.request()
        peer.write(CHUNKED_OK + chunk(b"data: held\n\n"))
        await peer.writer.drain()
        await release.wait()

    async with scripted_server(handler) as (url, _):
        up = client(url, max_connections=1)
        pool_of(up).pool._pool_timeout = 0.2
        async with aclosing(events(up)) as first:
            assert (await anext(first)).data == "held"
            with pytest.raises(GenerationError) as caught:
                await collect(up)
            assert caught.value.error_type == "timeout"
        release.set()
        await up.aclose()


async def test_cancelling_mid_stream_aborts_the_connection() -> None:
    gone = asyncio.Event()

    async def handler(peer: Peer) -> None:
        await peer.request()
        peer.write(CHUNKED_OK + chunk(b"data: tick\n\n"))
        await peer.writer.drain()
        await peer.reader.read()  # EOF: the client left
        gone.set()

    async with scripted_server(handler) as (url, _):
        up = client(url)
        started = asyncio.Event()

        async def consume() -> None:
            async with aclosing(events(up)) as stream:
                async for _ in stream:
                    started.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.wait_for(gone.wait(), 5)
        assert not pool_of(up).pool._idle
        await up.aclose()


async def test_https_upstreams_verify_the_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)

    async def handler(peer: Peer) -> None:
        await peer.request()
        peer.write(sse_response(["secure"]))
        await peer.writer.drain()

    async with scripted_server(handler, server_context) as (url, _):
        # Not trusted: certifi's bundle does not know this authority.
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        untrusted = client(url)
        with pytest.raises(GenerationError) as caught:
            await collect(untrusted)
        assert caught.value.error_type == "network_error"
        await untrusted.aclose()
        # Trusted through SSL_CERT_FILE, as httpx and OpenSSL read it.
        bundle = tmp_path / "ca.pem"
        authority.cert_pem.write_to_path(str(bundle))
        monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
        trusted = client(url)
        assert await collect(trusted) == ["secure"]
        await trusted.aclose()


def test_header_values_with_line_breaks_are_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        UpstreamClient(UpstreamConfig("up", "http://127.0.0.1:1", {"x-api-key": "k\r\nx: y"}))


def test_proxied_upstreams_take_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    assert not proxied("https://api.openai.com/v1")
    assert isinstance(client("https://api.openai.com/v1").transport, Http1Events)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert proxied("https://api.openai.com/v1")
    assert not proxied("http://vllm.internal:8000/v1")  # only https is proxied
    assert not isinstance(client("https://api.openai.com/v1").transport, Http1Events)
    monkeypatch.setenv("NO_PROXY", "api.openai.com")
    assert not proxied("https://api.openai.com/v1")
    assert isinstance(client("http://x/v1", transport="httpx").transport, HttpxEvents)


def _openai_chunks(words: list[str]) -> list[bytes]:
    chunks = [
        orjson.dumps({"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]})
        for w in words
    ]
    chunks.append(orjson.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    return [b"data: " + c + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]


@pytest.mark.parametrize("consuming", ["pull", "push"])
@pytest.mark.parametrize("ending", ["late", "never"])
async def test_the_body_after_done_is_read_so_the_connection_is_reused(
    ending: str, consuming: str
) -> None:
    """OpenAI's [DONE] may come a packet before the chunked terminator. Reading that tail
    (briefly) keeps the connection: no new TCP and TLS handshake for the next stream."""

    async def handler(peer: Peer) -> None:
        while True:
            await peer.request()
            peer.write(CHUNKED_OK)
            for event in _openai_chunks(["Hello", " there"]):
                peer.write(chunk(event))
            await peer.writer.drain()
            if ending == "never":
                await asyncio.sleep(5)  # holds the body open: cut off after the grace
                return
            await asyncio.sleep(0.02)
            peer.write(b"0\r\n\r\n")

    async with scripted_server(handler) as (url, seen):
        provider = OpenAIProvider("up", url, None, [], transport="http1")
        request = GenerationRequest("m", (Message("user", "hi"),))
        for _ in range(2):
            started = time.monotonic()
            got: list[Delta] = []
            if consuming == "push":
                await provider.stream_into(request, got.append)
            else:
                async with aclosing(provider.stream(request)) as deltas:
                    got += [delta async for delta in deltas]
            assert "".join(delta.text for delta in got) == "Hello there"
            assert time.monotonic() - started < 1.0  # the grace is 0.1 s, never the 5 s
        transport = provider._client.transport
        assert isinstance(transport, Http1Events)
        assert transport.pool.opened == (1 if ending == "late" else 2)
        assert len(seen) == 2
        await provider.aclose()


async def test_events_read_before_pushing_starts_are_pushed_and_reading_resumes() -> None:
    """A burst can arrive between the response's head and the consumer starting to push:
    enough events to pause reading. Pushing must hand them over and resume the reads."""
    sent = [f"{i:06d} " + "x" * 100 for i in range(5_000)]
    async with scripted_server(answering_at_once(sent)) as (url, _):
        up = client(url)
        pool = pool_of(up)
        connection = await pool._open("/chat/completions", b"{}", lambda status: None)
        await asyncio.sleep(0.3)  # the reads pile up past the pause threshold, then stop
        assert connection._paused
        seen: list[str] = []

        def sink(batch: list[ServerSentEvent]) -> bool:
            seen.extend(event.data for event in batch)
            return False

        stopped = await asyncio.wait_for(connection.push(sink), 5)
        assert not stopped  # the body ended; the sink never asked to stop
        assert seen == sent
        pool.pool.release(connection)
        assert pool.pool._idle == [connection]  # read to its end: kept for reuse
        await up.aclose()


async def test_what_the_sink_raises_is_raised_and_the_connection_is_dropped() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        peer.write(CHUNKED_OK)
        for n in range(5):
            peer.write(chunk(b"data: %d\n\n" % n))
            await peer.writer.drain()
            await asyncio.sleep(0.01)
        await peer.reader.read()  # EOF: the client left

    class Refused(Exception):
        pass

    seen: list[str] = []

    def sink(batch: list[ServerSentEvent]) -> bool:
        for event in batch:
            if event.data == "2":
                raise Refused
            seen.append(event.data)
        return False

    async with scripted_server(handler) as (url, _):
        up = client(url)
        with pytest.raises(Refused):
            await asyncio.wait_for(up.push("/chat/completions", {"model": "m"}, sink), 5)
        assert seen == ["0", "1"]
        assert not pool_of(up).pool._idle  # aborted mid-body, never reused
        await up.aclose()


async def test_the_sink_runs_in_the_pushing_task_context_on_a_reused_connection() -> None:
    """Log lines carry the stream's ids from context variables. A read's callback runs in the
    context of whichever task opened the connection, so the sink is run in the pusher's."""
    owner: ContextVar[str] = ContextVar("owner", default="nobody")

    async def handler(peer: Peer) -> None:
        while True:
            await peer.request()
            peer.write(CHUNKED_OK)
            await peer.writer.drain()
            await asyncio.sleep(0.05)  # the events come in reads of their own, while pushing
            peer.write(chunk(b"data: a\n\n") + chunk(b"data: b\n\n") + b"0\r\n\r\n")
            await peer.writer.drain()

    async with scripted_server(handler) as (url, _):
        up = client(url)
        seen: list[str] = []

        def sink(batch: list[ServerSentEvent]) -> bool:
            seen.extend(owner.get() for _ in batch)
            return False

        async def push_as(name: str) -> None:
            owner.set(name)
            await up.push("/chat/completions", {"model": "m"}, sink)

        for name in ("first", "second"):
            await asyncio.create_task(push_as(name))
        assert pool_of(up).pool.opened == 1  # the second push reused the first's connection
        assert seen == ["first", "first", "second", "second"]
        await up.aclose()


class _Wire:
    """A transport that keeps what is written and does nothing else."""

    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def abort(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_a_read_queues_the_push_rather_than_running_the_sink_itself() -> None:
    """The sink's work (decode, log, write) runs as a queued loop callback, not inside the
    read: run there, every stream's tokens went into the loop's I/O phase, ahead of the steps
    a cancel takes, and the cancel lag's tail doubled (benchmarks/RESULTS.md)."""
    connection = Http1Connection()
    connection.connection_made(_Wire())  # type: ignore[arg-type]
    sending = asyncio.create_task(connection.send(b"POST / HTTP/1.1\r\n\r\n", 0))
    await asyncio.sleep(0)
    connection.data_received(CHUNKED_OK)
    await sending
    seen: list[str] = []

    def sink(batch: list[ServerSentEvent]) -> bool:
        seen.extend(event.data for event in batch)
        return False

    pushing = asyncio.create_task(connection.push(sink))
    await asyncio.sleep(0)
    connection.data_received(chunk(b"data: a\n\n") + chunk(b"data: b\n\n"))
    assert seen == []  # queued, not run by the read
    await asyncio.sleep(0)
    assert seen == ["a", "b"]
    connection.data_received(b"0\r\n\r\n")
    assert await asyncio.wait_for(pushing, 5) is False
