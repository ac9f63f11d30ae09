"""Pure rules of Quietroom: no I/O, no asyncio, time injected."""

from gateway.domain import (
    apikeys,
    audit,
    consent,
    links,
    model,
    retention,
    totp,
    waiting_room,
    webhooks,
)

__all__ = [
    "apikeys",
    "audit",
    "consent",
    "links",
    "model",
    "retention",
    "totp",
    "waiting_room",
    "webhooks",
]
