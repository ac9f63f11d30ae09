"""The happy path, end to end over HTTP: a platform sets up a session and a client joins.

Also: what each answer holds, that every write is audited with the key id as actor,
TOTP enrolment, ending a session, audit paging and verification, and the records export.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime

import pyotp
from aiohttp.test_utils import TestClient

from gateway.clock import FrozenClock
from gateway.domain.consent import ConsentKind, give
from gateway.storage import MemoryStore, RedisStore
from tests.api.conftest import API, Tenant, call, provision, services_of

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
#: A link's page posts its form from the gateway's own origin (make_settings' public URL).
OURS = {"Origin": "http://127.0.0.1:8080"}


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


async def test_platform_sets_up_a_session_and_the_client_link_works_once(
    client: TestClient, tenant: Tenant
) -> None:
    host = await call(
        client, "POST", "/hosts", tenant, json={"display_name": "Dr Ada Example"}, expect=201
    )
    assert host["display_name"] == "Dr Ada Example"
    assert TIME.match(host["created_at"])
    assert await call(client, "GET", f"/hosts/{host['id']}", tenant, expect=200) == host

    room = await call(
        client,
        "POST",
        "/rooms",
        tenant,
        json={
            "host_id": host["id"],
            "policy": {
                "client_totp_required": False,
                "relay_only": True,
                "recording_allowed": True,
                "telehealth_consent_version": "tele-2027.01",
            },
        },
        expect=201,
    )
    assert room["host_id"] == host["id"]
    assert room["policy"] == {
        "client_totp_required": False,
        "relay_only": True,
        "recording_allowed": True,
        "telehealth_consent_version": "tele-2027.01",
    }
    assert room["locked"] is False
    assert await call(client, "GET", f"/rooms/{room['id']}", tenant, expect=200) == room

    appointment = await call(
        client, "POST", "/appointments", tenant, json={"room_id": room["id"]}, expect=201
    )
    assert appointment["room_id"] == room["id"]
    assert appointment["ended_at"] is None
    host_participant_id = appointment["host_participant_id"]
    assert [(p["id"], p["role"], p["state"]) for p in appointment["participants"]] == [
        (host_participant_id, "host", "invited")
    ]

    participant = await call(
        client,
        "POST",
        f"/appointments/{appointment['id']}/clients",
        tenant,
        json={"display_name": "  Zed   Client "},
        expect=201,
    )
    assert (participant["role"], participant["state"]) == ("client", "invited")
    assert participant["display_name"] == "Zed Client"
    assert participant["appointment_id"] == appointment["id"]

    link = await call(
        client, "POST", f"/participants/{participant['id']}/links", tenant, expect=201
    )
    assert TIME.match(link["expires_at"])
    assert "/j/" in link["url"]

    # Opening it uses nothing up; its page's post redeems it, once.
    opened = await client.get(path_of(link["url"]), allow_redirects=False)
    assert opened.status == 200
    first = await client.post(path_of(link["url"]), headers=OURS, allow_redirects=False)
    assert first.status == 303
    second = await client.post(path_of(link["url"]), headers=OURS, allow_redirects=False)
    assert second.status == 410

    seen = await call(client, "GET", f"/appointments/{appointment['id']}", tenant, expect=200)
    states = {p["id"]: (p["role"], p["state"], p["display_name"]) for p in seen["participants"]}
    assert states == {
        host_participant_id: ("host", "invited", "Dr Ada Example"),
        participant["id"]: ("client", "knocking", "Zed Client"),
    }


async def test_a_host_participant_gets_a_sign_in_link(client: TestClient, tenant: Tenant) -> None:
    ids = await provision(client, tenant)
    link = await call(
        client, "POST", f"/participants/{ids.host_participant_id}/links", tenant, expect=201
    )
    assert "/h/" in link["url"]
    assert (await client.get(path_of(link["url"]), allow_redirects=False)).status == 200
    resp = await client.post(path_of(link["url"]), headers=OURS, allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/host")


async def test_every_write_is_audited_with_the_key_as_actor(
    client: TestClient, tenant: Tenant
) -> None:
    ids = await provision(client, tenant)
    await call(client, "POST", f"/participants/{ids.client_id}/links", tenant, expect=201)
    await call(client, "POST", f"/participants/{ids.host_participant_id}/totp", tenant, expect=201)
    await call(client, "POST", f"/appointments/{ids.appointment_id}/end", tenant, expect=200)
    entries = await services_of(client).store.read_audit()
    by_key = [e.action for e in entries if e.actor == tenant.key_id]
    assert by_key == [
        "host.created",
        "room.created",
        "appointment.created",
        "participant.created",
        "link.issued",
        "totp.enrolled",
        "session.ended",
    ]


async def test_platform_driven_totp_enrolment_works_for_verification(
    client: TestClient, tenant: Tenant, clock: FrozenClock
) -> None:
    ids = await provision(client, tenant)
    enrolment = await call(
        client, "POST", f"/participants/{ids.host_participant_id}/totp", tenant, expect=201
    )
    assert enrolment["otpauth_uri"].startswith("otpauth://totp/")
    assert enrolment["qr_svg"].startswith("<svg")
    secret = pyotp.parse_uri(enrolment["otpauth_uri"]).secret
    services = services_of(client)
    verified = await services.identity.verify(
        ids.host_participant_id, pyotp.TOTP(secret).at(clock.now())
    )
    assert verified.participant_id == ids.host_participant_id


async def test_ending_a_session_kills_its_links(client: TestClient, tenant: Tenant) -> None:
    ids = await provision(client, tenant)
    link = await call(client, "POST", f"/participants/{ids.client_id}/links", tenant, expect=201)
    ended = await call(
        client, "POST", f"/appointments/{ids.appointment_id}/end", tenant, expect=200
    )
    assert TIME.match(ended["ended_at"])
    resp = await client.get(path_of(link["url"]), allow_redirects=False)
    assert resp.status == 410
    # No new links, no new clients, and ending again keeps the first time.
    await call(client, "POST", f"/participants/{ids.client_id}/links", tenant, expect=404)
    body = await call(
        client,
        "POST",
        f"/appointments/{ids.appointment_id}/clients",
        tenant,
        json={"display_name": "Late"},
        expect=409,
    )
    assert body["error"]["code"] == "appointment_ended"
    again = await call(
        client, "POST", f"/appointments/{ids.appointment_id}/end", tenant, expect=200
    )
    assert again["ended_at"] == ended["ended_at"]


async def test_audit_pages_by_sequence_and_time(
    client: TestClient, tenant: Tenant, clock: FrozenClock
) -> None:
    before = await provision(client, tenant)
    clock.advance(3600)
    after = await provision(client, tenant)
    everything = await call(client, "GET", "/audit", tenant, expect=200)
    assert everything["next_after_seq"] is None
    entries = everything["entries"]
    assert {"seq", "at", "actor", "action", "outcome", "subjects"} == set(entries[0])
    assert [e["seq"] for e in entries] == sorted(e["seq"] for e in entries)

    pages: list[dict[str, object]] = []
    after_seq = 0
    while True:
        page = await call(
            client, "GET", f"/audit?limit=2&after_seq={after_seq}", tenant, expect=200
        )
        pages.extend(page["entries"])
        if page["next_after_seq"] is None:
            break
        assert len(page["entries"]) == 2
        after_seq = page["next_after_seq"]
    assert pages == entries

    # Half an hour before the second set-up, as "Z" and as an explicit offset.
    half_hour_ago = datetime.fromtimestamp(clock.now() - 1800, UTC)
    late = await call(
        client,
        "GET",
        f"/audit?since={half_hour_ago.isoformat().replace('+00:00', 'Z')}",
        tenant,
        expect=200,
    )
    named = {v for e in late["entries"] for v in e["subjects"].values()}
    assert after.appointment_id in named
    assert before.appointment_id not in named
    early = await call(
        client, "GET", "/audit", tenant, params={"until": half_hour_ago.isoformat()}, expect=200
    )
    named = {v for e in early["entries"] for v in e["subjects"].values()}
    assert before.appointment_id in named
    assert after.appointment_id not in named


async def test_audit_verify_reports_the_chain(client: TestClient, tenant: Tenant) -> None:
    await provision(client, tenant)
    report = await call(client, "GET", "/audit/verify", tenant, expect=200)
    head_seq, head_hash = await services_of(client).store.audit_head()
    assert report == {
        "entries": head_seq,
        "head_seq": head_seq,
        "head_hash": head_hash,
        "pruned_through_seq": 0,
    }


async def test_a_participants_records_hold_their_consents_and_audit(
    client: TestClient, tenant: Tenant, clock: FrozenClock
) -> None:
    ids = await provision(client, tenant)
    other = await call(
        client,
        "POST",
        f"/appointments/{ids.appointment_id}/clients",
        tenant,
        json={"display_name": "Other Client"},
        expect=201,
    )
    store = services_of(client).store
    for participant_id in (ids.client_id, other["id"]):
        await store.give_consent(
            give(
                participant_id=participant_id,
                session_id=ids.appointment_id,
                kind=ConsentKind.RECORDING,
                text_version="rec-v2",
                at=clock.now(),
            )
        )
    await call(client, "POST", f"/participants/{ids.client_id}/links", tenant, expect=201)
    records = await call(
        client, "GET", f"/participants/{ids.client_id}/records", tenant, expect=200
    )
    assert records["participant"]["id"] == ids.client_id
    assert records["participant"]["display_name"] == "Zed"
    assert records["appointment"]["id"] == ids.appointment_id
    assert [(c["kind"], c["text_version"], c["withdrawn_at"]) for c in records["consents"]] == [
        ("recording", "rec-v2", None)
    ]
    actions = [e["action"] for e in records["audit"]]
    assert actions == ["participant.created", "link.issued"]
    for entry in records["audit"]:
        assert ids.client_id in (entry["actor"], entry["subjects"].get("participant"))
    entries = await store.read_audit()
    exported = [e for e in entries if e.action == "records.exported"]
    assert [(e.actor, e.subjects["participant"]) for e in exported] == [
        (tenant.key_id, ids.client_id)
    ]


async def test_the_description_is_served_without_a_key(client: TestClient) -> None:
    async with client.get(f"{API}/openapi.yaml") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/yaml"
        assert (await resp.text()).startswith("openapi: 3.1")


async def test_a_broken_audit_chain_answers_409(client: TestClient, tenant: Tenant) -> None:
    await provision(client, tenant)
    store = services_of(client).store
    first = (await store.read_audit(limit=1))[0]
    altered = dataclasses.replace(first, action="something.else")
    if isinstance(store, RedisStore):
        await store.client.lset(f"{store.prefix}audit:log", 0, json.dumps(altered.to_dict()))
    else:
        assert isinstance(store, MemoryStore)
        store._audit[0] = altered
    body = await call(client, "GET", "/audit/verify", tenant, expect=409)
    assert body["error"]["code"] == "audit_chain_broken"
