"""Every error the gateway raises on purpose, under one root.

Errors carry data (which purpose, when it expired, who lacks consent) so adapters can
map them to one HTTP answer or one Socket.IO error without building messages by hand.
Messages never contain secrets or PHI: only opaque ids, purposes and times.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AppointmentEnded",
    "AuditChainBroken",
    "ConfigError",
    "ConsentError",
    "ConsentMissing",
    "ErasureRefused",
    "GatewayError",
    "HostAbsent",
    "IllegalTransition",
    "InvalidInput",
    "LinkAlreadyUsed",
    "LinkError",
    "LinkExpired",
    "LinkInvalid",
    "LinkNotYetValid",
    "MediaError",
    "NotAllowed",
    "NotFound",
    "PeerClosed",
    "RateLimited",
    "RecordingCorrupt",
    "RecordingError",
    "RecordingKeyUnknown",
    "RecordingMuxFailed",
    "RecordingTruncated",
    "RecordingVersionUnsupported",
    "RoomLocked",
    "ScopeMissing",
    "SdpRejected",
    "ServiceRestarting",
    "StoreError",
    "StoreUnavailable",
    "TotpError",
    "TotpInvalidFormat",
    "TotpLockedOut",
    "TotpNotEnrolled",
    "TotpRejected",
    "TotpReplayed",
    "TurnNotConfigured",
    "Unauthenticated",
    "UnsupportedMediaType",
    "WaitingRoomError",
    "WebhookError",
    "WebhookSignatureExpired",
    "WebhookSignatureInvalid",
    "WebhookSignatureNotYetValid",
]


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""

    #: A stable machine-readable code, used in API answers and Socket.IO errors.
    code = "gateway_error"


class ConfigError(GatewayError):
    """The settings are missing, malformed or unsafe; the gateway refuses to start."""

    code = "config_error"


class TurnNotConfigured(ConfigError):
    """TURN is needed (a relay-only room, or TURN URLs) but no TURN secret is set."""

    code = "turn_not_configured"


class NotFound(GatewayError):
    """Absent, or not yours: both get the same answer so ids cannot be enumerated."""

    code = "not_found"

    def __init__(self, kind: str) -> None:
        super().__init__(f"{kind} not found")
        self.kind = kind


class InvalidInput(GatewayError):
    """A request or event is malformed, oversized or out of range."""

    code = "invalid_input"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotAllowed(GatewayError):
    """The caller's role or session does not allow this action."""

    code = "not_allowed"


class Unauthenticated(GatewayError):
    """No credential, or a malformed, unknown, wrong or revoked one: one answer for all."""

    code = "unauthenticated"


class ScopeMissing(NotAllowed):
    """A valid API key without the scope the action needs."""

    code = "scope_missing"

    def __init__(self, *, scope: str) -> None:
        super().__init__(f"this API key lacks the {scope} scope")
        self.scope = scope


class UnsupportedMediaType(InvalidInput):
    """A request body that is not the media type the endpoint reads (JSON)."""

    code = "unsupported_media_type"


class AppointmentEnded(GatewayError):
    """The appointment's session has ended: nobody joins it any more."""

    code = "appointment_ended"

    def __init__(self, *, appointment_id: str) -> None:
        super().__init__(f"appointment {appointment_id} has ended")
        self.appointment_id = appointment_id


class ErasureRefused(GatewayError):
    """A participant's data cannot be erased now (``reason`` says why, in ids only)."""

    code = "erasure_refused"

    def __init__(self, *, participant_id: str, reason: str) -> None:
        super().__init__(f"participant {participant_id} cannot be erased now: {reason}")
        self.participant_id = participant_id
        self.reason = reason


class RateLimited(GatewayError):
    """Too many requests or events; slow down."""

    code = "rate_limited"

    def __init__(self, *, scope: str) -> None:
        super().__init__(f"too many requests ({scope})")
        self.scope = scope


# --- links ---------------------------------------------------------------------------


class LinkError(GatewayError):
    """A link token was refused. Outside the gateway every subclass looks the same."""

    code = "link_refused"

    def __init__(self, message: str, *, purpose: str | None = None) -> None:
        super().__init__(message)
        self.purpose = purpose


