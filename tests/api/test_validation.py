"""Strict input: JSON objects only, known fields, right types and lengths, JSON media type.

Every refusal is a JSON error body with a stable code; nothing is created on the way.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.domain.model import MAX_DISPLAY_NAME
from tests.api.conftest import API, Tenant, call, provision, services_of


async def post_raw(
    client: TestClient,
    path: str,
    tenant: Tenant,
    data: bytes,
    *,
    content_type: str | None = "application/json",
) -> tuple[int, dict[str, Any]]:
    headers = dict(tenant.headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    async with client.post(API + path, data=data, headers=headers) as resp:
        assert resp.content_type == "application/json"
        body: dict[str, Any] = await resp.json()
        return resp.status, body


async def no_hosts_created(client: TestClient) -> None:
    entries = await services_of(client).store.read_audit()
    assert "host.created" not in {e.action for e in entries}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b"{'display_name': 'x'}", id="single-quotes"),
        pytest.param(b'{"display_name": "x",}', id="trailing-comma"),
        pytest.param(b'{"display_name": NaN}', id="nan"),
        pytest.param(b'{"display_name": "a", "display_name": "b"}', id="duplicate-field"),
        pytest.param(b'{"display_name": "\xff"}', id="not-utf8"),
        pytest.param(b"[" * 20_000 + b"]" * 20_000, id="deep-nesting"),
        pytest.param(b'{"display_name": "x"} {}', id="two-documents"),
    ],
)
async def test_malformed_json_is_refused(client: TestClient, tenant: Tenant, data: bytes) -> None:
    status, body = await post_raw(client, "/hosts", tenant, data)
    assert (status, body["error"]["code"]) == (400, "invalid_input")
    await no_hosts_created(client)


@pytest.mark.parametrize(
    "document",
    [[], ["display_name"], "display_name", 42, None, True],
    ids=["array", "array-of-strings", "string", "number", "null", "true"],
)
async def test_non_object_json_is_refused(
    client: TestClient, tenant: Tenant, document: object
) -> None:
    status, body = await post_raw(client, "/hosts", tenant, json.dumps(document).encode())
    assert status == 400
    assert body["error"] == {
        "code": "invalid_input",
        "message": "the request body must be a JSON object",
    }


@pytest.mark.parametrize(
    ("path", "document"),
    [
        ("/hosts", {"display_name": "Dr A", "email": "a@example.org"}),
        ("/hosts", {"display_name": "Dr A", "platform_id": "plt_AAAAAAAAAAAAAAAAAAAAAA"}),
        ("/rooms", {"host_id": "hst_AAAAAAAAAAAAAAAAAAAAAA", "name": "x"}),
        ("/rooms", {"host_id": "hst_AAAAAAAAAAAAAAAAAAAAAA", "policy": {"record_everything": 1}}),
        ("/appointments", {"room_id": "rm_AAAAAAAAAAAAAAAAAAAAAA", "starts_at": "soon"}),
    ],
)
async def test_unknown_fields_are_refused(
    client: TestClient, tenant: Tenant, path: str, document: dict[str, Any]
) -> None:
    body = await call(client, "POST", path, tenant, json=document, expect=400)
    assert body["error"]["code"] == "invalid_input"
    assert body["error"]["message"].startswith("unknown field")


@pytest.mark.parametrize("action", ["links", "totp"])
async def test_actions_without_fields_refuse_any_field(
    client: TestClient, tenant: Tenant, action: str
) -> None:
    ids = await provision(client, tenant)
    path = f"/participants/{ids.client_id}/{action}"
    await call(client, "POST", path, tenant, json={"purpose": "host-sign-in"}, expect=400)
    await call(client, "POST", path, tenant, json={}, expect=201)
    await call(client, "POST", path, tenant, expect=201)


async def test_end_refuses_any_field(client: TestClient, tenant: Tenant) -> None:
    ids = await provision(client, tenant)
    path = f"/appointments/{ids.appointment_id}/end"
    await call(client, "POST", path, tenant, json={"reason": "x"}, expect=400)
    appointment = await services_of(client).store.get_appointment(ids.appointment_id)
    assert appointment is not None
    assert appointment.ended_at is None


async def test_missing_fields_are_refused(client: TestClient, tenant: Tenant) -> None:
    body = await call(client, "POST", "/hosts", tenant, json={}, expect=400)
    assert body["error"] == {"code": "invalid_input", "message": "display_name is required"}
    await call(client, "POST", "/hosts", tenant, expect=400)
    await call(client, "POST", "/rooms", tenant, json={"policy": {}}, expect=400)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("x" * (MAX_DISPLAY_NAME + 1), id="one-too-long"),
        pytest.param("x" * 60_000, id="huge"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("Jane\x00Doe", id="nul"),
        pytest.param("Jane\u202eeoD", id="bidi-override"),
        pytest.param("\x1b[31mJane", id="ansi"),
    ],
)
async def test_bad_display_names_are_refused(client: TestClient, tenant: Tenant, name: str) -> None:
    body = await call(client, "POST", "/hosts", tenant, json={"display_name": name}, expect=400)
    assert body["error"]["code"] == "invalid_input"
    await no_hosts_created(client)


async def test_markup_in_a_display_name_is_kept_as_text_and_sent_escaped(
    client: TestClient, tenant: Tenant
) -> None:
    name = "<script>alert('x')</script> & <b>Bo</b>"
    async with client.post(
        f"{API}/hosts", json={"display_name": name}, headers=tenant.headers
    ) as resp:
        assert resp.status == 201
        raw = await resp.text()
        created = json.loads(raw)
    assert created["display_name"] == name
    for character in "<>&":
        assert character not in raw
    assert "\\u003cscript\\u003e" in raw
    stored = await services_of(client).store.get_host(created["id"])
    assert stored is not None
    assert stored.display_name == name
    async with client.get(f"{API}/hosts/{created['id']}", headers=tenant.headers) as resp:
        raw = await resp.text()
    assert "<" not in raw
    assert json.loads(raw)["display_name"] == name


@pytest.mark.parametrize(
    ("path", "document"),
    [
        ("/hosts", {"display_name": 42}),
        ("/hosts", {"display_name": ["Dr A"]}),
        ("/hosts", {"display_name": None}),
        ("/hosts", {"display_name": {"first": "A"}}),
        ("/rooms", {"host_id": 1}),
        ("/rooms", {"host_id": "hst_bad"}),
        ("/rooms", {"host_id": "hst_AAAAAAAAAAAAAAAAAAAAAA", "policy": []}),
        ("/rooms", {"host_id": "hst_AAAAAAAAAAAAAAAAAAAAAA", "policy": "strict"}),
        ("/rooms", {"host_id": "hst_AAAAAAAAAAAAAAAAAAAAAA", "policy": {"relay_only": 1}}),
        ("/rooms", {"host_id": "hst_AAAAAAAAAAAAAAAAAAAAAA", "policy": {"relay_only": "true"}}),
        (
            "/rooms",
            {"host_id": "hst_AAAAAAAAAAAAAAAAAAAAAA", "policy": {"client_totp_required": None}},
        ),
        (
            "/rooms",
            {"host_id": "hst_AAAAAAAAAAAAAAAAAAAAAA", "policy": {"telehealth_consent_version": 3}},
        ),
        (
            "/rooms",
            {
                "host_id": "hst_AAAAAAAAAAAAAAAAAAAAAA",
                "policy": {"telehealth_consent_version": "v 1 <b>"},
            },
        ),
        (
            "/rooms",
            {
                "host_id": "hst_AAAAAAAAAAAAAAAAAAAAAA",
                "policy": {"telehealth_consent_version": "v" * 65},
            },
        ),
        ("/appointments", {"room_id": ["rm_AAAAAAAAAAAAAAAAAAAAAA"]}),
        ("/appointments", {"room_id": True}),
    ],
)
async def test_wrong_types_are_refused(
    client: TestClient, tenant: Tenant, path: str, document: dict[str, Any]
) -> None:
    body = await call(client, "POST", path, tenant, json=document, expect=400)
    assert body["error"]["code"] == "invalid_input"


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
        "application/jsonp",
    ],
)
async def test_a_body_of_another_media_type_gets_415(
    client: TestClient, tenant: Tenant, content_type: str | None
) -> None:
    status, body = await post_raw(
        client, "/hosts", tenant, b'{"display_name": "Dr A"}', content_type=content_type
    )
    assert status == 415
    assert body["error"]["code"] == "unsupported_media_type"
    await no_hosts_created(client)


async def test_json_with_a_utf8_charset_is_accepted(client: TestClient, tenant: Tenant) -> None:
    status, _ = await post_raw(
        client,
        "/hosts",
        tenant,
        b'{"display_name": "Dr A"}',
        content_type="application/json; charset=utf-8",
    )
    assert status == 201


async def test_an_oversized_body_gets_413(client: TestClient, tenant: Tenant) -> None:
    data = json.dumps({"display_name": "x" * (70 * 1024)}).encode()
    status, body = await post_raw(client, "/hosts", tenant, data)
    assert status == 413
    assert body["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=ten",
        "limit=1e3",
        "after_seq=-5",
        "after_seq=" + "9" * 40,
        "since=yesterday",
        "since=2027-01-15",
        "since=2027-01-15T08:00:00",
        "since=1700000000",
        "until=2027-01-15T08:00:00Z&since=2027-01-15T09:00:00Z",
        "limit=1&limit=2",
        "actor=key_AAAAAAAAAAAAAAAAAAAAAA",
    ],
)
async def test_bad_audit_queries_are_refused(
    client: TestClient, tenant: Tenant, query: str
) -> None:
    body = await call(client, "GET", f"/audit?{query}", tenant, expect=400)
    assert body["error"]["code"] == "invalid_input"


async def test_unknown_api_paths_and_methods_answer_json(
    client: TestClient, tenant: Tenant
) -> None:
    body = await call(client, "GET", "/nowhere", tenant, expect=404)
    assert body["error"]["code"] == "not_found"
    async with client.delete(f"{API}/hosts", headers=tenant.headers) as resp:
        assert resp.status == 405
        assert "POST" in resp.headers["Allow"]
        assert (await resp.json())["error"]["code"] == "method_not_allowed"


async def test_pages_keep_their_html_errors(client: TestClient) -> None:
    async with client.get("/j/not-a-token") as resp:
        assert resp.status == 410
        assert resp.content_type == "text/html"
