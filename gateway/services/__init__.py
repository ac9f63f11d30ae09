"""Application services: the domain's rules applied to the store, for every adapter.

HTTP routes and Socket.IO handlers call these; the rules stay in ``gateway.domain``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.domain.links import LinkPurpose, LinkSigner
from gateway.domain.retention import RetentionPolicy
from gateway.domain.totp import TotpPolicy
from gateway.services.apikeys import ApiKeyService, IssuedApiKey
from gateway.services.audit import AuditLog, AuditReport
from gateway.services.erasure import ParticipantErasure
from gateway.services.events import Event, EventBus, EventKind
from gateway.services.identity import IdentityService, Verified
from gateway.services.links import IssuedLink, LinkService, Redemption
from gateway.services.platform_access import PlatformAccess
from gateway.services.provisioning import Provisioning
from gateway.services.recordings import RecordingService
from gateway.services.retention import RetentionReport, RetentionService
from gateway.services.sessions import BrowserSessions, hash_session_token, new_session_token
from gateway.services.waiting_room import QueueEntry, Seat, WaitingRoomService
from gateway.settings import Settings
from gateway.storage.base import Store

__all__ = [
    "ApiKeyService",
    "AuditLog",
    "AuditReport",
    "BrowserSessions",
    "Event",
    "EventBus",
    "EventKind",
    "IdentityService",
    "IssuedApiKey",
    "IssuedLink",
    "LinkService",
    "ParticipantErasure",
    "PlatformAccess",
    "Provisioning",
    "QueueEntry",
    "RecordingService",
    "Redemption",
    "RetentionReport",
    "RetentionService",
    "Seat",
    "Services",
    "Verified",
    "WaitingRoomService",
    "hash_session_token",
    "new_session_token",
]


@dataclass(frozen=True, slots=True)
class Services:
    """Every service, wired to one store and one clock."""

    store: Store
    clock: Clock
    audit: AuditLog
    events: EventBus
    links: LinkService
    identity: IdentityService
    provisioning: Provisioning
    waiting_room: WaitingRoomService
    sessions: BrowserSessions
    apikeys: ApiKeyService
    platform_access: PlatformAccess
    erasure: ParticipantErasure
    retention: RetentionService
    recordings: RecordingService

    @classmethod
    def build(cls, *, settings: Settings, store: Store, clock: Clock) -> Services:
        audit = AuditLog(store=store, clock=clock)
        events = EventBus()
        signer = LinkSigner(
            secret_keys=settings.secret_keys,
            max_age={
                LinkPurpose.CLIENT_JOIN: settings.client_link_max_age,
                LinkPurpose.HOST_SIGN_IN: settings.host_link_max_age,
            },
            clock=clock,
        )
        policy = TotpPolicy(
            digits=settings.totp_digits,
            max_failures=settings.totp_max_failures,
            lockout_seconds=settings.totp_lockout_seconds,
            issuer=settings.totp_issuer,
        )
        identity = IdentityService(store=store, clock=clock, audit=audit, policy=policy)
        waiting_room = WaitingRoomService(
            store=store, clock=clock, audit=audit, events=events, identity=identity
        )
        platform_access = PlatformAccess(store=store)
        return cls(
            store=store,
            clock=clock,
            audit=audit,
            events=events,
            links=LinkService(
                store=store,
                signer=signer,
                clock=clock,
                audit=audit,
                public_url=settings.public_url,
                session_max_age=settings.session_max_age,
            ),
            identity=identity,
            provisioning=Provisioning(
                store=store,
                clock=clock,
                audit=audit,
                allow_http_webhooks=settings.dev_mode,
                allow_private_webhooks=settings.webhook_allow_private,
            ),
            waiting_room=waiting_room,
            sessions=BrowserSessions(
                store=store, clock=clock, host_idle_timeout=settings.host_idle_timeout
            ),
            apikeys=ApiKeyService(store=store, clock=clock, audit=audit),
            platform_access=platform_access,
            erasure=ParticipantErasure(
                store=store,
                clock=clock,
                audit=audit,
                access=platform_access,
                waiting_room=waiting_room,
            ),
            retention=RetentionService(
                store=store,
                clock=clock,
                audit=audit,
                policy=RetentionPolicy(
                    audit_days=settings.audit_retention_days,
                    recording_days=settings.recording_retention_days,
                    appointment_days=settings.appointment_retention_days,
                    appointment_max_days=settings.appointment_max_days,
                ),
                recording_dir=settings.recording_dir,
                end_abandoned=functools.partial(waiting_room.end_abandoned, actor="retention"),
            ),
            recordings=RecordingService(
                store=store, clock=clock, audit=audit, events=events, waiting_room=waiting_room
            ),
        )
