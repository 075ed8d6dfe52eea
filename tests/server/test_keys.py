"""API keys against a real `tokenrelay serve`: created with the CLI, used by the official SDKs,
owning their streams (#11)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
import redis as redis_client

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


def wait_for_a_slot(server: RealServer, headers: dict[str, str]) -> None:
    """Until the key is admitted again (a slot came back), for up to 5 s."""

    def admitted() -> bool:
        body = {"message": "hi", "model": "sim/fast"}
        return httpx.post(f"{server.url}/api/chat", json=body, headers=headers).status_code == 200

    server.wait_for("the slot back", admitted, 5)


def own_database(redis_url: str, number: int) -> str:
    """The session's redis-server, in a database of this test's own, emptied: a key made in
    the shared one would make every other test's replicas require keys."""
    url = redis_url.rsplit("/", 1)[0] + f"/{number}"
    with redis_client.Redis.from_url(url) as admin:
        admin.flushdb()
    return url


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
    body = {"message": "hi", "model": "sim/default+endless"}
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


def test_a_third_stream_over_max_concurrent_2_waits_for_a_slot(
    setup: tuple[RealServer, Path],
) -> None:
    server, config = setup
    dave = create_key(config, "dave", "--max-concurrent", "2", "--requests-per-minute", "100")
    headers = {"authorization": f"Bearer {dave}"}
    body = {"message": "hi", "model": "sim/default+endless"}
    url = f"{server.url}/api/chat/stream"
    with (
        httpx.stream("POST", url, json=body, headers=headers, timeout=10) as first,
        httpx.stream("POST", url, json=body, headers=headers, timeout=10) as second,
    ):
        assert first.status_code == second.status_code == 200
        third = httpx.post(url, json=body, headers=headers, timeout=10)
        assert third.status_code == 429
        assert third.json()["error"]["type"] == "key_limit"
        assert third.headers["retry-after"] == "1"
        assert third.headers["x-ratelimit-limit-requests"] == "100"
        assert int(third.headers["x-ratelimit-remaining-requests"]) == 98
        openai_dialect = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "sim/fast", "messages": MESSAGES},
            headers=headers,
        )
        assert openai_dialect.status_code == 429
        assert openai_dialect.json()["error"]["code"] == "key_limit"
        anthropic_dialect = httpx.post(
            f"{server.url}/v1/messages",
            json={"model": "sim/fast", "messages": MESSAGES, "max_tokens": 5},
            headers=headers,
        )
        assert anthropic_dialect.status_code == 429
        assert anthropic_dialect.headers["anthropic-ratelimit-requests-limit"] == "100"
        stream_id = first.headers["x-stream-id"]
        assert (
            httpx.delete(f"{server.url}/api/streams/{stream_id}", headers=headers).status_code
            == 202
        )
        wait_for_a_slot(server, headers)


def test_requests_per_minute(setup: tuple[RealServer, Path]) -> None:
    server, config = setup
    erin = create_key(config, "erin", "--requests-per-minute", "2")
    headers = {"x-api-key": erin}
    body = {"message": "hi", "model": "sim/fast"}
    for _ in range(2):
        assert httpx.post(f"{server.url}/api/chat", json=body, headers=headers).status_code == 200
    refused = httpx.post(f"{server.url}/api/chat", json=body, headers=headers)
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert 50 <= int(refused.headers["retry-after"]) <= 60


