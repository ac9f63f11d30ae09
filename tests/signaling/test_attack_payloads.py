"""Breaking in through payloads: forged ids, names of other people, malformed and
oversized events, and floods."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pyotp
import pytest

from gateway.domain.waiting_room import ParticipantState
from signaling.base import BURST_PER_CONNECTION, RATE_PER_CONNECTION, RATE_PER_PARTICIPANT
from signaling.server import MAX_PACKET_BYTES
from tests.gateway_harness import RunningGateway, eventually
from tests.signaling.kit import INVALID_INPUT, Spread, error_code, fresh_rate_window


def outcome(ack: Any) -> str:
    return "ok" if ack.get("ok") is True else error_code(ack)


async def test_the_host_reaches_nobody_but_its_own_clients(gateway: RunningGateway) -> None:
    one = await gateway.seed()
    two = await gateway.seed()
    host = await gateway.signed_in_host(one)
    console = await host.socket("/host")
    _, mine = await gateway.verified_client(one)
    _, theirs = await gateway.verified_client(two)
    before = await gateway.snapshot(one.appointment.id, two.appointment.id)

    strangers = [
        two.client.id,  # a client of another appointment
        one.host.id,  # the host's own participant id
        two.host.id,  # another appointment's host
        "ptc_" + "A" * 22,  # well-formed, nobody
        one.client.id.upper(),  # near miss of a real id
        " " + one.client.id,
        "",
    ]
    spread = Spread(host, "/host", sockets=[console])
    refused = []
    for target in strangers:
        for event, data in (
            ("admit", {"participant_id": target}),
            ("deny", {"participant_id": target}),
            ("remove", {"participant_id": target}),
            ("message", {"participant_id": target, "text": "hello"}),
        ):
            refused.append((event, target, outcome(await spread.call(event, data))))
    assert {code for *_, code in refused} == {"not_found"}, refused

    not_ids: list[object] = [123, 1.5, None, True, ["x"], {"id": one.client.id}, "p" * 65]
    for value in not_ids:
        for event, data in (
            ("admit", {"participant_id": value}),
            ("deny", {"participant_id": value}),
            ("remove", {"participant_id": value}),
            ("message", {"participant_id": value, "text": "hello"}),
        ):
            assert await spread.call(event, data) == INVALID_INPUT, (event, value)

    assert await gateway.snapshot(one.appointment.id, two.appointment.id) == before
    for sock in (mine, theirs):
        assert {name for name, _ in sock.received} <= {"state", "host"}, sock.received


async def test_one_client_cannot_move_another(gateway: RunningGateway) -> None:
    seeded = await gateway.seed()
    console = await (await gateway.signed_in_host(seeded)).socket("/host")
    _, victim = await gateway.verified_client(seeded)
    victim_id = seeded.client.id
    invite = await gateway.invite_client(seeded, "Aurelia Knocking-Client")
    attacker = gateway.browser()
    assert await attacker.open_link(invite.path) == 303
    before = await gateway.snapshot(seeded.appointment.id)
    heard = len(victim.received)

    # Payloads that name someone are malformed, whoever they name.
    spread = Spread(attacker, "/client")
    for event, data in (
        ("knock", {"participant_id": victim_id}),
        ("leave", {"participant_id": victim_id}),
        ("status", {"participant_id": victim_id}),
        ("identity.enrol", {"participant_id": victim_id}),
        ("identity.verify", {"code": "123456", "participant_id": victim_id}),
        ("consent.telehealth", {"version": "1", "participant_id": victim_id}),
    ):
        assert await spread.call(event, data) == INVALID_INPUT, event
    assert await gateway.snapshot(seeded.appointment.id) == before

    # What the attacker can do, it does to itself.
    sock = await attacker.socket("/client")
    assert error_code(await sock.call("knock")) == "not_allowed"  # its own identity is unproven
    secret = await gateway.services.store.get_totp_secret(victim_id)
    assert secret is not None
    victims_code = {"code": pyotp.TOTP(secret).now()}
    assert error_code(await sock.call("identity.verify", victims_code)) == "totp_not_enrolled"
    assert await sock.call("leave") == {"ok": True, "state": "left"}
    status = await sock.call("status")
    assert status["state"] == "left"
    assert status["identity"]["verified"] is False

    victim_now = await gateway.services.store.get_participant(victim_id)
    assert victim_now is not None
    assert victim_now.state is ParticipantState.WAITING
    assert len(victim.received) == heard
    assert (await victim.call("status"))["state"] == "waiting"
    rows = {
        row["participant_id"]: row["state"] for row in (await console.call("queue"))["participants"]
    }
    assert rows == {victim_id: "waiting", invite.participant.id: "left"}


async def test_malformed_client_events_are_invalid_input(gateway: RunningGateway) -> None:
    seeded = await gateway.seed()
    client = gateway.browser()
    assert await client.open_link(seeded.client_path) == 303
    malformed: list[tuple[str, Any]] = [
        ("status", "status"),
        ("status", ["status"]),
        ("status", 0),
        ("status", False),
        ("status", {"all": True}),
        ("knock", "now"),
        ("knock", [{}]),
        ("identity.enrol", {"secret": "JBSWY3DPEHPK3PXP"}),
        ("identity.verify", "123456"),
        ("identity.verify", ["123456"]),
        ("identity.verify", 123456),
        ("identity.verify", {"code": 123456}),
        ("identity.verify", {"code": True}),
        ("identity.verify", {"code": None}),
        ("identity.verify", {"code": ["123456"]}),
        ("identity.verify", {"code": {"$gt": ""}}),
        ("identity.verify", {"code": "1" * 33}),
        ("identity.verify", {"Code": "123456"}),
        ("identity.verify", {}),
        ("consent.telehealth", {"version": True}),
        ("consent.telehealth", {"version": "v" * 65}),
        ("consent.telehealth", {}),
        # Unknown events, including the names of Python attributes.
        ("admit", {"participant_id": seeded.client.id}),
        ("Status", None),
        ("status ", None),
        ("", None),
        ("x" * 10_000, None),
        ("on_connect", None),
        ("trigger_event", None),
        ("__class__", None),
        # Several arguments.
        ("status", ({}, {})),
        ("knock", ({}, {})),
        ("identity.verify", ({"code": "123456"}, {"code": "123456"})),
    ]
    spread = Spread(client, "/client")
    answers = [(event, data, await spread.call(event, data)) for event, data in malformed]
    assert [(e, d, a) for e, d, a in answers if a != INVALID_INPUT] == []

    # Nothing was enrolled or counted: the client enrols and verifies at the first try.
    sock = await client.socket("/client")
    assert (await sock.call("identity.enrol"))["ok"]
    secret = await gateway.services.store.get_totp_secret(seeded.client.id)
    assert secret is not None
    assert await sock.call("identity.verify", {"code": pyotp.TOTP(secret).now()}) == {
        "ok": True,
        "verified": True,
    }


async def test_malformed_host_events_are_invalid_input(gateway: RunningGateway) -> None:
    seeded = await gateway.seed()
    host = await gateway.signed_in_host(seeded)
    _, sock = await gateway.verified_client(seeded)
    client_id = seeded.client.id
    before = await gateway.snapshot(seeded.appointment.id)
    malformed: list[tuple[str, Any]] = [
        ("lock", True),
        ("lock", {"locked": "true"}),
        ("lock", {"locked": 1}),
        ("lock", {"locked": None}),
        ("lock", {}),
        ("lock", {"locked": True, "room_id": seeded.room.id}),
        ("message", {"participant_id": client_id, "text": True}),
        ("message", {"participant_id": client_id, "text": 5}),
        ("message", {"participant_id": client_id, "text": ["hi"]}),
        ("message", {"participant_id": client_id, "text": "x" * 1001}),
        ("message", {"participant_id": client_id, "text": "x" * 281}),
        ("message", {"participant_id": client_id, "text": "   "}),
        ("message", {"participant_id": client_id, "text": "hi\x00there"}),
        ("message", {"participant_id": client_id}),
        ("message", {"participant_id": client_id, "text": "hi", "to": "everyone"}),
        ("admit", client_id),
        ("admit", [client_id]),
        ("admit", {"participant_id": client_id, "force": True}),
        ("admit", ({"participant_id": client_id}, {"participant_id": client_id})),
        ("admit_all", {"participant_ids": [client_id]}),
        ("end", {"appointment_id": seeded.appointment.id}),
        ("queue", "all"),
        ("knock", None),
        ("identity.verify", {"code": "123456"}),
        ("nonsense", {}),
    ]
    spread = Spread(host, "/host")
    answers = [(event, data, await spread.call(event, data)) for event, data in malformed]
    assert [(e, d, a) for e, d, a in answers if a != INVALID_INPUT] == []

    assert sock.events("message") == []
    after = await gateway.snapshot(seeded.appointment.id)
    for view in (before, after):  # the host arrived meanwhile; nothing else may differ
        view[0]["room"].pop("host_presence")
    assert after == before
    # A good message still gets through, as plain text.
    text = "<b>Running 5 minutes late</b>"
    assert await spread.call("message", {"participant_id": client_id, "text": text}) == {"ok": True}
    assert await sock.wait_for("message") == {"text": text}


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_an_oversized_event_drops_only_its_own_connection(
    gateway: RunningGateway, transport: str
) -> None:
    seeded = await gateway.seed()
    console = await (await gateway.signed_in_host(seeded)).socket("/host")
    _, bystander = await gateway.verified_client(seeded)
    invite = await gateway.invite_client(seeded, "Oscar Oversize-Client")
    attacker = gateway.browser()
    assert await attacker.open_link(invite.path) == 303
    sock = await attacker.socket("/client", transport=transport)

    # Just under the packet limit: the event is refused, the connection kept.
    near = {"code": "1" * (MAX_PACKET_BYTES - 1024)}
    assert await sock.call("identity.verify", near) == INVALID_INPUT
    assert sock.sio.connected

    huge = {"code": "1" * (MAX_PACKET_BYTES + 1)}
    await sock.sio.emit("identity.verify", huge, namespace="/client")

    async def dropped() -> bool:
        return not sock.sio.connected

    await eventually(dropped, timeout=5, what="the oversized sender's connection closed")
    # Everyone else carries on, and so does the gateway, for the sender too. (A websocket
    # here: python-engineio's polling client takes ~15 s to say goodbye.)
    assert (await bystander.call("status"))["state"] == "waiting"
    assert (await console.call("queue"))["ok"]
    again = await attacker.socket("/client")
    assert (await again.call("status"))["state"] == "knocking"


async def test_a_flood_from_one_connection_is_throttled_while_others_carry_on(
    gateway: RunningGateway,
) -> None:
    seeded = await gateway.seed()
    console = await (await gateway.signed_in_host(seeded)).socket("/host")
    _, bystander = await gateway.verified_client(seeded)
    invite = await gateway.invite_client(seeded, "Flora Flood-Client")
    attacker = gateway.browser()
    assert await attacker.open_link(invite.path) == 303
    flooder = await attacker.socket("/client")
    flood = 300

    started = time.monotonic()
    flooding = asyncio.gather(*(flooder.call("status", timeout=10) for _ in range(flood)))
    during = await bystander.call("status")
    acks = await flooding
    elapsed = time.monotonic() - started

    assert during["ok"] is True
    assert during["state"] == "waiting"
    outcomes = Counter(outcome(ack) for ack in acks)
    assert set(outcomes) == {"ok", "rate_limited"}, outcomes
    allowed = BURST_PER_CONNECTION + RATE_PER_CONNECTION * elapsed
    assert BURST_PER_CONNECTION <= outcomes["ok"] <= allowed + 1, (outcomes, elapsed)
    assert (await bystander.call("status"))["ok"] is True
    assert (await console.call("queue"))["ok"] is True


async def test_many_connections_do_not_multiply_a_participants_allowance(
    gateway: RunningGateway,
) -> None:
    seeded = await gateway.seed()
    client = gateway.browser()
    assert await client.open_link(seeded.client_path) == 303
    sockets = [await client.socket("/client") for _ in range(14)]
    per_socket = int(BURST_PER_CONNECTION)  # each socket stays inside its own burst
    await fresh_rate_window()

    acks = await asyncio.gather(
        *(sock.call("status", timeout=10) for sock in sockets for _ in range(per_socket))
    )

    total = len(sockets) * per_socket
    assert Counter(outcome(ack) for ack in acks) == {
        "ok": RATE_PER_PARTICIPANT,
        "rate_limited": total - RATE_PER_PARTICIPANT,
    }
