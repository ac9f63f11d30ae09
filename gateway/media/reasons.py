"""Why a participant's media connection, or a room's forwarding, was closed."""

from __future__ import annotations

import enum

__all__ = ["MediaCloseReason"]


class MediaCloseReason(enum.StrEnum):
    """Close reasons, one per cause; logged and carried by :class:`~gateway.errors.PeerClosed`."""

    #: The participant left (hung up, closed the page).
    LEFT = "left"
    #: The host denied the participant.
    DENIED = "denied"
    #: The host removed the participant from the session.
    REMOVED = "removed"
    #: The host ended the session.
    SESSION_ENDED = "session_ended"
    #: ICE or DTLS failed, or the remote side closed the connection.
    CONNECTION_FAILED = "connection_failed"
    #: The participant's offer was refused.
    SDP_REJECTED = "sdp_rejected"
    #: The participant offered again: a new connection replaces this one.
    RENEGOTIATED = "renegotiated"
    #: The participant's session was taken over by another device, or ended for them.
    SESSION_REPLACED = "session_replaced"
    #: The gateway is shutting down.
    SHUTDOWN = "shutdown"
