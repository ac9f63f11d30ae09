"""The one place gateway errors become Socket.IO acknowledgements."""

from __future__ import annotations

from typing import Any

import socketio

from gateway.errors import (
    ConsentMissing,
    GatewayError,
    HostAbsent,
    IllegalTransition,
    InvalidInput,
    NotAllowed,
    NotFound,
    PeerClosed,
    RateLimited,
    RoomLocked,
    SdpRejected,
    ServiceRestarting,
    StoreUnavailable,
    TotpInvalidFormat,
    TotpLockedOut,
    TotpNotEnrolled,
    TotpRejected,
    TotpReplayed,
    TurnNotConfigured,
)

__all__ = ["error_ack", "ok", "refusal"]

# Plain-language messages, safe to show: no ids, no internals.
_MESSAGES: dict[type[GatewayError], str] = {
    InvalidInput: "That request was not understood.",
    SdpRejected: "Your browser's call setup could not be used. Please reload the page.",
    PeerClosed: "The call connection has closed. Please try again.",
    TurnNotConfigured: "The call cannot start: the service is not set up for this room yet.",
    NotAllowed: "That is not possible right now.",
    NotFound: "Not found.",
    RateLimited: "Too many requests. Please slow down.",
    IllegalTransition: "That is not possible right now.",
    RoomLocked: "The session is not taking new participants right now.",
    HostAbsent: "Your therapist has not joined yet.",
    ConsentMissing: "Consent is needed first.",
    StoreUnavailable: "We can't do that right now. Please try again in a minute.",
    ServiceRestarting: "The service is restarting. Please try again in a moment.",
    TotpInvalidFormat: "Please type the 6-digit code from your authenticator app.",
    TotpNotEnrolled: "Please set up your authenticator app first.",
    TotpRejected: "That code did not work. Please check it and try again.",
    TotpReplayed: "That code was already used. Please wait for the next one.",
    TotpLockedOut: "Too many wrong codes. Please wait a while before trying again.",
}


def ok(**data: Any) -> dict[str, Any]:
    return {"ok": True, **data}


#: Connection refusals that say more than "refused": the browser should try again later.
_REFUSAL_MESSAGES = {
    "restarting": "The service is restarting. Please try again in a moment.",
    "store_unavailable": "We can't let you in right now. Please try again in a minute.",
}


def refusal(code: str) -> socketio.exceptions.ConnectionRefusedError:
    """A refused connection as the browser's ``connect_error`` gets it: ``err.message``
    plain text, ``err.data`` ``{"code": ...}``. (A dict as the only argument would reach
    the browser as its Python repr inside the message.)"""
    message = _REFUSAL_MESSAGES.get(code, "The connection was refused.")
    return socketio.exceptions.ConnectionRefusedError(message, {"code": code})


def error_ack(exc: GatewayError) -> dict[str, Any]:
    message = next(
        (text for kind, text in _MESSAGES.items() if type(exc) is kind),
        next(
            (text for kind, text in _MESSAGES.items() if isinstance(exc, kind)),
            "That is not possible right now.",
        ),
    )
    error: dict[str, Any] = {"code": exc.code, "message": message}
    if isinstance(exc, TotpRejected):
        error["remaining"] = exc.remaining
    if isinstance(exc, TotpLockedOut):
        error["locked_until"] = exc.locked_until
    if isinstance(exc, ConsentMissing):
        # Only ever sent to the host, whose session it is; clients see their own id only.
        error["lacking"] = list(exc.lacking)
    return {"ok": False, "error": error}
