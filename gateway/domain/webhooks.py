"""Webhooks to platforms: what is sent, how it is signed, and when it is tried again.

Every webhook is a JSON body of opaque ids (never a name or free text), POSTed with

    Quietroom-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">

under the platform's webhook secret. While a secret is being rotated the header may
carry several ``v1`` values, one per secret; a receiver accepts the body if any one of
them matches a secret it holds. :func:`verify` is written to be copied by platforms: it
depends on the standard library only (and on the error classes it raises).

Deliveries are tried at once, then after each delay of a :class:`RetrySchedule`, and
given up after the last one. No I/O here: times are passed in.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.domain.ids import is_valid_id, new_id
from gateway.errors import (
    WebhookSignatureExpired,
    WebhookSignatureInvalid,
    WebhookSignatureNotYetValid,
)

__all__ = [
    "DEFAULT_RETRY_DELAYS",
    "DEFAULT_TOLERANCE",
    "DELIVERY_HEADER",
    "MAX_SIGNATURES",
    "MAX_SIGNATURE_HEADER",
    "MAX_WEBHOOK_URL",
    "SIGNATURE_HEADER",
    "RetrySchedule",
    "WebhookClaim",
    "WebhookDelivery",
    "WebhookType",
    "build_body",
    "clean_webhook_url",
    "is_public_address",
    "new_delivery",
    "new_webhook_secret",
    "sign",
    "signature",
    "verify",
]

SIGNATURE_HEADER = "Quietroom-Signature"
#: The delivery id, the same on every attempt: receivers use it to drop duplicates.
DELIVERY_HEADER = "Quietroom-Delivery"
#: Seconds a signature stays acceptable, either side of the receiver's clock.
DEFAULT_TOLERANCE = 300
#: A longer signature header is refused before it is parsed.
MAX_SIGNATURE_HEADER = 1024
#: At most this many ``v1`` values in one header (one per secret in rotation).
MAX_SIGNATURES = 8
MAX_WEBHOOK_URL = 2048
#: 10 s, 30 s, 2 min, 10 min, 30 min, 1 h, 3 h; after the attempt that follows the last
#: delay, the delivery is given up (8 attempts over about 5 hours).
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (10.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 10800.0)

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
#: A reason in a body (why a recording stopped or was refused): a fixed code.
_REASON = re.compile(r"[a-z][a-z_]{0,39}")
_V1 = re.compile(r"[0-9a-f]{64}")


class WebhookType(enum.StrEnum):
    PARTICIPANT_WAITING = "participant.waiting"
    PARTICIPANT_ADMITTED = "participant.admitted"
    PARTICIPANT_DENIED = "participant.denied"
    PARTICIPANT_LEFT = "participant.left"
    PARTICIPANT_REMOVED = "participant.removed"
    SESSION_ENDED = "session.ended"
    RECORDING_STARTED = "recording.started"
    RECORDING_STOPPED = "recording.stopped"
    RECORDING_REFUSED = "recording.refused"


# --- signatures -------------------------------------------------------------------------------


def new_webhook_secret() -> str:
    """A fresh signing secret for one platform (256 bits), shown to it once."""
    # The prefix lets secret scanners recognise a leaked one.
    return "whsec_" + secrets.token_urlsafe(32)


def signature(secret: str, body: bytes, *, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under ``secret``."""
    message = str(int(timestamp)).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(secret: str | Sequence[str], body: bytes, *, timestamp: int) -> str:
    """The ``Quietroom-Signature`` header value: one ``v1`` per secret, in order."""
    keys = _secrets(secret)
    if len(keys) > MAX_SIGNATURES:
        raise ValueError(f"at most {MAX_SIGNATURES} secrets sign one webhook")
    if timestamp < 0:
        raise ValueError("a signature timestamp is not negative")
    parts = [f"t={int(timestamp)}"]
    parts.extend(f"v1={signature(key, body, timestamp=timestamp)}" for key in keys)
    return ",".join(parts)


