"""``quietroom retention run``, as a real process on a real Redis: one pass, what it
removed printed as counts, and an audit log that still verifies afterwards."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.clock import FrozenClock
from gateway.services import Services
from gateway.settings import Settings, new_data_key, new_secret_key
from gateway.storage import RedisStore, SecretBox
from tests.factories import CLIENT_NAME, HOST_NAME, seed
from tests.fixtures.servers import RedisServer

QUIETROOM = [sys.executable, "-m", "gateway.cli"]
DAY = 86400.0


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*QUIETROOM, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], **env},
        check=False,
    )


def counts(stdout: str) -> dict[str, int]:
    pairs = (line.rsplit(": ", 1) for line in stdout.splitlines())
    return {label: int(value) for label, value in pairs}


@pytest.fixture
def env(redis_server_factory: Callable[[], RedisServer], tmp_path: Path) -> dict[str, str]:
    return {
        "QUIETROOM_SECRET_KEYS": new_secret_key(),
        "QUIETROOM_DATA_KEYS": new_data_key(),
        "QUIETROOM_REDIS_URL": redis_server_factory().url,
        "QUIETROOM_RECORDING_DIR": str(tmp_path / "recordings"),
        "QUIETROOM_AUDIT_RETENTION_DAYS": "40",
        "QUIETROOM_APPOINTMENT_RETENTION_DAYS": "30",
        "QUIETROOM_RECORDING_RETENTION_DAYS": "30",
    }


async def an_old_session(env: dict[str, str]) -> str:
    """A session that ended 45 days ago, as a gateway would have left it; its client id."""
    settings = Settings.load(env)
    store = RedisStore.from_url(settings.redis_url, secret_box=SecretBox(settings.data_keys))
    try:
        services = Services.build(
            settings=settings, store=store, clock=FrozenClock(time.time() - 45 * DAY)
        )
        seeded = await seed(services)
        await services.identity.enrol(seeded.client.id, actor="test")
        await services.waiting_room.end(appointment_id=seeded.appointment.id, actor="test")
        return seeded.client.id
    finally:
        await store.close()


async def an_old_open_appointment(env: dict[str, str]) -> str:
    """An appointment made 100 days ago that nobody ended; its id."""
    settings = Settings.load(env)
    store = RedisStore.from_url(settings.redis_url, secret_box=SecretBox(settings.data_keys))
    try:
        services = Services.build(
            settings=settings, store=store, clock=FrozenClock(time.time() - 100 * DAY)
        )
        return (await seed(services)).appointment.id
    finally:
        await store.close()


async def ended_at(env: dict[str, str], appointment_id: str) -> float | None:
    settings = Settings.load(env)
    store = RedisStore.from_url(settings.redis_url, secret_box=SecretBox(settings.data_keys))
    try:
        appointment = await store.get_appointment(appointment_id)
        assert appointment is not None
        return appointment.ended_at
    finally:
        await store.close()


def test_one_pass_removes_what_outlived_its_retention_and_says_how_much(
    env: dict[str, str], tmp_path: Path
) -> None:
    client_id = asyncio.run(an_old_session(env))
    open_id = asyncio.run(an_old_open_appointment(env))
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    old, young = recordings / "rec_old.sealed", recordings / "rec_young.sealed"
    for path, age in ((old, 31 * DAY), (young, DAY)):
        path.write_bytes(b"sealed")
        os.utime(path, (time.time() - age, time.time() - age))

    result = run("retention", "run", env=env)

    assert result.returncode == 0, result.stderr
    removed = counts(result.stdout)
    assert removed["ended appointments purged"] == 1
    assert removed["participant records purged with them"] == 2
    assert removed["purged appointments forgotten"] == 1
    assert removed["sealed recordings deleted"] == 1
    assert removed["audit entries pruned"] >= 8
    assert removed["expired link ids forgotten"] == 0  # Redis expires them by itself
    assert removed["expired browser sessions forgotten"] == 0
    assert not old.exists()
    assert young.exists()
    # Ending an appointment nobody ended sends a webhook: left to the gateways' sweepers.
    assert asyncio.run(ended_at(env, open_id)) is None
    # What it logs and prints holds counts only.
    for leaked in (client_id, CLIENT_NAME, HOST_NAME):
        assert leaked not in result.stdout + result.stderr

    verified = run("audit", "verify", env=env)
    assert verified.returncode == 0, verified.stderr
    assert "audit log verifies" in verified.stdout
    assert f"entries 1 to {removed['audit entries pruned']} were removed" in verified.stdout

    again = run("retention", "run", env=env)
    assert again.returncode == 0, again.stderr
    assert set(counts(again.stdout).values()) == {0}


def test_without_redis_only_the_recording_folder_is_swept(tmp_path: Path) -> None:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    (recordings / "rec.sealed").write_bytes(b"sealed")
    os.utime(recordings / "rec.sealed", (0, 0))
    result = run(
        "retention",
        "run",
        env={
            "QUIETROOM_SECRET_KEYS": new_secret_key(),
            "QUIETROOM_DATA_KEYS": new_data_key(),
            "QUIETROOM_RECORDING_DIR": str(recordings),
        },
    )
    assert result.returncode == 0, result.stderr
    assert "only the recording folder is swept" in result.stderr
    assert counts(result.stdout)["sealed recordings deleted"] == 1


def test_an_unreachable_redis_is_said_plainly(tmp_path: Path) -> None:
    result = run(
        "retention",
        "run",
        env={
            "QUIETROOM_SECRET_KEYS": new_secret_key(),
            "QUIETROOM_DATA_KEYS": new_data_key(),
            "QUIETROOM_REDIS_URL": "redis://127.0.0.1:1/0",
            "QUIETROOM_RECORDING_DIR": str(tmp_path / "recordings"),
        },
    )
    assert result.returncode == 2
    assert "cannot reach the store" in result.stderr
    assert "Traceback" not in result.stderr
