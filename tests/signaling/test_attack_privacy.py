"""What leaks: no roster to clients, names only as plain text to their host, and no PHI
or secret in any log record."""

from __future__ import annotations

import json
import logging
import re
import time

import aiohttp
import pyotp
import pytest

from gateway.domain.apikeys import Scope
from gateway.errors import InvalidInput
from tests.factories import CLIENT_NAME, HOST_NAME
from tests.gateway_harness import Refused, RunningGateway

MARKUP = "<img src=x onerror=alert(1)>"

#: Attributes every log record has; anything else was passed as ``extra``.
_STANDARD_ATTRIBUTES = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def rendered(record: logging.LogRecord) -> str:
    """A record as any handler could write it: the formatted message with its args, the
    traceback, and every extra attribute."""
    text = logging.Formatter("%(name)s %(levelname)s %(message)s").format(record)
    extras = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRIBUTES}
    return f"{text} {extras!r}"


def codes_near_now(secret: str) -> set[str]:
    totp = pyotp.TOTP(secret)
    return {totp.at(time.time() + 30 * step) for step in range(-4, 3)}


def leaks(records: list[logging.LogRecord], markers: list[str], codes: set[str]) -> list[str]:
    texts = [rendered(record) for record in records]
    found = [f"{marker!r} in {text}" for marker in markers for text in texts if marker in text]
    for code in codes:  # a six-digit code as a number of its own, not inside a timestamp
        pattern = re.compile(rf"(?<!\d){code}(?!\d)")
        found += [f"code {code} in {text}" for text in texts if pattern.search(text)]
    return found


async def test_a_client_never_learns_who_else_waits_or_is_in_session(
    gateway: RunningGateway,
) -> None:
    seeded = await gateway.seed()
    console = await (await gateway.signed_in_host(seeded)).socket("/host")
    _, first = await gateway.verified_client(seeded)
    second_invite = await gateway.invite_client(seeded, "Bartholomew Second-Client")
    _, second = await gateway.verified_client(seeded, second_invite)
    third_invite = await gateway.invite_client(seeded, "Cordelia Third-Client")
    third_browser = gateway.browser()
    assert await third_browser.open_link(third_invite.path) == 303
    third = await third_browser.socket("/client")
    people = {
        seeded.client.id: CLIENT_NAME,
        second_invite.participant.id: "Bartholomew Second-Client",
        third_invite.participant.id: "Cordelia Third-Client",
        seeded.host.id: HOST_NAME,
    }

    # Everything that makes events: admit one, message one, lock and unlock.
    admit = await console.call("admit", {"participant_id": seeded.client.id})
    assert admit["ok"]
    await first.wait_for("admitted")
    message = {"participant_id": second_invite.participant.id, "text": "A few minutes"}
    assert await console.call("message", message) == {"ok": True}
    await second.wait_for("message")
    assert (await console.call("lock", {"locked": True}))["ok"]
    assert (await console.call("lock", {"locked": False}))["ok"]
    for sock in (first, second, third):
        await sock.wait_for("room", lambda data: data == {"locked": False})

    # The host sees everyone (so the check below can see names when they are there).
    host_view = json.dumps([console.received, await console.call("queue")])
    assert all(name in host_view for pid, name in people.items() if pid != seeded.host.id)

    for own_id, sock in (
        (seeded.client.id, first),
        (second_invite.participant.id, second),
        (third_invite.participant.id, third),
    ):
        seen = json.dumps([sock.received, await sock.call("status")])
        for participant_id, name in people.items():
            if participant_id != own_id:
                assert participant_id not in seen, (own_id, seen)
                assert name not in seen, (own_id, seen)
        events = {event for event, _ in sock.received}
        assert events <= {"state", "host", "admitted", "message", "room"}, sock.received


