"""Breaking the waiting room over time: coming back after being denied or removed,
reconnecting around the grace period, a host who goes away, the lock, the end."""

from __future__ import annotations

import asyncio
import time

import pyotp
import pytest

from gateway.domain.links import LinkPurpose
from gateway.domain.model import BrowserSession
from gateway.domain.waiting_room import HostPresence, ParticipantState
from gateway.errors import HostAbsent, NotFound
from tests.gateway_harness import Browser, Refused, RunningGateway, SocketClient, eventually
from tests.signaling.kit import error_code


async def state_of(gateway: RunningGateway, participant_id: str) -> ParticipantState:
    participant = await gateway.services.store.get_participant(participant_id)
    assert participant is not None
    return participant.state


async def session_of(gateway: RunningGateway, browser: Browser) -> BrowserSession:
    session = await gateway.services.store.get_session(browser.session_hash, now=time.time())
    assert session is not None
    return session


async def admitted(console: SocketClient, sock: SocketClient, participant_id: str) -> None:
    ack = await console.call("admit", {"participant_id": participant_id})
    assert ack == {"ok": True, "participant_id": participant_id, "state": "admitted"}
    await sock.wait_for("admitted")


# --- denied and removed ----------------------------------------------------------------------


@pytest.mark.parametrize(("action", "outcome"), [("deny", "denied"), ("remove", "removed")])
async def test_a_denied_or_removed_client_stays_out(
    gateway: RunningGateway, action: str, outcome: str
) -> None:
    seeded = await gateway.seed()
    console = await (await gateway.signed_in_host(seeded)).socket("/host")
    client, first = await gateway.verified_client(seeded)
    client_id = seeded.client.id
    if action == "remove":
        await admitted(console, first, client_id)
    sock = await client.socket("/client")  # a fresh rate allowance for what follows
    secret = await gateway.services.store.get_totp_secret(client_id)
    assert secret is not None

    ack = await console.call(action, {"participant_id": client_id})
    assert ack == {"ok": True, "participant_id": client_id, "state": outcome}
    await sock.wait_for(outcome)
    await sock.wait_for("state", lambda data: data == {"state": outcome})

    # Every action of the open socket fails; it may still learn its own state.
    assert error_code(await sock.call("knock")) == "illegal_transition"
    assert error_code(await sock.call("leave")) == "illegal_transition"
    right = {"code": pyotp.TOTP(secret).now()}
    assert error_code(await sock.call("identity.verify", right)) == "not_allowed"
    assert error_code(await sock.call("identity.enrol")) == "not_allowed"
    assert (await sock.call("status"))["state"] == outcome

    # It cannot come back: not on this cookie, not with a new link.
    with pytest.raises(Refused) as refused:
        await client.socket("/client")
    assert refused.value.code == outcome
    link = await gateway.services.links.issue(
        LinkPurpose.CLIENT_JOIN, participant_id=client_id, actor="test"
    )
    assert (await gateway.browser().get("/j/" + link.url.rsplit("/j/", 1)[1]))[0] == 410

    # Nor be let in later.
    target = {"participant_id": client_id}
    for event in ("admit", "deny", "remove"):
        assert error_code(await console.call(event, target)) == "illegal_transition", event
    message = {**target, "text": "come back"}
    assert error_code(await console.call("message", message)) == "illegal_transition"
    assert await console.call("admit_all") == {"ok": True, "admitted": []}

    assert await state_of(gateway, client_id) == ParticipantState(outcome)
    assert sock.events("message") == []
    assert sock.events("state")[-1] == {"state": outcome}


# --- reconnecting ----------------------------------------------------------------------------


async def test_an_admitted_client_back_within_the_grace_period_is_still_admitted(
    gateway: RunningGateway,
) -> None:
    seeded = await gateway.seed()
    console = await (await gateway.signed_in_host(seeded)).socket("/host")
    client, sock = await gateway.verified_client(seeded)
    await admitted(console, sock, seeded.client.id)

    await sock.close()
    again = await client.socket("/client")
    assert (await again.call("status"))["state"] == "admitted"
    # Past the moment the first drop would have taken effect: still admitted.
    deadline = time.monotonic() + gateway.settings.reconnect_grace + 0.3
    while time.monotonic() < deadline:
        assert await state_of(gateway, seeded.client.id) is ParticipantState.ADMITTED
        await asyncio.sleep(0.1)
    assert (await again.call("status"))["state"] == "admitted"


async def test_a_client_back_after_the_grace_period_gets_back_in_line(
    gateway: RunningGateway,
) -> None:
    seeded = await gateway.seed()
    console = await (await gateway.signed_in_host(seeded)).socket("/host")
    client, sock = await gateway.verified_client(seeded)
    client_id = seeded.client.id
    await admitted(console, sock, client_id)
    grace = gateway.settings.reconnect_grace

    dropped_at = time.monotonic()
    await sock.close()
    assert await state_of(gateway, client_id) is ParticipantState.ADMITTED

    async def gone() -> bool:
        return await state_of(gateway, client_id) is ParticipantState.LEFT

    await eventually(gone, timeout=grace + 2, what="the dropped client leaving")
    assert time.monotonic() - dropped_at >= grace * 0.9
    await console.wait_for(
        "participant", lambda row: row["participant_id"] == client_id and row["state"] == "left"
    )

    again = await client.socket("/client")
    status = await again.call("status")
    assert status["state"] == "knocking"
    assert status["identity"]["verified"] is True  # proven in this browser session
    target = {"participant_id": client_id}
    assert error_code(await console.call("admit", target)) == "illegal_transition"
    assert await again.call("knock") == {"ok": True, "state": "waiting"}
    await admitted(console, again, client_id)


