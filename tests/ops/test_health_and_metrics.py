"""Liveness, readiness and Prometheus metrics: who may read them, what they count, and
that no id or name ever becomes a label."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pyotp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.domain.audit import AuditEntry
from gateway.domain.waiting_room import ParticipantState
from gateway.errors import StoreUnavailable
from gateway.metrics import AuthFailure, GatewayMetrics, MediaKind, RetentionKind
from gateway.services.events import Event, EventKind
from gateway.storage import MemoryStore, SecretBox
from gateway.web.keys import LIFECYCLE
from tests.factories import CLIENT_NAME, HOST_NAME
from tests.gateway_harness import RunningGateway, running_gateway
from tests.signaling.kit import wrong_codes

TOKEN = "m" * 40


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


async def fetch(
    gateway: RunningGateway, path: str, headers: dict[str, str] | None = None
) -> tuple[int, str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(gateway.url + path, headers=headers or {}) as resp,
    ):
        return resp.status, await resp.text(), resp.headers


# --- unit: the registry ------------------------------------------------------------------


def _event(kind: EventKind) -> Event:
    return Event(kind=kind, at=1.0, appointment_id="apt_x", room_id="rm_x", participant_id="p")


def _audit(action: str, outcome: str) -> AuditEntry:
    return AuditEntry(
        seq=1,
        at=1.0,
        actor="a",
        action=action,
        outcome=outcome,
        subjects={},
        prev_hash="0",
        hash="1",
    )


async def test_counters_follow_events_and_audit_entries() -> None:
    metrics = GatewayMetrics()
    for kind in (
        EventKind.PARTICIPANT_ADMITTED,
        EventKind.PARTICIPANT_ADMITTED,
        EventKind.PARTICIPANT_LOCKED_OUT,
        EventKind.SESSION_ENDED,
        EventKind.RECORDING_STARTED,
        EventKind.RECORDING_REFUSED,
        EventKind.PARTICIPANT_WAITING,
    ):
        await metrics.on_event(_event(kind))
    for action, outcome in (
        ("totp.verify", "rejected"),
        ("totp.verify", "lockout_started"),
        ("totp.verify", "replayed"),
        ("totp.verify", "locked_out"),
        ("totp.verify", "ok"),
        ("webhook.failed", "503"),
        ("webhook.abandoned", "503"),
        ("link.redeemed", "ok"),
    ):
        metrics.on_audit(_audit(action, outcome))
    packets, nbytes = metrics.forwarded(MediaKind.VIDEO)
    packets.inc(3)
    nbytes.inc(3000)
    text = (await metrics.exposition()).decode()
    assert value(text, "quietroom_admitted_total") == 2
    assert value(text, "quietroom_lockouts_total") == 1
    assert value(text, "quietroom_sessions_ended_total") == 1
    assert value(text, "quietroom_recordings_total", event="started") == 1
    assert value(text, "quietroom_recordings_total", event="refused") == 1
    assert value(text, "quietroom_auth_failures_total", kind="totp_rejected") == 2
    assert value(text, "quietroom_auth_failures_total", kind="totp_replayed") == 1
    assert value(text, "quietroom_auth_failures_total", kind="totp_locked_out") == 1
    assert value(text, "quietroom_auth_failures_total", kind="api_key_refused") == 0
    assert value(text, "quietroom_webhook_failures_total", outcome="failed") == 1
    assert value(text, "quietroom_webhook_failures_total", outcome="abandoned") == 1
    assert value(text, "quietroom_forwarded_packets_total", kind="video") == 3
    assert value(text, "quietroom_forwarded_bytes_total", kind="video") == 3000
    assert value(text, "quietroom_forwarded_packets_total", kind="audio") == 0


def test_labels_take_only_their_enum_values() -> None:
    metrics = GatewayMetrics()
    with pytest.raises(ValueError, match="ptc_"):
        metrics.forwarded("ptc_0123456789abcdefghijkl")
    with pytest.raises(ValueError, match="x"):
        metrics.auth_failed("x")  # type: ignore[arg-type]


async def test_a_failing_sampler_leaves_the_rest_of_the_metrics() -> None:
    metrics = GatewayMetrics()

    async def broken(_: GatewayMetrics) -> None:
        raise RuntimeError("boom")

    metrics.add_sampler(broken)
    assert b"quietroom_admitted_total" in await metrics.exposition()


# --- readiness -----------------------------------------------------------------------------


class FlakyStore(MemoryStore):
    """A MemoryStore whose ping fails while ``down``."""

    down = False

    async def ping(self) -> None:
        if self.down:
            raise StoreUnavailable("redis unavailable (ConnectionError)")


async def test_readiness_follows_the_store_and_the_drain(secret_box: SecretBox) -> None:
    store = FlakyStore(secret_box=secret_box)
    async with running_gateway(store) as gateway:
        assert (await fetch(gateway, "/healthz"))[0] == 200
        status, body, _ = await fetch(gateway, "/readyz")
        assert (status, body) == (200, '{"status": "ready"}')
        store.down = True
        status, body, headers = await fetch(gateway, "/readyz")
        assert status == 503
        assert "store_unavailable" in body
        assert headers["Cache-Control"] == "no-store"
        assert (await fetch(gateway, "/healthz"))[0] == 200  # alive, just not ready
        store.down = False
        assert (await fetch(gateway, "/readyz"))[0] == 200


async def test_a_draining_gateway_is_not_ready_and_refuses_links() -> None:
    async with running_gateway() as gateway:
        seeded = await gateway.seed()
        client = gateway.browser()
        _, first_socket = await gateway.verified_client(
            seeded, await gateway.invite_client(seeded, "Someone Else")
        )
        assert gateway.app is not None
        await gateway.app[LIFECYCLE].drain()
        status, body, _ = await fetch(gateway, "/readyz")
        assert status == 503
        assert "restarting" in body
        for status, page in (
            await client.get(seeded.client_path),
            await client.post_form(seeded.client_path, {"frame": ""}),
        ):
            assert status == 503
            assert "The service is restarting" in page
            assert "has not been used up" in page
        participant = await gateway.services.store.get_participant(seeded.client.id)
        assert participant is not None
        assert participant.state is ParticipantState.INVITED  # the link was not redeemed
        # Connected browsers heard it, with when to come back.
        restarting = await first_socket.wait_for("restarting")
        assert restarting == {"retry_after": gateway.settings.shutdown_drain + 2}


# --- /metrics: who may read it ------------------------------------------------------------


async def test_metrics_are_for_loopback_callers_that_came_through_no_proxy() -> None:
    async with running_gateway() as gateway:
        status, body, headers = await fetch(gateway, "/metrics")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=")
        assert "quietroom_waiting_clients" in body
        for header in ("X-Forwarded-For", "X-Real-IP", "Forwarded"):
            assert (await fetch(gateway, "/metrics", {header: "203.0.113.9"}))[0] == 403


async def test_a_metrics_token_opens_metrics_to_a_proxied_scraper() -> None:
    async with running_gateway(metrics_token=TOKEN) as gateway:
        proxied = {"X-Forwarded-For": "203.0.113.9"}
        status, _, headers = await fetch(gateway, "/metrics", proxied)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Bearer")
        wrong = {**proxied, "Authorization": "Bearer " + "n" * 40}
        assert (await fetch(gateway, "/metrics", wrong))[0] == 401
        right = {**proxied, "Authorization": f"Bearer {TOKEN}"}
        assert (await fetch(gateway, "/metrics", right))[0] == 200


# --- /metrics: what it counts, in a real flow ---------------------------------------------


async def test_a_real_flow_is_counted_without_ids_or_names_in_any_label() -> None:
    async with running_gateway(reconnect_grace=30, host_away_grace=0) as gateway:
        seeded = await gateway.seed()
        host = await gateway.signed_in_host(seeded)
        console = await host.socket("/host")
        other = await gateway.invite_client(seeded, "Another Client")
        client, sock = await gateway.verified_client(seeded)
        _, other_sock = await gateway.verified_client(seeded, other)
        text = (await fetch(gateway, "/metrics"))[1]
        assert value(text, "quietroom_waiting_clients") == 2
        assert value(text, "quietroom_sessions_in_progress") == 0

        admitted = await console.call("admit", {"participant_id": seeded.client.id})
        assert admitted["ok"], admitted
        # A wrong TOTP code and a refused API key.
        third = await gateway.invite_client(seeded, "Third Client")
        third_browser = gateway.browser()
        assert await third_browser.open_link(third.path) == 303
        third_sock = await third_browser.socket("/client")
        assert (await third_sock.call("identity.enrol"))["ok"]
        secret = await gateway.services.store.get_totp_secret(third.participant.id)
        assert secret is not None
        refused = await third_sock.call("identity.verify", {"code": wrong_codes(secret, 1)[0]})
        assert refused["error"]["code"] == "totp_rejected"
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                gateway.url + "/api/v1/audit", headers={"Authorization": "Bearer qrk_nope"}
            ) as resp,
        ):
            assert resp.status == 401

        text = (await fetch(gateway, "/metrics"))[1]
        assert value(text, "quietroom_admitted_total") == 1
        assert value(text, "quietroom_waiting_clients") == 1
        assert value(text, "quietroom_sessions_in_progress") == 1
        assert value(text, "quietroom_auth_failures_total", kind="totp_rejected") == 1
        assert value(text, "quietroom_auth_failures_total", kind="api_key_refused") == 1
        assert value(text, "quietroom_store_up") == 1
        assert value(text, "quietroom_draining") == 0
        assert pyotp.TOTP(secret).now() not in text.split()

        ids = [
            seeded.client.id,
            seeded.host.id,
            seeded.appointment.id,
            seeded.room.id,
            other.participant.id,
            third.participant.id,
        ]
        for needle in (*ids, CLIENT_NAME, HOST_NAME, "Another Client"):
            assert needle not in text
        label_values = {label_value for _, labels in samples(text) for _, label_value in labels}
        allowed = {*(kind.value for kind in AuthFailure), *(kind.value for kind in MediaKind)}
        allowed |= {"failed", "abandoned", "started", "stopped", "refused"}
        allowed |= {kind.value for kind in RetentionKind}
        assert label_values <= allowed
        assert not re.search(r"\b[a-z]{2,4}_[A-Za-z0-9_-]{22}\b", text)
        for open_socket in (sock, other_sock, third_sock, console):
            await open_socket.close()
        del client
