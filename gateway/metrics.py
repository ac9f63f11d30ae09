"""Prometheus metrics: what an operator watches, with no ids and no PHI in any label.

Every label takes its values from one of the enums below, so the number of series is
fixed. Counters come from what the gateway already reports: domain events on the
:class:`~gateway.services.events.EventBus` (:meth:`GatewayMetrics.on_event`) and entries
of the audit log (:meth:`GatewayMetrics.on_audit`). Gauges are sampled when /metrics is
read (:meth:`GatewayMetrics.add_sampler`), from this process's own connections.

The media plane counts what it forwards through :meth:`GatewayMetrics.forwarded`: take
the two children once per track and ``inc()`` them per packet (or per batch).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    generate_latest,
)

from gateway.domain.audit import AuditEntry
from gateway.services.events import Event, EventKind

__all__ = [
    "CONTENT_TYPE",
    "AuthFailure",
    "GatewayMetrics",
    "MediaKind",
    "RecordingEvent",
    "RetentionKind",
    "Sampler",
    "WebhookFailure",
]

log = logging.getLogger(__name__)

#: The Prometheus text exposition format's content type.
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: A sampler that takes longer than this is skipped for one scrape.
SAMPLE_TIMEOUT = 2.0

Sampler = Callable[["GatewayMetrics"], Awaitable[None]]


class MediaKind(enum.StrEnum):
    AUDIO = "audio"
    VIDEO = "video"


class AuthFailure(enum.StrEnum):
    """Why a credential was refused (the ``kind`` label of ``quietroom_auth_failures``)."""

    #: A wrong TOTP code (the one that starts a lockout included).
    TOTP_REJECTED = "totp_rejected"
    #: A right TOTP code whose time step was already used.
    TOTP_REPLAYED = "totp_replayed"
    #: A TOTP code sent while locked out (not even looked at).
    TOTP_LOCKED_OUT = "totp_locked_out"
    #: A platform API key that is malformed, unknown, wrong or revoked.
    API_KEY_REFUSED = "api_key_refused"


class RecordingEvent(enum.StrEnum):
    STARTED = "started"
    STOPPED = "stopped"
    REFUSED = "refused"


class WebhookFailure(enum.StrEnum):
    #: One attempt failed; it will be retried.
    FAILED = "failed"
    #: The last attempt failed, or the platform has no endpoint: given up.
    ABANDONED = "abandoned"


class RetentionKind(enum.StrEnum):
    """What the retention removed (the ``kind`` label of ``quietroom_retention_removed``)."""

    AUDIT_ENTRIES = "audit_entries"
    #: Not removed but ended: appointments nobody ended (their data goes later).
    ABANDONED_APPOINTMENTS = "abandoned_appointments"
    APPOINTMENTS = "appointments"
    PARTICIPANTS = "participants"
    APPOINTMENT_RECORDS = "appointment_records"
    RECORDINGS = "recordings"
    LINKS = "links"
    SESSIONS = "sessions"


_RECORDING_EVENTS = {
    EventKind.RECORDING_STARTED: RecordingEvent.STARTED,
    EventKind.RECORDING_STOPPED: RecordingEvent.STOPPED,
    EventKind.RECORDING_REFUSED: RecordingEvent.REFUSED,
}

#: Audit outcomes of ``totp.verify`` that are auth failures.
_TOTP_FAILURES = {
    "rejected": AuthFailure.TOTP_REJECTED,
    "lockout_started": AuthFailure.TOTP_REJECTED,
    "replayed": AuthFailure.TOTP_REPLAYED,
    "locked_out": AuthFailure.TOTP_LOCKED_OUT,
}

_WEBHOOK_FAILURES = {
    "webhook.failed": WebhookFailure.FAILED,
    "webhook.abandoned": WebhookFailure.ABANDONED,
}


class GatewayMetrics:
    """One registry of the gateway's metrics; the application owns one instance."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        ProcessCollector(registry=registry)
        self.waiting_clients = Gauge(
            "quietroom_waiting_clients",
            "Clients waiting to be admitted, with a connection to this process",
            registry=registry,
        )
        self.sessions_in_progress = Gauge(
            "quietroom_sessions_in_progress",
            "Sessions with an admitted client connected to this process",
            registry=registry,
        )
        self.admitted = Counter(
            "quietroom_admitted", "Clients admitted by a host", registry=registry
        )
        self.sessions_ended = Counter(
            "quietroom_sessions_ended",
            "Sessions ended (by the host or the platform)",
            registry=registry,
        )
        self.lockouts = Counter(
            "quietroom_lockouts",
            "Participants locked out after too many wrong TOTP codes",
            registry=registry,
        )
        self.auth_failures = Counter(
            "quietroom_auth_failures",
            "Credentials refused: TOTP codes and platform API keys",
            ["kind"],
            registry=registry,
        )
        self.webhook_failures = Counter(
            "quietroom_webhook_failures",
            "Webhook deliveries that failed an attempt, or were given up",
            ["outcome"],
            registry=registry,
        )
        self.recordings = Counter(
            "quietroom_recordings",
            "Recordings started, stopped, and starts refused (no consent, not allowed)",
            ["event"],
            registry=registry,
        )
        self.recordings_open = Gauge(
            "quietroom_recordings_open",
            "Recordings this process is writing now (set by the media plane)",
            registry=registry,
        )
        self.forwarded_packets = Counter(
            "quietroom_forwarded_packets",
            "RTP packets the media plane forwarded from one participant to another",
            ["kind"],
            registry=registry,
        )
        self.forwarded_bytes = Counter(
            "quietroom_forwarded_bytes",
            "Bytes of RTP packets the media plane forwarded",
            ["kind"],
            registry=registry,
        )
        self.media_dropped = Counter(
            "quietroom_media_dropped_datagrams",
            "Media datagrams dropped because this process could not keep up: by the kernel "
            "on its peers' full UDP sockets and at their bounded receive queues "
            "(set by the media plane)",
            registry=registry,
        )
        self.media_errors = Counter(
            "quietroom_media_forwarding_errors",
            "RTP or RTCP packets lost to an unexpected error while forwarding or handling "
            "them (a bug: each peer connection logs its first one; set by the media plane)",
            registry=registry,
        )
        self.media_refused = Counter(
            "quietroom_media_sessions_refused",
            "New sessions this media process turned away at QUIETROOM_MEDIA_MAX_SESSIONS",
            registry=registry,
        )
        self.media_sessions = Gauge(
            "quietroom_media_sessions",
            "Sessions whose media this process carries now (set by the media plane)",
            registry=registry,
        )
        self.store_up = Gauge(
            "quietroom_store_up",
            "1 if the store (Redis) answered when /metrics was last read, else 0",
            registry=registry,
        )
        self.draining = Gauge(
            "quietroom_draining",
            "1 while this process is shutting down and takes no new joins",
            registry=registry,
        )
        self.retention_removed = Counter(
            "quietroom_retention_removed",
            "What the retention sweeper of this process removed",
            ["kind"],
            registry=registry,
        )
        self.retention_failures = Counter(
            "quietroom_retention_failures",
            "Retention passes of this process that stopped on an error",
            registry=registry,
        )
        self.retention_last_pass = Gauge(
            "quietroom_retention_last_pass_timestamp_seconds",
            "When a retention pass of this process last finished without an error",
            registry=registry,
        )
        self.participants_erased = Counter(
            "quietroom_participants_erased",
            "Participants whose data was erased at their platform's request",
            registry=registry,
        )
        # Every labelled series exists from the start, at zero.
        for removed in RetentionKind:
            self.retention_removed.labels(kind=removed.value)
        for failure in AuthFailure:
            self.auth_failures.labels(kind=failure.value)
        for outcome in WebhookFailure:
            self.webhook_failures.labels(outcome=outcome.value)
        for event in RecordingEvent:
            self.recordings.labels(event=event.value)
        for kind in MediaKind:
            self.forwarded(kind)
        self._samplers: list[Sampler] = []

    # --- what other parts call ----------------------------------------------------------

    def forwarded(self, kind: MediaKind | str) -> tuple[Counter, Counter]:
        """The (packets, bytes) counters for one kind of media; ValueError for others."""
        value = MediaKind(kind).value
        return self.forwarded_packets.labels(kind=value), self.forwarded_bytes.labels(kind=value)

    def auth_failed(self, kind: AuthFailure) -> None:
        self.auth_failures.labels(kind=AuthFailure(kind).value).inc()

    def retention_pass(self, removed: Mapping[str, int], *, at: float) -> None:
        """A retention pass finished: ``removed`` maps each :class:`RetentionKind` to a count."""
        for kind, count in removed.items():
            if count:
                self.retention_removed.labels(kind=RetentionKind(kind).value).inc(count)
        self.retention_last_pass.set(at)

    def add_sampler(self, sampler: Sampler) -> None:
        """Run ``sampler`` before every exposition (it sets gauges)."""
        self._samplers.append(sampler)

    def remove_sampler(self, sampler: Sampler) -> None:
        if sampler in self._samplers:
            self._samplers.remove(sampler)

    async def exposition(self) -> bytes:
        """Sample the gauges, then the text format of every metric."""
        for sampler in list(self._samplers):
            try:
                async with asyncio.timeout(SAMPLE_TIMEOUT):
                    await sampler(self)
            except Exception:  # a stale gauge is better than no metrics at all
                log.warning("metrics sampler %s failed", _name(sampler), exc_info=True)
        return generate_latest(self.registry)

    # --- subscribers ---------------------------------------------------------------------

    async def on_event(self, event: Event) -> None:
        """An EventBus subscriber."""
        kind = event.kind
        if kind is EventKind.PARTICIPANT_ADMITTED:
            self.admitted.inc()
        elif kind is EventKind.PARTICIPANT_LOCKED_OUT:
            self.lockouts.inc()
        elif kind is EventKind.SESSION_ENDED:
            self.sessions_ended.inc()
        elif kind in _RECORDING_EVENTS:
            self.recordings.labels(event=_RECORDING_EVENTS[kind].value).inc()

    def on_audit(self, entry: AuditEntry) -> None:
        """An audit log observer, for what is not a domain event."""
        if entry.action == "totp.verify":
            failure = _TOTP_FAILURES.get(entry.outcome)
            if failure is not None:
                self.auth_failed(failure)
            return
        if entry.action == "participant.erased":
            self.participants_erased.inc()
            return
        webhook = _WEBHOOK_FAILURES.get(entry.action)
        if webhook is not None:
            self.webhook_failures.labels(outcome=webhook.value).inc()


def _name(sampler: Sampler) -> str:
    return getattr(sampler, "__qualname__", type(sampler).__name__)