def test_limits_and_revocation_hold_across_two_replicas(tmp_path: Path, redis_url: str) -> None:
    """Two real replicas sharing redis-server: keys live in Redis, a slot taken on one counts
    on the other, and a revocation holds on both within a second."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    config = f'[redis]\nurl = "{own_database(redis_url, 5)}"\n[sim]\nttft = 0.0\n'
    with real_server(tmp_path / "a", config) as one, real_server(tmp_path / "b", config) as two:
        config_file = tmp_path / "a" / "tokenrelay.toml"
        frank = create_key(config_file, "frank", "--max-concurrent", "1")
        headers = {"authorization": f"Bearer {frank}"}
        body = {"message": "hi", "model": "sim/default+endless"}
        with httpx.stream(
            "POST", f"{one.url}/api/chat/stream", json=body, headers=headers, timeout=10
        ) as held:
            assert held.status_code == 200
            other = httpx.post(f"{two.url}/api/chat/stream", json=body, headers=headers)
            assert other.status_code == 429  # the slot is taken, on the other replica
        wait_for_a_slot(two, headers)
        # Requests and tokens per minute count across replicas too (one window in Redis).
        lena = create_key(config_file, "lena", "--requests-per-minute", "2")
        quick = {"message": "hi", "model": "sim/fast"}
        answers = [
            httpx.post(f"{replica.url}/api/chat", json=quick, headers={"x-api-key": lena})
            for replica in (one, two, one)
        ]
        assert [r.status_code for r in answers] == [200, 200, 429]
        assert 50 <= int(answers[2].headers["retry-after"]) <= 60
        assert keys_command(config_file, "revoke", "frank").returncode == 0
        for replica in (one, two):
            refused = httpx.post(
                f"{replica.url}/api/chat",
                json={"message": "hi", "model": "sim/fast"},
                headers=headers,
            )
            assert refused.status_code == 401


def test_eventsource_streams_with_a_token_bound_to_the_key(
    setup: tuple[RealServer, Path], alice: str
) -> None:
    server = setup[0]
    issued = httpx.post(f"{server.url}/api/stream-tokens", headers={"x-api-key": alice})
    assert issued.status_code == 200
    token = issued.json()["token"]
    assert token.startswith("trs_")
    assert issued.json()["expires_in"] == 60
    url = f"{server.url}/api/chat/stream"
    ok = httpx.get(url, params={"message": "hi", "model": "sim/fast", "token": token})
    assert ok.status_code == 200
    assert '"type":"done"' in ok.text
    stream_id = ok.headers["x-stream-id"]
    replay = httpx.get(f"{server.url}/api/streams/{stream_id}", params={"token": token})
    assert replay.status_code == 200  # the same key's stream, read with its token
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert httpx.get(url, params={"message": "hi", "token": forged}).status_code == 401
    # Only where EventSource needs it: a POST with a token in the query is not let in.
    posted = httpx.post(f"{server.url}/api/chat", params={"token": token}, json={"message": "hi"})
    assert posted.status_code == 401
    assert token not in server.log()


def test_a_token_dies_with_its_key(setup: tuple[RealServer, Path]) -> None:
    server, config = setup
    grace = create_key(config, "grace")
    token = httpx.post(f"{server.url}/api/stream-tokens", headers={"x-api-key": grace}).json()[
        "token"
    ]
    assert keys_command(config, "revoke", "grace").returncode == 0
    refused = httpx.get(
        f"{server.url}/api/chat/stream",
        params={"message": "hi", "model": "sim/fast", "token": token},
    )
    assert refused.status_code == 401


def test_usage_by_key_in_the_api_metrics_and_logs(setup: tuple[RealServer, Path]) -> None:
    server, config = setup
    heidi = create_key(config, "heidi")
    headers = {"x-api-key": heidi}
    for _ in range(2):
        r = httpx.post(
            f"{server.url}/api/chat", json={"message": "hi", "model": "sim/fast"}, headers=headers
        )
        assert r.status_code == 200
    output = r.json()["usage"]["completion_tokens"]

    def booked() -> bool:
        usage = httpx.get(f"{server.url}/api/usage", headers=headers).json()
        return bool(usage["models"].get("sim/fast", {}).get("requests") == 2)

    server.wait_for("usage booked", booked, 5)
    usage = httpx.get(f"{server.url}/api/usage", headers=headers).json()
    assert usage["key"] == "heidi"
    assert usage["models"]["sim/fast"]["output_tokens"] == 2 * output
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'tokenrelay_key_streams_total{error_type="",key="heidi",state="done"} 2.0' in metrics
    assert f'tokenrelay_key_tokens_total{{key="heidi",kind="output"}} {2 * output}.0' in metrics
    assert 'tokenrelay_key_requests_total{key="heidi"}' in metrics
    assert heidi not in metrics
    assert ", key heidi" in server.log()


def test_the_cli_and_python_client_send_a_key(setup: tuple[RealServer, Path], alice: str) -> None:
    from tokenrelay.client import Client

    server = setup[0]
    with Client(server.url, api_key=alice) as client:
        assert client.complete("hi", model="sim/fast").content
    command = [sys.executable, "-m", "tokenrelay", "chat", "hi", "--model", "sim/fast"]
    chat = subprocess.run(
        [*command, "--url", server.url],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "TOKENRELAY_API_KEY": alice},
    )
    assert chat.returncode == 0, chat.stdout + chat.stderr
    refused = subprocess.run(
        [sys.executable, "-m", "tokenrelay", "chat", "hi", "--url", server.url],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "TOKENRELAY_API_KEY"},
    )
    assert refused.returncode == 1
    assert "401" in refused.stderr  # piped: stdout is for the answer alone


def test_tokens_per_minute(setup: tuple[RealServer, Path]) -> None:
    server, config = setup
    ivan = create_key(config, "ivan", "--tokens-per-minute", "5")
    headers = {"x-api-key": ivan}
    body = {"message": "Explain TCP handshakes", "model": "sim/fast"}
    first = httpx.post(f"{server.url}/api/chat", json=body, headers=headers)
    assert first.status_code == 200  # admitted under the limit; it may cross it part-way
    assert first.json()["usage"]["completion_tokens"] > 5

    def refused() -> bool:
        again = httpx.post(f"{server.url}/api/chat", json=body, headers=headers)
        return again.status_code == 429 and again.headers["x-ratelimit-remaining-tokens"] == "0"

    server.wait_for("the tokens counted", refused, 5)


def test_a_killed_replicas_slots_come_back_when_its_lease_lapses(
    tmp_path: Path, redis_url: str
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    config = f'[redis]\nurl = "{own_database(redis_url, 6)}"\nlease = 1.0\n[sim]\nttft = 0.0\n'
    with real_server(tmp_path / "a", config) as doomed, real_server(tmp_path / "b", config) as two:
        judy = create_key(tmp_path / "a" / "tokenrelay.toml", "judy", "--max-concurrent", "1")
        headers = {"x-api-key": judy}
        body = {"message": "hi", "model": "sim/default+endless"}
        with httpx.stream(
            "POST", f"{doomed.url}/api/chat/stream", json=body, headers=headers, timeout=10
        ) as held:
            assert held.status_code == 200
            assert (
                httpx.post(f"{two.url}/api/chat/stream", json=body, headers=headers).status_code
                == 429
            )
            doomed.process.kill()  # kill -9: nothing gives the slot back but its expiry
            doomed.process.wait()
        wait_for_a_slot(two, headers)


def test_a_keys_model_list_shows_what_it_may_use(server: RealServer, bob: str) -> None:
    headers = {"x-api-key": bob}
    native = httpx.get(f"{server.url}/api/models", headers=headers).json()
    assert native["models"]
    assert all(m["id"].startswith("sim/fast") for m in native["models"])
    assert native["default"].startswith("sim/fast")
    openai_list = httpx.get(f"{server.url}/v1/models", headers=headers).json()
    assert all(m["id"].startswith("sim/fast") for m in openai_list["data"])


def test_revoking_a_key_ends_its_running_streams(setup: tuple[RealServer, Path]) -> None:
    server, config = setup
    kim = create_key(config, "kim")
    body = {"message": "hi", "model": "sim/default+endless"}
    with httpx.stream(
        "POST", f"{server.url}/api/chat/stream", json=body, headers={"x-api-key": kim}, timeout=10
    ) as r:
        lines = r.iter_lines()
        next(lines)
        assert keys_command(config, "revoke", "kim").returncode == 0
        ending = next(line for line in lines if '"type":"cancelled"' in line)
    assert '"reason":"key_revoked"' in ending


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (
            [
                "",
            ],
            "name",
        ),
        (["a b"], "name"),
        (["late", "--expires", "2020-01-01"], "past"),
    ],
)
def test_keys_create_refuses_bad_input(
    setup: tuple[RealServer, Path], args: list[str], problem: str
) -> None:
    done = keys_command(setup[1], "create", *args)
    assert done.returncode == 2
    assert problem in done.stderr
    assert done.stdout == ""


def test_keys_made_before_the_hash_tag_are_carried_over_and_still_required(
    tmp_path: Path, redis_url: str
) -> None:
    """Keys in the old, untagged hashes: were they missed, a deployment would stop requiring
    keys after the upgrade. The first replica to look moves them."""
    url = own_database(redis_url, 7)
    config = f'[redis]\nurl = "{url}"\n[sim]\nttft = 0.0\n'
    (tmp_path / "maker").mkdir()
    with real_server(tmp_path / "maker", config) as maker:
        key = create_key(tmp_path / "maker" / "tokenrelay.toml", "old-team")
        maker.terminate()
    with redis_client.Redis.from_url(url) as admin:  # as a release before the tag kept them
        for old, new in (
            ("tr:keys", "tr:{keys}:records"),
            ("tr:keynames", "tr:{keys}:names"),
            ("tr:keyused", "tr:{keys}:used"),
        ):
            if admin.exists(new):
                admin.rename(new, old)
        assert not admin.exists("tr:{keys}:records")
    with real_server(tmp_path, config) as server:
        body = {"message": "hi", "model": "sim/fast"}
        assert httpx.post(f"{server.url}/api/chat", json=body).status_code == 401
        headers = {"authorization": f"Bearer {key}"}
        assert httpx.post(f"{server.url}/api/chat", json=body, headers=headers).status_code == 200
        create_key(tmp_path / "tokenrelay.toml", "new-team")  # keys stay required after
        assert keys_command(tmp_path / "tokenrelay.toml", "revoke", "old-team").returncode == 0
        refused = httpx.post(f"{server.url}/api/chat", json=body, headers=headers)
        assert refused.status_code == 401
    with redis_client.Redis.from_url(url) as admin:  # gone from both: nothing brings it back
        assert not admin.hlen("tr:keys")
        assert admin.hkeys("tr:{keys}:names") == [b"new-team"]
        admin.flushdb()
