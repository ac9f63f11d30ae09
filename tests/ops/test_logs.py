"""Structured logs: JSON lines with ids attached, and never a secret or a name.

The whole flow runs with marker values (names, a host message, wrong TOTP codes, a
wrong API key) and every secret it meets (API keys, link tokens, cookies, TOTP seeds and
codes, the webhook secret, TURN secrets and passwords); none may appear in any log line
of a ``quietroom serve`` process (JSON, at DEBUG), in-process records, or webhook body.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pyotp
import pytest
from aiohttp import web

from gateway.clock import SystemClock
from gateway.domain.apikeys import Scope, parse_presented
from gateway.domain.webhooks import SIGNATURE_HEADER, verify
from gateway.logs import JsonFormatter, TextFormatter, configure_logging
from gateway.settings import new_data_key, new_secret_key
from tests.fixtures.servers import RedisServer, free_port
from tests.gateway_harness import running_gateway
from tests.ops.support import REPO, WebBrowser, form_csrf, serve_process
from tests.signaling.kit import wrong_codes
from turn.credentials import TurnCredentials, ice_servers

pytestmark = pytest.mark.integration

PLATFORM_NAME = "Marker Clinic Platform Q7Z"
HOST_NAME = "Dr Marker-Host Q7Z"
CLIENT_NAME = "Marker-Client Q7Z Person"
HOST_MESSAGE = "Marker message Q7Z: running five minutes late"
TURN_SECRET = "TurnSecretMarkerQ7Z-" + "t" * 20
METRICS_TOKEN = "MetricsTokenMarkerQ7Z-" + "m" * 20
ALL_SCOPES = [scope.value for scope in Scope]


# --- the formatters -------------------------------------------------------------------------


def _record(**extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("gateway.x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_lines_carry_ids_and_drop_anything_else() -> None:
    line = json.loads(
        JsonFormatter().format(
            _record(
                participant_id="ptc_0123456789abcdefghijkl",
                appointment_id="apt_0123456789abcdefghijkl",
                room_id=CLIENT_NAME,  # not an id: dropped, never written
                display_name=CLIENT_NAME,  # not a context field: dropped
                token="secret-token",
            )
        )
    )
    assert line["message"] == "hello you"
    assert line["level"] == "INFO"
    assert line["logger"] == "gateway.x"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert line["participant_id"] == "ptc_0123456789abcdefghijkl"
    assert line["appointment_id"] == "apt_0123456789abcdefghijkl"
    assert "room_id" not in line
    assert CLIENT_NAME not in json.dumps(line)
    assert "secret-token" not in json.dumps(line)


def test_json_lines_carry_errors_and_text_lines_carry_ids() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = _record(participant_id="ptc_0123456789abcdefghijkl")
        record.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(record))
    assert "RuntimeError: boom" in line["error"]
    text = TextFormatter().format(_record(participant_id="ptc_0123456789abcdefghijkl"))
    assert text.endswith("gateway.x: hello you [participant_id=ptc_0123456789abcdefghijkl]")


def test_configure_logging_writes_json_and_keeps_noisy_libraries_quiet() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    libraries = {name: logging.getLogger(name).level for name in ("aioice", "aiortc")}
    try:
        configure_logging(log_format="json", level="debug", stream=stream)
        logging.getLogger("gateway.test").debug(
            "seen", extra={"room_id": "rm_0123456789abcdefghijkl"}
        )
        logging.getLogger("aioice.ice").info("candidate 192.0.2.1")
        assert logging.getLogger("aioice").level == logging.WARNING
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        for name, level in libraries.items():
            logging.getLogger(name).setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines == [
        {
            "time": lines[0]["time"],
            "level": "DEBUG",
            "logger": "gateway.test",
            "message": "seen",
            "room_id": "rm_0123456789abcdefghijkl",
        }
    ]


# --- the whole flow -------------------------------------------------------------------------


@dataclass
class Receiver:
    """A platform's webhook endpoint on loopback."""

    url: str
    deliveries: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def types(self) -> list[str]:
        return [json.loads(body)["type"] for _, body in self.deliveries]


@asynccontextmanager
async def webhook_receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    receiver = Receiver(url=f"http://127.0.0.1:{port}/hook")

    async def hook(request: web.Request) -> web.Response:
        receiver.deliveries.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield receiver
    finally:
        await runner.cleanup()


@dataclass
class Exposed:
    """Everything the flow saw that must never be logged."""

    secrets: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)

    def add(self, *values: str | None) -> None:
        self.secrets.extend(value for value in values if value)


async def _api(
    base: str, key: str, method: str, path: str, body: Any = None, expect: int = 201
) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, f"{base}/api/v1{path}", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as resp,
    ):
        answer = await resp.json()
        assert resp.status == expect, answer
        return answer


def _totp_secret(otpauth_uri: str) -> str:
    return parse_qs(urlsplit(otpauth_uri).query)["secret"][0]


def _path(url: str) -> str:
    return urlsplit(url).path


