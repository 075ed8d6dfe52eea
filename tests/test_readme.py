"""The README runs as written.

Its first two code blocks are the two set-up commands (CI runs the second). Each `curl` in its
shell blocks is run against a real `tokenrelay serve`, and must answer 2xx; the sample output
printed under it must still have the shape of what the server sends: for a stream, the same
event types at its start and end and the same fields in each, for JSON the same keys. Its
Python blocks (the official SDKs) run too. Only the README: docs/ may hold more examples.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.markdown_blocks import ROOT, Block, argv, code_blocks, shell_commands
from tests.realserver import RealServer, real_server
from tokenrelay.sse import SSEDecoder

README = ROOT / "README.md"
SETUP = (
    "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/tokenrelay serve",
    "./scripts/test",
)
MAX_LINES = 220
README_URL = "http://127.0.0.1:8000"  # what the examples name; the tests substitute theirs
CUT = "…"  # a sample's line that stands for the events left out
SAMPLE_INFOS = ("", "json", "text")  # the blocks that show output, not commands or config


@dataclass(frozen=True)
class Example:
    command: str
    sample: Block | None  # the output block printed right after the command's block
    line: int


def _readme_blocks() -> list[Block]:
    return code_blocks(README.read_text())


def curl_examples() -> list[Example]:
    blocks = _readme_blocks()
    examples: list[Example] = []
    for i, block in enumerate(blocks):
        if block.info != "sh":
            continue
        curls = [c for c in shell_commands(block.body) if c.startswith("curl ")]
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        sample = following if following and following.info in SAMPLE_INFOS else None
        if sample is not None:
            assert len(curls) <= 1, f"README line {block.line}: which curl is the sample for?"
        examples += [Example(curl, sample, block.line) for curl in curls]
    return examples


EXAMPLES = curl_examples()


def test_the_readme_starts_with_the_two_setup_commands() -> None:
    first, second = _readme_blocks()[:2]
    assert (first.info, first.body.strip()) == ("sh", SETUP[0])
    assert (second.info, second.body.strip()) == ("sh", SETUP[1])


def test_the_readme_stays_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_every_curl_in_the_readme_is_in_a_shell_block_and_has_a_sample() -> None:
    """A curl outside a ```sh block would escape the live test below."""
    for block in _readme_blocks():
        if block.info != "sh":
            assert not re.search(r"^\s*curl ", block.body, re.M), block.line
    assert len(EXAMPLES) >= 2
    for example in EXAMPLES:
        assert example.sample is not None, f"README line {example.line}: no sample output"
        assert README_URL in example.command, f"README line {example.line}: not {README_URL}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    # The sim without delays: the same events, sooner.
    config = "[sim]\nttft = 0.0\ntokens_per_second = 0.0\n"
    with real_server(tmp_path_factory.mktemp("readme"), config) as running:
        yield running


def _run_curl(command: str, url: str) -> tuple[int, int, bytes, str]:
    """The curl as written, against `url`; its exit code, HTTP status, body and stderr."""
    words = argv(command.replace(README_URL, url))
    status_line = "%{stderr}\nHTTP status %{http_code}\n"
    words[1:1] = ["--silent", "--show-error", "--max-time", "60", "--write-out", status_line]
    done = subprocess.run(words, capture_output=True, timeout=90, check=False)
    stderr = done.stderr.decode(errors="replace")
    found = re.search(r"HTTP status (\d{3})", stderr)
    return done.returncode, int(found.group(1)) if found else 0, done.stdout, stderr


def _kind(data: str) -> str:
    """An SSE event's kind: tokenrelay's `type`, or an OpenAI chunk's `object`, or [DONE]."""
    if data == "[DONE]":
        return data
    payload = orjson.loads(data)
    return str(payload.get("type") or payload.get("object"))


def _sse_events(body: bytes) -> list[dict[str, Any]]:
    decoder = SSEDecoder()
    return [
        {"kind": _kind(e.data), "keys": _shape(_json_or_none(e.data))}
        for e in decoder.feed(body) + decoder.close()
    ]


def _json_or_none(data: str) -> Any:
    return None if data == "[DONE]" else orjson.loads(data)


def _shape(value: Any) -> Any:
    """Keys all the way down (a list by its first item); values do not count."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return None


def _sample_events(sample: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The sample's events before the cut and after it (all of them before, if uncut)."""
    head: list[dict[str, Any]] = []
    tail: list[dict[str, Any]] = []
    current = head
    for line in sample.splitlines():
        if line.strip() == CUT:
            assert current is head, "a sample is cut once"
            current = tail
        elif line.startswith("data: "):
            data = line[len("data: ") :]
            current.append({"kind": _kind(data), "keys": _shape(_json_or_none(data))})
    return head, tail


def _runs(kinds: list[str]) -> list[str]:
    return [kind for kind, _ in groupby(kinds)]


def _check_stream(sample: str, body: bytes, where: str) -> None:
    real = _sse_events(body)
    head, tail = _sample_events(sample)
    assert head, f"{where}: the sample shows no events"
    kinds = [e["kind"] for e in real]
    sample_kinds = [e["kind"] for e in head + tail]
    assert _runs(kinds) == _runs(sample_kinds), f"{where}: {_runs(kinds)} now"
    assert real[: len(head)] == head, f"{where}: the sample's first events drifted"
    if tail:
        assert real[-len(tail) :] == tail, f"{where}: the sample's last events drifted"


def _check_json(sample: str, body: bytes, where: str) -> None:
    real, shown = orjson.loads(body), orjson.loads(sample)
    assert _shape(real) == _shape(shown), f"{where}: keys now {_shape(real)}"


@pytest.mark.server
@pytest.mark.parametrize("example", EXAMPLES, ids=[f"line{e.line}" for e in EXAMPLES])
def test_each_readme_curl_answers_as_its_sample_shows(server: RealServer, example: Example) -> None:
    where = f"README line {example.line}"
    code, status, body, stderr = _run_curl(example.command, server.url)
    assert code == 0, f"{where}: curl exited {code}: {stderr}"
    assert 200 <= status < 300, f"{where}: HTTP {status}: {body[:500]!r}"
    assert example.sample is not None
    if body.lstrip().startswith(b"{"):
        _check_json(example.sample.body, body, where)
    else:
        _check_stream(example.sample.body, body, where)


def _python_blocks() -> list[Block]:
    return [b for b in _readme_blocks() if b.info == "python"]


@pytest.mark.server
@pytest.mark.parametrize("block", _python_blocks(), ids=lambda b: f"line{b.line}")
def test_each_readme_python_example_runs(server: RealServer, block: Block, tmp_path: Path) -> None:
    """The SDK snippets, as written but for the address (the SDKs are test dependencies)."""
    assert README_URL in block.body
    script = tmp_path / "example.py"
    script.write_text(block.body.replace(README_URL, server.url))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=90, check=False
    )
    assert done.returncode == 0, f"README line {block.line}:\n{done.stderr}"
    assert "TCP" in done.stdout, done.stdout  # the sim's answer to the README's question
