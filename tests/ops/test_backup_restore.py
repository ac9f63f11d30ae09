"""Redis backup and restore, done the way docs/DEPLOY.md says, once, for real.

A gateway's state in Redis (a platform and its API key, an appointment, a client with a
sealed TOTP secret, an audit log already pruned by the retention) is backed up with
``redis-cli --rdb``; a fresh redis-server started from that file in a new folder holds
all of it: the client, the TOTP secret (which opens with the same data keys and with no
other), the API key, and an audit chain that verifies from its anchor to its head. Then
AOF is turned back on, as the guide says, and a restart keeps everything.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.clock import FrozenClock
from gateway.domain.apikeys import Scope
from gateway.errors import StoreError
from gateway.services import Services
from gateway.settings import Settings, new_data_key
from gateway.storage import RedisStore, SecretBox
from tests.factories import make_settings, seed
from tests.fixtures.servers import RedisServer

pytestmark = pytest.mark.integration

DAY = 86400.0


def redis_cli() -> str:
    executable = shutil.which("redis-cli")
    if executable is None:
        pytest.fail(
            "redis-cli is not on PATH (Debian: apt-get install redis-tools); the backup test "
            "takes its backup the documented way and is never skipped",
            pytrace=False,
        )
    return executable


def open_store(settings: Settings, url: str) -> RedisStore:
    return RedisStore.from_url(url, secret_box=SecretBox(settings.data_keys))


async def wait_for_aof(url: str) -> None:
    """Until Redis has written the AOF that ``CONFIG SET appendonly yes`` starts."""
    client = Redis.from_url(url)
    try:
        async with asyncio.timeout(20):
            while True:
                info = await client.info("persistence")
                if (
                    info["aof_enabled"] == 1
                    and info["aof_rewrite_in_progress"] == 0
                    and info.get("aof_rewrite_scheduled", 0) == 0
                ):
                    return
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def test_a_backup_taken_with_redis_cli_restores_the_gateway(
    redis_server_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    live = redis_server_factory(appendonly=True)
    settings = make_settings(redis_url=live.url, audit_retention_days=1)
    clock = FrozenClock()

    # --- a gateway's state, made through the services -------------------------------------
    store = open_store(settings, live.url)
    try:
        services = Services.build(settings=settings, store=store, clock=clock)
        seeded = await seed(services)
        await services.identity.enrol(seeded.client.id, actor="test")
        totp_secret = await store.get_totp_secret(seeded.client.id)
        assert totp_secret is not None
        host = await store.get_host(seeded.room.host_id)
        assert host is not None
        issued = await services.apikeys.create(
            platform_id=host.platform_id, name="backup-test", scopes=[Scope.AUDIT_READ], actor="t"
        )
        clock.advance(2 * DAY)
        pruned = await services.retention.run_once()
        assert pruned.audit_entries > 0  # the backup holds an anchored log
        await services.provisioning.add_client(
            appointment_id=seeded.appointment.id, display_name="Late Client", actor="test"
        )
        before = await services.audit.verify()
        assert before.pruned_through > 0
        client_before = await store.get_participant(seeded.client.id)
    finally:
        await store.close()

    # --- the backup, as docs/DEPLOY.md says: redis-cli --rdb, from another machine ----------
    backup = tmp_path / "backups" / "quietroom.rdb"
    backup.parent.mkdir()
    taken = await asyncio.to_thread(
        subprocess.run,
        [redis_cli(), "-h", "127.0.0.1", "-p", str(live.port), "--rdb", str(backup)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert taken.returncode == 0, taken.stderr
    assert backup.stat().st_size > 0
    live.stop()  # the original is gone: only the backup file is left

    # --- restore: a fresh redis-server, the dump as dump.rdb, AOF off until checked -------
    restored_dir = tmp_path / "restored"
    restored_dir.mkdir()
    shutil.copyfile(backup, restored_dir / "dump.rdb")
    restored = RedisServer(live.executable, restored_dir, appendonly=False)
    restored.start()
    try:
        store = open_store(settings, restored.url)
        try:
            assert await store.client.dbsize() > 0
            services = Services.build(settings=settings, store=store, clock=clock)
            assert await store.get_participant(seeded.client.id) == client_before
            # The sealed TOTP secret opens with the data keys kept apart from the backup.
            assert await store.get_totp_secret(seeded.client.id) == totp_secret
            key = await services.apikeys.authenticate(issued.plaintext)
            assert key.id == issued.key.id
            after = await services.audit.verify()
            assert (after.head_seq, after.head_hash, after.pruned_through) == (
                before.head_seq,
                before.head_hash,
                before.pruned_through,
            )
            # Back to durable: AOF on again (Redis writes it from the data), then a restart.
            await store.client.config_set("appendonly", "yes")
            await wait_for_aof(restored.url)
        finally:
            await store.close()

        # Without the data keys the backup holds no usable secret.
        stranger = make_settings(redis_url=restored.url, data_keys=[new_data_key()])
        store = open_store(stranger, restored.url)
        try:
            with pytest.raises(StoreError, match="does not decrypt"):
                await store.get_totp_secret(seeded.client.id)
        finally:
            await store.close()

        restored.stop()
        restored.appendonly = True
        restored.start()
        assert (restored_dir / "appendonlydir").is_dir()
        store = open_store(settings, restored.url)
        try:
            services = Services.build(settings=settings, store=store, clock=clock)
            assert await store.get_totp_secret(seeded.client.id) == totp_secret
            assert (await services.audit.verify()).head_seq == before.head_seq
        finally:
            await store.close()
    finally:
        restored.stop()
