"""The retention pass through the services, on both stores; the recording folder; the
sweeper that runs passes; tampering with a pruned audit log."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from pathlib import Path

import pytest

from gateway.clock import FrozenClock
from gateway.domain.audit import AuditAnchor, AuditDraft, AuditEntry
from gateway.domain.links import LinkPurpose
from gateway.domain.retention import RetentionPolicy
from gateway.errors import AuditChainBroken, LinkError, StoreUnavailable
from gateway.services import AuditLog, Event, EventKind, RetentionReport, Services
from gateway.services.retention import (
    RetentionLimits,
    RetentionService,
    RetentionSweeper,
    delete_expired_recordings,
)
from gateway.storage import MemoryStore, RedisStore, SecretBox, Store
from tests.factories import CLIENT_NAME, HOST_NAME, Seeded, make_settings, seed
from tests.fixtures.servers import RedisServer

DAY = 86400.0


def services_for(store: Store, clock: FrozenClock, tmp_path: Path, **settings: object) -> Services:
    values: dict[str, object] = {"recording_dir": str(tmp_path / "recordings")}
    values.update(settings)
    return Services.build(settings=make_settings(**values), store=store, clock=clock)


def make_policy(**days: int) -> RetentionPolicy:
    values = {"audit_days": 0, "recording_days": 0, "appointment_days": 0}
    values.update(days)
    return RetentionPolicy(**values)


def a_recording(folder: Path, name: str, *, written_at: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"\x89QRREC\r\n sealed bytes")
    os.utime(path, (written_at, written_at))
    return path


# --- a pass -------------------------------------------------------------------------------------


async def test_a_pass_removes_what_outlived_its_retention(
    any_store: Store, clock: FrozenClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    services = services_for(
        any_store,
        clock,
        tmp_path,
        audit_retention_days=40,
        appointment_retention_days=30,
        recording_retention_days=30,
    )
    seeded = await seed(services)
    await services.identity.enrol(seeded.client.id, actor="test")
    await services.waiting_room.end(appointment_id=seeded.appointment.id, actor="test")
    folder = tmp_path / "recordings"
    old = a_recording(folder, "rec_old.sealed", written_at=clock.now() - DAY)
    young = a_recording(folder, "rec_young.sealed", written_at=clock.now() + 20 * DAY)
    entries_before = (await any_store.audit_head())[0]

    clock.advance(31 * DAY)
    with caplog.at_level(logging.INFO, logger="gateway.services.retention"):
        first = await services.retention.run_once()

    assert first == RetentionReport(appointments=1, participants=2, recordings=1)
    assert not old.exists()
    assert young.exists()
    assert await any_store.get_participant(seeded.client.id) is None
    assert await any_store.get_participant(seeded.host.id) is None
    assert await any_store.get_totp_secret(seeded.client.id) is None
    assert await any_store.get_appointment(seeded.appointment.id) is not None
    # Counts only in the log: no ids, no names.
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["retention removed 1 appointments, 2 participants, 1 recordings"]
    for leaked in (seeded.client.id, seeded.appointment.id, CLIENT_NAME, HOST_NAME):
        assert all(leaked not in line for line in caplog.text.splitlines())

    clock.advance(10 * DAY)
    second = await services.retention.run_once()

    # Everything from before the end (the purge's own entry is younger).
    assert second.audit_entries == entries_before
    assert second.appointment_records == 1
    assert await any_store.get_appointment(seeded.appointment.id) is None
    assert await any_store.get_participant_tombstone(seeded.client.id) is None
    report = await services.audit.verify()
    assert report.pruned_through == entries_before
    assert report.entries == 2  # appointment.purged and audit.pruned

    assert await services.retention.run_once() == RetentionReport()


def ends_published(services: Services) -> list[Event]:
    """The ``session.ended`` events published from now on."""
    published: list[Event] = []

    async def on_event(event: Event) -> None:
        if event.kind is EventKind.SESSION_ENDED:
            published.append(event)

    services.events.subscribe(on_event)
    return published


async def ended_at(store: Store, seeded: Seeded) -> float | None:
    appointment = await store.get_appointment(seeded.appointment.id)
    assert appointment is not None
    return appointment.ended_at


async def test_an_appointment_nobody_ended_is_ended_then_purged(
    any_store: Store, clock: FrozenClock, tmp_path: Path
) -> None:
    services = services_for(
        any_store, clock, tmp_path, appointment_max_days=90, appointment_retention_days=30
    )
    seeded = await seed(services)
    young = await seed(services)
    ended = ends_published(services)
    clock.advance(89 * DAY)
    later = await seed(services)
    clock.advance(1 * DAY)
    # Exactly 90 days old: not yet.
    assert await services.retention.run_once() == RetentionReport()

    clock.advance(1)
    assert await services.retention.run_once() == RetentionReport(abandoned_appointments=2)
    assert await ended_at(any_store, seeded) == clock.now()
    assert await ended_at(any_store, young) == clock.now()
    assert await ended_at(any_store, later) is None
    # As an End would: audited (by the retention), published (webhook), links dead.
    assert sorted(e.appointment_id for e in ended) == sorted(
        (seeded.appointment.id, young.appointment.id)
    )
    entries = await any_store.read_audit()
    assert sorted(
        (e.actor, e.subjects["appointment"]) for e in entries if e.action == "session.ended"
    ) == sorted([("retention", seeded.appointment.id), ("retention", young.appointment.id)])
    with pytest.raises(LinkError):
        await services.links.redeem(LinkPurpose.CLIENT_JOIN, seeded.client_path.removeprefix("/j/"))
    # Nothing twice.
    assert await services.retention.run_once() == RetentionReport()

    # Then the appointment retention takes its data, counted from that end.
    clock.advance(31 * DAY)
    report = await services.retention.run_once()
    assert (report.appointments, report.participants) == (2, 4)
    assert await any_store.get_participant(seeded.client.id) is None


async def test_an_appointment_someone_is_connected_to_waits_for_a_later_pass(
    any_store: Store, clock: FrozenClock, tmp_path: Path
) -> None:
    services = services_for(any_store, clock, tmp_path, appointment_max_days=90)
    seeded = await seed(services)
    clock.advance(91 * DAY)
    await any_store.change_connections(seeded.host.id, 1)
    assert await services.retention.run_once() == RetentionReport()
    assert await ended_at(any_store, seeded) is None
    await any_store.change_connections(seeded.host.id, -1)
    await any_store.change_connections(seeded.client.id, 1)
    assert await services.retention.run_once() == RetentionReport()

    await any_store.change_connections(seeded.client.id, -1)
    assert await services.retention.run_once() == RetentionReport(abandoned_appointments=1)


async def test_an_end_retried_after_a_failure_still_closes_the_session(
    any_store: Store, clock: FrozenClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = services_for(any_store, clock, tmp_path)
    seeded = await seed(services)
    published = ends_published(services)
    delete_sessions = any_store.delete_appointment_sessions
    calls = 0

    async def failing_once(appointment_id: str) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreUnavailable("redis went away")
        return await delete_sessions(appointment_id)

    monkeypatch.setattr(any_store, "delete_appointment_sessions", failing_once)
    with pytest.raises(StoreUnavailable):
        await services.waiting_room.end(appointment_id=seeded.appointment.id, actor="host")
    ended = await ended_at(any_store, seeded)
    assert ended is not None
    assert published == []

    # The retry (the host again, or the platform's POST /end) keeps the first end time
    # and does what the failed call could not: everyone is told, the media closes.
    clock.advance(5)
    again = await services.waiting_room.end(appointment_id=seeded.appointment.id, actor="host")
    assert again.ended_at == ended
    assert [e.appointment_id for e in published] == [seeded.appointment.id]
    entries = await any_store.read_audit()
    assert [e.actor for e in entries if e.action == "session.ended"] == ["host"]
    # The retention has nothing left to end.
    clock.advance(100 * DAY)
    assert (await services.retention.run_once()).abandoned_appointments == 0


async def test_two_gateways_end_an_appointment_nobody_ended_once(
    redis_store: RedisStore,
    redis_server: RedisServer,
    secret_box: SecretBox,
    clock: FrozenClock,
    tmp_path: Path,
) -> None:
    other = RedisStore.from_url(redis_server.url, secret_box=secret_box, prefix=redis_store.prefix)
    try:
        one = services_for(redis_store, clock, tmp_path, appointment_max_days=90)
        two = services_for(other, clock, tmp_path, appointment_max_days=90)
        made = [(await seed(one)).appointment.id for _ in range(5)]
        clock.advance(91 * DAY)
        reports = await asyncio.gather(
            one.retention.run_once(), two.retention.run_once(), one.retention.run_once()
        )
        assert sum(r.abandoned_appointments for r in reports) == 5
        entries = await redis_store.read_audit()
        ended = [e.subjects["appointment"] for e in entries if e.action == "session.ended"]
        assert sorted(ended) == sorted(made)
    finally:
        await other.close()


async def test_appointments_nobody_ended_are_kept_open_when_told_to(
    any_store: Store, clock: FrozenClock, tmp_path: Path
) -> None:
    services = services_for(any_store, clock, tmp_path, appointment_max_days=0)
    seeded = await seed(services)
    clock.advance(100_000 * DAY)
    assert (await services.retention.run_once()).abandoned_appointments == 0
    assert await ended_at(any_store, seeded) is None


async def test_forever_keeps_everything(
    any_store: Store, clock: FrozenClock, tmp_path: Path
) -> None:
    services = services_for(
        any_store,
        clock,
        tmp_path,
        audit_retention_days=0,
        appointment_retention_days=0,
        appointment_max_days=0,
        recording_retention_days=0,
    )
    seeded = await seed(services)
    await services.waiting_room.end(appointment_id=seeded.appointment.id, actor="test")
    recording = a_recording(tmp_path / "recordings", "rec.sealed", written_at=0)
    clock.advance(100_000 * DAY)
    assert await services.retention.run_once() == RetentionReport()
    assert recording.exists()
    assert await any_store.get_participant(seeded.client.id) is not None
    assert (await services.audit.verify()).pruned_through == 0


async def test_a_pass_is_bounded(memory_store: MemoryStore, clock: FrozenClock) -> None:
    for n in range(50):
        await memory_store.append_audit(AuditDraft(actor="gateway", action=f"x.{n}"), at=0.0)
    retention = RetentionService(
        store=memory_store,
        clock=clock,
        audit=AuditLog(store=memory_store, clock=clock),
        policy=make_policy(audit_days=1),
        recording_dir="/nonexistent",
        limits=RetentionLimits(audit_batch=7, audit_batches=3),
    )
    passes = [(await retention.run_once()).audit_entries for _ in range(4)]
    assert passes == [21, 21, 8, 0]
    services = Services.build(settings=make_settings(), store=memory_store, clock=clock)
    report = await services.audit.verify()
    assert (report.pruned_through, report.entries) == (50, 8)  # 8 audit.pruned entries


async def test_an_unreadable_recording_folder_holds_up_nothing_else(
    any_store: Store, clock: FrozenClock, tmp_path: Path
) -> None:
    not_a_folder = tmp_path / "recordings"
    not_a_folder.write_bytes(b"")
    services = services_for(any_store, clock, tmp_path, appointment_retention_days=30)
    seeded = await seed(services)
    await services.waiting_room.end(appointment_id=seeded.appointment.id, actor="test")
    clock.advance(31 * DAY)
    with pytest.raises(NotADirectoryError):
        await services.retention.run_once()
    # The store's steps ran all the same; the pass still counts as failed.
    assert await any_store.get_participant(seeded.client.id) is None


async def test_two_gateways_on_one_redis_sweep_at_once(
    redis_store: RedisStore,
    redis_server: RedisServer,
    secret_box: SecretBox,
    clock: FrozenClock,
    tmp_path: Path,
) -> None:
    other = RedisStore.from_url(redis_server.url, secret_box=secret_box, prefix=redis_store.prefix)
    try:
        settings = {"audit_retention_days": 40, "appointment_retention_days": 30}
        one = services_for(redis_store, clock, tmp_path, **settings)
        two = services_for(other, clock, tmp_path, **settings)
        for _ in range(6):
            seeded = await seed(one)
            await one.waiting_room.end(appointment_id=seeded.appointment.id, actor="test")
        clock.advance(31 * DAY)
        reports = await asyncio.gather(one.retention.run_once(), two.retention.run_once())
        assert sum(r.appointments for r in reports) == 6
        assert sum(r.participants for r in reports) == 12
        await one.audit.verify()

        clock.advance(10 * DAY)
        reports = await asyncio.gather(
            one.retention.run_once(), two.retention.run_once(), one.retention.run_once()
        )
        anchor = await redis_store.audit_anchor()
        assert sum(r.audit_entries for r in reports) == anchor.seq
        assert sum(r.appointment_records for r in reports) == 6
        assert (await two.audit.verify()).pruned_through == anchor.seq
    finally:
        await other.close()


# --- tampering with a pruned log ---------------------------------------------------------------


async def drop_first_entries(store: Store, count: int) -> None:
    """What an attacker with write access to the store does to hide entries."""
    if isinstance(store, RedisStore):
        await store.client.ltrim(f"{store.prefix}audit:log", count, -1)
    else:
        assert isinstance(store, MemoryStore)
        del store._audit[:count]


async def set_anchor(store: Store, anchor: AuditAnchor) -> None:
    if isinstance(store, RedisStore):
        await store.client.set(f"{store.prefix}audit:anchor", anchor.value())
    else:
        assert isinstance(store, MemoryStore)
        store._audit_anchor = anchor


async def test_entries_removed_without_the_anchor_are_noticed(
    any_store: Store, clock: FrozenClock, tmp_path: Path
) -> None:
    services = services_for(any_store, clock, tmp_path)
    await seed(services)
    await drop_first_entries(any_store, 3)
    with pytest.raises(AuditChainBroken, match="expected entry 1"):
        await services.audit.verify()


async def test_a_forged_anchor_is_noticed(
    any_store: Store, clock: FrozenClock, tmp_path: Path
) -> None:
    services = services_for(any_store, clock, tmp_path)
    await seed(services)
    third = (await any_store.read_audit(after_seq=2, limit=1))[0]
    await drop_first_entries(any_store, 3)
    await set_anchor(any_store, AuditAnchor(seq=3, hash=third.hash))
    with pytest.raises(AuditChainBroken, match=r"no audit\.pruned entry"):
        await services.audit.verify()


async def test_entries_removed_after_a_real_prune_are_noticed(
    any_store: Store, clock: FrozenClock, tmp_path: Path
) -> None:
    services = services_for(any_store, clock, tmp_path, audit_retention_days=1)
    await seed(services)
    clock.advance(2 * DAY)
    await services.retention.run_once()
    await seed(services)
    assert (await services.audit.verify()).pruned_through > 0
    await drop_first_entries(any_store, 2)
    with pytest.raises(AuditChainBroken):
        await services.audit.verify()


async def test_an_altered_audit_pruned_entry_is_noticed(
    any_store: Store, clock: FrozenClock, tmp_path: Path
) -> None:
    services = services_for(any_store, clock, tmp_path, audit_retention_days=1)
    await seed(services)
    clock.advance(2 * DAY)
    await services.retention.run_once()
    anchor = await any_store.audit_anchor()
    pruned = (await any_store.read_audit(after_seq=anchor.seq, limit=1))[0]
    altered = dataclasses.replace(pruned, subjects={**pruned.subjects, "entries": "1"})
    if isinstance(any_store, RedisStore):
        await any_store.client.lset(
            f"{any_store.prefix}audit:log", 0, json.dumps(altered.to_dict())
        )
    else:
        assert isinstance(any_store, MemoryStore)
        any_store._audit[0] = altered
    with pytest.raises(AuditChainBroken, match="content altered"):
        await services.audit.verify()


class PruningDuringVerify(MemoryStore):
    """A store on which a prune lands in the middle of the first verification's read."""

    pruned = False

    async def read_audit(self, *, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]:
        if not self.pruned and after_seq > 0:
            self.pruned = True
            await self.prune_audit(before=1e12, limit=after_seq + 5, actor="retention", at=1e9)
        return await super().read_audit(after_seq=after_seq, limit=limit)


