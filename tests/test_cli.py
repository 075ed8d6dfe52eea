"""`tokenrelay chat` against a real server: it streams, and Ctrl-C cancels on the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realserver import RealServer, real_server
from tokenrelay import __version__
from tokenrelay.providers.sim_agent import compose_reasoning
from tokenrelay.providers.sim_text import compose_answer

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    config = "[sim]\nttft = 0.05\ntokens_per_second = 200.0\n"
    with real_server(tmp_path_factory.mktemp("cli"), config) as running:
        yield running


def _chat(server: RealServer, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tokenrelay", "chat", *args, "--url", server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def test_chat_prints_the_answer_and_stats(server: RealServer) -> None:
    out, _ = _chat(server, "Explain TCP handshakes", "--model", "sim/fast").communicate(timeout=30)
    assert compose_answer("Explain TCP handshakes").splitlines()[0] in out
    assert "tokens" in out
    assert "tok/s" in out


def test_chat_prints_reasoning_apart_from_the_answer(server: RealServer) -> None:
    question = "Explain TCP handshakes"
    out, _ = _chat(server, question, "--model", "sim/fast+think").communicate(timeout=30)
    reasoning = compose_reasoning(question)
    answer = compose_answer(question).splitlines()[0]
    assert f"{reasoning}\n\n{answer}" in out


def test_piped_chat_keeps_reasoning_out_of_stdout(server: RealServer) -> None:
    question = "Explain TCP handshakes"
    command = [sys.executable, "-m", "tokenrelay", "chat", question, "--model", "sim/fast+think"]
    process = subprocess.run(
        [*command, "--url", server.url],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=30,
    )
    assert process.stdout.startswith(compose_answer(question).splitlines()[0])
    assert compose_reasoning(question) in process.stderr
    assert compose_reasoning(question)[:40] not in process.stdout


def test_piped_chat_gives_the_answer_alone_on_stdout(server: RealServer) -> None:
    """`tokenrelay chat ... | cat` gives the answer as it came, ended by a newline; the stats
    line goes to stderr."""
    question = "Write python code to compare TCP handshakes"
    process = subprocess.run(
        [sys.executable, "-m", "tokenrelay", "chat", question, "--url", server.url],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=30,
    )
    assert process.returncode == 0
    assert process.stdout == compose_answer(question) + "\n"  # the markdown, unrendered
    assert "tok/s" in process.stderr


def test_chat_reports_errors_mid_stream(server: RealServer) -> None:
    process = _chat(server, "x", "--model", "sim/fast+error-after-3")
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "api_error" in out


def test_chat_reports_bad_model(server: RealServer) -> None:
    process = _chat(server, "x", "--model", "nope/x")
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "404" in out
    assert "sim/default" in out


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenrelay", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_chat_cannot_reach_server() -> None:
    process = _run_cli("chat", "x", "--url", "http://127.0.0.1:9")
    assert process.returncode == 1
    assert "cannot reach" in process.stderr  # piped: stdout is for the answer alone
    assert process.stdout == ""


def test_ctrl_c_cancels_on_the_server(server: RealServer) -> None:
    process = _chat(server, "x", "--model", "sim/slow-start")
    server.wait_for("stream started", lambda: server.health()["active_streams"] == 1, 15)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=15)
    assert process.returncode == 130
    assert "cancelled" in out
    assert "it had ended" not in out  # it was live: Ctrl-C cancelled it
    server.wait_for("stream cancelled", lambda: server.health()["active_streams"] == 0)


def test_config_errors_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nprot = 1\n")
    process = _run_cli("serve", "--config", str(bad))
    assert process.returncode == 2
    assert "prot" in process.stderr


def test_several_workers_without_redis_are_refused_with_the_way_out() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tokenrelay", "serve", "--workers", "2", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "TOKENRELAY_REDIS_URL"},
    )
    assert done.returncode == 2
    assert "--workers needs Redis" in done.stderr
    assert "TOKENRELAY_REDIS_URL" in done.stderr


def test_version() -> None:
    process = _run_cli("--version")
    assert process.returncode == 0
    assert process.stdout == f"tokenrelay {__version__}\n"


HELP_PAGES = [
    [],
    ["serve"],
    ["mock-upstream"],
    ["chat"],
    ["bench"],
    ["keys"],
    ["keys", "create"],
    ["keys", "list"],
    ["keys", "revoke"],
]


@pytest.mark.parametrize("command", HELP_PAGES, ids=lambda c: " ".join(c) or "tokenrelay")
def test_help_shows_options_without_type_labels(command: list[str]) -> None:
    """typer labels each option with its type (`<str>`, `<int range>`, `<bool>` even on
    flags); the help texts say what a value is."""
    process = subprocess.run(
        [sys.executable, "-m", "tokenrelay", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert process.returncode == 0
    options = [line for line in process.stdout.splitlines() if line.startswith("│ --")]
    assert any("--help" in line for line in options)
    assert [line for line in options if "<" in line] == []


def test_serve_help_names_the_defaults() -> None:
    process = subprocess.run(
        [sys.executable, "-m", "tokenrelay", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "200"},
    )
    lines = {line.split()[1]: line for line in process.stdout.splitlines() if "│ --" in line}
    assert "[default: the config's server.host, else 127.0.0.1]" in lines["--host"]
    assert "[default: the config's server.port, else 8000]" in lines["--port"]
    assert "[default: 1]" in lines["--workers"]
    assert "TOKENRELAY_LOG_FORMAT" in lines["--log-format"]
    assert "TOKENRELAY_CONFIG" in lines["--config"]
