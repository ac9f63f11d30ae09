"""Pure rules of Quietroom: no I/O, no asyncio, time injected."""

from gateway.domain import audit, consent, links, model, totp, waiting_room

__all__ = ["audit", "consent", "links", "model", "totp", "waiting_room"]