class LinkInvalid(LinkError):
    """Malformed, tampered, truncated, signed with an unknown key, or of another purpose."""


class LinkExpired(LinkError):
    """The signature is valid but older than the purpose's maximum age."""

    def __init__(self, *, purpose: str, expired_at: float) -> None:
        super().__init__(f"{purpose} link expired at {expired_at:.0f}", purpose=purpose)
        self.expired_at = expired_at


class LinkNotYetValid(LinkError):
    """The signature claims to have been made in the future."""

    def __init__(self, *, purpose: str, issued_at: float) -> None:
        super().__init__(f"{purpose} link dated in the future ({issued_at:.0f})", purpose=purpose)
        self.issued_at = issued_at


class LinkAlreadyUsed(LinkError):
    """The link's jti was consumed by an earlier redemption."""

    def __init__(self, *, purpose: str) -> None:
        super().__init__(f"{purpose} link already used", purpose=purpose)


# --- TOTP ------------------------------------------------------------------------------


class TotpError(GatewayError):
    """A TOTP code was not accepted."""

    code = "totp_refused"


class TotpNotEnrolled(TotpError):
    """The participant has no TOTP secret yet."""

    code = "totp_not_enrolled"


class TotpInvalidFormat(TotpError):
    """The code is not exactly the expected number of ASCII digits."""

    code = "totp_invalid_format"


class TotpRejected(TotpError):
    """The code does not match; ``failures`` attempts are now on record."""

    code = "totp_rejected"

    def __init__(self, *, failures: int, remaining: int) -> None:
        super().__init__(f"code rejected ({failures} failed, {remaining} left)")
        self.failures = failures
        self.remaining = remaining


class TotpReplayed(TotpError):
    """The code's time step was already used (or an older one)."""

    code = "totp_replayed"

    def __init__(self, *, step: int) -> None:
        super().__init__(f"time step {step} already used")
        self.step = step


class TotpLockedOut(TotpError):
    """Too many failures: no code is checked until the cool-down ends."""

    code = "totp_locked_out"

    def __init__(self, *, locked_until: float, just_locked: bool = False) -> None:
        super().__init__(f"locked out until {locked_until:.0f}")
        self.locked_until = locked_until
        #: True for the attempt that reached the limit, so the host is told once.
        self.just_locked = just_locked


# --- waiting room -------------------------------------------------------------------------


class WaitingRoomError(GatewayError):
    """A waiting-room rule refused the action."""

    code = "waiting_room_refused"


class IllegalTransition(WaitingRoomError):
    """The participant's current state does not allow this move."""

    code = "illegal_transition"

    def __init__(self, *, current: str, event: str) -> None:
        super().__init__(f"cannot {event} from state {current}")
        self.current = current
        self.event = event


class RoomLocked(WaitingRoomError):
    """The host has locked the room: no new knocks."""

    code = "room_locked"

    def __init__(self, *, room_id: str) -> None:
        super().__init__(f"room {room_id} is locked")
        self.room_id = room_id


class HostAbsent(WaitingRoomError):
    """Nobody is admitted without a host present."""

    code = "host_absent"

    def __init__(self, *, room_id: str) -> None:
        super().__init__(f"no host present in room {room_id}")
        self.room_id = room_id


# --- consent --------------------------------------------------------------------------------


class ConsentError(GatewayError):
    """A consent rule refused the action."""

    code = "consent_refused"


class ConsentMissing(ConsentError):
    """Recording (or joining) needs consent that these participants have not given."""

    code = "consent_missing"

    def __init__(self, *, kind: str, lacking: Sequence[str]) -> None:
        self.kind = kind
        self.lacking = tuple(lacking)
        super().__init__(f"{kind} consent missing for {len(self.lacking)} participant(s)")


# --- audit ------------------------------------------------------------------------------------


class AuditChainBroken(GatewayError):
    """The audit chain does not verify: an entry was altered, removed or reordered."""

    code = "audit_chain_broken"

    def __init__(self, *, seq: int, reason: str) -> None:
        super().__init__(f"audit chain broken at entry {seq}: {reason}")
        self.seq = seq
        self.reason = reason