async def drive_whole_flow(base: str, api_key: str, receiver: Receiver) -> Exposed:
    """Platform API -> host sign-in -> client link, TOTP enrolment and verification,
    knock, a host message, admission, the end; webhooks to ``receiver``."""
    seen = Exposed()
    seen.add(api_key, parse_presented(api_key)[1], HOST_NAME, CLIENT_NAME, HOST_MESSAGE)
    host = await _api(base, api_key, "POST", "/hosts", {"display_name": HOST_NAME})
    room = await _api(
        base,
        api_key,
        "POST",
        "/rooms",
        {"host_id": host["id"], "policy": {"client_totp_required": True}},
    )
    appointment = await _api(base, api_key, "POST", "/appointments", {"room_id": room["id"]})
    client = await _api(
        base,
        api_key,
        "POST",
        f"/appointments/{appointment['id']}/clients",
        {"display_name": CLIENT_NAME},
    )
    host_pid = appointment["host_participant_id"]
    seen.ids.update(appointment=appointment["id"], client=client["id"], host=host_pid)
    enrolment = await _api(base, api_key, "POST", f"/participants/{host_pid}/totp")
    host_secret = _totp_secret(enrolment["otpauth_uri"])
    host_link = (await _api(base, api_key, "POST", f"/participants/{host_pid}/links"))["url"]
    client_link = (await _api(base, api_key, "POST", f"/participants/{client['id']}/links"))["url"]
    seen.add(enrolment["otpauth_uri"], host_secret, host_link, client_link)
    seen.add(_path(host_link).rsplit("/", 1)[1], _path(client_link).rsplit("/", 1)[1])
    # Refused keys: the real key id with a wrong secret, and a made-up key.
    _, key_secret = parse_presented(api_key)
    wrong_secret = "WrongKeyMarkerQ7Z" + key_secret[17:]
    wrong_key = api_key[: -len(key_secret)] + wrong_secret
    made_up = "qrk_MadeUpKeyMarkerQ7Z_" + "x" * 30
    for refused in (wrong_key, made_up):
        await _api(base, refused, "GET", "/audit", expect=401)
    # The secret as presented, not split at its last "_": a random secret may hold one.
    seen.add(wrong_key, made_up, wrong_secret)

    # The host signs in: one wrong code, then the right one.
    host_browser = WebBrowser(base)
    assert (await host_browser.open_link(_path(host_link)))[0] == 303
    status, page, _ = await host_browser.get("/host")
    assert status == 200, page
    host_wrong = wrong_codes(host_secret, 1)[0]
    status, page = await host_browser.post_form(
        "/host/sign-in", {"csrf": form_csrf(page), "code": host_wrong}
    )
    assert status == 400
    host_code = pyotp.TOTP(host_secret).now()
    status, _ = await host_browser.post_form(
        "/host/sign-in", {"csrf": form_csrf(page), "code": host_code}
    )
    assert status == 303
    seen.codes.extend([host_wrong, host_code])
    seen.add(host_browser.cookie)
    console = await host_browser.socket("/host")

    # The client: link, enrolment, a wrong code, the right one, the queue.
    client_browser = WebBrowser(base)
    assert (await client_browser.open_link(_path(client_link)))[0] == 303
    seen.add(client_browser.cookie)
    sock = await client_browser.socket("/client")
    enrolled = await sock.call("identity.enrol")
    assert enrolled["ok"], enrolled
    client_secret = _totp_secret(enrolled["otpauth_uri"])
    seen.add(enrolled["otpauth_uri"], client_secret)
    client_wrong = wrong_codes(client_secret, 1)[0]
    assert (await sock.call("identity.verify", {"code": client_wrong}))["ok"] is False
    client_code = pyotp.TOTP(client_secret).now()
    assert (await sock.call("identity.verify", {"code": client_code}))["ok"] is True
    seen.codes.extend([client_wrong, client_code])
    assert (await sock.call("knock"))["state"] == "waiting"
    told = await console.call("message", {"participant_id": client["id"], "text": HOST_MESSAGE})
    assert told == {"ok": True}
    await sock.wait_for("message")
    admitted = await console.call("admit", {"participant_id": client["id"]})
    assert admitted["ok"], admitted
    await sock.wait_for("admitted")
    assert (await console.call("end"))["ok"]
    await sock.wait_for("ended")

    deadline = time.monotonic() + 15
    wanted = {"participant.waiting", "participant.admitted", "session.ended"}
    while not wanted <= set(receiver.types()):
        assert time.monotonic() < deadline, f"webhooks: {receiver.types()}"
        await asyncio.sleep(0.05)
    await host_browser.close()
    await client_browser.close()
    return seen


def issue_turn_credentials(participant_id: str, seen: Exposed) -> None:
    """TURN credentials through turn.credentials, as the media plane hands them out."""
    issuer = TurnCredentials([TURN_SECRET], clock=SystemClock(), ttl=600)
    configuration = ice_servers(
        ["stun:127.0.0.1:3478", "turn:127.0.0.1:3478"], issuer, participant_id=participant_id
    )
    turn_server = configuration["ice_servers"][1]
    seen.add(turn_server["credential"], TURN_SECRET)
    logging.getLogger("turn.credentials").debug("issued %r", issuer)


