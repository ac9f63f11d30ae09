"""``quietroom keys reseal``, as a real process on a real Redis: after it, the old data key
can be dropped and every TOTP seed and webhook secret still opens."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable

from gateway.clock import SystemClock
from gateway.services import Services
from gateway.settings import Settings, new_data_key, new_secret_key
from gateway.storage import RedisStore, SecretBox
from tests.factories import seed
from tests.fixtures.servers import RedisServer

QUIETROOM = [sys.executable, "-m", "gateway.cli"]


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*QUIETROOM, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], **env},
        check=False,
    )


async def a_gateways_secrets(env: dict[str, str]) -> tuple[str, str, str, str]:
    """What a gateway under ``env`` leaves sealed in Redis: (client id, its TOTP seed,
    platform id, its webhook secret)."""
    settings = Settings.load(env)
    store = RedisStore.from_url(settings.redis_url, secret_box=SecretBox(settings.data_keys))
    try:
        services = Services.build(settings=settings, store=store, clock=SystemClock())
        seeded = await seed(services)
        enrolment = await services.identity.enrol(seeded.client.id, actor="test")
        platform, webhook_secret = await services.provisioning.create_platform(
            name="Platform", webhook_url="https://platform.example/hooks", actor="test"
        )
        assert webhook_secret is not None
        return seeded.client.id, enrolment.secret, platform.id, webhook_secret
    finally:
        await store.close()


async def opened(env: dict[str, str], client_id: str, platform_id: str) -> tuple[str, str]:
    settings = Settings.load(env)
    store = RedisStore.from_url(settings.redis_url, secret_box=SecretBox(settings.data_keys))
    try:
        totp = await store.get_totp_secret(client_id)
        webhook = await store.get_webhook_secret(platform_id)
        assert totp is not None
        assert webhook is not None
        return totp, webhook
    finally:
        await store.close()


def test_after_a_reseal_the_old_data_key_can_be_dropped(
    redis_server_factory: Callable[[], RedisServer],
) -> None:
    old_key, new_key = new_data_key(), new_data_key()
    env = {
        "QUIETROOM_SECRET_KEYS": new_secret_key(),
        "QUIETROOM_DATA_KEYS": old_key,
        "QUIETROOM_REDIS_URL": redis_server_factory().url,
        "QUIETROOM_WEBHOOK_ALLOW_PRIVATE": "true",
    }
    client_id, totp, platform_id, webhook = asyncio.run(a_gateways_secrets(env))
    rotated = {**env, "QUIETROOM_DATA_KEYS": f"{new_key},{old_key}"}

    result = run("keys", "reseal", env=rotated)

    assert result.returncode == 0, result.stderr
    assert "secrets sealed anew under the newest data key: 2" in result.stdout
    for secret in (totp, webhook, old_key, new_key):
        assert secret not in result.stdout + result.stderr
    only_new = {**env, "QUIETROOM_DATA_KEYS": new_key}
    assert asyncio.run(opened(only_new, client_id, platform_id)) == (totp, webhook)

    again = run("keys", "reseal", env=only_new)
    assert again.returncode == 0, again.stderr
    assert "secrets sealed anew under the newest data key: 0" in again.stdout
    assert "already under it: 2" in again.stdout

    verified = run("audit", "verify", env=only_new)
    assert verified.returncode == 0, verified.stderr


def test_secrets_no_key_opens_fail_the_command(
    redis_server_factory: Callable[[], RedisServer],
) -> None:
    env = {
        "QUIETROOM_SECRET_KEYS": new_secret_key(),
        "QUIETROOM_DATA_KEYS": new_data_key(),
        "QUIETROOM_REDIS_URL": redis_server_factory().url,
    }
    asyncio.run(a_gateways_secrets({**env, "QUIETROOM_WEBHOOK_ALLOW_PRIVATE": "true"}))

    result = run("keys", "reseal", env={**env, "QUIETROOM_DATA_KEYS": new_data_key()})

    assert result.returncode == 1
    assert "2 stored secrets open with no data key" in result.stderr


def test_without_redis_it_says_why_it_cannot_run() -> None:
    result = run(
        "keys",
        "reseal",
        env={"QUIETROOM_SECRET_KEYS": new_secret_key(), "QUIETROOM_DATA_KEYS": new_data_key()},
    )
    assert result.returncode == 2
    assert "QUIETROOM_REDIS_URL" in result.stderr