# --- webhooks ---------------------------------------------------------------------------------


class WebhookError(GatewayError):
    """A webhook could not be signed, verified or sent."""

    code = "webhook_error"


class WebhookSignatureInvalid(WebhookError):
    """Malformed signature header, or no signature in it matches the body and secret."""

    code = "webhook_signature_invalid"


class WebhookSignatureExpired(WebhookSignatureInvalid):
    """The signature matches but was made longer ago than the tolerance allows."""

    def __init__(self, *, signed_at: int, tolerance: int) -> None:
        super().__init__(f"webhook signed at {signed_at}, older than {tolerance} s")
        self.signed_at = signed_at
        self.tolerance = tolerance


class WebhookSignatureNotYetValid(WebhookSignatureInvalid):
    """The signature matches but claims a time further ahead than the tolerance allows."""

    def __init__(self, *, signed_at: int, tolerance: int) -> None:
        super().__init__(f"webhook signed at {signed_at}, more than {tolerance} s ahead")
        self.signed_at = signed_at
        self.tolerance = tolerance


# --- recordings -------------------------------------------------------------------------------


class RecordingError(GatewayError):
    """A sealed recording could not be written, opened or verified."""

    code = "recording_error"


class RecordingCorrupt(RecordingError):
    """The sealed file fails authentication: altered, reordered, cut or extended bytes.

    ``offset`` is where in the sealed file the first bad byte range starts (0: the header).
    """

    code = "recording_corrupt"

    def __init__(self, *, offset: int, reason: str) -> None:
        super().__init__(f"sealed recording corrupt at byte {offset}: {reason}")
        self.offset = offset
        self.reason = reason


class RecordingTruncated(RecordingCorrupt):
    """The sealed file ends before its final chunk: cut short, or never finished."""

    code = "recording_truncated"

    def __init__(self, *, offset: int) -> None:
        super().__init__(offset=offset, reason="the file ends before its final chunk")


class RecordingKeyUnknown(RecordingError):
    """The recording was sealed under a master key that is not configured."""

    code = "recording_key_unknown"

    def __init__(self, *, key_id: str) -> None:
        super().__init__(f"recording sealed under unknown master key {key_id}")
        self.key_id = key_id


class RecordingVersionUnsupported(RecordingError):
    """The sealed file is in a format version this gateway cannot read."""

    code = "recording_version_unsupported"

    def __init__(self, *, version: int) -> None:
        super().__init__(f"sealed recording format version {version} is not supported")
        self.version = version


class RecordingMuxFailed(RecordingError):
    """An encoded frame could not be put into the container."""

    code = "recording_mux_failed"

    def __init__(self, *, track: int, reason: str) -> None:
        super().__init__(f"track {track}: {reason}")
        self.track = track
        self.reason = reason


# --- media -----------------------------------------------------------------------------------


class MediaError(GatewayError):
    """The media plane refused or could not do what was asked."""

    code = "media_error"


class SdpRejected(InvalidInput):
    """An SDP offer that is malformed, oversized or asks for what the gateway cannot do.

    ``reason`` is a short fixed phrase; it never quotes the SDP (which holds addresses).
    """

    code = "sdp_rejected"

    def __init__(self, *, reason: str) -> None:
        super().__init__(f"SDP refused: {reason}", field="sdp")
        self.reason = reason


class PeerClosed(MediaError):
    """The participant's media connection is closed; ``reason`` says why."""

    code = "peer_closed"

    def __init__(self, *, reason: str) -> None:
        super().__init__(f"media connection closed ({reason})")
        self.reason = reason


# --- storage ----------------------------------------------------------------------------------


class StoreError(GatewayError):
    """The store failed."""

    code = "store_error"


class StoreUnavailable(StoreError):
    """The store cannot be reached; joins and admissions fail closed."""

    code = "store_unavailable"


# --- operations -------------------------------------------------------------------------------


class ServiceRestarting(GatewayError):
    """This gateway process is shutting down: it takes no new joins (the link is not
    used up; the next process or another one will take it)."""

    code = "restarting"
