"""Breaking in at the door: the wrong namespace, a host not signed in, a foreign or
missing Origin, a forged or absent cookie, a forged form, forged connect/disconnect."""

from __future__ import annotations

import asyncio
import secrets
import time

import pyotp
import pytest

from gateway.domain.waiting_room import HostPresence, ParticipantState
from tests.gateway_harness import Browser, Refused, RunningGateway
from tests.signaling.kit import INVALID_INPUT, Spread, error_code, wrong_codes

EVIL = "http://evil.example"


async def presence(gateway: RunningGateway, room_id: str) -> HostPresence:
    room = await gateway.services.store.get_room(room_id)
    assert room is not None
    return room.host_presence


async def test_a_client_cookie_is_refused_on_the_host_namespace(gateway: RunningGateway) -> None:
    seeded = await gateway.seed()
    client, sock = await gateway.verified_client(seeded)

    with pytest.raises(Refused) as refused:
        await client.socket("/host")
    assert refused.value.code == "unauthenticated"

    assert await presence(gateway, seeded.room.id) is HostPresence.AWAY
    assert await gateway.services.store.change_connections(seeded.client.id, 0) == 1
    assert sock.events("host") == []


async def test_a_host_cookie_is_refused_on_the_client_namespace(gateway: RunningGateway) -> None:
    seeded = await gateway.seed()
    host = await gateway.signed_in_host(seeded)

    with pytest.raises(Refused) as refused:
        await host.socket("/client")
    assert refused.value.code == "unauthenticated"


async def test_host_events_sent_on_the_client_namespace_are_unknown(
    gateway: RunningGateway,
) -> None:
    seeded = await gateway.seed()
    host = await gateway.signed_in_host(seeded)
    console = await host.socket("/host")
    client, sock = await gateway.verified_client(seeded)
    await console.wait_for("participant", lambda data: data["state"] == "waiting")
    before = await gateway.snapshot(seeded.appointment.id)
    me = seeded.client.id

    spread = Spread(client, "/client")
    for event, data in [
        ("queue", None),
        ("admit", {"participant_id": me}),
        ("admit_all", None),
        ("deny", {"participant_id": me}),
        ("remove", {"participant_id": me}),
        ("message", {"participant_id": me, "text": "let me in"}),
        ("lock", {"locked": True}),
        ("end", None),
    ]:
        assert await spread.call(event, data) == INVALID_INPUT, event

    assert await gateway.snapshot(seeded.appointment.id) == before
    assert (await console.call("queue"))["participants"][0]["state"] == "waiting"
    for socket in [sock, *spread.sockets]:
        names = {name for name, _ in socket.received}
        assert names <= {"state", "host"}, socket.received


async def test_a_host_that_has_not_signed_in_is_refused_on_the_host_namespace(
    gateway: RunningGateway,
) -> None:
    seeded = await gateway.seed()
    _, sock = await gateway.verified_client(seeded)
    host = gateway.browser()
    assert await host.open_link(seeded.host_path) == 303

    with pytest.raises(Refused) as refused:
        await host.socket("/host")
    assert refused.value.code == "not_signed_in"

    # Enrolled is not signed in either.
    status, _ = await host.post_form("/host/enrol", {"csrf": host.csrf()})
    assert status == 200
    with pytest.raises(Refused) as refused:
        await host.socket("/host")
    assert refused.value.code == "not_signed_in"

    assert await presence(gateway, seeded.room.id) is HostPresence.AWAY
    assert await gateway.services.store.change_connections(seeded.host.id, 0) == 0
    assert sock.events("host") == []


async def test_a_session_of_one_appointment_reaches_nothing_of_another(
    gateway: RunningGateway,
) -> None:
    one = await gateway.seed()
    two = await gateway.seed()
    console_one = await (await gateway.signed_in_host(one)).socket("/host")
    console_two = await (await gateway.signed_in_host(two)).socket("/host")
    _, sock_one = await gateway.verified_client(one)
    _, sock_two = await gateway.verified_client(two)
    await console_two.wait_for("participant", lambda data: data["state"] == "waiting")
    before = await gateway.snapshot(two.appointment.id)
    heard_by_two = len(sock_two.received), len(console_two.received)

    stranger = {"participant_id": two.client.id}
    for event in ("admit", "deny", "remove"):
        assert error_code(await console_one.call(event, stranger)) == "not_found", event
    message = {**stranger, "text": "hello"}
    assert error_code(await console_one.call("message", message)) == "not_found"
    # Whatever one's host does to its own appointment stays there.
    assert await console_one.call("lock", {"locked": True}) == {"ok": True, "locked": True}
    assert (await console_one.call("end"))["ok"] is True
    await sock_one.wait_for("ended")

    assert await gateway.snapshot(two.appointment.id) == before
    assert (len(sock_two.received), len(console_two.received)) == heard_by_two
    assert (await sock_two.call("status"))["state"] == "waiting"
    [entry] = (await console_two.call("queue"))["participants"]
    assert entry["participant_id"] == two.client.id


