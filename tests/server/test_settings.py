"""Settings from tokenrelay.toml: defaults, overrides, and typos refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenrelay.settings import Settings, SettingsError, load_settings, parse_settings


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENRELAY_CONFIG", raising=False)
    settings = load_settings()
    assert settings == Settings()
    assert settings.server.max_body_bytes == 1024 * 1024
    assert settings.server.max_body_bytes_v1 == 20 * 1024 * 1024
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
        ({"streams": {"chunking": "sentence"}}, r"\[streams\] chunking: Input should be 'token'"),
        ({"streams": {"compat_chunking": "words"}}, r"\[streams\] compat_chunking"),
        ({"upstreams": {"x": {"base_url": "ftp://x"}}}, r"\[upstreams.x\] base_url: must be"),
        ({"upstreams": {"sim": {"base_url": "http://x"}}}, "reserved"),
        (
            {"upstreams": {"x": {"base_url": "http://x", "transport": "httpx"}}},
            r"\[upstreams.x\] transport: no longer needed",
        ),
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


def test_the_environment_overrides_the_file_and_the_command_line_overrides_both(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokenrelay.toml"
    path.write_text('[server]\nlog_format = "text"\nport = 9100\n[redis]\nurl = "redis://file"\n')
    env = {"TOKENRELAY_REDIS_URL": "redis://env", "TOKENRELAY_LOG_FORMAT": "json"}
    settings = load_settings(path, env=env, overrides={"server": {"port": 9200}})
    assert settings.redis.url == "redis://env"
    assert settings.server.log_format == "json"
    assert settings.server.port == 9200
    with pytest.raises(SettingsError, match=r"\[server\] log_format"):
        load_settings(path, env={"TOKENRELAY_LOG_FORMAT": "xml"})
    with pytest.raises(SettingsError, match=r"\[server\] port"):
        load_settings(path, env={}, overrides={"server": {"port": 70_000}})


def test_the_config_file_is_named_by_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "tokenrelay.toml"
    path.write_text("[streams]\nkeepalive = 3\n")
    assert load_settings(env={"TOKENRELAY_CONFIG": str(path)}).streams.keepalive == 3.0


def test_a_relative_keys_file_is_the_config_files_neighbour(tmp_path: Path) -> None:
    """Else `keys create` run from one directory and a server started from another read
    different files, and the server runs without its keys."""
    config = tmp_path / "etc" / "tokenrelay.toml"
    config.parent.mkdir()
    config.write_text("[server]\nport = 8123\n")
    assert load_settings(config, env={}).auth.keys_file == str(
        config.parent / "tokenrelay-keys.json"
    )
    config.write_text('[auth]\nkeys_file = "team/keys.json"\n')
    assert load_settings(config, env={}).auth.keys_file == str(config.parent / "team/keys.json")
    wins = {"TOKENRELAY_KEYS_FILE": "/var/lib/keys.json"}
    assert load_settings(config, env=wins).auth.keys_file == "/var/lib/keys.json"


def test_the_shipped_deployment_config_loads() -> None:
    shipped = Path(__file__).resolve().parents[2] / "deploy" / "tokenrelay.toml"
    settings = load_settings(shipped, env={})
    assert settings.redis.url == "redis://redis:6379/0"
    assert settings.redis.on_producer_lost == "continue"
    assert settings.redis.cluster is False


def test_on_producer_lost_takes_error_or_continue(tmp_path: Path) -> None:
    path = tmp_path / "tokenrelay.toml"
    path.write_text('[redis]\non_producer_lost = "retry"\n')
    with pytest.raises(SettingsError, match="on_producer_lost"):
        load_settings(path, env={})
