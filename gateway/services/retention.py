"""The retention pass: remove what has outlived its retention, a bounded amount at a time.

One pass (:meth:`RetentionService.run_once`) forgets expired link ids and browser
sessions (the in-memory store; Redis expires them itself), ends appointments nobody ended
long after their creation (when nobody is connected to them), purges the participant data of
appointments that ended longer ago than the appointment retention, forgets what is left
of them once the audit retention has passed too, prunes the oldest audit entries (keeping
the chain verifiable from its anchor), and deletes sealed recordings older than the
recording retention. Every store step is atomic and safe to repeat, so two gateway
processes on one Redis may run passes at the same time. Logs carry counts only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import stat
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from gateway.clock import Clock
from gateway.domain.retention import RetentionPolicy, is_recording_file
from gateway.errors import StoreError
from gateway.services.audit import AuditLog
from gateway.storage.base import Store

__all__ = [
    "FIRST_PASS_DELAY",
    "RetentionLimits",
    "RetentionReport",
    "RetentionService",
    "RetentionSweeper",
    "delete_expired_recordings",
]

log = logging.getLogger(__name__)

#: The audit actor of what the retention does.
_ACTOR = "retention"


@dataclass(frozen=True, slots=True)
class RetentionLimits:
    """The most one pass does of each kind; the rest waits for the next pass."""

    audit_batch: int = 1000
    audit_batches: int = 10
    appointments: int = 100
    recordings: int = 1000
    expired: int = 10_000


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one pass removed: counts only."""

    #: Audit entries pruned.
    audit_entries: int = 0
    #: Appointments nobody ended, ended by the retention (their data goes later).
    abandoned_appointments: int = 0
    #: Ended appointments whose participant data was purged.
    appointments: int = 0
    #: Participant records purged with them.
    participants: int = 0
    #: Purged appointments forgotten for good (their ids, times and tombstones).
    appointment_records: int = 0
    #: Sealed recordings deleted.
    recordings: int = 0
    #: Used link ids forgotten after their link expired.
    links: int = 0
    #: Browser sessions forgotten after they expired.
    sessions: int = 0

    def counts(self) -> dict[str, int]:
        return asdict(self)

    @property
    def total(self) -> int:
        return sum(self.counts().values())


