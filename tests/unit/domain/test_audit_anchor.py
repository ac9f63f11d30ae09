"""A pruned audit chain: it verifies from its anchor, and only with the audit.pruned entry
that names it. Removing entries without the anchor, forging an anchor, or dropping the
entry that vouches for it is noticed."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.domain.audit import (
    GENESIS_HASH,
    NO_ANCHOR,
    PRUNED_ACTION,
    AuditAnchor,
    AuditDraft,
    AuditEntry,
    ChainVerifier,
    chain,
    leading_older_than,
    pruned_record,
    verify_chain,
)
from gateway.errors import AuditChainBroken

T0 = 1_800_000_000.0


def a_log(length: int) -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    prev: AuditEntry | None = None
    for n in range(length):
        prev = chain(
            AuditDraft(actor="gateway", action="room.knock", subjects={"n": str(n)}),
            prev=prev,
            at=T0 + n,
        )
        entries.append(prev)
    return entries


def pruned(entries: list[AuditEntry], count: int) -> tuple[AuditAnchor, list[AuditEntry]]:
    """What a store holds after pruning ``count`` entries: the anchor and the rest, with
    the audit.pruned entry chained at the end."""
    last = entries[count - 1]
    record = chain(pruned_record(last, count=count, actor="retention"), prev=entries[-1], at=T0)
    return AuditAnchor(seq=last.seq, hash=last.hash), [*entries[count:], record]


def head_of(entries: list[AuditEntry]) -> tuple[int, str]:
    return entries[-1].seq, entries[-1].hash


# --- broken first ----------------------------------------------------------------------------


def test_entries_removed_without_an_anchor_are_noticed() -> None:
    entries = a_log(10)
    with pytest.raises(AuditChainBroken, match="expected entry 1") as broken:
        verify_chain(entries[3:], head=head_of(entries))
    assert broken.value.seq == 4


def test_entries_removed_past_the_anchor_are_noticed() -> None:
    anchor, rest = pruned(a_log(10), 4)
    with pytest.raises(AuditChainBroken, match="expected entry 5"):
        verify_chain(rest[2:], anchor=anchor, head=head_of(rest))


def test_a_forged_anchor_without_its_pruned_entry_is_noticed() -> None:
    # Someone removed entries 1-4 and set the anchor to entry 4 to hide it.
    entries = a_log(10)
    forged = AuditAnchor(seq=4, hash=entries[3].hash)
    with pytest.raises(AuditChainBroken, match=r"no audit\.pruned entry") as broken:
        verify_chain(entries[4:], anchor=forged, head=head_of(entries))
    assert broken.value.seq == 5


def test_an_anchor_moved_further_than_its_pruned_entry_says_is_noticed() -> None:
    # Pruned through 3, then someone removed 4-5 too and moved the anchor to 5.
    entries = a_log(10)
    _, rest = pruned(entries, 3)
    moved = AuditAnchor(seq=5, hash=entries[4].hash)
    with pytest.raises(AuditChainBroken, match=r"no audit\.pruned entry"):
        verify_chain(rest[2:], anchor=moved, head=head_of(rest))


def test_a_pruned_entry_naming_another_hash_is_noticed() -> None:
    entries = a_log(10)
    anchor, rest = pruned(entries, 4)
    wrong = AuditAnchor(seq=4, hash="f" * 64)
    with pytest.raises(AuditChainBroken):  # the first entry does not follow the anchor
        verify_chain(rest, anchor=wrong, head=head_of(rest))
    # The hash is right for the chain but the pruned entry names another: altered entry.
    last = entries[3]
    bad_record = chain(
        dataclasses.replace(
            pruned_record(last, count=4, actor="retention"),
            subjects={"through_seq": "4", "through_hash": "e" * 64, "entries": "4"},
        ),
        prev=entries[-1],
        at=T0,
    )
    tampered = [*entries[4:], bad_record]
    with pytest.raises(AuditChainBroken, match="names another anchor"):
        verify_chain(tampered, anchor=anchor, head=head_of(tampered))


def test_removing_the_pruned_entry_itself_is_noticed() -> None:
    anchor, rest = pruned(a_log(10), 4)
    with pytest.raises(AuditChainBroken, match="log ends before head"):
        verify_chain(rest[:-1], anchor=anchor, head=head_of(rest))
    with pytest.raises(AuditChainBroken, match=r"no audit\.pruned entry"):
        verify_chain(rest[:-1], anchor=anchor)


def test_an_altered_entry_after_the_anchor_is_noticed() -> None:
    anchor, rest = pruned(a_log(10), 4)
    rest[1] = dataclasses.replace(rest[1], actor="someone")
    with pytest.raises(AuditChainBroken, match="content altered"):
        verify_chain(rest, anchor=anchor, head=head_of(rest))


# --- what holds ----------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 4, 10])
def test_a_pruned_log_verifies_from_its_anchor(count: int) -> None:
    anchor, rest = pruned(a_log(10), count)
    assert verify_chain(rest, anchor=anchor, head=head_of(rest)) == len(rest)


def test_prunes_one_after_another_verify_from_the_last_anchor() -> None:
    anchor, rest = pruned(a_log(10), 3)
    # A later prune removes the first pruned entry's neighbours and ... itself.
    last = rest[-1]
    again = chain(pruned_record(last, count=len(rest), actor="retention"), prev=rest[-1], at=T0)
    second_anchor = AuditAnchor(seq=last.seq, hash=last.hash)
    assert verify_chain([again], anchor=second_anchor, head=(again.seq, again.hash)) == 1
    assert anchor.seq == 3


def test_the_verifier_takes_pages() -> None:
    anchor, rest = pruned(a_log(25), 7)
    verifier = ChainVerifier(anchor=anchor)
    for start in range(0, len(rest), 4):
        verifier.feed(rest[start : start + 4])
    assert verifier.count == len(rest)
    assert verifier.finish(head_of(rest)) == len(rest)


def test_a_partial_range_from_a_known_entry_needs_no_pruned_entry() -> None:
    entries = a_log(10)
    assert verify_chain(entries[5:], start=entries[4], head=head_of(entries)) == 5


def test_an_empty_log_verifies_with_no_anchor() -> None:
    assert verify_chain([], head=(0, GENESIS_HASH)) == 0
    assert ChainVerifier().finish((0, GENESIS_HASH)) == 0


def test_the_pruned_record_names_ids_and_counts_only() -> None:
    last = a_log(3)[-1]
    draft = pruned_record(last, count=3, actor="retention")
    assert draft.action == PRUNED_ACTION
    assert dict(draft.subjects) == {"through_seq": "3", "through_hash": last.hash, "entries": "3"}


def test_anchor_values_round_trip() -> None:
    anchor = AuditAnchor(seq=12, hash="a" * 64)
    assert AuditAnchor.parse(anchor.value()) == anchor
    assert AuditAnchor.parse("") == NO_ANCHOR
    assert AuditAnchor.parse(None) == NO_ANCHOR
    assert NO_ANCHOR.value() == ""


def test_only_the_leading_run_of_old_entries_is_prunable() -> None:
    entries = a_log(6)
    assert leading_older_than(entries, T0 + 3) == 3
    assert leading_older_than(entries, T0) == 0
    assert leading_older_than(entries, T0 + 100) == 6
    # A late entry (another gateway's clock behind) stops the run: the chain stays whole.
    skewed = [*entries[:2], dataclasses.replace(entries[2], at=T0 + 50), *entries[3:]]
    assert leading_older_than(skewed, T0 + 10) == 2
    assert leading_older_than([], T0) == 0
