"""STUN and TURN URLs, and the TURN settings that carry them."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import Settings, new_data_key, new_secret_key
from turn import IceUrlScheme, parse_ice_url

GOOD = {"QUIETROOM_SECRET_KEYS": new_secret_key(), "QUIETROOM_DATA_KEYS": new_data_key()}
TURN_SECRET = new_secret_key()


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("stun:stun.example.org", "stun:stun.example.org"),
        ("stun:stun.example.org:3478", "stun:stun.example.org:3478"),
        ("turn:turn.example.org:3478?transport=udp", "turn:turn.example.org:3478?transport=udp"),
        ("turn:203.0.113.5:3478?transport=tcp", "turn:203.0.113.5:3478?transport=tcp"),
        ("turns:turn.example.org:443?transport=tcp", "turns:turn.example.org:443?transport=tcp"),
        ("turns:turn.example.org", "turns:turn.example.org"),
        ("turn:[2001:DB8::1]:3478", "turn:[2001:db8::1]:3478"),
        ("TURN:Turn.Example.org?Transport=UDP", "turn:turn.example.org?transport=udp"),
    ],
)
def test_valid_urls_come_back_in_normal_form(text: str, normal: str) -> None:
    assert str(parse_ice_url(text)) == normal


def test_parts_of_a_url() -> None:
    url = parse_ice_url("turn:[2001:db8::1]:3478?transport=tcp")
    assert (url.scheme, url.host, url.port, url.transport) == (
        IceUrlScheme.TURN,
        "2001:db8::1",
        3478,
        "tcp",
    )
    assert url.is_turn
    assert not parse_ice_url("stun:stun.example.org").is_turn


@pytest.mark.parametrize(
    "text",
    [
        "https://turn.example.org",
        "turn",
        "turn:",
        "turn://turn.example.org",
        "turn:user@turn.example.org",
        "turn:user:pass@turn.example.org",
        "turn:turn.example.org:0",
        "turn:turn.example.org:65536",
        "turn:turn.example.org:port",
        "turn:turn.example.org:",
        "turn:turn.example.org#x",
        "turn:turn.example.org?transport=sctp",
        "turn:turn.example.org?foo=bar",
        "turn:turn.example.org?transport=udp&x=1",
        "stun:stun.example.org?transport=udp",
        "turns:turn.example.org?transport=udp",
        "turn:[2001:db8::1",
        "turn:[not-v6]:3478",
        "turn:[2001:db8::1]3478",
        "turn:-bad-.example.org",
        "turn:1.2.3",
        "turn:999.1.1.1",
        "turn:turn example.org",
        "turn:turn.example.org\n:3478",
        "turn:" + "a" * 64 + ".example.org",
    ],
)
def test_malformed_urls_are_refused(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - every refusal is a ValueError with a reason
        parse_ice_url(text)


def test_turn_settings_default_to_no_turn() -> None:
    settings = Settings.load(GOOD)
    assert settings.turn_secrets == ()
    assert settings.turn_urls == ()
    assert settings.turn_ttl == 3600


def test_turn_settings_load_from_the_environment_and_toml(tmp_path: Path) -> None:
    env = {
        **GOOD,
        "QUIETROOM_TURN_SECRETS": f"{TURN_SECRET}, {'b' * 32}",
        "QUIETROOM_TURN_URLS": "stun:turn.example.org, turns:turn.example.org:443",
        "QUIETROOM_TURN_TTL": "900",
    }
    settings = Settings.load(env)
    assert settings.turn_secrets == (TURN_SECRET, "b" * 32)
    assert settings.turn_urls == ("stun:turn.example.org", "turns:turn.example.org:443")
    assert settings.turn_ttl == 900
    toml = tmp_path / "quietroom.toml"
    toml.write_text(
        f'[quietroom]\nturn_secrets = ["{TURN_SECRET}"]\n'
        'turn_urls = ["turn:turn.example.org:3478?transport=udp"]\nturn_ttl = 86400\n'
    )
    settings = Settings.load({**GOOD, "QUIETROOM_CONFIG": str(toml)})
    assert settings.turn_secrets == (TURN_SECRET,)
    assert settings.turn_ttl == 86400


def test_turn_secrets_never_show_in_the_settings_repr() -> None:
    settings = Settings.load(
        {**GOOD, "QUIETROOM_TURN_SECRETS": TURN_SECRET, "QUIETROOM_TURN_URLS": "turn:t.example"}
    )
    assert TURN_SECRET not in repr(settings)


def test_bad_turn_settings_are_all_reported_without_the_secrets() -> None:
    short = "too-short-turn-secret"
    spaced = "a turn secret with spaces that is long enough"
    env = {
        **GOOD,
        "QUIETROOM_TURN_SECRETS": f"{TURN_SECRET},{short},{spaced}",
        "QUIETROOM_TURN_URLS": "turn:turn.example.org,http://turn.example.org",
        "QUIETROOM_TURN_TTL": "299",
    }
    with pytest.raises(ConfigError) as info:
        Settings.load(env)
    message = str(info.value)
    assert "QUIETROOM_TURN_SECRETS: secret #2 is shorter than 32 characters" in message
    assert "QUIETROOM_TURN_SECRETS: secret #3 has spaces" in message
    assert "QUIETROOM_TURN_URLS: 'http://turn.example.org'" in message
    assert "QUIETROOM_TURN_TTL: must be 300 to 86400" in message
    for secret in (TURN_SECRET, short, spaced):
        assert secret not in message


def test_ttl_upper_bound() -> None:
    with pytest.raises(ConfigError, match="QUIETROOM_TURN_TTL: must be 300 to 86400"):
        Settings.load({**GOOD, "QUIETROOM_TURN_TTL": "86401"})


def test_turn_urls_and_secrets_come_together() -> None:
    with pytest.raises(ConfigError, match="TURN_SECRETS is required for turn: and turns:"):
        Settings.load({**GOOD, "QUIETROOM_TURN_URLS": "turns:turn.example.org"})
    with pytest.raises(ConfigError, match="TURN_URLS: needs a turn: or turns: URL"):
        Settings.load(
            {
                **GOOD,
                "QUIETROOM_TURN_SECRETS": TURN_SECRET,
                "QUIETROOM_TURN_URLS": "stun:stun.example.org",
            }
        )
    stun_only = Settings.load({**GOOD, "QUIETROOM_TURN_URLS": "stun:stun.example.org"})
    assert stun_only.turn_urls == ("stun:stun.example.org",)
