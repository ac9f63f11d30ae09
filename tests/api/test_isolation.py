"""One platform cannot see, use or even detect another platform's resources.

Another platform's host, room, appointment or participant gets exactly the answer an
absent one gets (status and body), whether it is named in the path or in the body.
"""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from gateway.domain.ids import new_id
from tests.api.conftest import Provisioned, Tenant, call, provision, services_of


@pytest.fixture
async def theirs(client: TestClient, other_tenant: Tenant) -> Provisioned:
    return await provision(client, other_tenant, client_name="Their Client")


def absent(kind: str) -> str:
    return new_id({"host": "hst", "room": "rm", "appointment": "apt", "participant": "ptc"}[kind])


def requests_for(ids: Provisioned) -> list[tuple[str, str, str, object]]:
    """(kind, method, path, body) of every request that names one resource."""
    return [
        ("host", "GET", f"/hosts/{ids.host_id}", None),
        ("host", "POST", "/rooms", {"host_id": ids.host_id}),
        ("room", "GET", f"/rooms/{ids.room_id}", None),
        ("room", "POST", "/appointments", {"room_id": ids.room_id}),
        ("appointment", "GET", f"/appointments/{ids.appointment_id}", None),
        (
            "appointment",
            "POST",
            f"/appointments/{ids.appointment_id}/clients",
            {"display_name": "Intruder"},
        ),
        ("appointment", "POST", f"/appointments/{ids.appointment_id}/end", None),
        ("participant", "POST", f"/participants/{ids.client_id}/links", None),
        ("participant", "POST", f"/participants/{ids.host_participant_id}/links", None),
        ("participant", "POST", f"/participants/{ids.client_id}/totp", None),
        ("participant", "GET", f"/participants/{ids.client_id}/records", None),
    ]


def with_absent_ids(ids: Provisioned) -> Provisioned:
    return Provisioned(
        host_id=absent("host"),
        room_id=absent("room"),
        appointment_id=absent("appointment"),
        host_participant_id=absent("participant"),
        client_id=absent("participant"),
    )


async def test_another_platforms_resources_answer_exactly_like_absent_ones(
    client: TestClient, tenant: Tenant, theirs: Provisioned
) -> None:
    for (kind, method, path, body), (_, a_method, a_path, a_body) in zip(
        requests_for(theirs), requests_for(with_absent_ids(theirs)), strict=True
    ):
        foreign = await call(client, method, path, tenant, json=body, expect=404)
        missing = await call(client, a_method, a_path, tenant, json=a_body, expect=404)
        assert (
            foreign == missing == {"error": {"code": "not_found", "message": f"{kind} not found"}}
        )


async def test_their_resources_are_untouched(
    client: TestClient, tenant: Tenant, other_tenant: Tenant, theirs: Provisioned
) -> None:
    for _, method, path, body in requests_for(theirs):
        await call(client, method, path, tenant, json=body, expect=404)
    store = services_of(client).store
    appointment = await store.get_appointment(theirs.appointment_id)
    assert appointment is not None
    assert appointment.ended_at is None
    participants = await store.list_participants(theirs.appointment_id)
    assert {p.id for p in participants} == {theirs.host_participant_id, theirs.client_id}
    assert await store.get_totp_secret(theirs.client_id) is None
    # The owner still sees everything.
    mine = await call(
        client, "GET", f"/appointments/{theirs.appointment_id}", other_tenant, expect=200
    )
    assert len(mine["participants"]) == 2


@pytest.mark.parametrize(
    "bad_id",
    [
        "x",
        "hst_short",
        "HST_AAAAAAAAAAAAAAAAAAAAAA",
        "hst_AAAAAAAAAAAAAAAAAAAAAA%00",
        "hst_" + "A" * 500,
        "hst_AAAAAAAAAAAAAAAAAAAAA!",
    ],
)
async def test_malformed_path_ids_answer_like_absent_ones(
    client: TestClient, tenant: Tenant, bad_id: str
) -> None:
    body = await call(client, "GET", f"/hosts/{bad_id}", tenant, expect=404)
    assert body == {"error": {"code": "not_found", "message": "host not found"}}


async def test_a_host_without_a_platform_belongs_to_nobody(
    client: TestClient, tenant: Tenant
) -> None:
    from gateway.domain.model import Host

    orphan = Host(id=new_id("hst"), display_name="Orphan", created_at=0.0, platform_id="")
    await services_of(client).store.put_host(orphan)
    await call(client, "GET", f"/hosts/{orphan.id}", tenant, expect=404)


async def test_the_audit_log_shows_a_platform_only_its_own_entries(
    client: TestClient, tenant: Tenant, other_tenant: Tenant, theirs: Provisioned
) -> None:
    mine = await provision(client, tenant)
    page = await call(client, "GET", "/audit?limit=1000", tenant, expect=200)
    named = {value for entry in page["entries"] for value in entry["subjects"].values()}
    assert mine.appointment_id in named
    assert tenant.platform_id in named
    for foreign in (
        other_tenant.platform_id,
        other_tenant.key_id,
        theirs.host_id,
        theirs.room_id,
        theirs.appointment_id,
        theirs.client_id,
    ):
        assert foreign not in named
        assert all(entry["actor"] != foreign for entry in page["entries"])
