"""The audit log: append-only entries, each carrying the hash of the one before.

An entry holds a time, an actor id, an action, subject ids and an outcome: never a
name, a code, a token or any other secret. Its hash covers every field and the previous
entry's hash, so altering, removing or reordering any entry breaks the chain from there
on, and a verifier that knows the head (sequence number and hash) also notices a removed
tail.

Retention removes the oldest entries. What was removed is summed up by an anchor, the
sequence number and hash of the last removed entry, kept beside the log, and by an
``audit.pruned`` entry appended in the same atomic step that names that same anchor. A
verifier starts from the anchor and insists on finding that entry, so removing entries
without the anchor, or forging an anchor without rewriting the chain, is noticed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import AuditChainBroken, GatewayError

__all__ = [
    "GENESIS_HASH",
    "NO_ANCHOR",
    "PRUNED_ACTION",
    "AuditAnchor",
    "AuditDraft",
    "AuditEntry",
    "ChainVerifier",
    "chain",
    "entry_from_dict",
    "leading_older_than",
    "pruned_record",
    "verify_chain",
]

GENESIS_HASH = "0" * 64

_TOKEN = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")
_SUBJECT_VALUE = re.compile(r"^[A-Za-z0-9_.:-]{1,80}$")
MAX_SUBJECTS = 8
#: The action of the entry that records a prune (and vouches for the new anchor).
PRUNED_ACTION = "audit.pruned"


@dataclass(frozen=True, slots=True)
class AuditDraft:
    """What a caller wants recorded; :func:`chain` turns it into an entry."""

    actor: str
    action: str
    outcome: str = "ok"
    subjects: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Only identifier-shaped values get in: no free text, so no PHI by accident.
        for name, value in (
            ("actor", self.actor),
            ("action", self.action),
            ("outcome", self.outcome),
        ):
            if not isinstance(value, str) or not _SUBJECT_VALUE.fullmatch(value):
                raise GatewayError(f"audit {name} must be an identifier")
        if not isinstance(self.subjects, Mapping):
            raise GatewayError("audit subjects are a mapping of identifiers")
        if len(self.subjects) > MAX_SUBJECTS:
            raise GatewayError("too many audit subjects")
        for key, value in self.subjects.items():
            if not isinstance(key, str) or not _TOKEN.fullmatch(key) or not isinstance(value, str):
                raise GatewayError("audit subject keys are identifiers")
            if not _SUBJECT_VALUE.fullmatch(value):
                raise GatewayError(f"audit subject {key} must be an identifier")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: float
    actor: str
    action: str
    outcome: str
    subjects: Mapping[str, str]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "outcome": self.outcome,
            "subjects": dict(self.subjects),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def _digest(
    *,
    seq: int,
    at: float,
    actor: str,
    action: str,
    outcome: str,
    subjects: Mapping[str, str],
    prev_hash: str,
) -> str:
    body = json.dumps(
        [seq, repr(float(at)), actor, action, outcome, sorted(subjects.items()), prev_hash],
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(body.encode("ascii")).hexdigest()


def chain(draft: AuditDraft, *, prev: AuditEntry | None, at: float) -> AuditEntry:
    """The entry that follows ``prev`` (or starts the log) for ``draft``."""
    seq = 1 if prev is None else prev.seq + 1
    prev_hash = GENESIS_HASH if prev is None else prev.hash
    subjects = dict(draft.subjects)
    digest = _digest(
        seq=seq,
        at=at,
        actor=draft.actor,
        action=draft.action,
        outcome=draft.outcome,
        subjects=subjects,
        prev_hash=prev_hash,
    )
    return AuditEntry(
        seq=seq,
        at=at,
        actor=draft.actor,
        action=draft.action,
        outcome=draft.outcome,
        subjects=subjects,
        prev_hash=prev_hash,
        hash=digest,
    )


def entry_from_dict(data: Mapping[str, Any]) -> AuditEntry:
    """An entry read back from storage or an export; shape errors break the chain."""
    try:
        return AuditEntry(
            seq=int(data["seq"]),
            at=float(data["at"]),
            actor=str(data["actor"]),
            action=str(data["action"]),
            outcome=str(data["outcome"]),
            subjects={str(k): str(v) for k, v in dict(data["subjects"]).items()},
            prev_hash=str(data["prev_hash"]),
            hash=str(data["hash"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        seq = data.get("seq", 0) if isinstance(data, Mapping) else 0
        raise AuditChainBroken(
            seq=int(seq) if isinstance(seq, int) else 0, reason="malformed entry"
        ) from exc


@dataclass(frozen=True, slots=True)
class AuditAnchor:
    """Where a pruned log starts: the seq and hash of the last entry removed."""

    seq: int
    hash: str

    def value(self) -> str:
        """As kept in storage: ``<seq>:<hash>``, empty for no anchor."""
        return "" if self.seq == 0 else f"{self.seq}:{self.hash}"

    @classmethod
    def parse(cls, value: str | None) -> AuditAnchor:
        if not value:
            return NO_ANCHOR
        seq, _, digest = value.partition(":")
        return cls(seq=int(seq), hash=digest)


#: A log that was never pruned starts at the genesis hash.
NO_ANCHOR = AuditAnchor(seq=0, hash=GENESIS_HASH)


def leading_older_than(entries: Iterable[AuditEntry], before: float) -> int:
    """How many entries at the start of ``entries`` were made before ``before``.

    Retention removes only such a leading run: the log stays one unbroken chain.
    """
    count = 0
    for entry in entries:
        if entry.at >= before:
            break
        count += 1
    return count


def pruned_record(last: AuditEntry, *, count: int, actor: str) -> AuditDraft:
    """The entry that records removing ``count`` entries up to and including ``last``.

    It names the new anchor (``last``'s seq and hash), which is how a verifier knows the
    anchor was set by a prune and not by someone removing entries.
    """
    return AuditDraft(
        actor=actor,
        action=PRUNED_ACTION,
        subjects={
            "through_seq": str(last.seq),
            "through_hash": last.hash,
            "entries": str(count),
        },
    )


class ChainVerifier:
    """Checks a chain fed in pages, oldest first.

    ``anchor`` is where the log starts (the last pruned entry; :data:`NO_ANCHOR` for a
    log never pruned): a log with an anchor must hold the ``audit.pruned`` entry that
    names it. ``start`` instead begins after a known entry (for checking a partial range)
    and requires nothing.
    """

    def __init__(self, *, anchor: AuditAnchor = NO_ANCHOR, start: AuditEntry | None = None) -> None:
        if start is not None:
            anchor = AuditAnchor(seq=start.seq, hash=start.hash)
            self._vouched = True
        else:
            self._vouched = anchor.seq == 0
        self._anchor = anchor
        self._prev_hash = anchor.hash
        self._expected_seq = anchor.seq + 1
        self._last_seq = anchor.seq
        self._count = 0

    @property
    def count(self) -> int:
        """How many entries were checked so far."""
        return self._count

    def feed(self, entries: Iterable[AuditEntry]) -> None:
        """Check the next entries; raise :class:`AuditChainBroken` at the first bad one."""
        for entry in entries:
            if entry.seq != self._expected_seq:
                raise AuditChainBroken(seq=entry.seq, reason=f"expected entry {self._expected_seq}")
            if entry.prev_hash != self._prev_hash:
                raise AuditChainBroken(seq=entry.seq, reason="does not follow the entry before it")
            digest = _digest(
                seq=entry.seq,
                at=entry.at,
                actor=entry.actor,
                action=entry.action,
                outcome=entry.outcome,
                subjects=entry.subjects,
                prev_hash=entry.prev_hash,
            )
            if digest != entry.hash:
                raise AuditChainBroken(seq=entry.seq, reason="content altered")
            if (
                entry.action == PRUNED_ACTION
                and entry.subjects.get("through_seq") == str(self._anchor.seq)
                and self._anchor.seq > 0
            ):
                if entry.subjects.get("through_hash") != self._anchor.hash:
                    raise AuditChainBroken(
                        seq=entry.seq, reason="names another anchor than the log starts from"
                    )
                self._vouched = True
            self._prev_hash = entry.hash
            self._expected_seq += 1
            self._last_seq = entry.seq
            self._count += 1

    def finish(self, head: tuple[int, str] | None = None) -> int:
        """End of the entries: check the anchor was vouched for and, given the store's
        ``head``, that no tail is missing. Returns how many entries were checked."""
        if head is not None:
            head_seq, head_hash = head
            if (self._last_seq, self._prev_hash) != (head_seq, head_hash):
                raise AuditChainBroken(
                    seq=self._last_seq + 1, reason=f"log ends before head {head_seq}"
                )
        if not self._vouched:
            raise AuditChainBroken(
                seq=self._anchor.seq + 1,
                reason=f"log starts after entry {self._anchor.seq} with no {PRUNED_ACTION} "
                "entry for it",
            )
        return self._count


def verify_chain(
    entries: Iterable[AuditEntry],
    *,
    head: tuple[int, str] | None = None,
    start: AuditEntry | None = None,
    anchor: AuditAnchor = NO_ANCHOR,
) -> int:
    """Check every link of the chain; return how many entries were checked.

    ``start`` is the entry just before the first one given (for a partial range).
    ``anchor`` is where a pruned log starts (see :class:`ChainVerifier`).
    ``head`` is the ``(seq, hash)`` the store holds for the newest entry; with it a
    removed tail is noticed too.
    """
    verifier = ChainVerifier(anchor=anchor, start=start)
    verifier.feed(entries)
    return verifier.finish(head)
