"""Appending to and verifying the audit log."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from gateway.clock import Clock
from gateway.domain.audit import AuditDraft, AuditEntry, verify_chain
from gateway.storage.base import Store

__all__ = ["AuditLog", "AuditObserver", "AuditReport"]

log = logging.getLogger(__name__)

_PAGE = 1000

#: Called with every entry this process appends (metrics count failures this way).
AuditObserver = Callable[[AuditEntry], None]


class AuditReport:
    """The outcome of a full verification."""

    def __init__(self, *, entries: int, head_seq: int, head_hash: str) -> None:
        self.entries = entries
        self.head_seq = head_seq
        self.head_hash = head_hash


class AuditLog:
    """Records what happened, with ids only, in the store's hash chain."""

    def __init__(self, *, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._observers: list[AuditObserver] = []

    def subscribe(self, observer: AuditObserver) -> None:
        self._observers.append(observer)

    def unsubscribe(self, observer: AuditObserver) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    async def record(
        self,
        action: str,
        *,
        actor: str,
        outcome: str = "ok",
        subjects: Mapping[str, str] | None = None,
    ) -> AuditEntry:
        draft = AuditDraft(actor=actor, action=action, outcome=outcome, subjects=subjects or {})
        entry = await self._store.append_audit(draft, at=self._clock.now())
        log.debug("audit %s %s -> %s (seq %d)", actor, action, outcome, entry.seq)
        for observer in list(self._observers):
            try:
                observer(entry)
            except Exception:  # an observer must not undo a recorded entry for its caller
                log.exception("audit observer failed on %s", action)
        return entry

    async def verify(self) -> AuditReport:
        """Walk the whole chain against the store's head; raise AuditChainBroken if bad."""
        head = await self._store.audit_head()
        head_seq = head[0]
        checked = 0
        previous: AuditEntry | None = None
        # Entries appended while we read are past the head and left for the next run.
        while checked < head_seq:
            page = await self._store.read_audit(
                after_seq=checked, limit=min(_PAGE, head_seq - checked)
            )
            if not page:
                break
            verify_chain(page, start=previous)
            checked += len(page)
            previous = page[-1]
        verify_chain([], start=previous, head=head)
        return AuditReport(entries=checked, head_seq=head[0], head_hash=head[1])