def assert_nothing_exposed(text: str, seen: Exposed, where: str) -> None:
    for secret in seen.secrets:
        assert secret not in text, f"{secret[:12]}... is in the {where}"
    for code in seen.codes:
        assert not re.search(rf"(?<!\d){code}(?!\d)", text), f"a TOTP code is in the {where}"


def assert_webhooks_clean(receiver: Receiver, seen: Exposed, webhook_secret: str) -> None:
    for headers, body in receiver.deliveries:
        verify(webhook_secret, headers[SIGNATURE_HEADER], body, now=time.time())
        assert_nothing_exposed(body.decode() + json.dumps(headers), seen, "webhook")
        assert webhook_secret not in body.decode()
        data = json.loads(body)["data"]
        assert set(data) <= {"appointment_id", "room_id", "participant_id"}


async def test_a_whole_flow_logs_no_secret_or_name_in_a_serve_process(
    redis_server_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    redis = redis_server_factory()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    secret_key, data_key = new_secret_key(), new_data_key()
    env = {
        "QUIETROOM_SECRET_KEYS": secret_key,
        "QUIETROOM_DATA_KEYS": data_key,
        "QUIETROOM_REDIS_URL": redis.url,
        "QUIETROOM_PUBLIC_URL": base,
        "QUIETROOM_DEV_MODE": "true",  # webhooks to plain http on loopback
        "QUIETROOM_LOG_FORMAT": "json",
        "QUIETROOM_LOG_LEVEL": "DEBUG",
        "QUIETROOM_TURN_SECRETS": TURN_SECRET,
        "QUIETROOM_TURN_URLS": "turn:127.0.0.1:3478",
        "QUIETROOM_METRICS_TOKEN": METRICS_TOKEN,
        "QUIETROOM_SHUTDOWN_DRAIN": "0",
    }
    async with webhook_receiver() as receiver:
        cli_stderr = []

        def cli(*args: str) -> str:
            done = subprocess.run(
                [sys.executable, "-m", "gateway.cli", *args],
                env={"PATH": "/usr/bin:/bin", **env},
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            )
            cli_stderr.append(done.stderr)
            return done.stdout

        made = cli("platforms", "create", "--name", PLATFORM_NAME, "--webhook-url", receiver.url)
        platform_id = re.search(r"plt_\S+", made)
        webhook_secret = re.search(r"whsec_\S+", made)
        assert platform_id is not None, made
        assert webhook_secret is not None, made
        scopes = [arg for scope in ALL_SCOPES for arg in ("--scope", scope)]
        issued = cli(
            "apikeys", "create", "--platform", platform_id[0], "--name", "ops-test", *scopes
        )
        api_key = re.search(r"qrk_\S+", issued)
        assert api_key is not None, issued

        log_path = tmp_path / "serve.log"
        with serve_process(env, port, log_path) as serving:
            seen = await drive_whole_flow(base, api_key[0], receiver)
            serving.terminate()
            assert await serving.wait(timeout=30) == 0

    seen.add(webhook_secret[0], PLATFORM_NAME, secret_key, data_key, TURN_SECRET, METRICS_TOKEN)
    issue_turn_credentials(seen.ids["client"], seen)
    lines = log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(record) for record in records)
    assert any(record.get("participant_id") == seen.ids["client"] for record in records)
    assert any(record.get("appointment_id") == seen.ids["appointment"] for record in records)
    assert any(record["level"] == "DEBUG" for record in records)
    assert_nothing_exposed("\n".join(lines), seen, "gateway's log")
    assert_nothing_exposed("\n".join(cli_stderr), seen, "CLI's log")
    assert_webhooks_clean(receiver, seen, webhook_secret[0])


async def test_a_whole_flow_logs_no_secret_or_name_in_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with (
        webhook_receiver() as receiver,
        running_gateway(
            dev_mode=True,
            turn_secrets=[TURN_SECRET],
            turn_urls=["turn:127.0.0.1:3478"],
            metrics_token=METRICS_TOKEN,
        ) as gateway,
    ):
        services = gateway.services
        platform, webhook_secret = await services.provisioning.create_platform(
            name=PLATFORM_NAME, webhook_url=receiver.url, actor="test"
        )
        assert webhook_secret is not None
        issued = await services.apikeys.create(
            platform_id=platform.id, name="ops-test", scopes=ALL_SCOPES, actor="test"
        )
        seen = await drive_whole_flow(gateway.url, issued.plaintext, receiver)
        issue_turn_credentials(seen.ids["client"], seen)
    seen.add(webhook_secret, PLATFORM_NAME, *gateway.settings.secret_keys)
    seen.add(*gateway.settings.data_keys)
    formatter = JsonFormatter()
    logged = "\n".join(
        [record.getMessage() for record in caplog.records]
        + [repr(record.__dict__) for record in caplog.records]
        + [formatter.format(record) for record in caplog.records]
    )
    assert "POST /j/… 303" in logged  # the test saw the logs it meant to
    assert "api key refused" in logged
    assert_nothing_exposed(logged, seen, "log records")
    assert_webhooks_clean(receiver, seen, webhook_secret)
