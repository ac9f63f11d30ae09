"""``quietroom platforms`` and ``quietroom apikeys``, run as real processes on a real Redis."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import subprocess
import sys
from collections.abc import Callable

import pytest

from gateway.clock import SystemClock
from gateway.domain.apikeys import ApiKey
from gateway.errors import Unauthenticated
from gateway.services import Services
from gateway.settings import Settings, new_data_key, new_secret_key
from gateway.storage import RedisStore, SecretBox
from tests.fixtures.servers import RedisServer

QUIETROOM = [sys.executable, "-m", "gateway.cli"]


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*QUIETROOM, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], **env},
        check=False,
    )


def labelled(stdout: str) -> dict[str, str]:
    lines = stdout.splitlines()
    return {
        label.split(" (")[0].rstrip(":"): value.strip()
        for label, value in itertools.pairwise(lines)
        if label.endswith(":") and value.startswith("  ")
    }


@pytest.fixture
def env(redis_server_factory: Callable[[], RedisServer]) -> dict[str, str]:
    """Settings for a gateway on a Redis of this test's own (the default key prefix)."""
    return {
        "QUIETROOM_SECRET_KEYS": new_secret_key(),
        "QUIETROOM_DATA_KEYS": new_data_key(),
        "QUIETROOM_REDIS_URL": redis_server_factory().url,
    }


async def authenticate(env: dict[str, str], plaintext: str) -> ApiKey:
    settings = Settings.load(env)
    store = RedisStore.from_url(settings.redis_url, secret_box=SecretBox(settings.data_keys))
    try:
        services = Services.build(settings=settings, store=store, clock=SystemClock())
        return await services.apikeys.authenticate(plaintext)
    finally:
        await store.close()


@pytest.mark.parametrize(
    "argv",
    [
        ["platforms", "create", "--name", "Clinic"],
        ["apikeys", "create", "--platform", "plt_x", "--name", "n", "--scope", "audit:read"],
        ["apikeys", "revoke", "key_AAAAAAAAAAAAAAAAAAAAAA"],
        ["apikeys", "list", "--platform", "plt_x"],
    ],
)
@pytest.mark.parametrize("with_secrets", [False, True])
def test_without_redis_the_commands_refuse(argv: list[str], with_secrets: bool) -> None:
    env = (
        {"QUIETROOM_SECRET_KEYS": new_secret_key(), "QUIETROOM_DATA_KEYS": new_data_key()}
        if with_secrets
        else {}
    )
    result = run(*argv, env=env)
    assert result.returncode == 2
    assert "set QUIETROOM_REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_create_list_use_and_revoke_a_key(env: dict[str, str]) -> None:
    created = run("platforms", "create", "--name", "North Clinic", env=env)
    assert created.returncode == 0, created.stderr
    platform_id = labelled(created.stdout)["Platform id"]
    assert re.fullmatch(r"plt_[\w-]{22}", platform_id)

    made = run(
        "apikeys",
        "create",
        "--platform",
        platform_id,
        "--name",
        "billing-sync",
        "--scope",
        "hosts:write",
        "--scope",
        "audit:read",
        env=env,
    )
    assert made.returncode == 0, made.stderr
    printed = labelled(made.stdout)
    key_id, plaintext = printed["API key id"], printed["API key"]
    assert plaintext.startswith(f"qrk_{key_id}_")
    assert plaintext not in made.stderr

    key = asyncio.run(authenticate(env, plaintext))
    assert key.id == key_id
    assert {s.value for s in key.scopes} == {"hosts:write", "audit:read"}

    listed = run("apikeys", "list", "--platform", platform_id, env=env)
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    assert line.startswith(f"{key_id}  billing-sync  created ")
    assert "  live  audit:read,hosts:write" in line
    assert plaintext not in listed.stdout

    revoked = run("apikeys", "revoke", key_id, env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith(f"{key_id} revoked at ")
    with pytest.raises(Unauthenticated):
        asyncio.run(authenticate(env, plaintext))
    assert "revoked" in run("apikeys", "list", "--platform", platform_id, env=env).stdout


def test_a_platform_with_a_webhook_url_gets_its_signing_secret_once(env: dict[str, str]) -> None:
    created = run(
        "platforms", "create", "--name", "Hooked", "--webhook-url", "https://example.org/hook",
        env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    printed = labelled(created.stdout)
    assert set(printed) == {"Platform id", "Webhook signing secret"}


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["apikeys", "create", "--platform", "plt_AAAAAAAAAAAAAAAAAAAAAA", "--name", "n",
          "--scope", "audit:read"], 1, "platform not found"),
        (["apikeys", "create", "--platform", "plt_x", "--name", "n", "--scope", "*"], 2,
         "invalid choice"),
        (["apikeys", "create", "--platform", "plt_x", "--name", "n"], 2, "--scope"),
        (["apikeys", "revoke", "key_AAAAAAAAAAAAAAAAAAAAAA"], 1, "api key not found"),
        (["apikeys", "revoke", "nonsense"], 1, "api key not found"),
        (["platforms", "create", "--name", "\x07"], 1, "display name"),
    ],
)  # fmt: skip
def test_bad_requests_fail_cleanly(
    env: dict[str, str], argv: list[str], code: int, message: str
) -> None:
    result = run(*argv, env=env)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_key_name_fails_cleanly(env: dict[str, str]) -> None:
    created = run("platforms", "create", "--name", "Clinic", env=env)
    platform_id = labelled(created.stdout)["Platform id"]
    result = run(
        "apikeys", "create", "--platform", platform_id, "--name", "has space",
        "--scope", "audit:read", env=env,
    )  # fmt: skip
    assert result.returncode == 1
    assert "a key name is" in result.stderr