async def test_a_verification_that_meets_a_prune_starts_again(
    secret_box: SecretBox, clock: FrozenClock
) -> None:
    store = PruningDuringVerify(secret_box=secret_box)
    for n in range(2500):
        await store.append_audit(AuditDraft(actor="gateway", action=f"x.{n}"), at=0.0)
    services = Services.build(settings=make_settings(), store=store, clock=clock)
    report = await services.audit.verify()
    assert store.pruned
    assert report.pruned_through == 1005


# --- the recording folder -----------------------------------------------------------------------


def test_only_old_recordings_in_the_folder_go(tmp_path: Path) -> None:
    folder = tmp_path / "recordings"
    now = 2_000_000_000.0
    old = now - 31 * DAY
    gone = [
        a_recording(folder, "rec_a.sealed", written_at=old),
        a_recording(folder, ".rec_b.sealed.0123456789abcdef.partial", written_at=old),
    ]
    kept = [
        a_recording(folder, "rec_new.sealed", written_at=now - DAY),
        a_recording(folder, ".rec_c.sealed.0123456789abcdef.partial", written_at=now),
        a_recording(folder, "notes.txt", written_at=old),
        a_recording(folder, "export.mkv", written_at=old),
    ]
    # A symbolic link to a file outside (old, and named like a recording): neither the
    # link nor its target is touched.
    outside = a_recording(tmp_path / "elsewhere", "precious.sealed", written_at=old)
    link = folder / "link.sealed"
    link.symlink_to(outside)
    os.utime(link, (old, old), follow_symlinks=False)
    # A folder named like a recording, with an old recording inside: not descended into.
    nested = a_recording(folder / "sub.sealed", "rec_d.sealed", written_at=old)
    os.utime(folder / "sub.sealed", (old, old))

    assert delete_expired_recordings(folder, before=now - 30 * DAY, limit=100) == 2

    assert not any(path.exists() for path in gone)
    assert all(path.exists() for path in kept)
    assert link.is_symlink()
    assert outside.exists()
    assert nested.exists()
    assert delete_expired_recordings(folder, before=now - 30 * DAY, limit=100) == 0


