"""DELETE /api/v1/participants/{id}: a platform erases one participant's data."""

from __future__ import annotations

import re

from aiohttp.test_utils import TestClient

from gateway.domain.apikeys import Scope
from gateway.domain.retention import ERASED_ACTION
from tests.api.conftest import API, Tenant, a_tenant, call, provision, services_of

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def test_a_platform_erases_its_client(client: TestClient, tenant: Tenant) -> None:
    ids = await provision(client, tenant, client_name="Zelda Marker-Client")
    await call(client, "POST", f"/participants/{ids.client_id}/totp", tenant, expect=201)

    body = await call(client, "DELETE", f"/participants/{ids.client_id}", tenant, expect=200)

    assert body == {
        "id": ids.client_id,
        "appointment_id": ids.appointment_id,
        "erased_at": body["erased_at"],
        "reason": "erased",
    }
    assert TIME.match(body["erased_at"])
    # The participant answers 404 everywhere; the appointment no longer lists them.
    for method, path in (
        ("GET", f"/participants/{ids.client_id}/records"),
        ("POST", f"/participants/{ids.client_id}/links"),
        ("POST", f"/participants/{ids.client_id}/totp"),
    ):
        error = await call(client, method, path, tenant, expect=404)
        assert error["error"]["code"] == "not_found"
    appointment = await call(
        client, "GET", f"/appointments/{ids.appointment_id}", tenant, expect=200
    )
    assert [p["id"] for p in appointment["participants"]] == [ids.host_participant_id]
    assert "Zelda" not in str(appointment)
    # The audit log has the tombstone, the platform sees it, and the chain verifies.
    audit = await call(client, "GET", "/audit?limit=1000", tenant, expect=200)
    erased = [e for e in audit["entries"] if e["action"] == ERASED_ACTION]
    assert [(e["actor"], e["subjects"]) for e in erased] == [
        (tenant.key_id, {"appointment": ids.appointment_id, "participant": ids.client_id})
    ]
    assert any(e["action"] == "totp.enrolled" for e in audit["entries"])
    report = await call(client, "GET", "/audit/verify", tenant, expect=200)
    assert report["pruned_through_seq"] == 0
    head_seq, _ = await services_of(client).store.audit_head()
    assert report["head_seq"] == head_seq


async def test_erasing_again_answers_the_same(client: TestClient, tenant: Tenant) -> None:
    ids = await provision(client, tenant)
    first = await call(client, "DELETE", f"/participants/{ids.client_id}", tenant, expect=200)
    head = await services_of(client).store.audit_head()
    again = await call(client, "DELETE", f"/participants/{ids.client_id}", tenant, expect=200)
    assert again == first
    assert await services_of(client).store.audit_head() == head


async def test_another_platforms_participant_is_not_found(
    client: TestClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    ids = await provision(client, tenant)
    for path in (f"/participants/{ids.client_id}", "/participants/ptc_AAAAAAAAAAAAAAAAAAAAAA"):
        body = await call(client, "DELETE", path, other_tenant, expect=404)
        assert body == {"error": {"code": "not_found", "message": "participant not found"}}
    assert await services_of(client).store.get_participant(ids.client_id) is not None
    # Once erased, still nothing to learn for the other platform.
    await call(client, "DELETE", f"/participants/{ids.client_id}", tenant, expect=200)
    body = await call(client, "DELETE", f"/participants/{ids.client_id}", other_tenant, expect=404)
    assert body["error"]["code"] == "not_found"


async def test_the_host_is_refused_until_the_session_ends(
    client: TestClient, tenant: Tenant
) -> None:
    ids = await provision(client, tenant)
    body = await call(
        client, "DELETE", f"/participants/{ids.host_participant_id}", tenant, expect=409
    )
    assert body["error"]["code"] == "erasure_refused"
    assert "end the session first" in body["error"]["message"]
    await call(client, "POST", f"/appointments/{ids.appointment_id}/end", tenant, expect=200)
    await call(client, "DELETE", f"/participants/{ids.host_participant_id}", tenant, expect=200)


async def test_the_scope_is_its_own(client: TestClient, tenant: Tenant) -> None:
    ids = await provision(client, tenant)
    reader = await a_tenant(client, scopes=[s for s in Scope if s is not Scope.RECORDS_ERASE])
    # Another tenant's key gets 403 before ownership is looked at: nothing is learnt.
    body = await call(client, "DELETE", f"/participants/{ids.client_id}", reader, expect=403)
    assert body["error"]["code"] == "scope_missing"


async def test_a_body_with_fields_is_refused(client: TestClient, tenant: Tenant) -> None:
    ids = await provision(client, tenant)
    body = await call(
        client,
        "DELETE",
        f"/participants/{ids.client_id}",
        tenant,
        json={"reason": "asked"},
        expect=400,
    )
    assert body["error"]["code"] == "invalid_input"
    assert await services_of(client).store.get_participant(ids.client_id) is not None


async def test_no_key_no_erasure(client: TestClient, tenant: Tenant) -> None:
    ids = await provision(client, tenant)
    async with client.delete(f"{API}/participants/{ids.client_id}") as resp:
        assert resp.status == 401
    assert await services_of(client).store.get_participant(ids.client_id) is not None
