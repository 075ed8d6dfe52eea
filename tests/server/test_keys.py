"""API keys against a real `tokenrelay serve`: created with the CLI, used by the official SDKs,
owning their streams (#11)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.realserver import RealServer, real_server

pytestmark = pytest.mark.server

MESSAGES = [{"role": "user", "content": "Explain TCP handshakes"}]


def keys_command(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenrelay", "keys", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def create_key(config: Path, name: str, *options: str) -> str:
    done = keys_command(config, "create", name, *options)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]
    assert key.startswith("tr-")
    return key


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RealServer, Path]]:
    tmp = tmp_path_factory.mktemp("keys")
    config = f'[auth]\nkeys_file = "{tmp / "keys.json"}"\n[sim]\nttft = 0.0\n'
    with real_server(tmp, config) as running:
        yield running, tmp / "tokenrelay.toml"


@pytest.fixture(scope="module")
def server(setup: tuple[RealServer, Path]) -> RealServer:
    return setup[0]


@pytest.fixture(scope="module")
def alice(setup: tuple[RealServer, Path]) -> str:
    return create_key(setup[1], "alice")


@pytest.fixture(scope="module")
def bob(setup: tuple[RealServer, Path]) -> str:
    return create_key(setup[1], "bob", "--models", "sim/fast*")


def test_the_keys_file_is_private_and_holds_no_key(
    setup: tuple[RealServer, Path], alice: str
) -> None:
    keys_file = setup[1].parent / "keys.json"
    assert keys_file.stat().st_mode & 0o777 == 0o600
    assert alice not in keys_file.read_text()
    listed = keys_command(setup[1], "list").stdout
    assert "alice" in listed
    assert alice not in listed


def test_the_sdks_authenticate_with_a_key(server: RealServer, alice: str) -> None:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=alice, max_retries=0) as client:
        answer = client.chat.completions.create(model="sim/fast", messages=MESSAGES)  # type: ignore[arg-type]
        assert answer.choices[0].message.content
    with anthropic.Anthropic(base_url=server.url, api_key=alice, max_retries=0) as claude:
        message = claude.messages.create(model="sim/fast", max_tokens=50, messages=MESSAGES)  # type: ignore[arg-type]
        assert message.content


def test_no_key_or_a_wrong_one_is_a_401_in_each_dialect(server: RealServer, alice: str) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="tr-wrong", max_retries=0)
    with client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="sim/fast", messages=MESSAGES)  # type: ignore[arg-type]
    claude = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)
    with claude, pytest.raises(anthropic.AuthenticationError) as caught:
        claude.messages.create(model="sim/fast", max_tokens=50, messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    native = httpx.post(f"{server.url}/api/chat", json={"message": "hi"})
    assert native.status_code == 401
    assert native.json()["error"]["type"] == "unauthorized"
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # operations stay open
    assert "tr-wrong" not in server.log()


def test_a_model_outside_the_keys_globs_is_a_403(server: RealServer, bob: str) -> None:
    headers = {"authorization": f"Bearer {bob}"}
    allowed = httpx.post(
        f"{server.url}/api/chat", json={"message": "hi", "model": "sim/fast"}, headers=headers
    )
    assert allowed.status_code == 200
    refused = httpx.post(
        f"{server.url}/api/chat", json={"message": "hi", "model": "sim/default"}, headers=headers
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "model_not_allowed"


def test_another_keys_stream_does_not_exist(server: RealServer, alice: str, bob: str) -> None:
    mine = {"x-api-key": alice}
    body = {"message": "hi", "model": "sim/fast+endless"}
    with httpx.stream(
        "POST", f"{server.url}/api/chat/stream", json=body, headers=mine, timeout=10
    ) as r:
        stream_id = r.headers["x-stream-id"]
        theirs = {"x-api-key": bob}
        assert httpx.get(f"{server.url}/api/streams/{stream_id}", headers=theirs).status_code == 404
        assert (
            httpx.delete(f"{server.url}/api/streams/{stream_id}", headers=theirs).status_code == 404
        )
        cancel = httpx.delete(f"{server.url}/api/streams/{stream_id}", headers=mine)
        assert cancel.status_code == 202


def test_a_revoked_key_is_refused_at_once(setup: tuple[RealServer, Path]) -> None:
    server, config = setup
    carol = create_key(config, "carol")
    headers = {"authorization": f"Bearer {carol}"}
    assert (
        httpx.post(
            f"{server.url}/api/chat", json={"message": "hi", "model": "sim/fast"}, headers=headers
        ).status_code
        == 200
    )
    assert keys_command(config, "revoke", "carol").returncode == 0
    assert (
        httpx.post(
            f"{server.url}/api/chat", json={"message": "hi", "model": "sim/fast"}, headers=headers
        ).status_code
        == 401
    )
    for line in server.log().splitlines():
        assert carol not in line
