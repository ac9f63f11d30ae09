"""TURN REST API credentials: coturn's password, the expiry, rotation, no PHI."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging

import pytest

from gateway.clock import FrozenClock
from gateway.domain.ids import new_id
from gateway.errors import ConfigError, InvalidInput, TurnNotConfigured
from gateway.settings import Settings, new_data_key, new_secret_key
from turn import DEFAULT_TTL, TurnCredentials, ice_servers, turn_password

SECRET = "quietroom-turn-known-answer-secret-0001"
OLD_SECRET = "quietroom-turn-previous-secret-00000002"
PARTICIPANT = "ptc_AAAAAAAAAAAAAAAAAAAAAA"
FULLWIDTH_EXPIRY = "".join(chr(0xFF10 + int(digit)) for digit in "1800003600")
TURN_URLS = (
    "stun:turn.example.org:3478",
    "turn:turn.example.org:3478?transport=udp",
    "turn:turn.example.org:3478?transport=tcp",
    "turns:turn.example.org:443?transport=tcp",
)


def hmac_sha1_base64(secret: str, username: str) -> str:
    """The password computed here, independently of turn.credentials."""
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def test_password_is_base64_hmac_sha1_of_the_username_known_answer() -> None:
    username = f"1800003600:{PARTICIPANT}"
    # Computed with: printf %s USERNAME | openssl dgst -sha1 -hmac SECRET -binary | base64
    assert turn_password(SECRET, username) == "DD62ldw00IhAGlEf9+fOcX6XbS8="
    assert turn_password(SECRET, username) == hmac_sha1_base64(SECRET, username)


def test_username_is_expiry_then_participant_id(clock: FrozenClock) -> None:
    clock.set(1_800_000_000.9)
    credential = TurnCredentials([SECRET], clock=clock).issue(PARTICIPANT)
    assert credential.username == f"1800003600:{PARTICIPANT}"
    assert credential.expires_at == 1_800_000_000 + DEFAULT_TTL
    assert credential.password == hmac_sha1_base64(SECRET, credential.username)


def test_time_to_live_sets_the_expiry_within_bounds(clock: FrozenClock) -> None:
    credential = TurnCredentials([SECRET], clock=clock, ttl=300).issue(PARTICIPANT)
    assert credential.expires_at == int(clock.now()) + 300
    for ttl in (299, 86401, 0, -1):
        with pytest.raises(ConfigError):
            TurnCredentials([SECRET], clock=clock, ttl=ttl)
    with pytest.raises(ConfigError):
        TurnCredentials([], clock=clock)


def test_accepted_until_the_expiry_second_then_refused(clock: FrozenClock) -> None:
    issuer = TurnCredentials([SECRET], clock=clock)
    credential = issuer.issue(PARTICIPANT)
    assert issuer.accepts(credential.username, credential.password)
    clock.set(credential.expires_at)
    assert issuer.accepts(credential.username, credential.password)
    clock.set(credential.expires_at + 1)
    assert not issuer.accepts(credential.username, credential.password)


def test_first_secret_issues_and_every_listed_secret_verifies(clock: FrozenClock) -> None:
    before = TurnCredentials([OLD_SECRET], clock=clock).issue(PARTICIPANT)
    rotated = TurnCredentials([SECRET, OLD_SECRET], clock=clock)
    after = rotated.issue(PARTICIPANT)
    assert after.password == hmac_sha1_base64(SECRET, after.username)
    assert rotated.accepts(before.username, before.password)
    assert rotated.accepts(after.username, after.password)
    retired = TurnCredentials([SECRET], clock=clock)
    assert not retired.accepts(before.username, before.password)


@pytest.mark.parametrize(
    ("username", "password"),
    [
        (f"1800003600:{PARTICIPANT}", "x" * 28),  # wrong password
        (f"1800099999:{PARTICIPANT}", None),  # expiry pushed later
        ("1800003600:ptc_BBBBBBBBBBBBBBBBBBBBBB", None),  # someone else's id
        (PARTICIPANT, None),  # no expiry
        (f"soon:{PARTICIPANT}", None),
        (FULLWIDTH_EXPIRY + f":{PARTICIPANT}", None),  # non-ASCII digits
    ],
)
def test_altered_credentials_are_refused(
    clock: FrozenClock, username: str, password: str | None
) -> None:
    issuer = TurnCredentials([SECRET], clock=clock)
    genuine = issuer.issue(PARTICIPANT)
    assert genuine.username == f"1800003600:{PARTICIPANT}"
    assert not issuer.accepts(username, password or genuine.password)


@pytest.mark.parametrize(
    "not_an_id",
    [
        "ada.lovelace@example.org",
        "Ada Lovelace",
        "ptc_short",
        "",
        f"{PARTICIPANT}:extra",
        "ptc_AAAAAAAAAAAAAAAAAAAAA\u00e9",
        "PTC_AAAAAAAAAAAAAAAAAAAAAA",
        "+1 555 0100",
    ],
)
def test_only_an_opaque_id_may_name_the_participant(clock: FrozenClock, not_an_id: str) -> None:
    issuer = TurnCredentials([SECRET], clock=clock)
    with pytest.raises(InvalidInput) as info:
        issuer.issue(not_an_id)
    assert info.value.field == "participant_id"
    with pytest.raises(InvalidInput):
        ice_servers(TURN_URLS, issuer, participant_id=not_an_id)


def test_secrets_and_passwords_stay_out_of_reprs_and_logs(
    clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    issuer = TurnCredentials([SECRET, OLD_SECRET], clock=clock)
    with caplog.at_level(logging.DEBUG, logger="turn"):
        credential = issuer.issue(PARTICIPANT)
    assert PARTICIPANT in caplog.text
    for text in (caplog.text, repr(issuer), repr(credential)):
        assert SECRET not in text
        assert OLD_SECRET not in text
        assert credential.password not in text


def test_from_settings_follows_the_turn_settings(clock: FrozenClock) -> None:
    base = {"QUIETROOM_SECRET_KEYS": new_secret_key(), "QUIETROOM_DATA_KEYS": new_data_key()}
    assert TurnCredentials.from_settings(Settings.load(base), clock=clock) is None
    settings = Settings.load(
        {
            **base,
            "QUIETROOM_TURN_SECRETS": f"{SECRET},{OLD_SECRET}",
            "QUIETROOM_TURN_URLS": ",".join(TURN_URLS),
            "QUIETROOM_TURN_TTL": "600",
        }
    )
    issuer = TurnCredentials.from_settings(settings, clock=clock)
    assert issuer is not None
    assert issuer.ttl == 600
    credential = issuer.issue(PARTICIPANT)
    assert credential.password == hmac_sha1_base64(SECRET, credential.username)


# --- what the browser gets ---------------------------------------------------------------


def test_ice_servers_give_stun_bare_and_turn_with_one_credential(clock: FrozenClock) -> None:
    participant = new_id("ptc")
    config = ice_servers(
        TURN_URLS, TurnCredentials([SECRET], clock=clock), participant_id=participant
    )
    expires_at = int(clock.now()) + DEFAULT_TTL
    username = f"{expires_at}:{participant}"
    assert config == {
        "ice_servers": [
            {"urls": ["stun:turn.example.org:3478"]},
            {
                "urls": [
                    "turn:turn.example.org:3478?transport=udp",
                    "turn:turn.example.org:3478?transport=tcp",
                    "turns:turn.example.org:443?transport=tcp",
                ],
                "username": username,
                "credential": hmac_sha1_base64(SECRET, username),
            },
        ],
        "ice_transport_policy": "all",
        "expires_at": expires_at,
    }
    assert json.loads(json.dumps(config)) == config


def test_relay_only_rooms_get_the_relay_policy(clock: FrozenClock) -> None:
    issuer = TurnCredentials([SECRET], clock=clock)
    config = ice_servers(TURN_URLS, issuer, participant_id=PARTICIPANT, relay_only=True)
    assert config["ice_transport_policy"] == "relay"
    assert any("credential" in server for server in config["ice_servers"])


def test_relay_only_without_turn_is_refused_not_downgraded(clock: FrozenClock) -> None:
    with pytest.raises(TurnNotConfigured):
        ice_servers(["stun:stun.example.org"], None, participant_id=PARTICIPANT, relay_only=True)
    with pytest.raises(TurnNotConfigured):
        ice_servers([], None, participant_id=PARTICIPANT, relay_only=True)
    with pytest.raises(TurnNotConfigured):
        ice_servers(TURN_URLS, None, participant_id=PARTICIPANT)


def test_without_turn_urls_no_credential_is_issued(clock: FrozenClock) -> None:
    issuer = TurnCredentials([SECRET], clock=clock)
    assert ice_servers([], issuer, participant_id=PARTICIPANT) == {
        "ice_servers": [],
        "ice_transport_policy": "all",
        "expires_at": None,
    }
    stun_only = ice_servers(["stun:stun.example.org"], None, participant_id=PARTICIPANT)
    assert stun_only["ice_servers"] == [{"urls": ["stun:stun.example.org"]}]
