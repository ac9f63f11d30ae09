"""Recording consent and recording control over the socket.

On both namespaces a participant gives or withdraws their own recording consent
(``consent.recording``); the host also asks for consent (``recording.ask``), starts and
stops recording. The rules are :class:`gateway.services.recordings.RecordingService`'s:
these handlers only check payloads, call it and answer.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from gateway.domain.model import Role
from gateway.services import Services
from signaling.base import Caller, Handler, host_room, participant_room
from signaling.errors import ok
from signaling.validation import NO_PAYLOAD, Field, Schema

__all__ = ["RecordingHandlers"]

log = logging.getLogger(__name__)

_CONSENT = Schema({"version": Field(str, 64), "given": Field(bool)})


class Emit(Protocol):
    async def __call__(
        self, event: str, data: Any = None, *, to: str | None = None, namespace: str | None = None
    ) -> None: ...


class RecordingHandlers:
    """``consent.recording`` on both namespaces; ``recording.ask``, ``recording.start``
    and ``recording.stop`` on /host."""

    def __init__(self, *, services: Services, role: Role, emit: Emit) -> None:
        self._services = services
        self._role = role
        self._emit = emit

    def handlers(self) -> dict[str, tuple[Schema, Handler]]:
        handlers: dict[str, tuple[Schema, Handler]] = {
            "consent.recording": (_CONSENT, self.consent)
        }
        if self._role is Role.HOST:
            handlers |= {
                "recording.ask": (NO_PAYLOAD, self.ask),
                "recording.start": (NO_PAYLOAD, self.start),
                "recording.stop": (NO_PAYLOAD, self.stop),
            }
        return handlers

    async def consent(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        """Give (to the text version shown) or withdraw the caller's recording consent."""
        state = await self._services.recordings.set_consent(
            caller.session, version=payload["version"], given=payload["given"]
        )
        return ok(given=state.given, version=state.version)

    async def ask(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        """Show the consent text to everyone in the session who has not agreed yet."""
        recordings = self._services.recordings
        lacking = await recordings.ask(caller.session)
        question = {
            "version": recordings.consent_text.version,
            "text": recordings.consent_text.text,
        }
        for participant_id in lacking:
            if participant_id == caller.participant_id:
                to, namespace = host_room(caller.appointment_id), "/host"
            else:
                to, namespace = participant_room(participant_id), "/client"
            await self._emit("recording.asked", question, to=to, namespace=namespace)
        return ok(lacking=lacking)

    async def start(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        recording = await self._services.recordings.start(caller.session)
        return ok(recording_id=recording.id)

    async def stop(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        await self._services.recordings.stop(caller.session)
        return ok()
