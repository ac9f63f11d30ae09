"""From link to admission, as a browser does it: HTTP, then Socket.IO."""

from __future__ import annotations

import pyotp

from tests.factories import CLIENT_NAME
from tests.gateway_harness import RunningGateway


async def test_a_verified_client_is_admitted_by_the_host(gateway: RunningGateway) -> None:
    seeded = await gateway.seed()
    client = gateway.browser()
    assert await client.open_link(seeded.client_path) == 303
    sock = await client.socket("/client")
    status = await sock.call("status")
    assert status["ok"]
    assert status["state"] == "knocking"
    assert status["identity"] == {"required": True, "enrolled": False, "verified": False}
    assert status["host_present"] is False

    # Waiting is refused before identity is proven.
    refused = await sock.call("knock")
    assert refused["ok"] is False
    assert refused["error"]["code"] == "not_allowed"

    enrolment = await sock.call("identity.enrol")
    assert enrolment["otpauth_uri"].startswith("otpauth://totp/")
    assert enrolment["qr_svg"].startswith("<svg")
    again = await sock.call("identity.enrol")
    assert again["ok"] is False  # shown once
    secret = await gateway.services.store.get_totp_secret(seeded.client.id)
    assert secret is not None
    assert (await sock.call("identity.verify", {"code": pyotp.TOTP(secret).now()}))["ok"]
    assert await sock.call("knock") == {"ok": True, "state": "waiting"}

    host = await gateway.signed_in_host(seeded)
    console = await host.socket("/host")
    queue = await console.call("queue")
    [entry] = queue["participants"]
    assert entry["participant_id"] == seeded.client.id
    assert entry["display_name"] == CLIENT_NAME
    assert entry["state"] == "waiting"
    assert entry["verified"] is True

    await sock.wait_for("host", lambda data: data == {"present": True})
    admitted = await console.call("admit", {"participant_id": seeded.client.id})
    assert admitted == {"ok": True, "participant_id": seeded.client.id, "state": "admitted"}
    await sock.wait_for("admitted")
    await sock.wait_for("state", lambda data: data == {"state": "admitted"})
    await console.wait_for(
        "participant",
        lambda data: data["participant_id"] == seeded.client.id and data["state"] == "admitted",
    )


async def test_the_host_sees_a_knock_live(gateway: RunningGateway) -> None:
    seeded = await gateway.seed()
    host = await gateway.signed_in_host(seeded)
    console = await host.socket("/host")
    assert (await console.call("queue"))["participants"] == []
    await gateway.verified_client(seeded)
    row = await console.wait_for("participant", lambda data: data["state"] == "waiting")
    assert row["participant_id"] == seeded.client.id


async def test_a_new_link_on_another_device_ends_the_old_devices_session(
    gateway: RunningGateway,
) -> None:
    from gateway.domain.links import LinkPurpose

    seeded = await gateway.seed()
    old_phone, old_socket = await gateway.verified_client(seeded)
    link = await gateway.services.links.issue(
        LinkPurpose.CLIENT_JOIN, participant_id=seeded.client.id, actor="test"
    )
    new_laptop = gateway.browser()
    assert await new_laptop.open_link("/j/" + link.url.rsplit("/j/", 1)[1]) == 303
    # The old device is out: its page and its socket stop working.
    status, _ = await old_phone.get("/join")
    assert status == 401
    answer = await old_socket.call("status")
    assert answer["ok"] is False
    # The new device waits again, from the start.
    sock = await new_laptop.socket("/client")
    assert (await sock.call("status"))["state"] == "knocking"