def verify(
    secret: str | Sequence[str],
    header: object,
    body: bytes,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE,
) -> int:
    """Check a ``Quietroom-Signature`` header against the raw body; return its timestamp.

    ``secret`` may be several secrets (yours while you rotate); any match is enough.
    Raises :class:`WebhookSignatureInvalid` for a malformed header or no match, and its
    subclasses :class:`WebhookSignatureExpired` / :class:`WebhookSignatureNotYetValid`
    when a matching signature is more than ``tolerance`` seconds away from ``now``.
    """
    keys = _secrets(secret)
    timestamp, candidates = _parse(header)
    matched = False
    for key in keys:
        expected = signature(key, body, timestamp=timestamp)
        for candidate in candidates:
            # Every pair is compared, in constant time, whatever matched before.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise WebhookSignatureInvalid("no signature matches the body")
    if now - timestamp > tolerance:
        raise WebhookSignatureExpired(signed_at=timestamp, tolerance=tolerance)
    if timestamp - now > tolerance:
        raise WebhookSignatureNotYetValid(signed_at=timestamp, tolerance=tolerance)
    return timestamp


def _secrets(secret: str | Sequence[str]) -> tuple[str, ...]:
    keys = (secret,) if isinstance(secret, str) else tuple(secret)
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise ValueError("at least one non-empty webhook secret is needed")
    return keys


