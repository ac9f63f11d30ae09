"""Webhooks to platforms: events go into the store's outbox; a worker sends them.

The dispatcher turns the events a platform cares about into deliveries in the durable
outbox (the store), so a restart loses none. The worker leases due deliveries from the
outbox (two gateway processes never hold one delivery at once), POSTs each signed body,
and on failure reschedules it by the retry schedule or, after the last attempt, gives up.
Every failed attempt and every give-up goes into the audit log, with ids only: never the
URL or the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from gateway import __version__
from gateway.clock import Clock
from gateway.domain.model import Platform
from gateway.domain.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    RetrySchedule,
    WebhookClaim,
    WebhookType,
    clean_webhook_url,
    is_public_address,
    new_delivery,
    sign,
)
from gateway.errors import StoreError
from gateway.services.audit import AuditLog
from gateway.services.events import Event, EventKind
from gateway.storage.base import Store

__all__ = ["PublicAddressResolver", "WebhookConfig", "WebhookDispatcher", "WebhookWorker"]

log = logging.getLogger(__name__)

#: The events platforms get, and the webhook type each becomes.
_WEBHOOK_OF: dict[EventKind, WebhookType] = {
    EventKind.PARTICIPANT_WAITING: WebhookType.PARTICIPANT_WAITING,
    EventKind.PARTICIPANT_ADMITTED: WebhookType.PARTICIPANT_ADMITTED,
    EventKind.PARTICIPANT_DENIED: WebhookType.PARTICIPANT_DENIED,
    EventKind.PARTICIPANT_LEFT: WebhookType.PARTICIPANT_LEFT,
    EventKind.PARTICIPANT_REMOVED: WebhookType.PARTICIPANT_REMOVED,
    EventKind.SESSION_ENDED: WebhookType.SESSION_ENDED,
    EventKind.RECORDING_STARTED: WebhookType.RECORDING_STARTED,
    EventKind.RECORDING_STOPPED: WebhookType.RECORDING_STOPPED,
    EventKind.RECORDING_REFUSED: WebhookType.RECORDING_REFUSED,
}

#: The audit actor for what the worker does on its own.
_ACTOR = "gateway"


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """How the worker sends: every quantity bounded."""

    schedule: RetrySchedule = field(default_factory=RetrySchedule)
    #: Seconds between outbox polls when nothing wakes the worker sooner.
    poll_interval: float = 1.0
    #: At most this many deliveries claimed per poll.
    batch_size: int = 20
    #: At most this many POSTs in flight.
    concurrency: int = 8
    #: Seconds for one POST, connecting and answering included.
    timeout: float = 5.0
    #: Seconds a claimed delivery stays invisible to other workers; well above ``timeout``
    #: so a delivery is re-claimed only when its sender has died.
    lease: float = 60.0
    #: At most this much of an answer's body is read (and then dropped).
    max_response_bytes: int = 1024

    def __post_init__(self) -> None:
        if self.poll_interval <= 0 or self.timeout <= 0:
            raise ValueError("webhook poll interval and timeout are positive")
        if self.batch_size < 1 or self.concurrency < 1 or self.max_response_bytes < 0:
            raise ValueError("webhook batch size and concurrency are at least 1")
        if self.lease < 2 * self.timeout:
            raise ValueError("the webhook lease must be at least twice the POST timeout")


class WebhookDispatcher:
    """Subscribes to the event bus; puts a delivery in the outbox for each event a
    platform with a webhook URL should hear about."""

    def __init__(
        self, *, store: Store, clock: Clock, on_enqueued: Callable[[], None] | None = None
    ) -> None:
        self._store = store
        self._clock = clock
        self._on_enqueued = on_enqueued

    async def on_event(self, event: Event) -> None:
        kind = _WEBHOOK_OF.get(event.kind)
        if kind is None:
            return
        if kind.value.startswith("participant.") and event.participant_id is None:
            return  # participant webhooks are about one client, named by id
        platform = await self._platform_of(event.appointment_id)
        if platform is None or platform.webhook_url is None:
            return
        # Recording webhooks name the recording and why, never a participant.
        recording = kind.value.startswith("recording.")
        delivery = new_delivery(
            platform_id=platform.id,
            kind=kind,
            at=event.at,
            appointment_id=event.appointment_id,
            room_id=event.room_id,
            participant_id=None if recording else event.participant_id,
            recording_id=event.extra.get("recording") if recording else None,
            reason=event.extra.get("reason") if recording else None,
            now=self._clock.now(),
        )
        await self._store.enqueue_webhook(delivery)
        log.debug(
            "webhook %s queued as %s",
            kind.value,
            delivery.id,
            extra={"platform_id": platform.id, "appointment_id": event.appointment_id},
        )
        if self._on_enqueued is not None:
            self._on_enqueued()

    async def _platform_of(self, appointment_id: str) -> Platform | None:
        """Appointment -> room -> host -> platform; None where the chain breaks."""
        appointment = await self._store.get_appointment(appointment_id)
        room = None if appointment is None else await self._store.get_room(appointment.room_id)
        host = None if room is None else await self._store.get_host(room.host_id)
        if host is None or not host.platform_id:
            return None
        return await self._store.get_platform(host.platform_id)


class PublicAddressResolver(AbstractResolver):
    """Resolves webhook hosts to their public addresses only.

    The check is on the addresses the connection will use, so a name that resolves to a
    private, loopback or link-local address (DNS rebinding, cloud metadata) fails the
    delivery like an unreachable host, and the failure is in the audit log.
    """

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        public = [result for result in found if is_public_address(result["host"])]
        if not public:
            raise OSError(f"{host} resolves to no public address")
        return public

    async def close(self) -> None:
        await self._inner.close()


class WebhookWorker:
    """Sends due deliveries from the outbox. ``start()`` and ``stop()`` belong to the
    application's cleanup context; ``stop()`` is safe to call twice."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        audit: AuditLog,
        config: WebhookConfig | None = None,
        allow_http: bool = False,
        allow_private: bool = False,
        rand: Callable[[], float] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._audit = audit
        self._config = config or WebhookConfig()
        self._allow_http = allow_http
        self._allow_private = allow_private
        self._rand = rand or secrets.SystemRandom().random
        self._session: aiohttp.ClientSession | None = None
        self._poller: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()

    async def start(self) -> None:
        if self._poller is not None:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._config.timeout),
            connector=aiohttp.TCPConnector(
                limit=self._config.concurrency,
                resolver=None if self._allow_private else PublicAddressResolver(),
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": f"Quietroom-Webhooks/{__version__}"},
            trust_env=False,
        )
        self._poller = asyncio.create_task(self._poll(), name="webhook poller")

    async def stop(self) -> None:
        """Cancel polling and every POST in flight; their leases run out and another
        poll (here after a restart, or in another process) sends them again."""
        tasks = [*self._in_flight]
        if self._poller is not None:
            tasks.append(self._poller)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._poller = None
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def wake(self) -> None:
        """Poll now rather than at the next interval (a delivery was just queued)."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    # --- polling -------------------------------------------------------------------------

    async def _poll(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._claim_due()
            except StoreError as exc:
                log.warning("webhook outbox unavailable: %s", exc.code)
            except Exception:  # a bug must not stop every later webhook
                log.exception("webhook poll failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._config.poll_interval):
                    await self._wake.wait()

    async def _claim_due(self) -> None:
        free = self._config.concurrency - len(self._in_flight)
        if free <= 0:
            return
        claims = await self._store.claim_webhooks(
            now=self._clock.now(),
            lease=self._config.lease,
            limit=min(free, self._config.batch_size),
        )
        for claim in claims:
            task = asyncio.create_task(self._deliver(claim), name=f"webhook {claim.delivery.id}")
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wake.set()  # a slot is free

    # --- one delivery --------------------------------------------------------------------

    async def _deliver(self, claim: WebhookClaim) -> None:
        delivery = claim.delivery
        try:
            platform = await self._store.get_platform(delivery.platform_id)
            secret = await self._store.get_webhook_secret(delivery.platform_id)
            url = None if platform is None else self._endpoint(platform)
            if url is None or secret is None:
                await self._give_up(claim, outcome="no_endpoint")
                return
            outcome = await self._post(url, secret, claim)
            if outcome is None:
                await self._store.complete_webhook(delivery.id)
                log.info(
                    "webhook %s delivered",
                    delivery.id,
                    extra={"platform_id": delivery.platform_id},
                )
                return
            await self._failed(claim, outcome)
        except StoreError as exc:
            # The lease runs out and the delivery is tried again.
            log.warning("webhook %s: store unavailable (%s)", delivery.id, exc.code)
        except Exception:  # one delivery's bug must not reach the poller
            log.exception("webhook %s failed unexpectedly", delivery.id)

    def _endpoint(self, platform: Platform) -> str | None:
        # Checked again at send time: the URL may have been stored by another path.
        try:
            return clean_webhook_url(
                platform.webhook_url,
                allow_http=self._allow_http,
                allow_private=self._allow_private,
            )
        except ValueError:
            return None

    async def _post(self, url: str, secret: str, claim: WebhookClaim) -> str | None:
        """None when the platform answered 2xx; else the status or the error's class."""
        session = self._session
        if session is None:
            raise RuntimeError("the webhook worker is not started")
        delivery = claim.delivery
        body = delivery.body.encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, body, timestamp=int(self._clock.now())),
            DELIVERY_HEADER: delivery.id,
        }
        try:
            async with session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.content.read(self._config.max_response_bytes)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return type(exc).__name__
        return None if 200 <= status < 300 else str(status)

    async def _failed(self, claim: WebhookClaim, outcome: str) -> None:
        delivery = claim.delivery
        attempt = delivery.attempts + 1
        delay = self._config.schedule.delay_after(attempt, rand=self._rand())
        log.info(
            "webhook %s attempt %d failed: %s",
            delivery.id,
            attempt,
            outcome,
            extra={"platform_id": delivery.platform_id},
        )
        if delay is None:
            await self._give_up(claim, outcome=outcome, attempt=attempt)
            return
        await self._store.reschedule_webhook(
            delivery.id, claim=claim.claim, due_at=self._clock.now() + delay, attempts=attempt
        )
        await self._record("webhook.failed", claim, outcome=outcome, attempt=attempt)

    async def _give_up(self, claim: WebhookClaim, *, outcome: str, attempt: int = 0) -> None:
        abandoned = await self._store.abandon_webhook(claim.delivery.id, claim=claim.claim)
        if attempt:
            await self._record("webhook.failed", claim, outcome=outcome, attempt=attempt)
        if abandoned:
            await self._record("webhook.abandoned", claim, outcome=outcome, attempt=attempt)
            log.warning(
                "webhook %s abandoned: %s",
                claim.delivery.id,
                outcome,
                extra={"platform_id": claim.delivery.platform_id},
            )

    async def _record(
        self, action: str, claim: WebhookClaim, *, outcome: str, attempt: int
    ) -> None:
        subjects = {"delivery": claim.delivery.id, "platform": claim.delivery.platform_id}
        if attempt:
            subjects["attempt"] = str(attempt)
        await self._audit.record(action, actor=_ACTOR, outcome=outcome, subjects=subjects)
