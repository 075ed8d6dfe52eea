"""A client that reads nothing never slows the producer, is dropped, resumes, loses nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.abort import open_request, read_until
from tests.conftest import sse_events
from tests.realserver import RealServer, real_server

pytestmark = pytest.mark.server

# 5,000 tokens is the case (~400 KB, which the kernel's loopback buffers, up to 4 MiB,
# can swallow whole); 80,000 (~6.8 MB on the wire) is sure to back up and get the client dropped.
SIZES = [5000, 80_000]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    config = "[server]\nmax_tokens_limit = 100000\n[streams]\nsend_timeout = 1.0\n"
    with real_server(tmp_path_factory.mktemp("backpressure"), config) as running:
        yield running


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("tokens", SIZES)
def test_stalled_reader_then_resumes_every_token(server: RealServer, tokens: int) -> None:
    rss_before = _rss_kib(server.process.pid)
    body = {"message": "x", "model": "sim/fast+endless", "max_tokens": tokens}
    sock = open_request(server.url, "/api/chat/stream", body, receive_buffer=4096)
    head = read_until(sock, b"\r\n\r\n")
    stream_id = next(
        line.split(b":", 1)[1].strip().decode()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"x-stream-id")
    )
    # Read nothing more. The producer must finish anyway: it never waits for this client.
    server.wait_for("generation done", lambda: server.health()["active_streams"] == 0, 20)
    time.sleep(1.5)  # past send_timeout: the server gives up on this socket
    rss_during = _rss_kib(server.process.pid)
    if tokens == max(SIZES):  # dropped: the server's end of the socket is gone, queue and all
        client_port = sock.getsockname()[1]
        server.wait_for("socket aborted", lambda: not _established(server, client_port), 5)
    received = head.split(b"\r\n\r\n", 1)[1]
    sock.settimeout(5)
    try:
        while chunk := sock.recv(1 << 16):  # what was already in flight, then EOF
            received += chunk
    except OSError:
        pass
    sock.close()
    partial = sse_events(_dechunk(received))
    last_id = partial[-1]["_id"] if partial else f"{stream_id}:0"
    resumed = httpx.get(
        f"{server.url}/api/streams/{stream_id}", headers={"last-event-id": last_id}, timeout=30
    )
    rest = sse_events(resumed.content)
    events = partial + rest
    assert [e["_id"] for e in events] == [f"{stream_id}:{i}" for i in range(1, len(events) + 1)]
    assert sum(e["type"] == "token" for e in events) == tokens
    assert events[-1]["type"] == "done"
    # The log holds the answer (~45 bytes a token); nothing else may grow with it.
    assert rss_during - rss_before < 64 * 1024, "server memory grew past the log's bounds"
    if tokens == max(SIZES):
        assert len(rest) > 0, "the stalled socket should have been dropped before the end"
        assert f"stream {stream_id}: client did not drain in time" in server.log()
        assert "without completing response" not in server.log()  # expected, not an error


def _established(server: RealServer, client_port: int) -> bool:
    """Whether the server holds an ESTABLISHED TCP connection to `client_port` (/proc/net/tcp:
    local and remote addresses in hex, state 01)."""
    server_port = int(server.url.rsplit(":", 1)[1])
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if state != "01":
            continue
        if (
            int(local.split(":")[1], 16) == server_port
            and int(remote.split(":")[1], 16) == client_port
        ):
            return True
    return False


def _dechunk(raw: bytes) -> bytes:
    """The payload of a chunked HTTP body, as far as it got (the connection was cut)."""
    out, rest = b"", raw
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break
        try:
            size = int(size_line, 16)
        except ValueError:
            break
        if size == 0:
            break
        chunk = rest[:size]
        out += chunk
        if len(chunk) < size:
            break  # cut mid-chunk: keep what came, SSE decoding drops the incomplete event
        rest = rest[size + 2 :]
    return out
