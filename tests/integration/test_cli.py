"""The quietroom command, run as a real process."""

from __future__ import annotations

import itertools
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from gateway.settings import MIN_SECRET_LENGTH, new_data_key, new_secret_key
from tests.fixtures.servers import RedisServer

QUIETROOM = [sys.executable, "-m", "gateway.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*QUIETROOM, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], **(env or {})},
        check=False,
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def status_of(url: str, headers: dict[str, str] | None = None, *, post: bool = False) -> int:
    """The status of a GET (or of an empty form POST) to ``url``, without redirects."""
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(
        url, headers=headers or {}, data=b"" if post else None, method="POST" if post else "GET"
    )
    try:
        with opener.open(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def read_demo_links(process: subprocess.Popen[str], timeout: float) -> dict[str, str]:
    """Labelled lines of the demo's output, read until the API key has been printed."""
    found: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            found.put(line.rstrip("\n"))
        found.put(None)

    threading.Thread(target=pump, daemon=True).start()
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = found.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            break
        lines.append(line)
        if line.startswith("  qrk_") and any(x.startswith("Platform API key") for x in lines):
            break
    links: dict[str, str] = {}
    for label, value in itertools.pairwise(lines):
        if label.endswith(":") and value.startswith("  "):
            links[label.split(" (")[0].rstrip(":")] = value.strip()
    return links


def test_demo_prints_labelled_links_and_the_client_link_works_once(tmp_path: Path) -> None:
    stderr_path = tmp_path / "stderr"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [*QUIETROOM, "demo", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={"PATH": os.environ["PATH"]},
        )
    try:
        links = read_demo_links(process, timeout=20)
        assert list(links) == [
            "Host sign-in link",
            "Host TOTP enrolment",
            "Client link",
            "Platform API key",
        ]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/j/[\w.-]+", links["Client link"])
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/h/[\w.-]+", links["Host sign-in link"])
        assert links["Host TOTP enrolment"].startswith("otpauth://totp/")
        client = links["Client link"]
        origin = {"Origin": client.split("/j/")[0]}
        assert status_of(client) == 200  # the page: opening it uses nothing up
        assert status_of(client, origin, post=True) == 303
        assert status_of(client, origin, post=True) == 410
        assert status_of(client) == 410
        health = client.split("/j/")[0] + "/healthz"
        assert status_of(health) == 200
        verify = client.split("/j/")[0] + "/api/v1/audit/verify"
        api_key = links["Platform API key"]
        assert re.fullmatch(r"qrk_key_[\w-]{22}_[\w-]{43}", api_key)
        assert status_of(verify, {"Authorization": f"Bearer {api_key}"}) == 200
        assert status_of(verify) == 401
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=15)
        if process.stdout:
            process.stdout.close()
    assert code == 0
    logged = stderr_path.read_text()
    assert "GET /j/… 200" in logged
    assert "POST /j/… 303" in logged
    for link in links.values():
        token = link.rsplit("/", 1)[-1]
        assert token not in logged


def test_keys_new_prints_fresh_usable_secrets() -> None:
    first, second = run("keys", "new"), run("keys", "new")
    assert first.returncode == 0
    assert len(first.stdout.strip()) >= MIN_SECRET_LENGTH
    assert first.stdout != second.stdout
    data = run("keys", "new", "--kind", "data")
    Fernet(data.stdout.strip())


def test_serve_refuses_to_start_without_secrets() -> None:
    result = run("serve")
    assert result.returncode == 2
    assert "QUIETROOM_SECRET_KEYS is required" in result.stderr
    assert "Traceback" not in result.stderr


def test_audit_verify_on_a_real_redis(redis_server: RedisServer) -> None:
    import asyncio

    from gateway.clock import SystemClock
    from gateway.domain.audit import AuditDraft
    from gateway.storage import RedisStore, SecretBox

    data_key = new_data_key()
    prefix = "qr:"

    async def fill() -> None:
        store = RedisStore.from_url(redis_server.url, secret_box=SecretBox([data_key]))
        try:
            for n in range(3):
                await store.append_audit(
                    AuditDraft(actor="test", action=f"step.{n}"), at=SystemClock().now()
                )
        finally:
            await store.close()

    asyncio.run(fill())
    env = {
        "QUIETROOM_SECRET_KEYS": new_secret_key(),
        "QUIETROOM_DATA_KEYS": data_key,
        "QUIETROOM_REDIS_URL": redis_server.url,
    }
    result = run("audit", "verify", env=env)
    assert result.returncode == 0, result.stderr
    assert "audit log verifies: 3 entries" in result.stdout

    async def tamper() -> None:
        store = RedisStore.from_url(redis_server.url, secret_box=SecretBox([data_key]))
        try:
            keys = [k async for k in store.client.scan_iter(match=f"{prefix}audit*")]
            assert keys, "expected the audit log under the default prefix"
            for key in keys:
                if await store.client.type(key) in (b"list", "list"):
                    raw = await store.client.lindex(key, 1)
                    await store.client.lset(key, 1, raw.replace(b"step.1", b"step.X"))
        finally:
            await store.close()

    asyncio.run(tamper())
    broken = run("audit", "verify", env=env)
    assert broken.returncode == 1
    assert "does NOT verify" in broken.stderr


@pytest.mark.parametrize("argv", [["demo", "--port", "99999"], ["nonsense"]])
def test_bad_arguments_fail_cleanly(argv: list[str]) -> None:
    result = run(*argv)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
