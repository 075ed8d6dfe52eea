"""Real services for tests: found on the machine, started on a free port, stopped after.

Without the binary a test skips with a message saying what to install; with CI=true a missing
service is a failure, never a skip (the test command installs it as root on Debian).
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.realserver import free_port


def find_binary(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )


def require_binary(name: str, package: str) -> str:
    path = find_binary(name)
    if path:
        return path
    message = f"{name} is not installed (Debian: apt-get install {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must run this test")
    pytest.skip(message)


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )


def _wait_until_ready(
    process: subprocess.Popen[bytes], ready: Callable[[], bool], failure: Callable[[], str]
) -> None:
    """Poll `ready()` (OSError counts as not yet) for 10 s; raise `failure()` if it never is."""
    deadline = time.monotonic() + 10
    while True:
        try:
            if ready():
                return
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(failure())
        time.sleep(0.05)


def _answers_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")


def _accepts(port: int) -> bool:
    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    return True


@contextmanager
def redis_server(tmp_path: Path) -> Iterator[str]:
    """A throwaway redis-server (no persistence) on a free port; yields its URL."""
    binary = require_binary("redis-server", "redis-server")
    port = free_port()
    process = _spawn(_redis_args(binary, port, tmp_path))
    try:
        _wait_until_ready(
            process, lambda: _answers_ping(port), lambda: "redis-server did not start"
        )
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def redis_cluster(tmp_path: Path, nodes: int = 3) -> Iterator[str]:
    """A throwaway Redis Cluster: `nodes` redis-server processes on loopback, every slot
    shared among them by `redis-cli --cluster create` (no replicas); yields one node's URL,
    from which a cluster client discovers the rest."""
    binary = require_binary("redis-server", "redis-server")
    cli = require_binary("redis-cli", "redis-tools")
    ports = [free_port() for _ in range(nodes)]
    processes = [_spawn(_cluster_node_args(binary, port, tmp_path)) for port in ports]
    try:
        for process, port in zip(processes, ports, strict=True):
            answers = functools.partial(_answers_ping, port)
            _wait_until_ready(process, answers, lambda: "redis-server did not start")
        addresses = [f"127.0.0.1:{port}" for port in ports]
        create = [
            cli,
            "--cluster",
            "create",
            *addresses,
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ]
        subprocess.run(create, check=True, capture_output=True, timeout=30)
        _wait_until_ready(
            processes[0],
            lambda: all(_cluster_ok(cli, port) for port in ports),
            lambda: "the redis cluster did not come up",
        )
        yield f"redis://127.0.0.1:{ports[0]}"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)


def _redis_args(binary: str, port: int, directory: Path, save: str = "") -> list[str]:
    """redis-server on loopback, its files in `directory`; `save`: its RDB rule ("": none)."""
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        save,
        "--appendonly",
        "no",
        "--dir",
        str(directory),
    ]


def _cluster_node_args(binary: str, port: int, tmp_path: Path) -> list[str]:
    directory = tmp_path / f"cluster-{port}"
    directory.mkdir()
    return [
        *_redis_args(binary, port, directory),
        "--cluster-enabled",
        "yes",
        "--cluster-port",  # its bus, where it would otherwise take port + 10000 (or fail)
        str(free_port()),
        "--cluster-config-file",
        str(directory / "nodes.conf"),
    ]


def _cluster_ok(cli: str, port: int) -> bool:
    info = subprocess.run(
        [cli, "-p", str(port), "cluster", "info"], capture_output=True, text=True, timeout=5
    ).stdout
    return "cluster_state:ok" in info


class RedisProcess:
    """A redis-server that a test can stop and start again on the same port: an outage.

    With `persist`, it saves to its directory when shut down and loads it again on start (a
    restart keeps the data); without, a restart comes back empty."""

    def __init__(self, tmp_path: Path, persist: bool) -> None:
        self.binary = require_binary("redis-server", "redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        save = "3600 1" if persist else ""
        self.args = _redis_args(self.binary, self.port, tmp_path, save)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = _spawn(self.args)
        _wait_until_ready(
            self.process, lambda: _answers_ping(self.port), lambda: "redis-server did not start"
        )

    def stop(self) -> None:
        """SHUTDOWN, which saves first when persisting; then the port refuses connections."""
        if self.process is None:
            return
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"SHUTDOWN\r\n")
            sock.recv(64)  # the server closes it as it goes
        self.process.wait(10)
        self.process = None


@contextmanager
def redis_process(tmp_path: Path, persist: bool = False) -> Iterator[RedisProcess]:
    redis = RedisProcess(tmp_path, persist)
    redis.start()
    try:
        yield redis
    finally:
        if redis.process is not None:
            redis.process.terminate()
            redis.process.wait(10)


# nginx run by a test, as whoever runs the tests, with its files in `dir`; `{http}` is the
# http block's own content.
NGINX_MAIN = """\
{user}worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{http}
}}
"""

NGINX_CONF = NGINX_MAIN.replace(
    "{http}",
    """\
    upstream backend {{ server {upstream}; keepalive 1024; }}
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            {buffering}
            proxy_read_timeout 600s;
        }}
    }}""",
)


@contextmanager
def nginx_proxy(
    tmp_path: Path, upstream_url: str, *, buffered: bool = False, binary: str | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """nginx (one worker) proxying to `upstream_url` with `proxy_buffering off`, as SSE needs;
    yields its URL and the master process.

    `buffered=True` is a common misconfiguration instead: nginx's default `proxy_buffering on`
    with gzip for text/event-stream, which holds a stream and delivers it all at the end.
    """
    binary = binary or require_binary("nginx", "nginx")
    port = free_port()
    directory = tmp_path / f"nginx-{port}"
    directory.mkdir()
    upstream = upstream_url.removeprefix("http://").rstrip("/")
    conf = directory / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            user="user root;\n" if os.geteuid() == 0 else "",  # workers must reach tmp_path
            dir=directory,
            upstream=upstream,
            port=port,
            buffering=(
                "proxy_buffering on; gzip on; gzip_types text/event-stream; gzip_min_length 0;"
                if buffered
                else "proxy_buffering off;"
            ),
        )
    )
    error_log = directory / "error.log"
    process = _spawn([binary, "-c", str(conf), "-p", str(directory), "-e", str(error_log)])
    try:
        _wait_until_ready(
            process,
            lambda: _accepts(port),
            lambda: f"nginx did not start:\n{error_log.read_text(errors='replace')}",
        )
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.terminate()
        process.wait(10)


SHIPPED_NGINX = Path(__file__).resolve().parents[1] / "deploy" / "nginx.conf"


@contextmanager
def shipped_nginx(
    tmp_path: Path, replica_urls: list[str]
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """deploy/nginx.conf as shipped, its two replicas and its port the only changes, in front
    of `replica_urls`; yields its URL and the master process."""
    binary = require_binary("nginx", "nginx")
    port = free_port()
    site = SHIPPED_NGINX.read_text()
    for placeholder, url in zip(("relay-a:8000", "relay-b:8000"), replica_urls, strict=True):
        site = site.replace(placeholder, url.removeprefix("http://"))
    site = site.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    directory = tmp_path / f"nginx-{port}"
    directory.mkdir()
    (directory / "site.conf").write_text(site)
    main = NGINX_MAIN.replace("{http}", "    include {site};").format(
        user="user root;\n" if os.geteuid() == 0 else "",  # workers must reach tmp_path
        dir=directory,
        site=directory / "site.conf",
    )
    (directory / "nginx.conf").write_text(main)
    process = _spawn([binary, "-c", str(directory / "nginx.conf"), "-p", str(directory)])
    try:
        _wait_until_ready(
            process,
            lambda: _accepts(port),
            lambda: (directory / "error.log").read_text(errors="replace"),
        )
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.terminate()
        process.wait(10)