class RetentionService:
    """Applies a :class:`RetentionPolicy` to the store and the recording folder."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        audit: AuditLog,
        policy: RetentionPolicy,
        recording_dir: str | os.PathLike[str],
        limits: RetentionLimits | None = None,
        end_abandoned: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        """``end_abandoned`` ends an appointment nobody ended (True if it did); without
        it, such appointments are left alone."""
        self._store = store
        self._end_abandoned = end_abandoned
        self._clock = clock
        self._audit = audit
        self._policy = policy
        self._recording_dir = Path(recording_dir)
        self._limits = limits or RetentionLimits()

    @property
    def policy(self) -> RetentionPolicy:
        return self._policy

    async def run_once(self, *, end_abandoned: bool = True) -> RetentionReport:
        """One bounded pass; StoreError (or OSError from the recording folder) if a step
        failed: what earlier steps removed stays removed. ``end_abandoned=False`` leaves
        appointments nobody ended alone (a pass run where no webhook can be sent)."""
        limits, policy = self._limits, self._policy
        now = self._clock.now()
        # The recording folder first: it is local, so a Redis outage does not hold it up;
        # a folder that cannot be read does not hold up the store's steps either.
        recordings = 0
        folder_error: OSError | None = None
        cutoff = policy.recording_cutoff(now)
        if cutoff is not None:
            try:
                recordings = await asyncio.to_thread(
                    delete_expired_recordings,
                    self._recording_dir,
                    before=cutoff,
                    limit=limits.recordings,
                )
            except OSError as exc:
                folder_error = exc
        expired = await self._store.forget_expired(now=now, limit=limits.expired)

        abandoned = 0
        cutoff = policy.abandoned_cutoff(now)
        if cutoff is not None and end_abandoned and self._end_abandoned is not None:
            for appointment_id in await self._store.open_appointments(
                created_before=cutoff, limit=limits.appointments
            ):
                if await self._end_abandoned(appointment_id):
                    abandoned += 1

        appointments = participants = appointment_records = 0
        cutoff = policy.appointment_cutoff(now)
        if cutoff is not None:
            purged = await self._store.purge_ended_appointments(
                ended_before=cutoff, limit=limits.appointments, actor=_ACTOR, at=now
            )
            appointments = len(purged)
            participants = sum(p.participants for p in purged)
            for purge in purged:
                self._audit.appended(purge.entry)
        cutoff = policy.appointment_record_cutoff(now)
        if cutoff is not None:
            appointment_records = await self._store.forget_purged_appointments(
                ended_before=cutoff, limit=limits.appointments
            )

        audit_entries = 0
        cutoff = policy.audit_cutoff(now)
        if cutoff is not None:
            for _ in range(limits.audit_batches):
                pruned = await self._store.prune_audit(
                    before=cutoff, limit=limits.audit_batch, actor=_ACTOR, at=now
                )
                if pruned is None:
                    break
                self._audit.appended(pruned.entry)
                audit_entries += pruned.entries

        report = RetentionReport(
            audit_entries=audit_entries,
            abandoned_appointments=abandoned,
            appointments=appointments,
            participants=participants,
            appointment_records=appointment_records,
            recordings=recordings,
            links=expired.links,
            sessions=expired.sessions,
        )
        if report.total:
            log.info(
                "retention removed %s",
                ", ".join(f"{n} {kind}" for kind, n in report.counts().items() if n),
            )
        if folder_error is not None:
            raise folder_error
        return report


def delete_expired_recordings(
    directory: str | os.PathLike[str], *, before: float, limit: int
) -> int:
    """Delete up to ``limit`` sealed recordings (and temporary files left by a crashed
    writer) in ``directory`` whose file was last written before ``before``.

    The sealed header holds no time that can be read without the key, so the file's
    modification time decides. Only regular files directly in ``directory`` with a
    recording's name are touched: symbolic links are never followed (nor deleted), and
    nothing outside the folder is reached (every call is relative to the folder's open
    descriptor). A missing folder holds nothing to delete.
    """
    try:
        folder = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    deleted = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if deleted >= limit:
                    break
                if not is_recording_file(entry.name):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                    if not stat.S_ISREG(info.st_mode) or info.st_mtime >= before:
                        continue
                    os.unlink(entry.name, dir_fd=folder)
                except FileNotFoundError:
                    continue  # gone meanwhile (another process's pass)
                except OSError as exc:
                    log.warning(
                        "retention could not delete a recording: %s",
                        errno.errorcode.get(exc.errno or 0, "error"),
                    )
                    continue
                deleted += 1
    finally:
        os.close(folder)
    return deleted


#: The first pass waits this long after start (times a random factor of 0.5 to 1), so a
#: start stays quick and gateway processes started together do not sweep in step.
FIRST_PASS_DELAY = 60.0


class RetentionSweeper:
    """Runs a retention pass every ``interval`` seconds in a task of its own.

    ``start()`` and ``stop()`` belong to the application's cleanup context; ``stop()`` is
    safe to call twice. A pass that fails (Redis down, a bug) is logged and counted, and
    the next one runs at the next interval; a pass is cut off after ``interval``.
    """

    def __init__(
        self,
        *,
        service: RetentionService,
        interval: float,
        first_delay: float = FIRST_PASS_DELAY,
        on_pass: Callable[[RetentionReport], None] | None = None,
        on_failure: Callable[[], None] | None = None,
        rand: Callable[[], float] | None = None,
    ) -> None:
        self._service = service
        self._interval = interval
        self._first_delay = first_delay
        self._on_pass = on_pass
        self._on_failure = on_failure
        self._rand = rand or secrets.SystemRandom().random
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._passes = 0
        self._finished = asyncio.Condition()

    @property
    def passes(self) -> int:
        """Passes run so far (failed ones included)."""
        return self._passes

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="retention sweeper")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def wake(self) -> None:
        """Run a pass now rather than at the next interval."""
        self._wake.set()

    async def wait_for_pass(self, count: int) -> None:
        """Until ``count`` passes have run (for tests and tools)."""
        async with self._finished:
            await self._finished.wait_for(lambda: self._passes >= count)

    async def _run(self) -> None:
        delay = self._first_delay * (0.5 + self._rand() / 2)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            await self._pass()
            delay = self._interval

    async def _pass(self) -> None:
        try:
            async with asyncio.timeout(self._interval):
                report = await self._service.run_once()
        except StoreError as exc:
            log.warning("retention pass stopped: %s", exc.code)
            self._failed()
        except TimeoutError:
            log.warning("retention pass cut off after %.0f s", self._interval)
            self._failed()
        except OSError as exc:
            log.warning("retention pass: the recording folder: %s", exc.strerror)
            self._failed()
        except Exception:  # a bug must not stop every later pass
            log.exception("retention pass failed")
            self._failed()
        else:
            if self._on_pass is not None:
                self._on_pass(report)
        async with self._finished:
            self._passes += 1
            self._finished.notify_all()

    def _failed(self) -> None:
        if self._on_failure is not None:
            self._on_failure()
