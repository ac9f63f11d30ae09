"""Media network settings: the gateway's own addresses and the client candidates it accepts."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.media.ice_policy import MediaNetwork
from gateway.settings import Settings, new_data_key, new_secret_key

GOOD = {
    "QUIETROOM_SECRET_KEYS": new_secret_key(),
    "QUIETROOM_DATA_KEYS": new_data_key(),
}


def test_media_defaults_gather_nowhere_and_refuse_loopback() -> None:
    settings = Settings.load(GOOD)
    assert settings.media_addresses == ()
    assert settings.media_allow_loopback is False
    network = MediaNetwork.from_settings(settings)
    assert network.addresses == ()
    assert not network.policy.permits("127.0.0.1")


def test_media_addresses_and_ranges_are_read() -> None:
    settings = Settings.load(
        {
            **GOOD,
            "QUIETROOM_MEDIA_ADDRESSES": "203.0.113.5, 2001:db8::5",
            "QUIETROOM_MEDIA_DENIED_RANGES": "10.0.0.0/8,fd00::/8",
        }
    )
    network = MediaNetwork.from_settings(settings)
    assert network.addresses == ("203.0.113.5", "2001:db8::5")
    assert not network.policy.permits("10.1.1.1")
    assert network.policy.permits("192.0.2.1")


def test_loopback_media_needs_the_explicit_flag() -> None:
    env = {**GOOD, "QUIETROOM_MEDIA_ADDRESSES": "127.0.0.1"}
    with pytest.raises(ConfigError, match=r"MEDIA_ADDRESSES: 127\.0\.0\.1 is loopback"):
        Settings.load(env)
    settings = Settings.load({**env, "QUIETROOM_MEDIA_ALLOW_LOOPBACK": "true"})
    network = MediaNetwork.from_settings(settings)
    assert network.addresses == ("127.0.0.1",)
    assert network.policy.permits("127.0.0.1")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("QUIETROOM_MEDIA_ADDRESSES", "gateway.example", "is not an IP address"),
        ("QUIETROOM_MEDIA_ADDRESSES", "0.0.0.0", "unspecified, multicast or link-local"),
        ("QUIETROOM_MEDIA_ADDRESSES", "::", "unspecified, multicast or link-local"),
        ("QUIETROOM_MEDIA_ADDRESSES", "fe80::1", "unspecified, multicast or link-local"),
        ("QUIETROOM_MEDIA_ADDRESSES", "239.1.1.1", "unspecified, multicast or link-local"),
        ("QUIETROOM_MEDIA_DENIED_RANGES", "10.0.0.0/33", "is not a CIDR range"),
        ("QUIETROOM_MEDIA_ALLOW_LOOPBACK", "perhaps", "expected true or false"),
    ],
)
def test_bad_media_settings_are_refused(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.load({**GOOD, name: value})
