"""Abort an HTTP request at a chosen moment with a raw socket, and see when the upstream knew."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import orjson

from tests.realserver import MockUpstream


def open_request(
    url: str, path: str, body: dict[str, object], *, receive_buffer: int | None = None
) -> socket.socket:
    """Send a POST by hand. A small `receive_buffer` (set before connecting, so the TCP window
    is small from the start) makes a client that stops reading fill up quickly."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
    payload = orjson.dumps(body)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nAccept: text/event-stream\r\n\r\n"
    )
    sock.sendall(head.encode() + payload)
    return sock


def read_until(sock: socket.socket, marker: bytes, limit: int = 1 << 20) -> bytes:
    seen = b""
    while marker not in seen and len(seen) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        seen += chunk
    return seen


def upstream_gone_after(
    mock: MockUpstream, model: str, closed_at: float, timeout: float = 5.0
) -> float:
    """Seconds from `closed_at` until the mock saw its client (tokenrelay) leave for `model`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        mine = [e for e in mock.record() if e["model"] == model]
        if mine and mine[-1]["outcome"] == "client_gone":
            gone = mine[-1]["client_gone_at"]
            assert isinstance(gone, float)
            return gone - closed_at
        time.sleep(0.01)
    raise AssertionError(f"the upstream never saw the client leave: {mock.record()[-3:]}")


def open_get(url: str, path: str) -> socket.socket:
    """Send a GET by hand (the caller reads and closes)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
    return sock
