"""Signed one-time links.

A link token is an itsdangerous timed signature over opaque ids and a random ``jti``.
Each purpose has its own salt and maximum age, so a token made for one purpose never
verifies for another. The secret keys are a list: the first signs, all verify, so keys
rotate without breaking links already sent. Whether a ``jti`` was already redeemed is the
store's business (one atomic operation); this module only signs and checks.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadData, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from gateway.clock import Clock
from gateway.domain.ids import is_valid_id
from gateway.errors import ConfigError, LinkExpired, LinkInvalid, LinkNotYetValid

__all__ = ["MAX_TOKEN_LENGTH", "LinkClaims", "LinkPurpose", "LinkSigner"]

#: Anything longer is refused before any parsing.
MAX_TOKEN_LENGTH = 512


class LinkPurpose(enum.StrEnum):
    CLIENT_JOIN = "client-join"
    HOST_SIGN_IN = "host-sign-in"


@dataclass(frozen=True, slots=True)
class LinkClaims:
    """What a verified token says: opaque ids only, never PHI."""

    purpose: LinkPurpose
    appointment_id: str
    participant_id: str
    jti: str
    issued_at: float
    expires_at: float


def _signer_for(clock: Clock) -> type[TimestampSigner]:
    class _ClockSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock.now())

    return _ClockSigner


class LinkSigner:
    """Issues and verifies link tokens for every purpose."""

    def __init__(
        self,
        *,
        secret_keys: Sequence[str],
        max_age: dict[LinkPurpose, int],
        clock: Clock,
    ) -> None:
        if not secret_keys:
            raise ConfigError("at least one secret key is needed to sign links")
        missing = [p for p in LinkPurpose if p not in max_age]
        if missing:
            raise ConfigError(f"no maximum age for link purposes {missing}")
        self._clock = clock
        self._max_age = dict(max_age)
        signer = _signer_for(clock)
        # itsdangerous signs with the last key and verifies with all of them.
        keys = list(reversed(secret_keys))
        self._serializers = {
            purpose: URLSafeTimedSerializer(keys, salt=f"quietroom/{purpose.value}", signer=signer)
            for purpose in LinkPurpose
        }

    def issue(
        self, purpose: LinkPurpose, *, appointment_id: str, participant_id: str
    ) -> tuple[str, LinkClaims]:
        """A new token and the claims it carries."""
        if not (is_valid_id(appointment_id) and is_valid_id(participant_id)):
            raise LinkInvalid("links carry only opaque ids", purpose=purpose.value)
        jti = secrets.token_urlsafe(16)
        token = self._serializers[purpose].dumps(
            {"a": appointment_id, "p": participant_id, "j": jti}
        )
        now = float(int(self._clock.now()))
        claims = LinkClaims(
            purpose=purpose,
            appointment_id=appointment_id,
            participant_id=participant_id,
            jti=jti,
            issued_at=now,
            expires_at=now + self._max_age[purpose],
        )
        return token, claims

    def verify(self, purpose: LinkPurpose, token: object) -> LinkClaims:
        """The claims of a valid token of this purpose, or a :class:`LinkError`."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise LinkInvalid("malformed token", purpose=purpose.value)
        if not token.isascii():
            raise LinkInvalid("malformed token", purpose=purpose.value)
        max_age = self._max_age[purpose]
        try:
            payload, signed_at = self._serializers[purpose].loads(
                token, max_age=max_age, return_timestamp=True
            )
        except SignatureExpired as exc:
            issued = exc.date_signed.timestamp() if exc.date_signed else 0.0
            if issued > self._clock.now():
                raise LinkNotYetValid(purpose=purpose.value, issued_at=issued) from None
            raise LinkExpired(purpose=purpose.value, expired_at=issued + max_age) from None
        except BadData:
            raise LinkInvalid("bad signature or payload", purpose=purpose.value) from None
        claims = _claims_from(payload, purpose)
        issued_at = signed_at.timestamp()
        return LinkClaims(
            purpose=purpose,
            appointment_id=claims[0],
            participant_id=claims[1],
            jti=claims[2],
            issued_at=issued_at,
            expires_at=issued_at + max_age,
        )


def _claims_from(payload: Any, purpose: LinkPurpose) -> tuple[str, str, str]:
    if not isinstance(payload, dict) or set(payload) != {"a", "p", "j"}:
        raise LinkInvalid("unexpected payload", purpose=purpose.value)
    appointment_id, participant_id, jti = payload["a"], payload["p"], payload["j"]
    if not (is_valid_id(appointment_id) and is_valid_id(participant_id)):
        raise LinkInvalid("unexpected payload", purpose=purpose.value)
    if not isinstance(jti, str) or not 16 <= len(jti) <= 64:
        raise LinkInvalid("unexpected payload", purpose=purpose.value)
    return appointment_id, participant_id, jti
