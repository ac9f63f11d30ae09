"""The audit log: append-only entries, each carrying the hash of the one before.

An entry holds a time, an actor id, an action, subject ids and an outcome: never a
name, a code, a token or any other secret. Its hash covers every field and the previous
entry's hash, so altering, removing or reordering any entry breaks the chain from there
on, and a verifier that knows the head (sequence number and hash) also notices a removed
tail.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import AuditChainBroken, GatewayError

__all__ = ["GENESIS_HASH", "AuditDraft", "AuditEntry", "chain", "entry_from_dict", "verify_chain"]

GENESIS_HASH = "0" * 64

_TOKEN = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")
_SUBJECT_VALUE = re.compile(r"^[A-Za-z0-9_.:-]{1,80}$")
MAX_SUBJECTS = 8


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


def verify_chain(
    entries: Iterable[AuditEntry],
    *,
    head: tuple[int, str] | None = None,
    start: AuditEntry | None = None,
) -> int:
    """Check every link of the chain; return how many entries were checked.

    ``start`` is the entry just before the first one given (for a partial range).
    ``head`` is the ``(seq, hash)`` the store holds for the newest entry; with it a
    removed tail is noticed too.
    """
    prev_hash = GENESIS_HASH if start is None else start.hash
    expected_seq = 1 if start is None else start.seq + 1
    count = 0
    last: AuditEntry | None = start
    for entry in entries:
        if entry.seq != expected_seq:
            raise AuditChainBroken(seq=entry.seq, reason=f"expected entry {expected_seq}")
        if entry.prev_hash != prev_hash:
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
        prev_hash = entry.hash
        expected_seq += 1
        last = entry
        count += 1
    if head is not None:
        head_seq, head_hash = head
        last_seq = 0 if last is None else last.seq
        last_hash = GENESIS_HASH if last is None else last.hash
        if (last_seq, last_hash) != (head_seq, head_hash):
            raise AuditChainBroken(seq=last_seq + 1, reason=f"log ends before head {head_seq}")
    return count