def test_recording_deletion_is_bounded(tmp_path: Path) -> None:
    folder = tmp_path / "recordings"
    for n in range(5):
        a_recording(folder, f"rec_{n}.sealed", written_at=0)
    assert delete_expired_recordings(folder, before=1.0, limit=3) == 3
    assert delete_expired_recordings(folder, before=1.0, limit=3) == 2


def test_a_missing_folder_holds_nothing_to_delete(tmp_path: Path) -> None:
    assert delete_expired_recordings(tmp_path / "none", before=1e12, limit=10) == 0


def test_a_symlinked_folder_is_swept_as_configured(tmp_path: Path) -> None:
    # The folder setting may itself be a link (to a bigger disk): the writer follows it,
    # so the sweeper does too; files inside are still never followed.
    real = tmp_path / "disk" / "recordings"
    a_recording(real, "rec.sealed", written_at=0)
    (tmp_path / "recordings").symlink_to(real)
    assert delete_expired_recordings(tmp_path / "recordings", before=1.0, limit=10) == 1


# --- the sweeper ------------------------------------------------------------------------------


class FakeRetention:
    """A retention service whose passes are scripted."""

    def __init__(self, *outcomes: RetentionReport | Exception) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def run_once(self) -> RetentionReport:
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else RetentionReport()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


