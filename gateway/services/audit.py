"""Appending to and verifying the audit log."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from gateway.clock import Clock
from gateway.domain.audit import AuditAnchor, AuditDraft, AuditEntry, ChainVerifier
from gateway.errors import AuditChainBroken
from gateway.storage.base import Store

__all__ = ["AuditLog", "AuditObserver", "AuditReport"]

log = logging.getLogger(__name__)

_PAGE = 1000
#: A verification that met a prune running at the same time starts again this often.
_VERIFY_TRIES = 3

#: Called with every entry this process appends (metrics count failures this way).
AuditObserver = Callable[[AuditEntry], None]


class AuditReport:
    """The outcome of a full verification."""

    def __init__(
        self, *, entries: int, head_seq: int, head_hash: str, pruned_through: int = 0
    ) -> None:
        self.entries = entries
        self.head_seq = head_seq
        self.head_hash = head_hash
        #: The log starts after this entry (the retention removed the ones before); 0: never.
        self.pruned_through = pruned_through


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
        self.appended(entry)
        return entry

    def appended(self, entry: AuditEntry) -> None:
        """Tell the observers about an entry now in the log; :meth:`record` does this, and
        so must a caller whose store step appended its own entry (erasure, retention)."""
        log.debug("audit %s %s -> %s (seq %d)", entry.actor, entry.action, entry.outcome, entry.seq)
        for observer in list(self._observers):
            try:
                observer(entry)
            except Exception:  # an observer must not undo a recorded entry for its caller
                log.exception("audit observer failed on %s", entry.action)

    async def verify(self) -> AuditReport:
        """Walk the whole chain, from where the retention left it (the anchor) to the
        store's head; raise AuditChainBroken if bad."""
        anchor = await self._store.audit_anchor()
        for _ in range(_VERIFY_TRIES - 1):
            try:
                return await self._verify_from(anchor)
            except AuditChainBroken:
                # A prune that ran while we read moved the start: only then, again.
                latest = await self._store.audit_anchor()
                if latest == anchor:
                    raise
                anchor = latest
        return await self._verify_from(anchor)

    async def _verify_from(self, anchor: AuditAnchor) -> AuditReport:
        head = await self._store.audit_head()
        head_seq = head[0]
        verifier = ChainVerifier(anchor=anchor)
        cursor = anchor.seq
        # Entries appended while we read are past the head and left for the next run.
        while cursor < head_seq:
            page = await self._store.read_audit(
                after_seq=cursor, limit=min(_PAGE, head_seq - cursor)
            )
            if not page:
                break
            verifier.feed(page)
            cursor = page[-1].seq
        checked = verifier.finish(head)
        return AuditReport(
            entries=checked, head_seq=head[0], head_hash=head[1], pruned_through=anchor.seq
        )
