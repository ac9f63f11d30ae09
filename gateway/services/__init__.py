"""Application services: the domain's rules applied to the store, for every adapter.

HTTP routes and Socket.IO handlers call these; the rules stay in ``gateway.domain``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.clock import Clock
from gateway.domain.links import LinkPurpose, LinkSigner
from gateway.domain.totp import TotpPolicy
from gateway.services.audit import AuditLog, AuditReport
from gateway.services.events import Event, EventBus, EventKind
from gateway.services.identity import IdentityService, Verified
from gateway.services.links import IssuedLink, LinkService, Redemption
from gateway.services.provisioning import Provisioning
from gateway.services.sessions import hash_session_token, new_session_token
from gateway.settings import Settings
from gateway.storage.base import Store

__all__ = [
    "AuditLog",
    "AuditReport",
    "Event",
    "EventBus",
    "EventKind",
    "IdentityService",
    "IssuedLink",
    "LinkService",
    "Provisioning",
    "Redemption",
    "Services",
    "Verified",
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
            identity=IdentityService(store=store, clock=clock, audit=audit, policy=policy),
            provisioning=Provisioning(store=store, clock=clock, audit=audit),
        )
