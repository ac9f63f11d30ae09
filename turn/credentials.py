"""TURN REST API credentials, as coturn checks them in ``use-auth-secret`` mode.

The gateway and coturn share secrets and nothing else: the gateway hands a browser
``username = "<expiry unix time>:<participant id>"`` and
``password = base64(HMAC-SHA1(secret, username))``; coturn recomputes the password with
each of its ``static-auth-secret`` values and refuses a username whose time has passed.
Secrets rotate like the link keys: the first issues, every one listed still verifies.

The expiry bounds when an allocation may be *made*: coturn keeps an allocation that
was authenticated in time for as long as the browser refreshes it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NotRequired, TypedDict

from gateway.clock import Clock
from gateway.domain.ids import is_valid_id
from gateway.errors import ConfigError, InvalidInput, TurnNotConfigured
from turn.urls import parse_ice_url

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = [
    "DEFAULT_TTL",
    "MAX_TTL",
    "MIN_TTL",
    "IceConfiguration",
    "IceServer",
    "TurnCredential",
    "TurnCredentials",
    "ice_servers",
    "turn_password",
]

log = logging.getLogger(__name__)

DEFAULT_TTL = 3600
MIN_TTL = 300
MAX_TTL = 86400


def turn_password(secret: str, username: str) -> str:
    """coturn's REST API password for ``username`` under ``secret``."""
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True, slots=True)
class TurnCredential:
    """A username and password for every TURN URL, good until ``expires_at``."""

    username: str
    password: str = field(repr=False)
    #: Unix time after which coturn refuses new allocations with it.
    expires_at: int


class TurnCredentials:
    """Issues (and, for tools and tests, checks) TURN REST API credentials."""

    def __init__(self, secrets: Sequence[str], *, clock: Clock, ttl: int = DEFAULT_TTL) -> None:
        if not secrets:
            raise ConfigError("TURN credentials need at least one shared secret")
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise ConfigError(f"the TURN credential lifetime must be {MIN_TTL} to {MAX_TTL} s")
        self._secrets = tuple(secrets)
        self._clock = clock
        self.ttl = ttl

    def __repr__(self) -> str:
        return f"<TurnCredentials ttl={self.ttl} secrets={len(self._secrets)}>"

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock) -> TurnCredentials | None:
        """The issuer the settings describe; None when no TURN secret is configured."""
        if not settings.turn_secrets:
            return None
        return cls(settings.turn_secrets, clock=clock, ttl=settings.turn_ttl)

    def issue(self, participant_id: str) -> TurnCredential:
        """A credential for one participant, named only by its opaque id."""
        _check_participant_id(participant_id)
        expires_at = math.floor(self._clock.now()) + self.ttl
        username = f"{expires_at}:{participant_id}"
        log.debug("TURN credential issued for %s, expires at %d", participant_id, expires_at)
        return TurnCredential(
            username=username,
            password=turn_password(self._secrets[0], username),
            expires_at=expires_at,
        )

    def accepts(self, username: str, password: str) -> bool:
        """What coturn would answer: unexpired and signed with any listed secret."""
        expiry, separator, _ = username.partition(":")
        if not separator or not expiry.isascii() or not expiry.isdigit():
            return False
        if int(expiry) < math.floor(self._clock.now()):
            return False
        given = password.encode("ascii", "replace")
        return any(
            hmac.compare_digest(turn_password(secret, username).encode("ascii"), given)
            for secret in self._secrets
        )


def _check_participant_id(participant_id: str) -> None:
    if not is_valid_id(participant_id):
        # The username travels in clear in every TURN request and lands in coturn's logs.
        raise InvalidInput("expected an opaque participant id", field="participant_id")


class IceServer(TypedDict):
    """One ``RTCIceServer`` as the browser's ``RTCPeerConnection`` takes it."""

    urls: list[str]
    username: NotRequired[str]
    credential: NotRequired[str]


class IceConfiguration(TypedDict):
    """What a participant's browser needs to build its ``RTCConfiguration``."""

    ice_servers: list[IceServer]
    #: ``"relay"``: the browser uses TURN relay candidates only (the room's policy).
    ice_transport_policy: Literal["all", "relay"]
    #: When the TURN credential stops working for new allocations; None without TURN.
    expires_at: int | None


def ice_servers(
    urls: Sequence[str],
    credentials: TurnCredentials | None,
    *,
    participant_id: str,
    relay_only: bool = False,
) -> IceConfiguration:
    """The ICE servers for one participant: STUN URLs bare, TURN URLs with a credential.

    A relay-only room without TURN cannot connect anyone, so it is refused rather than
    quietly downgraded to direct connections.
    """
    _check_participant_id(participant_id)
    parsed = [parse_ice_url(url) for url in urls]
    stun = [str(url) for url in parsed if not url.is_turn]
    turn = [str(url) for url in parsed if url.is_turn]
    servers: list[IceServer] = []
    if stun:
        servers.append({"urls": stun})
    expires_at: int | None = None
    if turn:
        if credentials is None:
            raise TurnNotConfigured("TURN URLs are configured but no TURN secret")
        credential = credentials.issue(participant_id)
        servers.append(
            {"urls": turn, "username": credential.username, "credential": credential.password}
        )
        expires_at = credential.expires_at
    elif relay_only:
        raise TurnNotConfigured("the room is relay-only but no TURN server is configured")
    return {
        "ice_servers": servers,
        "ice_transport_policy": "relay" if relay_only else "all",
        "expires_at": expires_at,
    }
