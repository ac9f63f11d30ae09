"""API keys at the door: every refusal first, each answered with one 401 or a 403."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from gateway.domain.apikeys import Scope
from tests.api.conftest import API, Tenant, a_tenant, call, services_of

UNAUTHENTICATED = {"error": {"code": "unauthenticated", "message": "API key refused"}}


async def refused(client: TestClient, headers: dict[str, str]) -> dict[str, object]:
    async with client.get(f"{API}/audit", headers=headers) as resp:
        assert resp.status == 401
        assert resp.content_type == "application/json"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert resp.headers["Cache-Control"] == "no-store"
        body: dict[str, object] = await resp.json()
        return body


async def test_no_key_is_refused(client: TestClient) -> None:
    body = await refused(client, {})
    assert body["error"] == {
        "code": "unauthenticated",
        "message": "send one Authorization: Bearer header",
    }


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("", id="empty"),
        pytest.param("Bearer", id="scheme-only"),
        pytest.param("Bearer ", id="scheme-and-space"),
        pytest.param("Basic dXNlcjpwYXNz", id="basic"),
        pytest.param("qrk_key_AAAAAAAAAAAAAAAAAAAAAA_" + "A" * 43, id="no-scheme"),
        pytest.param("Bearer " + "A" * 5000, id="huge"),
        pytest.param("Bearer not-a-key", id="garbage"),
        pytest.param("Bearer qrk_key_AAAAAAAAAAAAAAAAAAAAAA_" + "A" * 42, id="short-secret"),
        pytest.param("Bearer qrk_key_AAAAAAAAAAAAAAAAAAAAAA_" + "A" * 44, id="long-secret"),
        pytest.param("Bearer qrk_key_AAAAAAAAAAAAAAAAAAAAAA_" + "A" * 42 + "=", id="bad-char"),
        pytest.param("Bearer qrk_hst_AAAAAAAAAAAAAAAAAAAAAA_" + "A" * 43, id="not-a-key-id"),
        pytest.param("Bearer qrx_key_AAAAAAAAAAAAAAAAAAAAAA_" + "A" * 43, id="wrong-prefix"),
        pytest.param("Bearer qrk_key_AAAAAAAAAAAAAAAAAAAAAA_" + "é" * 43, id="non-ascii"),
    ],
)
async def test_malformed_keys_are_refused(client: TestClient, header: str) -> None:
    body = await refused(client, {"Authorization": header})
    assert body["error"]["code"] == "unauthenticated"  # type: ignore[index]


async def test_an_unknown_key_is_refused(client: TestClient) -> None:
    body = await refused(
        client, {"Authorization": "Bearer qrk_key_AAAAAAAAAAAAAAAAAAAAAA_" + "A" * 43}
    )
    assert body == UNAUTHENTICATED


async def test_a_wrong_secret_for_a_real_key_id_is_refused_and_audited(
    client: TestClient, tenant: Tenant
) -> None:
    last = tenant.key[-1]
    wrong = tenant.key[:-1] + ("B" if last != "B" else "C")
    body = await refused(client, {"Authorization": f"Bearer {wrong}"})
    assert body == UNAUTHENTICATED
    entries = await services_of(client).store.read_audit()
    refusals = [e for e in entries if e.action == "apikey.refused"]
    assert [(e.outcome, e.subjects["apikey"]) for e in refusals] == [
        ("wrong_secret", tenant.key_id)
    ]


async def test_a_revoked_key_is_refused(client: TestClient, tenant: Tenant) -> None:
    await call(client, "GET", "/audit", tenant, expect=200)
    await services_of(client).apikeys.revoke(tenant.key_id, actor="test")
    body = await refused(client, tenant.headers)
    assert body == UNAUTHENTICATED


async def test_two_authorization_headers_are_refused(client: TestClient, tenant: Tenant) -> None:
    async with client.get(
        f"{API}/audit",
        headers=[("Authorization", f"Bearer {tenant.key}"), ("Authorization", "Bearer x")],
    ) as resp:
        assert resp.status == 401


async def test_every_refusal_of_a_well_formed_key_looks_the_same(
    client: TestClient, tenant: Tenant
) -> None:
    unknown = "qrk_key_AAAAAAAAAAAAAAAAAAAAAA_" + "A" * 43
    wrong = tenant.key[:-2] + ("AA" if not tenant.key.endswith("AA") else "BB")
    bodies = [await refused(client, {"Authorization": f"Bearer {k}"}) for k in (unknown, wrong)]
    await services_of(client).apikeys.revoke(tenant.key_id, actor="test")
    bodies.append(await refused(client, tenant.headers))
    assert bodies == [UNAUTHENTICATED] * 3


async def test_the_scheme_is_case_insensitive(client: TestClient, tenant: Tenant) -> None:
    await call(
        client, "GET", "/audit", None, headers={"Authorization": f"bearer {tenant.key}"}, expect=200
    )


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("POST", "/hosts", Scope.HOSTS_WRITE),
        ("GET", "/hosts/hst_AAAAAAAAAAAAAAAAAAAAAA", Scope.HOSTS_READ),
        ("POST", "/rooms", Scope.ROOMS_WRITE),
        ("GET", "/rooms/rm_AAAAAAAAAAAAAAAAAAAAAA", Scope.ROOMS_READ),
        ("POST", "/appointments", Scope.APPOINTMENTS_WRITE),
        ("GET", "/appointments/apt_AAAAAAAAAAAAAAAAAAAAAA", Scope.APPOINTMENTS_READ),
        ("POST", "/appointments/apt_AAAAAAAAAAAAAAAAAAAAAA/clients", Scope.APPOINTMENTS_WRITE),
        ("POST", "/appointments/apt_AAAAAAAAAAAAAAAAAAAAAA/end", Scope.SESSIONS_WRITE),
        ("POST", "/participants/ptc_AAAAAAAAAAAAAAAAAAAAAA/links", Scope.LINKS_WRITE),
        ("POST", "/participants/ptc_AAAAAAAAAAAAAAAAAAAAAA/totp", Scope.TOTP_WRITE),
        ("GET", "/participants/ptc_AAAAAAAAAAAAAAAAAAAAAA/records", Scope.RECORDS_READ),
        ("DELETE", "/participants/ptc_AAAAAAAAAAAAAAAAAAAAAA", Scope.RECORDS_ERASE),
        ("GET", "/audit", Scope.AUDIT_READ),
        ("GET", "/audit/verify", Scope.AUDIT_READ),
    ],
)
async def test_a_key_without_the_scope_gets_403(
    client: TestClient, method: str, path: str, scope: Scope
) -> None:
    # Every scope but the one needed, and a body that would be refused if it were read:
    # the scope is checked first.
    others = await a_tenant(client, scopes=[s for s in Scope if s is not scope])
    body = await call(client, method, path, others, json={"bogus": 1}, expect=403)
    assert body == {
        "error": {"code": "scope_missing", "message": f"this API key lacks the {scope} scope"}
    }
    # ...and with it, the request gets past the door (to 400 or 404, never 401/403).
    only = await a_tenant(client, scopes=[scope])
    async with client.request(method, API + path, headers=only.headers, json={}) as resp:
        assert resp.status not in (401, 403)


async def test_unauthenticated_requests_learn_nothing_about_the_body(client: TestClient) -> None:
    async with client.post(f"{API}/hosts", data=b"{not json", headers={}) as resp:
        assert resp.status == 401