async def test_markup_in_a_display_name_reaches_the_host_as_plain_text_and_no_log(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seeded = await gateway.seed()
    host = await gateway.signed_in_host(seeded)
    console = await host.socket("/host")
    invite = await gateway.invite_client(seeded, MARKUP)
    await gateway.verified_client(seeded, invite)

    row = await console.wait_for(
        "participant", lambda data: data["participant_id"] == invite.participant.id
    )
    assert row["display_name"] == MARKUP
    queue = (await console.call("queue"))["participants"]
    assert [e["display_name"] for e in queue if e["participant_id"] == invite.participant.id] == [
        MARKUP
    ]
    stored = await gateway.services.store.get_participant(invite.participant.id)
    assert stored is not None
    assert stored.display_name == MARKUP
    # The console page is never rendered with names in it.
    status, page = await host.get("/host")
    assert status == 200
    assert "onerror" not in page

    assert caplog.records
    assert leaks(caplog.records, [MARKUP, "onerror", "<img"], set()) == []


@pytest.mark.parametrize("name", ["x" * 81, "é" * 81, "", "   ", "tab\x00name", "a\u202eb"])
async def test_display_names_over_80_characters_or_unprintable_are_refused(
    gateway: RunningGateway, name: str
) -> None:
    seeded = await gateway.seed()
    services = gateway.services
    before = len(await services.store.list_participants(seeded.appointment.id))
    with pytest.raises(InvalidInput):
        await services.provisioning.add_client(
            appointment_id=seeded.appointment.id, display_name=name, actor="test"
        )

    host = await services.store.get_host(seeded.room.host_id)
    assert host is not None
    with pytest.raises(InvalidInput):
        await services.provisioning.create_host(
            display_name=name, platform_id=host.platform_id, actor="test"
        )
    issued = await services.apikeys.create(
        platform_id=host.platform_id, name="test", scopes=list(Scope), actor="test"
    )
    headers = {"Authorization": f"Bearer {issued.plaintext}"}
    url = f"{gateway.url}/api/v1/appointments/{seeded.appointment.id}/clients"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"display_name": name}, headers=headers) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "invalid_input"
        # Eighty characters are fine.
        async with http.post(url, json={"display_name": "y" * 80}, headers=headers) as resp:
            assert resp.status == 201
    names = [p.display_name for p in await services.store.list_participants(seeded.appointment.id)]
    assert len(names) == before + 1
    assert "y" * 80 in names


async def test_a_whole_session_logs_no_names_codes_secrets_cookies_or_tokens(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seeded = await gateway.seed()
    store = gateway.services.store

    host = await gateway.signed_in_host(seeded)
    console = await host.socket("/host")
    assert (await host.get("/host"))[0] == 200
    client = gateway.browser()
    assert await client.open_link(seeded.client_path) == 303
    assert (await client.get("/join"))[0] == 200
    sock = await client.socket("/client")
    enrolment = await sock.call("identity.enrol")
    secret = await store.get_totp_secret(seeded.client.id)
    host_secret = await store.get_totp_secret(seeded.host.id)
    assert secret is not None
    assert host_secret is not None
    taken = codes_near_now(secret) | codes_near_now(host_secret)
    wrong = next(f"{n:06d}" for n in range(314159, 999999, 7) if f"{n:06d}" not in taken)
    assert (await sock.call("identity.verify", {"code": wrong}))["ok"] is False
    assert (await sock.call("identity.verify", {"code": pyotp.TOTP(secret).now()}))["ok"]
    assert (await sock.call("knock"))["ok"]
    text = "Running late, sorry Zelda"
    message = {"participant_id": seeded.client.id, "text": text}
    assert await console.call("message", message) == {"ok": True}
    assert (await console.call("admit", {"participant_id": seeded.client.id}))["ok"]
    assert (await console.call("lock", {"locked": True}))["ok"]
    with pytest.raises(Refused):
        await client.socket("/client", origin="")
    with pytest.raises(Refused):
        await client.socket("/client", cookie="forged-" + str(client.cookie))
    status, _ = await host.post_form("/host/sign-in", {"code": wrong}, origin="http://evil.example")
    assert status == 403
    assert (await console.call("end"))["ok"]
    await sock.wait_for("ended")
    assert (await client.get("/join"))[0] == 401

    assert client.cookie is not None
    assert host.cookie is not None
    secrets_and_phi = [
        CLIENT_NAME,
        HOST_NAME,
        "Marker-Client",
        "Marker-Host",
        text,
        client.cookie,
        host.cookie,
        seeded.client_path.removeprefix("/j/"),
        seeded.host_path.removeprefix("/h/"),
        secret,
        host_secret,
        enrolment["otpauth_uri"],
        host.csrf(),
    ]
    loggers = {record.name.split(".")[0] for record in caplog.records}
    assert {"gateway", "signaling", "aiohttp"} <= loggers, loggers  # the flow was logged
    assert leaks(caplog.records, secrets_and_phi, taken | {wrong}) == []
