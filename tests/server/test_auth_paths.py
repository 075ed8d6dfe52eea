"""Authentication cannot be stepped around: a prefix (`root_path`), CORS preflights, and a
refusal a page of an allowed origin can read."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import quick_settings
from tokenrelay.auth.keys import FileKeyStore, KeyLimits, new_key
from tokenrelay.server.app import TokenRelayApp, create_app

pytestmark = pytest.mark.anyio


async def _keyed_app(tmp_path: Path) -> tuple[TokenRelayApp, str]:
    """An app with CORS for https://app.test and one key; the app and the key."""
    keys_file = tmp_path / "keys.json"
    secret, key = new_key("alice", KeyLimits(), (), None)
    await FileKeyStore(keys_file).add(key)
    settings = quick_settings().with_changes(
        auth={"keys_file": str(keys_file)}, server={"cors_origins": ["https://app.test"]}
    )
    return create_app(settings), secret


async def test_a_prefix_does_not_step_around_the_keys(tmp_path: Path) -> None:
    app, secret = await _keyed_app(tmp_path)
    transport = httpx.ASGITransport(app=app, root_path="/relay")
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/relay/api/models")).status_code == 401
        assert (await client.post("/relay/api/chat", json={"message": "hi"})).status_code == 401
        ok = await client.get("/relay/api/models", headers={"x-api-key": secret})
        assert ok.status_code == 200


async def test_preflights_pass_and_refusals_carry_cors_headers(tmp_path: Path) -> None:
    app, _ = await _keyed_app(tmp_path)
    transport = httpx.ASGITransport(app=app)
    origin = {"origin": "https://app.test"}
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        preflight = await client.options(
            "/api/chat",
            headers={
                **origin,
                "access-control-request-method": "POST",
                "access-control-request-headers": "x-api-key, content-type",
            },
        )
        assert preflight.status_code == 200
        assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
        refused = await client.post("/api/chat", json={"message": "hi"}, headers=origin)
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == "https://app.test"
        elsewhere = await client.post(
            "/api/chat", json={"message": "hi"}, headers={"origin": "https://evil.test"}
        )
        assert "access-control-allow-origin" not in elsewhere.headers
