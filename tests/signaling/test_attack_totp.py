"""Guessing a client's TOTP code from many sockets at once."""

from __future__ import annotations

import asyncio
from collections import Counter

import pyotp

from tests.gateway_harness import RunningGateway
from tests.signaling.kit import error_code, wrong_codes


async def test_guessing_over_many_sockets_gets_exactly_the_limit_then_nothing(
    gateway: RunningGateway,
) -> None:
    seeded = await gateway.seed()
    console = await (await gateway.signed_in_host(seeded)).socket("/host")
    client_id = seeded.client.id
    client = gateway.browser()
    assert await client.open_link(seeded.client_path) == 303
    sockets = [await client.socket("/client") for _ in range(8)]
    assert (await sockets[0].call("identity.enrol"))["ok"]
    secret = await gateway.services.store.get_totp_secret(client_id)
    assert secret is not None
    limit = gateway.settings.totp_max_failures
    guesses = wrong_codes(secret, 2 * len(sockets))

    # Round-robin over the sockets, all in flight at once.
    acks = await asyncio.gather(
        *(
            sockets[i % len(sockets)].call("identity.verify", {"code": code})
            for i, code in enumerate(guesses)
        )
    )

    codes = Counter(error_code(ack) for ack in acks)
    assert codes == {"totp_rejected": limit - 1, "totp_locked_out": len(guesses) - (limit - 1)}
    remaining = sorted(ack["error"]["remaining"] for ack in acks if "remaining" in ack["error"])
    assert remaining == list(range(1, limit))
    # Exactly `limit` codes were looked at; every later one was refused unseen.
    entries = await gateway.services.store.read_audit(limit=10_000)
    outcomes = Counter(
        entry.outcome
        for entry in entries
        if entry.action == "totp.verify" and entry.subjects.get("participant") == client_id
    )
    assert outcomes == {
        "rejected": limit - 1,
        "lockout_started": 1,
        "locked_out": len(guesses) - limit,
    }

    # Now even the right code is refused, on every socket.
    right = {"code": pyotp.TOTP(secret).now()}
    for sock in sockets:
        assert error_code(await sock.call("identity.verify", right)) == "totp_locked_out"

    # The host heard about it, once; clients never do.
    await console.wait_for("notice")
    assert (await console.call("queue"))["ok"]  # later emits to the console have arrived
    assert console.events("notice") == [{"kind": "locked_out", "participant_id": client_id}]
    for sock in sockets:
        assert sock.events("notice") == []

    status = await sockets[-1].call("status")
    assert status["identity"]["verified"] is False
    assert error_code(await sockets[-1].call("knock")) == "not_allowed"
    participant = await gateway.services.store.get_participant(client_id)
    assert participant is not None
    assert participant.verified_at is None
