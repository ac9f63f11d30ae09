"""No API key, TOTP secret or link token reaches a log line, at any level."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient

from gateway.domain.apikeys import parse_presented
from gateway.web import SETTINGS
from tests.api.conftest import API, Tenant, call, provision, services_of


async def test_keys_secrets_and_tokens_stay_out_of_the_logs(
    client: TestClient, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ids = await provision(client, tenant)
    link = await call(client, "POST", f"/participants/{ids.client_id}/links", tenant, expect=201)
    enrolment = await call(
        client, "POST", f"/participants/{ids.host_participant_id}/totp", tenant, expect=201
    )
    token = link["url"].rsplit("/j/", 1)[1]
    origin = {"Origin": client.app[SETTINGS].public_origin}
    await client.get(f"/j/{token}", allow_redirects=False)  # the page
    for _ in range(2):  # redeemed, then refused
        await client.post(f"/j/{token}", headers=origin, allow_redirects=False)
    await client.get(f"/j/{token}", allow_redirects=False)  # refused
    # Refusals log too: a wrong secret for the real key id, a revoked key, a bad body.
    _, secret = parse_presented(tenant.key)
    wrong = tenant.key[: -len(secret)] + secret[::-1]
    async with client.get(f"{API}/audit", headers={"Authorization": f"Bearer {wrong}"}) as resp:
        assert resp.status == 401
    await call(client, "POST", "/hosts", tenant, json={"display_name": "\x00"}, expect=400)
    await call(client, "GET", "/audit/verify", tenant, expect=200)
    await services_of(client).apikeys.revoke(tenant.key_id, actor="test")
    async with client.get(f"{API}/audit", headers=tenant.headers) as resp:
        assert resp.status == 401

    totp_secret = parse_qs(urlsplit(enrolment["otpauth_uri"]).query)["secret"][0]
    logged = "\n".join(
        [record.getMessage() for record in caplog.records]
        + [repr(record.__dict__) for record in caplog.records]
    )
    assert "api key refused" in logged  # the test did see the logs it meant to
    assert "GET /j/… 200" in logged
    assert "POST /j/… 303" in logged
    assert "GET /j/… 410" in logged
    for secret_text in (tenant.key, secret, wrong, token, totp_secret, enrolment["otpauth_uri"]):
        assert secret_text not in logged