async def test_the_sweeper_runs_passes_and_survives_failures() -> None:
    service = FakeRetention(
        RetentionReport(links=3), StoreUnavailable("down"), RuntimeError("bug"), RetentionReport()
    )
    seen: list[RetentionReport] = []
    failures: list[None] = []
    sweeper = RetentionSweeper(
        service=service,  # type: ignore[arg-type]
        interval=0.01,
        first_delay=0.0,
        on_pass=seen.append,
        on_failure=lambda: failures.append(None),
    )
    await sweeper.start()
    try:
        async with asyncio.timeout(10):
            await sweeper.wait_for_pass(4)
    finally:
        await sweeper.stop()
        await sweeper.stop()  # twice is fine
    assert seen[:2] == [RetentionReport(links=3), RetentionReport()]
    assert len(failures) == 2
    calls = service.calls
    await asyncio.sleep(0.05)
    assert service.calls == calls  # stopped means stopped


async def test_the_first_pass_waits_and_wake_runs_one_now() -> None:
    service = FakeRetention()
    sweeper = RetentionSweeper(service=service, interval=3600, first_delay=3600)  # type: ignore[arg-type]
    await sweeper.start()
    try:
        await asyncio.sleep(0.05)
        assert service.calls == 0
        sweeper.wake()
        async with asyncio.timeout(10):
            await sweeper.wait_for_pass(1)
        assert service.calls == 1
    finally:
        await sweeper.stop()


async def test_a_pass_that_hangs_is_cut_off() -> None:
    class Hanging:
        async def run_once(self) -> RetentionReport:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

    failures: list[None] = []
    sweeper = RetentionSweeper(
        service=Hanging(),  # type: ignore[arg-type]
        interval=0.05,
        first_delay=0.0,
        on_failure=lambda: failures.append(None),
    )
    await sweeper.start()
    try:
        async with asyncio.timeout(10):
            await sweeper.wait_for_pass(2)
    finally:
        await sweeper.stop()
    assert len(failures) >= 2
