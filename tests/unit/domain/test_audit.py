"""The audit chain: any alteration, removal or reordering is detected; no free text gets in."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.audit import (
    GENESIS_HASH,
    MAX_SUBJECTS,
    AuditDraft,
    AuditEntry,
    chain,
    entry_from_dict,
    verify_chain,
)
from gateway.errors import AuditChainBroken, GatewayError

T0 = 1_800_000_000.0
ACTIONS = ["link.issue", "link.redeem", "totp.verify", "room.knock", "room.admit", "room.leave"]


def build_chain(length: int = 20, *, start: float = T0) -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    prev: AuditEntry | None = None
    for i in range(length):
        draft = AuditDraft(
            actor=f"par_{i:022d}",
            action=ACTIONS[i % len(ACTIONS)],
            outcome="ok" if i % 3 else "refused",
            subjects={"room": "room_AAAAAAAAAAAAAAAAAAAAAA", "n": str(i)},
        )
        prev = chain(draft, prev=prev, at=start + i * 1.5)
        entries.append(prev)
    return entries


def head_of(entries: list[AuditEntry]) -> tuple[int, str]:
    return entries[-1].seq, entries[-1].hash


@pytest.fixture
def entries() -> list[AuditEntry]:
    return build_chain()


# --- broken chains first --------------------------------------------------------------------------


def altered(entry: AuditEntry, field: str) -> AuditEntry:
    changes: dict[str, Any] = {
        "at": entry.at + 1.0,
        "actor": entry.actor + "x",
        "action": "room.deny",
        "outcome": "error" if entry.outcome != "error" else "ok",
        "subjects": {**entry.subjects, "room": "room_BBBBBBBBBBBBBBBBBBBBBB"},
        "hash": "f" * 64 if entry.hash != "f" * 64 else "e" * 64,
        "prev_hash": "a" * 64,
        "seq": entry.seq + 100,
    }
    return dataclasses.replace(entry, **{field: changes[field]})


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("at", "content altered"),
        ("actor", "content altered"),
        ("action", "content altered"),
        ("outcome", "content altered"),
        ("subjects", "content altered"),
        ("hash", "content altered"),
        ("prev_hash", "does not follow the entry before it"),
        ("seq", "expected entry 8"),
    ],
)
def test_altered_field_is_detected(entries: list[AuditEntry], field: str, reason: str) -> None:
    entries[7] = altered(entries[7], field)
    with pytest.raises(AuditChainBroken) as info:
        verify_chain(entries, head=head_of(entries))
    assert info.value.reason == reason
    assert info.value.seq == entries[7].seq


def test_rehashed_altered_entry_breaks_the_next_link(entries: list[AuditEntry]) -> None:
    # An attacker who recomputes an altered entry's hash breaks its successor instead.
    draft = AuditDraft(actor="par_forged", action=entries[7].action, subjects=entries[7].subjects)
    entries[7] = chain(draft, prev=entries[6], at=entries[7].at)
    with pytest.raises(AuditChainBroken) as info:
        verify_chain(entries)
    assert (info.value.seq, info.value.reason) == (9, "does not follow the entry before it")


def test_deleted_middle_entry_is_detected(entries: list[AuditEntry]) -> None:
    del entries[10]
    with pytest.raises(AuditChainBroken) as info:
        verify_chain(entries)
    assert info.value.seq == 12
    assert info.value.reason == "expected entry 11"


def test_deleted_first_entry_is_detected(entries: list[AuditEntry]) -> None:
    with pytest.raises(AuditChainBroken) as info:
        verify_chain(entries[1:])
    assert (info.value.seq, info.value.reason) == (2, "expected entry 1")


def test_deleted_tail_is_detected_with_the_head(entries: list[AuditEntry]) -> None:
    head = head_of(entries)
    with pytest.raises(AuditChainBroken) as info:
        verify_chain(entries[:-3], head=head)
    assert info.value.seq == 18
    assert info.value.reason == "log ends before head 20"


def test_deleted_tail_is_invisible_without_the_head(entries: list[AuditEntry]) -> None:
    # Why the store keeps the head: a truncated log is otherwise a valid shorter log.
    assert verify_chain(entries[:-3]) == 17


def test_everything_deleted_is_detected_with_the_head(entries: list[AuditEntry]) -> None:
    with pytest.raises(AuditChainBroken) as info:
        verify_chain([], head=head_of(entries))
    assert info.value.seq == 1


def test_head_with_wrong_hash_is_detected(entries: list[AuditEntry]) -> None:
    with pytest.raises(AuditChainBroken):
        verify_chain(entries, head=(20, "0" * 64))


def test_head_beyond_the_end_is_detected(entries: list[AuditEntry]) -> None:
    with pytest.raises(AuditChainBroken):
        verify_chain(entries, head=(21, entries[-1].hash))


def test_swapped_entries_are_detected(entries: list[AuditEntry]) -> None:
    entries[4], entries[5] = entries[5], entries[4]
    with pytest.raises(AuditChainBroken) as info:
        verify_chain(entries, head=head_of(entries))
    assert (info.value.seq, info.value.reason) == (6, "expected entry 5")


def test_reversed_chain_is_detected(entries: list[AuditEntry]) -> None:
    with pytest.raises(AuditChainBroken):
        verify_chain(list(reversed(entries)))


def test_duplicated_entry_is_detected(entries: list[AuditEntry]) -> None:
    entries.insert(9, entries[8])
    with pytest.raises(AuditChainBroken) as info:
        verify_chain(entries)
    assert (info.value.seq, info.value.reason) == (9, "expected entry 10")


def test_duplicated_last_entry_is_detected(entries: list[AuditEntry]) -> None:
    with pytest.raises(AuditChainBroken):
        verify_chain([*entries, entries[-1]], head=head_of(entries))


def test_partial_range_with_wrong_start_is_detected(entries: list[AuditEntry]) -> None:
    with pytest.raises(AuditChainBroken) as info:
        verify_chain(entries[10:], start=entries[8])
    assert (info.value.seq, info.value.reason) == (11, "expected entry 10")


def test_partial_range_with_forged_start_is_detected(entries: list[AuditEntry]) -> None:
    forged_start = dataclasses.replace(entries[9], hash="b" * 64)
    with pytest.raises(AuditChainBroken) as info:
        verify_chain(entries[10:], start=forged_start)
    assert (info.value.seq, info.value.reason) == (11, "does not follow the entry before it")


def test_range_from_the_middle_without_start_is_detected(entries: list[AuditEntry]) -> None:
    with pytest.raises(AuditChainBroken):
        verify_chain(entries[10:])


def test_entries_from_two_chains_do_not_splice() -> None:
    first, second = build_chain(10), build_chain(10, start=T0 + 1000)
    with pytest.raises(AuditChainBroken) as info:
        verify_chain([*first[:5], *second[5:]])
    assert (info.value.seq, info.value.reason) == (6, "does not follow the entry before it")


def test_chain_broken_is_a_gateway_error() -> None:
    error = AuditChainBroken(seq=3, reason="content altered")
    assert isinstance(error, GatewayError)
    assert error.code == "audit_chain_broken"
    assert "3" in str(error)


# --- intact chains --------------------------------------------------------------------------------


def test_intact_chain_verifies_with_its_head(entries: list[AuditEntry]) -> None:
    assert verify_chain(entries, head=head_of(entries)) == 20
    assert verify_chain(iter(entries)) == 20


def test_partial_range_verifies_from_its_start(entries: list[AuditEntry]) -> None:
    assert verify_chain(entries[10:], start=entries[9], head=head_of(entries)) == 10
    assert verify_chain([], start=entries[19], head=head_of(entries)) == 0


def test_empty_log_verifies_against_the_empty_head() -> None:
    assert verify_chain([], head=(0, GENESIS_HASH)) == 0


def test_chain_links_entries() -> None:
    first = chain(AuditDraft(actor="platform", action="room.create"), prev=None, at=T0)
    second = chain(AuditDraft(actor="platform", action="room.lock"), prev=first, at=T0 + 1)
    assert (first.seq, first.prev_hash) == (1, GENESIS_HASH)
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert len(first.hash) == 64
    assert first.hash != second.hash
    assert first.outcome == "ok"
    assert first.subjects == {}


def test_chain_copies_the_subjects() -> None:
    subjects = {"room": "room_1"}
    entry = chain(AuditDraft(actor="a", action="b", subjects=subjects), prev=None, at=T0)
    subjects["room"] = "room_2"
    assert entry.subjects == {"room": "room_1"}
    assert verify_chain([entry]) == 1


def test_subject_order_does_not_change_the_hash() -> None:
    one = AuditDraft(actor="a", action="b", subjects={"x": "1", "y": "2"})
    two = AuditDraft(actor="a", action="b", subjects={"y": "2", "x": "1"})
    assert chain(one, prev=None, at=T0).hash == chain(two, prev=None, at=T0).hash


def test_same_draft_at_another_time_has_another_hash() -> None:
    draft = AuditDraft(actor="a", action="b")
    assert chain(draft, prev=None, at=T0).hash != chain(draft, prev=None, at=T0 + 0.001).hash


# --- property: every single-field mutation anywhere is detected -------------------------------

_MUTABLE_FIELDS = ["seq", "at", "actor", "action", "outcome", "subjects", "prev_hash", "hash"]
# Built once: a prefix of a valid chain is a valid chain, so examples slice it.
_LONG_CHAIN = build_chain(25)
_ID_TEXT = st.text("abcXYZ019_.:-", min_size=1, max_size=20)
_SUBJECTS = st.dictionaries(
    st.sampled_from(["room", "n", "participant", "k0"]), _ID_TEXT, max_size=4
)
_HASH = st.text("0123456789abcdef", min_size=64, max_size=64)


def _mutate(entry: AuditEntry, field: str, data: st.DataObject) -> AuditEntry:
    value: Any
    if field == "seq":
        value = data.draw(
            st.integers(min_value=-5, max_value=10_000).filter(lambda v: v != entry.seq)
        )
    elif field == "at":
        value = data.draw(
            st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: v != entry.at)
        )
    elif field in ("actor", "action", "outcome"):
        value = data.draw(_ID_TEXT.filter(lambda v: v != getattr(entry, field)))
    elif field == "subjects":
        value = data.draw(_SUBJECTS.filter(lambda v: v != dict(entry.subjects)))
    else:
        value = data.draw(_HASH.filter(lambda v: v != getattr(entry, field)))
    return dataclasses.replace(entry, **{field: value})


@given(
    length=st.integers(min_value=1, max_value=len(_LONG_CHAIN)),
    data=st.data(),
    field=st.sampled_from(_MUTABLE_FIELDS),
)
def test_any_single_field_mutation_is_detected(
    length: int, data: st.DataObject, field: str
) -> None:
    entries = _LONG_CHAIN[:length]
    head = head_of(entries)
    index = data.draw(st.integers(min_value=0, max_value=length - 1), label="index")
    entries[index] = _mutate(entries[index], field, data)
    with pytest.raises(AuditChainBroken):
        verify_chain(entries, head=head)


@given(
    length=st.integers(min_value=2, max_value=len(_LONG_CHAIN)),
    data=st.data(),
)
def test_any_deletion_or_reordering_is_detected(length: int, data: st.DataObject) -> None:
    entries = _LONG_CHAIN[:length]
    head = head_of(entries)
    changed = data.draw(st.permutations(entries).filter(lambda p: p != entries), label="order")
    drop = data.draw(st.integers(min_value=0, max_value=length), label="drop")
    if drop < length:
        del changed[drop]
    with pytest.raises(AuditChainBroken):
        verify_chain(changed, head=head)


# --- drafts: no free text ----------------------------------------------------------------------

PHI_LIKE = [
    "Jane Doe",
    "jane@example.com",
    "Jane\nDoe",
    "",
    "x" * 81,
    "Jöhn",
    "<script>",
    "a/b",
    "name=Jane",
    "55 Main St",
]


@pytest.mark.parametrize("value", PHI_LIKE)
@pytest.mark.parametrize("field", ["actor", "action", "outcome"])
def test_draft_refuses_free_text(field: str, value: str) -> None:
    fields: dict[str, Any] = {"actor": "par_1", "action": "room.admit", "outcome": "ok"}
    fields[field] = value
    with pytest.raises(GatewayError, match=f"audit {field}"):
        AuditDraft(**fields)


@pytest.mark.parametrize("value", PHI_LIKE)
def test_draft_refuses_free_text_in_subject_values(value: str) -> None:
    with pytest.raises(GatewayError, match="audit subject"):
        AuditDraft(actor="par_1", action="room.admit", subjects={"participant": value})


@pytest.mark.parametrize("key", ["Name", "first name", "", "x" * 65, "1abc", "e-mail@", "naïve"])
def test_draft_refuses_bad_subject_keys(key: str) -> None:
    with pytest.raises(GatewayError, match="subject keys"):
        AuditDraft(actor="par_1", action="room.admit", subjects={key: "par_2"})


@pytest.mark.parametrize(
    "subjects",
    [
        pytest.param({"n": 5}, id="int-value"),
        pytest.param({"n": None}, id="none-value"),
        pytest.param({5: "par_1"}, id="int-key"),
        pytest.param({b"room": "par_1"}, id="bytes-key"),
        pytest.param([("room", "par_1")], id="list-of-pairs"),
        pytest.param("room=par_1", id="string"),
    ],
)
def test_draft_refuses_non_text_subjects_with_a_gateway_error(subjects: Any) -> None:
    with pytest.raises(GatewayError):
        AuditDraft(actor="par_1", action="room.admit", subjects=subjects)


@pytest.mark.parametrize("value", [None, 5, b"par_1", ["par_1"]])
def test_draft_refuses_non_text_actor(value: Any) -> None:
    with pytest.raises(GatewayError, match="audit actor"):
        AuditDraft(actor=value, action="room.admit")


def test_draft_refuses_too_many_subjects() -> None:
    subjects = {f"k{i}": "v" for i in range(MAX_SUBJECTS + 1)}
    with pytest.raises(GatewayError, match="too many"):
        AuditDraft(actor="par_1", action="room.admit", subjects=subjects)


def test_draft_accepts_identifiers() -> None:
    subjects = {f"k{i}": f"par_{i}" for i in range(MAX_SUBJECTS)}
    draft = AuditDraft(
        actor="par_AAAAAAAAAAAAAAAAAAAAAA",
        action="totp.lockout",
        outcome="refused",
        subjects=subjects,
    )
    assert draft.subjects == subjects
    assert AuditDraft(actor="x" * 80, action="a").actor == "x" * 80


# --- serialised form --------------------------------------------------------------------------


def test_entries_round_trip_through_json(entries: list[AuditEntry]) -> None:
    exported = json.dumps([entry.to_dict() for entry in entries])
    restored = [entry_from_dict(data) for data in json.loads(exported)]
    assert restored == entries
    assert verify_chain(restored, head=head_of(entries)) == 20


def test_to_dict_has_every_field(entries: list[AuditEntry]) -> None:
    data = entries[0].to_dict()
    assert set(data) == {f.name for f in dataclasses.fields(AuditEntry)}
    data["subjects"]["room"] = "changed"
    assert entries[0].subjects["room"] != "changed"  # a copy, not the entry's own mapping


def _entry_dict() -> dict[str, Any]:
    return build_chain(3)[2].to_dict()


def _without(key: str) -> dict[str, Any]:
    data = _entry_dict()
    del data[key]
    return data


def _with(key: str, value: Any) -> dict[str, Any]:
    data = _entry_dict()
    data[key] = value
    return data


@pytest.mark.parametrize(
    ("data", "seq"),
    [
        *[
            pytest.param(_without(key), 3, id=f"missing-{key}")
            for key in ("at", "actor", "action", "outcome", "subjects", "prev_hash", "hash")
        ],
        pytest.param(_without("seq"), 0, id="missing-seq"),
        pytest.param(_with("seq", "three"), 0, id="seq-not-a-number"),
        pytest.param(_with("seq", None), 0, id="seq-null"),
        pytest.param(_with("at", "noon"), 3, id="at-not-a-number"),
        pytest.param(_with("at", None), 3, id="at-null"),
        pytest.param(_with("at", [1]), 3, id="at-list"),
        pytest.param(_with("subjects", 5), 3, id="subjects-int"),
        pytest.param(_with("subjects", "room"), 3, id="subjects-string"),
        pytest.param(_with("subjects", None), 3, id="subjects-null"),
        pytest.param({}, 0, id="empty"),
    ],
)
def test_malformed_dict_breaks_the_chain(data: dict[str, Any], seq: int) -> None:
    with pytest.raises(AuditChainBroken) as info:
        entry_from_dict(data)
    assert info.value.reason == "malformed entry"
    assert info.value.seq == seq


@pytest.mark.parametrize("data", [None, [], "entry", 5])
def test_non_mapping_breaks_the_chain(data: Any) -> None:
    with pytest.raises(AuditChainBroken) as info:
        entry_from_dict(data)
    assert (info.value.seq, info.value.reason) == (0, "malformed entry")


def test_values_altered_in_an_export_fail_verification(entries: list[AuditEntry]) -> None:
    exported = [entry.to_dict() for entry in entries]
    exported[4]["subjects"]["n"] = "999"
    restored = [entry_from_dict(data) for data in exported]
    with pytest.raises(AuditChainBroken) as info:
        verify_chain(restored)
    assert (info.value.seq, info.value.reason) == (5, "content altered")
