"""Settings from tokenrelay.toml: defaults, overrides, and typos refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenrelay.server.settings import Settings, SettingsError, load_settings, parse_settings


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENRELAY_CONFIG", raising=False)
    settings = load_settings()
    assert settings == Settings()
    assert settings.server.max_body_bytes == 1024 * 1024
    assert settings.server.cors_origins == ()
    assert settings.streams.keepalive == 15.0


def test_file_overrides(tmp_path: Path) -> None:
    path = tmp_path / "tokenrelay.toml"
    path.write_text(
        '[server]\nport = 9100\ncors_origins = ["https://a.example"]\n'
        "[streams]\ndrain_timeout = 2\n[sim]\nttft = 0\n"
        '[aliases]\nquick = "sim/fast"\n'
    )
    settings = load_settings(path)
    assert settings.server.port == 9100
    assert settings.server.cors_origins == ("https://a.example",)
    assert settings.streams.drain_timeout == 2.0
    assert settings.sim.ttft == 0.0
    assert settings.aliases == {"quick": "sim/fast"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"servr": {}}, "servr"),
        ({"server": {"prot": 1}}, "prot"),
        ({"server": {"port": "80"}}, "port"),
        ({"server": {"cors_origins": "*"}}, "cors_origins"),
        ({"streams": {"ttl": True}}, "ttl"),
        ({"aliases": {"a": 1}}, "aliases"),
        ({"streams": {"chunking": "sentence"}}, "chunking must be"),
        ({"streams": {"compat_chunking": "words"}}, "compat_chunking must be"),
        ({"streams": {"max_hold_ms": 20_000}}, "max_hold_ms"),
    ],
)
def test_mistakes_are_named(data: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        parse_settings(data)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(bad)