def _parse(header: object) -> tuple[int, list[str]]:
    """``t=<digits>`` exactly once and 1 to 8 ``v1=<64 hex>``; nothing else, no spaces."""
    if not isinstance(header, str) or not header or len(header) > MAX_SIGNATURE_HEADER:
        raise WebhookSignatureInvalid("malformed signature header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, sep, value = part.partition("=")
        if not sep:
            raise WebhookSignatureInvalid("malformed signature header")
        if name == "t" and timestamp is None and _TIMESTAMP.fullmatch(value):
            timestamp = int(value)
        elif name == "v1" and len(candidates) < MAX_SIGNATURES and _V1.fullmatch(value):
            candidates.append(value)
        else:
            raise WebhookSignatureInvalid("malformed signature header")
    if timestamp is None or not candidates:
        raise WebhookSignatureInvalid("malformed signature header")
    return timestamp, candidates


# --- bodies and deliveries ------------------------------------------------------------------


def build_body(
    *,
    delivery_id: str,
    kind: WebhookType,
    created_at: float,
    appointment_id: str,
    room_id: str,
    participant_id: str | None = None,
    recording_id: str | None = None,
    reason: str | None = None,
) -> str:
    """The JSON body: ids, a time and (recordings) a reason code only, so no PHI can get
    in by accident."""
    ids = {"delivery_id": delivery_id, "appointment_id": appointment_id, "room_id": room_id}
    if participant_id is not None:
        ids["participant_id"] = participant_id
    if recording_id is not None:
        ids["recording_id"] = recording_id
    for name, value in ids.items():
        if not is_valid_id(value):
            raise ValueError(f"webhook {name} must be a gateway id")
    if reason is not None and not _REASON.fullmatch(reason):
        raise ValueError("a webhook reason is a code")
    data = {"appointment_id": appointment_id, "room_id": room_id}
    if participant_id is not None:
        data["participant_id"] = participant_id
    if recording_id is not None:
        data["recording_id"] = recording_id
    if reason is not None:
        data["reason"] = reason
    body = {
        "id": delivery_id,
        "type": WebhookType(kind).value,
        "created_at": float(created_at),
        "data": data,
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One webhook in the outbox. The body is fixed at creation: every attempt is alike."""

    id: str
    platform_id: str
    kind: WebhookType
    body: str
    created_at: float
    #: When the next attempt is due.
    due_at: float
    #: Failed attempts so far.
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class WebhookClaim:
    """A delivery leased to one sender; ``claim`` fences its later reschedule or give-up."""

    delivery: WebhookDelivery
    claim: str


def new_delivery(
    *,
    platform_id: str,
    kind: WebhookType,
    at: float,
    appointment_id: str,
    room_id: str,
    participant_id: str | None = None,
    recording_id: str | None = None,
    reason: str | None = None,
    now: float,
) -> WebhookDelivery:
    """A delivery of what happened ``at``, due ``now``."""
    delivery_id = new_id("whd")
    body = build_body(
        delivery_id=delivery_id,
        kind=kind,
        created_at=at,
        appointment_id=appointment_id,
        room_id=room_id,
        participant_id=participant_id,
        recording_id=recording_id,
        reason=reason,
    )
    return WebhookDelivery(
        id=delivery_id,
        platform_id=platform_id,
        kind=WebhookType(kind),
        body=body,
        created_at=at,
        due_at=now,
    )


# --- retries ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Exponential backoff with jitter: a delay after each failed attempt, then give up."""

    delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    #: Each delay is spread over +/- this fraction, so retries from one outage scatter.
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if any(d < 0 for d in self.delays):
            raise ValueError("retry delays are not negative")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError("retry jitter is a fraction from 0 up to 1")

    @property
    def max_attempts(self) -> int:
        """Attempts in all: the first, and one after each delay."""
        return len(self.delays) + 1

    def gives_up_after(self, attempt: int) -> bool:
        """True when failed attempt number ``attempt`` (1 = the first) is the last."""
        return attempt >= self.max_attempts

    def delay_after(self, attempt: int, *, rand: float) -> float | None:
        """Seconds to wait after failed attempt ``attempt`` (1-based), or None to give up.

        ``rand`` is a uniform number in [0, 1] from the caller, so this stays pure.
        """
        if attempt < 1:
            raise ValueError("attempts count from 1")
        if not 0.0 <= rand <= 1.0:
            raise ValueError("rand is in [0, 1]")
        if self.gives_up_after(attempt):
            return None
        base = self.delays[attempt - 1]
        return base * (1.0 - self.jitter + 2.0 * self.jitter * rand)


# --- endpoints --------------------------------------------------------------------------------


def clean_webhook_url(
    value: object, *, allow_http: bool = False, allow_private: bool = False
) -> str:
    """A webhook URL fit to store: https (http only in development or to loopback),
    a host, no credentials, no fragment, ASCII, at most 2048 characters.

    Unless ``allow_private``, the host may not be ``localhost`` or an address that is
    not public (loopback, private, link-local such as cloud metadata, reserved): the
    gateway must not be a way into the network it runs in. Names are checked again,
    on every address they resolve to, when a delivery connects (:func:`is_public_address`).
    """
    if not isinstance(value, str):
        raise ValueError("a webhook URL is text")
    if not value or len(value) > MAX_WEBHOOK_URL:
        raise ValueError(f"a webhook URL is 1 to {MAX_WEBHOOK_URL} characters")
    if not value.isascii() or not value.isprintable() or " " in value:
        raise ValueError("a webhook URL is printable ASCII without spaces")
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise ValueError("a webhook URL's port is not a port") from None
    host = parts.hostname
    if not host:
        raise ValueError("a webhook URL names a host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("a webhook URL carries no credentials")
    if parts.fragment or value.endswith("#"):
        raise ValueError("a webhook URL has no fragment")
    if not allow_private and (host.lower() == "localhost" or _is_non_public_literal(host)):
        raise ValueError("a webhook URL must reach a public address")
    scheme = parts.scheme.lower()
    if scheme == "https" or (scheme == "http" and (allow_http or _is_loopback(host))):
        return value
    raise ValueError("a webhook URL must be https")


def is_public_address(address: str) -> bool:
    """Whether an IP address is globally routable (IPv4-mapped IPv6 judged as IPv4)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _is_non_public_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return not is_public_address(host)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
