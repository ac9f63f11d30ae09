"""Settings: validated at start, secrets required outside development."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import Settings, new_data_key, new_recording_key, new_secret_key

GOOD = {
    "QUIETROOM_SECRET_KEYS": new_secret_key(),
    "QUIETROOM_DATA_KEYS": new_data_key(),
}


def test_missing_secrets_refuse_to_start_outside_dev_mode() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load({})
    message = str(info.value)
    assert "QUIETROOM_SECRET_KEYS is required" in message
    assert "QUIETROOM_DATA_KEYS is required" in message


def test_short_secret_refuses_to_start() -> None:
    env = {**GOOD, "QUIETROOM_SECRET_KEYS": f"{new_secret_key()},tooshort"}
    with pytest.raises(ConfigError, match="key #2 is shorter than 32"):
        Settings.load(env)


def test_malformed_data_key_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="DATA_KEYS: key #1 is not a Fernet key"):
        Settings.load({**GOOD, "QUIETROOM_DATA_KEYS": "x" * 44})


def test_every_problem_is_reported_at_once() -> None:
    env = {**GOOD, "QUIETROOM_PORT": "99999", "QUIETROOM_TOTP_MAX_FAILURES": "0"}
    with pytest.raises(ConfigError) as info:
        Settings.load(env)
    assert "QUIETROOM_PORT" in str(info.value)
    assert "QUIETROOM_TOTP_MAX_FAILURES" in str(info.value)


def test_non_numbers_are_refused_with_the_variable_named() -> None:
    with pytest.raises(ConfigError, match="QUIETROOM_PORT: expected a whole number"):
        Settings.load({**GOOD, "QUIETROOM_PORT": "eighty"})


def test_plain_http_public_url_refused_outside_development() -> None:
    with pytest.raises(ConfigError, match="must be https"):
        Settings.load({**GOOD, "QUIETROOM_PUBLIC_URL": "http://therapy.example.org"})
    settings = Settings.load({**GOOD, "QUIETROOM_PUBLIC_URL": "https://therapy.example.org"})
    assert settings.secure_cookies
    assert settings.public_origin == "https://therapy.example.org"


def test_public_url_with_a_path_is_refused() -> None:
    with pytest.raises(ConfigError, match="PUBLIC_URL"):
        Settings.load({**GOOD, "QUIETROOM_PUBLIC_URL": "https://example.org/quietroom"})


def test_origins_must_be_bare_origins() -> None:
    with pytest.raises(ConfigError, match="ALLOWED_ORIGINS"):
        Settings.load({**GOOD, "QUIETROOM_ALLOWED_ORIGINS": "https://a.example/path"})
    settings = Settings.load(
        {**GOOD, "QUIETROOM_ALLOWED_ORIGINS": "https://a.example, https://b.example:8443"}
    )
    assert settings.origins == {
        "http://127.0.0.1:8080",
        "https://a.example",
        "https://b.example:8443",
    }


def test_redis_url_scheme_checked() -> None:
    with pytest.raises(ConfigError, match="REDIS_URL"):
        Settings.load({**GOOD, "QUIETROOM_REDIS_URL": "http://localhost:6379"})


def test_dev_mode_generates_ephemeral_secrets_and_says_so() -> None:
    settings = Settings.load({}, dev_mode=True)
    assert settings.dev_mode
    assert settings.ephemeral_secrets
    assert len(settings.secret_keys) == 1
    assert len(settings.secret_keys[0]) >= 32
    assert Settings.load({}, dev_mode=True).secret_keys != settings.secret_keys


def test_dev_mode_keeps_given_secrets() -> None:
    recording_key = new_recording_key()  # else dev mode makes one up (ephemeral)
    settings = Settings.load(
        {**GOOD, "QUIETROOM_DEV_MODE": "true", "QUIETROOM_RECORDING_KEYS": recording_key}
    )
    assert settings.dev_mode
    assert not settings.ephemeral_secrets
    assert settings.secret_keys == (GOOD["QUIETROOM_SECRET_KEYS"],)


def test_key_lists_keep_their_order_newest_first() -> None:
    old, new = new_secret_key(), new_secret_key()
    settings = Settings.load({**GOOD, "QUIETROOM_SECRET_KEYS": f"{new}, {old}"})
    assert settings.secret_keys == (new, old)


def test_toml_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    path = tmp_path / "quietroom.toml"
    path.write_text(
        "[quietroom]\nport = 9000\ntotp_max_failures = 3\n"
        f'secret_keys = ["{new_secret_key()}"]\n'
        f'data_keys = ["{new_data_key()}"]\n'
    )
    settings = Settings.load({"QUIETROOM_CONFIG": str(path), "QUIETROOM_PORT": "9100"})
    assert settings.port == 9100
    assert settings.totp_max_failures == 3


def test_toml_file_with_unknown_or_broken_content_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.toml"
    path.write_text("prot = 9000\n")
    with pytest.raises(ConfigError, match="unknown settings prot"):
        Settings.load({**GOOD, "QUIETROOM_CONFIG": str(path)})
    path.write_text("port = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load({**GOOD, "QUIETROOM_CONFIG": str(path)})
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.load({**GOOD, "QUIETROOM_CONFIG": str(tmp_path / "absent.toml")})


def test_settings_are_frozen() -> None:
    settings = Settings.load(GOOD)
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


def test_no_secret_appears_in_the_settings_repr() -> None:
    settings = Settings.load(GOOD)
    text = repr(settings)
    assert GOOD["QUIETROOM_SECRET_KEYS"] not in text
    assert GOOD["QUIETROOM_DATA_KEYS"] not in text
