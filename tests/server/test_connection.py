"""What a slow or hostile connection can hold, against a real `tokenrelay serve` (#10).

Raw sockets, as an attacker writes them: half-sent heads, stalled bodies, huge and countless
headers, bytes no parser accepts, more connections than the server takes.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import orjson
import pytest

from tests.realserver import RealServer, real_server

pytestmark = pytest.mark.server

CONFIG = """
[server]
head_timeout = 0.5
body_timeout = 0.5
keep_alive_timeout = 1
max_connections = 40
max_head_bytes = 8192
max_headers = 20
max_body_bytes = 65536
max_body_bytes_v1 = 65536
[sim]
ttft = 0.0
tokens_per_second = 20.0
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    with real_server(tmp_path_factory.mktemp("connection"), CONFIG) as running:
        yield running


def _connect(server: RealServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def _answer(sock: socket.socket) -> tuple[int, dict[str, object], bytes]:
    """Read until the server closes: the status, the JSON error, the raw response."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower()
    return status, orjson.loads(body)["error"], head


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes `sock` within `within` seconds (reading what it still sends)."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if sock.recv(65536) == b"":
                return True
        except ConnectionResetError:  # closed with our bytes unread: the kernel resets
            return True
        except TimeoutError:
            return False
    return False


def test_a_connection_that_sends_nothing_is_answered_408_and_closed(server: RealServer) -> None:
    with _connect(server) as sock:
        started = time.monotonic()
        status, error, _ = _answer(sock)
    assert status == 408
    assert error["type"] == "request_timeout"
    assert time.monotonic() - started < 4


def test_a_half_sent_head_is_answered_408(server: RealServer) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        for _ in range(3):  # trickling keeps nothing alive
            time.sleep(0.2)
            sock.sendall(b"a")
        status, _, _ = _answer(sock)
    assert status == 408


def test_a_body_that_stops_is_quietly_answered_408(server: RealServer) -> None:
    with _connect(server) as sock:
        sock.sendall(
            b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"message": '
        )
        status, error, _ = _answer(sock)
    assert status == 408
    assert error["type"] == "request_timeout"
    time.sleep(0.2)  # the app's side of it: it saw its client go
    log = server.log()
    assert "ClientDisconnect" not in log  # a client that leaves mid-body is no error
    assert "Exception in ASGI application" not in log


def test_an_idle_keep_alive_connection_is_closed(server: RealServer) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        assert _closed_by_server(sock, within=4)


def test_a_huge_header_is_refused_431_before_it_is_buffered(server: RealServer) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(64):  # 4 MB offered; the server stops reading at 8 KiB
                sock.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, error, _ = _answer(sock)
    assert status == 431
    assert error["type"] == "headers_too_large"


def test_too_many_headers_are_refused_431(server: RealServer) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(50))
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        status, _, _ = _answer(sock)
    assert status == 431


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        b"GET /healthz?q=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["header", "url"],
)
def test_a_head_that_arrives_whole_but_too_large_is_refused(
    server: RealServer, head: bytes
) -> None:
    with _connect(server) as sock:
        sock.sendall(head)
        status, _, _ = _answer(sock)
    assert status == 431


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\rb\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
    ids=["nul", "bare-cr", "garbage"],
)
def test_what_the_parser_cannot_read_is_a_json_400(
    server: RealServer, request_bytes: bytes
) -> None:
    with _connect(server) as sock:
        sock.sendall(request_bytes)
        status, error, _ = _answer(sock)
    assert status == 400
    assert error["type"] == "invalid_http"


def test_connections_beyond_the_cap_get_503_and_service_goes_on(server: RealServer) -> None:
    held = [_connect(server) for _ in range(40)]
    try:
        time.sleep(0.1)  # each is accepted and counted
        with _connect(server) as extra:
            status, error, head = _answer(extra)
        assert status == 503
        assert error["type"] == "too_many_connections"
        assert b"retry-after: 1" in head.lower()
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)  # their closes reach the server
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_a_normal_request_still_streams(server: RealServer) -> None:
    """Timers are for reading requests: a stream longer than every timeout is not cut."""
    import httpx

    body = {"model": "sim/default", "message": "Explain TCP handshakes", "max_tokens": 40}
    with httpx.stream("POST", f"{server.url}/api/chat/stream", json=body, timeout=10) as r:
        text = "".join(r.iter_text())
    assert '"type":"done"' in text


def test_trickling_connections_past_the_descriptor_limit_do_not_stop_service(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The probe's attack, scaled: 300 trickling connections against 256 descriptors. The cap
    (the limit's share, less a reserve) answers the excess 503 at once and frees them, and the
    head timeout frees the rest; a client is answered throughout, and served after."""
    config = "[server]\nhead_timeout = 1.0\n"
    with real_server(tmp_path_factory.mktemp("nofile"), config, open_files=256) as server:
        held = []
        for _ in range(300):
            sock = _connect(server)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and nothing more
            held.append(sock)
        try:
            with _connect(server) as probe:  # answered now, not after the attack
                probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                probe.settimeout(2)
                assert probe.recv(65536).split(b" ")[1] in (b"200", b"503")
            time.sleep(1.5)  # the head timeout closes the trickling ones
            with _connect(server) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        finally:
            for sock in held:
                sock.close()
        assert "Too many open files" not in server.log()


def test_start_up_raises_the_open_file_limit_to_the_hard_one() -> None:
    import resource
    import subprocess
    import sys

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))

    script = (
        "import resource\n"
        "from tokenrelay.server.connection import raise_descriptor_limit, connections_fit\n"
        "print(raise_descriptor_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0],"
        " connections_fit())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        preexec_fn=low_soft_limit,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    assert out == ["1024", "1024", str((1024 - 64) // 2)]


def test_trailers_count_against_the_body_and_are_never_buffered_whole(server: RealServer) -> None:
    """A chunked body ends with `0\\r\\n`, and trailer fields may follow: a trailer that never
    ends grew memory without bound, past every head limit."""
    with _connect(server) as sock:
        sock.sendall(
            b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Trailer: "
        )
        cut = False
        try:
            for _ in range(256):  # 16 MiB offered; the cap is a little over 64 KiB
                sock.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            cut = True
        assert cut, "the server read a 16 MiB trailer"


def test_a_blank_line_after_a_response_does_not_hold_the_connection(server: RealServer) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.sendall(b"\r\n")  # skipped by the parser: no request begins
        assert _closed_by_server(sock, within=4)


def test_a_body_that_trickles_is_cut_once_it_falls_behind(server: RealServer) -> None:
    """Each byte within body_timeout of the last, but far below MIN_BODY_RATE overall."""
    with _connect(server) as sock:
        sock.sendall(
            b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        started = time.monotonic()
        try:
            while time.monotonic() - started < 5:
                time.sleep(0.3)
                sock.sendall(b" ")
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, _ = _answer(sock)
    assert status == 408
    assert time.monotonic() - started < 4


def test_a_refusal_never_lands_inside_a_streaming_answer(server: RealServer) -> None:
    """A pipelined request whose body stalls is cut, with no 408 spliced into the first
    answer's body."""
    body = b'{"model": "sim/default", "message": "Explain TCP handshakes", "max_tokens": 60}'
    first = (
        b"POST /api/chat/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    stalled = (
        b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    with _connect(server) as sock:
        sock.sendall(first + stalled)
        received = b""
        sock.settimeout(10)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert received.count(b"HTTP/1.1 ") == 1
    assert b"request_timeout" not in received


def test_refusals_are_counted_not_logged_one_by_one(server: RealServer) -> None:
    for _ in range(5):
        with _connect(server) as sock:
            sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            _answer(sock)
    log = server.log()
    assert "Invalid HTTP request received" not in log
    assert "Traceback" not in log