@pytest.mark.parametrize("namespace", ["/client", "/host"])
async def test_sockets_from_another_origin_or_without_a_live_cookie_are_refused(
    gateway: RunningGateway, namespace: str
) -> None:
    seeded = await gateway.seed()
    if namespace == "/client":
        browser = gateway.browser()
        assert await browser.open_link(seeded.client_path) == 303
        participant_id = seeded.client.id
    else:
        browser = await gateway.signed_in_host(seeded)
        participant_id = seeded.host.id

    for origin in (EVIL, "null", gateway.url + ".evil.example", "https" + gateway.url[4:]):
        with pytest.raises(Refused) as refused:
            await browser.socket(namespace, origin=origin)
        # Engine.IO refuses a foreign Origin at the handshake, before any namespace.
        assert refused.value.code in (None, "origin_not_allowed"), origin
    with pytest.raises(Refused) as refused:
        await browser.socket(namespace, origin="")
    assert refused.value.code == "origin_not_allowed"

    assert browser.cookie is not None
    for cookie in (
        secrets.token_urlsafe(32),  # forged
        browser.session_hash,  # the store's key for the cookie is no cookie
        browser.cookie[:-1],  # truncated
        "x" * 5000,  # oversized
    ):
        with pytest.raises(Refused) as refused:
            await browser.socket(namespace, cookie=cookie)
        assert refused.value.code == "unauthenticated"
    with pytest.raises(Refused) as refused:
        await gateway.browser().socket(namespace)  # no cookie at all
    assert refused.value.code == "unauthenticated"

    assert await gateway.services.store.change_connections(participant_id, 0) == 0
    assert await presence(gateway, seeded.room.id) is HostPresence.AWAY
    # The same browser, done right, gets in.
    socket = await browser.socket(namespace)
    assert (await socket.call("queue" if namespace == "/host" else "status"))["ok"]


async def host_is_signed_in(gateway: RunningGateway, host: Browser) -> bool:
    session = await gateway.services.store.get_session(host.session_hash, now=time.time())
    assert session is not None
    return session.verified


async def test_host_forms_need_our_origin_and_this_sessions_token(
    gateway: RunningGateway,
) -> None:
    seeded = await gateway.seed()
    other = await gateway.seed()
    host = gateway.browser()
    assert await host.open_link(seeded.host_path) == 303
    stranger = gateway.browser()
    assert await stranger.open_link(other.host_path) == 303
    forged: list[tuple[dict[str, str], dict[str, object]]] = [
        ({}, {}),  # no token
        ({"csrf": "0" * 64}, {}),  # a wrong token
        ({"csrf": host.csrf()[:-1]}, {}),  # a truncated token
        ({"csrf": stranger.csrf()}, {}),  # another session's token
        ({"csrf": host.csrf()}, {"origin": EVIL}),  # the right token from a foreign Origin
        ({"csrf": host.csrf()}, {"origin": "", "headers": {"Sec-Fetch-Site": "cross-site"}}),
    ]

    for form, how in forged:
        status, _ = await host.post_form("/host/enrol", form, **how)  # type: ignore[arg-type]
        assert status == 403, (form, how)
    assert await gateway.services.store.get_totp_secret(seeded.host.id) is None

    status, _ = await host.post_form("/host/enrol", {"csrf": host.csrf()})
    assert status == 200
    secret = await gateway.services.store.get_totp_secret(seeded.host.id)
    assert secret is not None
    code = pyotp.TOTP(secret).now()
    for form, how in forged:
        status, _ = await host.post_form(
            "/host/sign-in",
            {**form, "code": code},
            **how,  # type: ignore[arg-type]
        )
        assert status == 403, (form, how)
    # Forged forms with wrong codes, more than the lockout limit: none is counted.
    for wrong in wrong_codes(secret, gateway.settings.totp_max_failures + 1):
        status, _ = await host.post_form("/host/sign-in", {"code": wrong}, origin=EVIL)
        assert status == 403
    assert not await host_is_signed_in(gateway, host)
    with pytest.raises(Refused) as refused:
        await host.socket("/host")
    assert refused.value.code == "not_signed_in"

    # The refused forms neither used the code's time step nor locked the host out.
    status, _ = await host.post_form("/host/sign-in", {"csrf": host.csrf(), "code": code})
    assert status == 303
    assert await host_is_signed_in(gateway, host)
    assert (await (await host.socket("/host")).call("queue"))["ok"]


async def test_a_socket_cannot_forge_connect_or_disconnect(gateway: RunningGateway) -> None:
    seeded = await gateway.seed()
    host = await gateway.signed_in_host(seeded)
    console = await host.socket("/host")
    _, sock = await gateway.verified_client(seeded)
    store = gateway.services.store

    for socket in (sock, console):
        assert await socket.call("disconnect", "client disconnect") == INVALID_INPUT
        assert await socket.call("connect", {"HTTP_ORIGIN": gateway.url}) == INVALID_INPUT
        assert await socket.call("connect", "not an environ") == INVALID_INPUT
    assert await store.change_connections(seeded.client.id, 0) == 1
    assert await store.change_connections(seeded.host.id, 0) == 1

    # Past the grace period a real drop would have taken effect; a forged one did not.
    await asyncio.sleep(gateway.settings.reconnect_grace + 0.3)
    participant = await store.get_participant(seeded.client.id)
    assert participant is not None
    assert participant.state is ParticipantState.WAITING
    assert await presence(gateway, seeded.room.id) is HostPresence.PRESENT
    assert {"present": False} not in sock.events("host")
    assert (await sock.call("status"))["state"] == "waiting"
    assert (await console.call("queue"))["ok"]