async def test_while_the_host_is_away_nobody_is_admitted(gateway: RunningGateway) -> None:
    seeded = await gateway.seed()
    host = await gateway.signed_in_host(seeded)
    console = await host.socket("/host")
    _, sock = await gateway.verified_client(seeded)
    assert (await sock.call("status"))["host_present"] is True

    await console.close()
    await sock.wait_for("host", lambda data: data == {"present": False})
    room = await gateway.services.store.get_room(seeded.room.id)
    assert room is not None
    assert room.host_presence is HostPresence.AWAY
    assert (await sock.call("status"))["host_present"] is False

    # The host's own session, without a connection, admits nobody.
    session = await session_of(gateway, host)
    waiting_room = gateway.services.waiting_room
    with pytest.raises(HostAbsent):
        await waiting_room.admit(session, seeded.client.id)
    with pytest.raises(HostAbsent):
        await waiting_room.admit_all(session)
    assert await state_of(gateway, seeded.client.id) is ParticipantState.WAITING

    again = await host.socket("/host")

    async def back() -> bool:
        return sock.events("host")[-1:] == [{"present": True}]

    await eventually(back, what="the client hearing the host is back")
    await admitted(again, sock, seeded.client.id)


# --- the lock --------------------------------------------------------------------------------


async def test_a_locked_room_takes_no_new_knocks_until_unlocked(gateway: RunningGateway) -> None:
    seeded = await gateway.seed()
    console = await (await gateway.signed_in_host(seeded)).socket("/host")
    _, early = await gateway.verified_client(seeded)
    invite = await gateway.invite_client(seeded, "Lucian Late-Client")
    late_id = invite.participant.id
    late = gateway.browser()
    assert await late.open_link(invite.path) == 303
    sock = await late.socket("/client")
    assert (await sock.call("identity.enrol"))["ok"]
    secret = await gateway.services.store.get_totp_secret(late_id)
    assert secret is not None
    assert (await sock.call("identity.verify", {"code": pyotp.TOTP(secret).now()}))["ok"]

    assert await console.call("lock", {"locked": True}) == {"ok": True, "locked": True}
    await sock.wait_for("room", lambda data: data == {"locked": True})
    await console.wait_for("room", lambda data: data == {"locked": True})

    assert error_code(await sock.call("knock")) == "room_locked"
    assert await state_of(gateway, late_id) is ParticipantState.KNOCKING
    assert (await sock.call("status"))["room_locked"] is True
    rows = {
        row["participant_id"]: row["state"] for row in (await console.call("queue"))["participants"]
    }
    assert rows == {seeded.client.id: "waiting", late_id: "knocking"}
    # Whoever was already in line stays there and may be admitted.
    await admitted(console, early, seeded.client.id)

    assert await console.call("lock", {"locked": False}) == {"ok": True, "locked": False}
    await sock.wait_for("room", lambda data: data == {"locked": False})
    assert await sock.call("knock") == {"ok": True, "state": "waiting"}


# --- the end ---------------------------------------------------------------------------------


async def test_ending_the_session_shuts_every_door(gateway: RunningGateway) -> None:
    seeded = await gateway.seed()
    host = await gateway.signed_in_host(seeded)
    console = await host.socket("/host")
    waiting, waiting_sock = await gateway.verified_client(seeded)
    invite = await gateway.invite_client(seeded, "Ada Admitted-Client")
    inside, inside_sock = await gateway.verified_client(seeded, invite)
    await admitted(console, inside_sock, invite.participant.id)
    unused = await gateway.invite_client(seeded, "Una Unused-Link")

    ended = await console.call("end")
    assert ended["ok"] is True
    assert isinstance(ended["ended_at"], float)
    for sock in (waiting_sock, inside_sock, console):
        await sock.wait_for("ended")

    # Every cookie and link of the appointment is dead.
    assert (await waiting.get("/join"))[0] == 401
    assert (await inside.get("/join"))[0] == 401
    assert (await host.get("/host"))[0] == 401
    for browser, namespace in ((waiting, "/client"), (inside, "/client"), (host, "/host")):
        with pytest.raises(Refused) as refused:
            await browser.socket(namespace)
        assert refused.value.code == "unauthenticated", namespace
    assert (await gateway.browser().get(unused.path))[0] == 410
    with pytest.raises(NotFound):
        await gateway.services.links.issue(
            LinkPurpose.CLIENT_JOIN, participant_id=seeded.client.id, actor="test"
        )

    # Sockets still open can do nothing: their next event closes them.
    people = (await gateway.snapshot(seeded.appointment.id))[0]
    del people["room"]  # the host's leaving marks the room "away"; that may change
    await console.sio.emit("admit", {"participant_id": seeded.client.id}, namespace="/host")
    await waiting_sock.sio.emit("knock", namespace="/client")
    for sock in (console, waiting_sock):

        async def closed(sock: SocketClient = sock) -> bool:
            return not sock.sio.connected

        await eventually(closed, what=f"{sock.namespace} socket closed after the end")
    after = (await gateway.snapshot(seeded.appointment.id))[0]
    del after["room"]
    assert after == people
    states = {p["id"]: p["state"] for p in people["participants"] if p["role"] == "client"}
    assert states == {
        seeded.client.id: "left",
        invite.participant.id: "left",
        unused.participant.id: "invited",
    }
