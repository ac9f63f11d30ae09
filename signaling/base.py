"""What the host and client namespaces share: authentication at connect, and one
dispatcher that checks, throttles and answers every event the same way."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import socketio

from gateway.clock import Clock
from gateway.domain.model import BrowserSession, Role
from gateway.errors import GatewayError, InvalidInput, NotAllowed, RateLimited
from gateway.services import Services
from gateway.settings import Settings
from gateway.web.keys import LIFECYCLE
from signaling.errors import error_ack, refusal
from signaling.ratelimit import TokenBucket
from signaling.timers import GraceTimers
from signaling.validation import Schema

__all__ = ["RATE_PER_PARTICIPANT", "Caller", "GatewayNamespace", "Grace", "Handler"]

log = logging.getLogger(__name__)

#: Per connection: this many events a second on average, bursts of twice that.
RATE_PER_CONNECTION = 5.0
BURST_PER_CONNECTION = 10.0
#: Per participant, across every connection and process: events a minute.
RATE_PER_PARTICIPANT = 120
COOKIE_HEADER_MAX = 4096
#: Seconds between answering "the session has ended" and closing that socket.
_CLOSE_AFTER_ANSWER = 0.2


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent an event, from the server-side session only."""

    sid: str
    session_hash: str
    session: BrowserSession

    @property
    def participant_id(self) -> str:
        return self.session.participant_id

    @property
    def appointment_id(self) -> str:
        return self.session.appointment_id


Handler = Callable[[Caller, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Grace:
    """What to do once a participant's last connection has stayed closed for ``delay``."""

    key: str
    delay: float
    action: Callable[[], Awaitable[object]]


def participant_room(participant_id: str) -> str:
    return f"p:{participant_id}"


def clients_room(appointment_id: str) -> str:
    return f"c:{appointment_id}"


def host_room(appointment_id: str) -> str:
    return f"h:{appointment_id}"


class GatewayNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """Base for /host and /client. Subclasses fill ``handlers`` and the connect hooks."""

    role: Role
    timers: GraceTimers

    def __init__(
        self, namespace: str, *, services: Services, settings: Settings, clock: Clock
    ) -> None:
        super().__init__(namespace)
        self.services = services
        self.settings = settings
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        #: sid -> participant id of every socket connected to this process.
        self._connected: dict[str, str] = {}
        self.handlers: Mapping[str, tuple[Schema, Handler]] = {}

    # --- connect -------------------------------------------------------------------------

    async def authenticate(self, environ: Mapping[str, Any]) -> tuple[str, BrowserSession]:
        """The caller's browser session, from the cookie; refused from a foreign Origin,
        while the process drains (a restart) and while the store is unreachable."""
        origin = environ.get("HTTP_ORIGIN")
        if origin not in self.settings.origins:
            raise refusal("origin_not_allowed")
        cookie_header = environ.get("HTTP_COOKIE", "")
        if not isinstance(cookie_header, str) or len(cookie_header) > COOKIE_HEADER_MAX:
            raise refusal("unauthenticated")
        request = environ.get("aiohttp.request")
        if request is not None and LIFECYCLE in request.app and request.app[LIFECYCLE].draining:
            raise refusal("restarting")
        token = None if request is None else request.cookies.get(self._cookie_name())
        try:
            found = await self.services.sessions.resolve(token)
        except GatewayError as exc:
            raise refusal(exc.code) from None
        if found is None or found[1].role is not self.role:
            raise refusal("unauthenticated")
        return found

    def _cookie_name(self) -> str:
        from gateway.web.routes import cookie_name

        return cookie_name(self.settings)

    async def remember(self, sid: str, session_hash: str, session: BrowserSession) -> None:
        await self.save_session(
            sid, {"session_hash": session_hash, "participant_id": session.participant_id}
        )
        self._buckets[sid] = TokenBucket.full(
            rate=RATE_PER_CONNECTION, burst=BURST_PER_CONNECTION, now=self.clock.now()
        )
        self._connected[sid] = session.participant_id

    def forget(self, sid: str) -> None:
        self._buckets.pop(sid, None)
        self._connected.pop(sid, None)

    def after_last_connection(self, participant_id: str) -> Grace:
        """What happens when the participant's last connection stays closed."""
        raise NotImplementedError

    async def on_disconnect(self, sid: str, reason: object = None) -> None:
        self.forget(sid)
        saved = await self.get_session(sid)
        participant_id = saved.get("participant_id") if saved else None
        if not isinstance(participant_id, str):
            return
        try:
            remaining = await self.services.store.change_connections(participant_id, -1)
        except GatewayError:
            return
        if remaining == 0:
            grace = self.after_last_connection(participant_id)
            self.timers.schedule(grace.key, grace.delay, grace.action)

    def connected_participants(self) -> set[str]:
        """The participants with a socket on this process, in this namespace."""
        return set(self._connected.values())

    # --- events --------------------------------------------------------------------------

    async def trigger_event(self, event: str, *args: Any) -> Any:
        if event in ("connect", "disconnect"):
            if not self._from_server(event, args):
                return error_ack(InvalidInput("unknown event"))
            return await super().trigger_event(event, *args)
        sid = args[0]
        try:
            return await self._dispatch(event, sid, args[1:])
        except GatewayError as exc:
            if not isinstance(exc, InvalidInput | RateLimited):
                log.info("%s %s refused: %s", self.namespace, event[:40], exc.code)
            return error_ack(exc)

    def _from_server(self, event: str, args: tuple[Any, ...]) -> bool:
        """Whether a connect or disconnect comes from the server itself: a client may send
        events by these names. The server calls them while the socket is still connecting
        (with the real environ) or already leaving, and a disconnect only once."""
        sid = args[0]
        if self.server.manager.is_connected(sid, self.namespace):
            return False
        if event == "connect":
            return len(args) > 1 and args[1] is self.server.get_environ(sid, self.namespace)
        return self._buckets.pop(sid, None) is not None

    async def _dispatch(self, event: str, sid: str, payload_args: tuple[Any, ...]) -> Any:
        bucket = self._buckets.get(sid)
        if bucket is None:
            raise NotAllowed("not connected")
        if not bucket.take(self.clock.now()):
            raise RateLimited(scope="connection")
        entry = self.handlers.get(event)
        if entry is None:
            raise InvalidInput("unknown event")
        if len(payload_args) > 1:
            raise InvalidInput("one payload per event")
        schema, handler = entry
        payload = schema.check(payload_args[0] if payload_args else None)
        caller = await self._caller(sid)
        if not await self.services.store.hit_rate_limit(
            f"events:{caller.participant_id}",
            limit=RATE_PER_PARTICIPANT,
            window=60,
            now=self.clock.now(),
        ):
            raise RateLimited(scope="participant")
        return await handler(caller, payload)

    async def _caller(self, sid: str) -> Caller:
        """The session as stored now: ended or replaced sessions stop working at once."""
        saved = await self.get_session(sid)
        session = await self.services.sessions.refresh(saved["session_hash"])
        if session is None or session.participant_id != saved["participant_id"]:
            # Answer first (the page can say why), then close the socket: a disconnect
            # sent now would overtake the acknowledgement.
            self.timers.schedule(f"ended:{sid}", _CLOSE_AFTER_ANSWER, lambda: self.disconnect(sid))
            raise NotAllowed("the session has ended")
        return Caller(sid=sid, session_hash=saved["session_hash"], session=session)
