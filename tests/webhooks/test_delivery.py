"""Webhooks end to end: a real gateway app, its worker, and a real receiver on loopback.

Both stores (the outbox on a real Redis too). Time is a frozen clock and the retry
schedule is short, so retries happen when the test moves the clock, never by sleeping.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDictProxy

from gateway.clock import FrozenClock
from gateway.domain.audit import AuditEntry
from gateway.domain.ids import is_valid_id
from gateway.domain.model import Appointment, Participant, Platform, Room, RoomPolicy
from gateway.domain.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, RetrySchedule, verify
from gateway.errors import InvalidInput
from gateway.services import Event, EventKind, Services
from gateway.services.webhooks import WebhookConfig
from gateway.storage import Store
from gateway.web import SERVICES, create_app
from gateway.web.webhooks import WEBHOOKS
from tests.factories import CLIENT_NAME, HOST_NAME, make_settings

#: Three attempts: at once, after 10 s, after 30 s more; then give up.
FAST = WebhookConfig(
    schedule=RetrySchedule(delays=(10.0, 30.0), jitter=0.0), poll_interval=0.02, lease=60.0
)
#: How long a test waits for something the worker does at once (bounded, never reached).
PATIENCE = 5.0
#: A path segment that stands for a platform's own token in its URL: never logged.
URL_TOKEN = "tok-PathSecret-6d1f"
PLATFORM_NAME = "Marker Platform Org"

ServerFactory = Callable[..., Awaitable[TestServer]]
ClientFactory = Callable[[web.Application], Awaitable[TestClient]]


# --- the receiver ------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: CIMultiDictProxy[str]
    body: bytes


@dataclass
class Receiver:
    """Answers each POST with the next status in ``statuses`` (the last one repeats)."""

    statuses: Sequence[int] = (200,)
    received: list[Received] = field(default_factory=list)
    followed: list[Received] = field(default_factory=list)
    url: str = ""
    hang: asyncio.Event = field(default_factory=asyncio.Event)

    async def hook(self, request: web.Request) -> web.StreamResponse:
        self.received.append(Received(request.path, request.headers, await request.read()))
        status = self.statuses[min(len(self.received), len(self.statuses)) - 1]
        if status == 0:  # never answer (until the server stops)
            await self.hang.wait()
        if 300 <= status < 400:
            return web.Response(status=status, headers={"Location": "/followed"})
        return web.Response(status=status, text="x" * 100_000)

    async def follow(self, request: web.Request) -> web.StreamResponse:
        self.followed.append(Received(request.path, request.headers, await request.read()))
        return web.Response(status=200)


@pytest.fixture
def start_receiver(aiohttp_server: ServerFactory) -> Callable[..., Awaitable[Receiver]]:
    async def start(*statuses: int) -> Receiver:
        receiver = Receiver(statuses=statuses or (200,))
        app = web.Application()
        app.router.add_post("/hooks/{token}", receiver.hook)
        app.router.add_post("/followed", receiver.follow)
        server = await aiohttp_server(app, host="127.0.0.1")
        receiver.url = str(server.make_url(f"/hooks/{URL_TOKEN}"))
        return receiver

    return start


# --- the gateway -------------------------------------------------------------------------


@pytest.fixture
def start_gateway(
    aiohttp_client: ClientFactory, any_store: Store, clock: FrozenClock
) -> Callable[..., Awaitable[TestClient]]:
    async def start(config: WebhookConfig = FAST) -> TestClient:
        app = create_app(
            make_settings(), clock=clock, store_factory=lambda _: any_store, webhooks=config
        )
        return await aiohttp_client(app)

    return start


@dataclass(frozen=True)
class World:
    platform: Platform
    secret: str | None
    room: Room
    appointment: Appointment
    client: Participant


async def seed_world(services: Services, *, webhook_url: str | None) -> World:
    prov = services.provisioning
    platform, secret = await prov.create_platform(
        name=PLATFORM_NAME, webhook_url=webhook_url, actor="test"
    )
    host = await prov.create_host(display_name=HOST_NAME, platform_id=platform.id, actor="test")
    room = await prov.create_room(host_id=host.id, policy=RoomPolicy(), actor="test")
    appointment, _ = await prov.create_appointment(room_id=room.id, actor="test")
    client = await prov.add_client(
        appointment_id=appointment.id, display_name=CLIENT_NAME, actor="test"
    )
    return World(platform, secret, room, appointment, client)


def event(world: World, kind: EventKind, clock: FrozenClock, *, client: bool = True) -> Event:
    return Event(
        kind=kind,
        at=clock.now(),
        appointment_id=world.appointment.id,
        room_id=world.room.id,
        participant_id=world.client.id if client else None,
    )


async def eventually(check: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def settle(gateway: TestClient, receiver: Receiver, posts: int) -> None:
    """Wait for ``posts`` POSTs in all and for the worker to finish handling them."""
    worker = gateway.app[WEBHOOKS]
    await eventually(lambda: len(receiver.received) >= posts, f"{posts} POST(s)")
    await eventually(lambda: worker.in_flight == 0, "the worker to finish")
    assert len(receiver.received) == posts


async def audit_entries(services: Services, action: str) -> list[AuditEntry]:
    return [e for e in await services.store.read_audit(limit=10_000) if e.action == action]


async def outbox_is_empty(services: Services, clock: FrozenClock) -> bool:
    far = clock.now() + 10**9
    return await services.store.claim_webhooks(now=far, lease=1.0, limit=100) == []


# --- tests ---------------------------------------------------------------------------------


async def test_an_event_becomes_one_signed_post_of_ids_only(
    start_receiver: Callable[..., Awaitable[Receiver]],
    start_gateway: Callable[..., Awaitable[TestClient]],
    clock: FrozenClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver = await start_receiver(200)
    gateway = await start_gateway()
    services = gateway.app[SERVICES]
    world = await seed_world(services, webhook_url=receiver.url)
    assert world.secret is not None

    await services.events.publish(event(world, EventKind.PARTICIPANT_ADMITTED, clock))
    await settle(gateway, receiver, 1)
    await asyncio.sleep(0.1)  # several more polls: still one POST
    assert len(receiver.received) == 1

    [post] = receiver.received
    assert post.path == f"/hooks/{URL_TOKEN}"
    assert post.headers["Content-Type"] == "application/json"
    assert verify(world.secret, post.headers[SIGNATURE_HEADER], post.body, clock.now()) == int(
        clock.now()
    )
    body = json.loads(post.body)
    assert body == {
        "id": post.headers[DELIVERY_HEADER],
        "type": "participant.admitted",
        "created_at": clock.now(),
        "data": {
            "appointment_id": world.appointment.id,
            "room_id": world.room.id,
            "participant_id": world.client.id,
        },
    }
    assert is_valid_id(body["id"])
    everything_sent = post.body + repr(dict(post.headers)).encode()
    for marker in (CLIENT_NAME, HOST_NAME, PLATFORM_NAME):
        assert marker.encode() not in everything_sent
    assert "Cookie" not in post.headers
    assert "Authorization" not in post.headers

    assert await outbox_is_empty(services, clock)
    assert await audit_entries(services, "webhook.failed") == []
    # Nothing the gateway logged names the URL's token, the secret, or a person.
    gateway_logs = [r for r in caplog.records if r.name.startswith("gateway")]
    assert gateway_logs, "the gateway logged nothing at all"
    logged = "\n".join(f"{r.getMessage()} {r.__dict__!r}" for r in gateway_logs)
    for secret in (URL_TOKEN, world.secret, CLIENT_NAME, HOST_NAME):
        assert secret not in logged


async def test_two_failures_then_success_delivers_on_the_third_attempt(
    start_receiver: Callable[..., Awaitable[Receiver]],
    start_gateway: Callable[..., Awaitable[TestClient]],
    clock: FrozenClock,
) -> None:
    receiver = await start_receiver(500, 500, 200)
    gateway = await start_gateway()
    services = gateway.app[SERVICES]
    world = await seed_world(services, webhook_url=receiver.url)
    assert world.secret is not None

    await services.events.publish(event(world, EventKind.PARTICIPANT_WAITING, clock))
    await settle(gateway, receiver, 1)
    # Not due yet: polls before the backoff ends send nothing.
    clock.advance(9.9)
    await asyncio.sleep(0.1)
    assert len(receiver.received) == 1

    clock.advance(0.2)
    await settle(gateway, receiver, 2)
    clock.advance(30.0)
    await settle(gateway, receiver, 3)

    first, second, third = receiver.received
    assert first.body == second.body == third.body
    assert len({p.headers[DELIVERY_HEADER] for p in receiver.received}) == 1
    assert verify(world.secret, third.headers[SIGNATURE_HEADER], third.body, clock.now())
    assert await outbox_is_empty(services, clock)

    delivery_id = first.headers[DELIVERY_HEADER]
    failed = await audit_entries(services, "webhook.failed")
    assert [(e.outcome, dict(e.subjects)) for e in failed] == [
        ("500", {"delivery": delivery_id, "platform": world.platform.id, "attempt": "1"}),
        ("500", {"delivery": delivery_id, "platform": world.platform.id, "attempt": "2"}),
    ]
    assert await audit_entries(services, "webhook.abandoned") == []
    await services.audit.verify()


async def test_an_endpoint_that_never_says_2xx_is_abandoned_and_audited(
    start_receiver: Callable[..., Awaitable[Receiver]],
    start_gateway: Callable[..., Awaitable[TestClient]],
    clock: FrozenClock,
) -> None:
    # A redirect is a failure too, and is never followed.
    receiver = await start_receiver(302)
    gateway = await start_gateway()
    services = gateway.app[SERVICES]
    world = await seed_world(services, webhook_url=receiver.url)

    await services.events.publish(event(world, EventKind.SESSION_ENDED, clock, client=False))
    await settle(gateway, receiver, 1)
    clock.advance(10.0)
    await settle(gateway, receiver, 2)
    clock.advance(30.0)
    await settle(gateway, receiver, 3)
    clock.advance(3600.0)
    await asyncio.sleep(0.1)
    assert len(receiver.received) == 3
    assert receiver.followed == []
    assert "participant_id" not in json.loads(receiver.received[0].body)["data"]
    assert await outbox_is_empty(services, clock)

    delivery_id = receiver.received[0].headers[DELIVERY_HEADER]
    failed = await audit_entries(services, "webhook.failed")
    assert [e.outcome for e in failed] == ["302", "302", "302"]
    [abandoned] = await audit_entries(services, "webhook.abandoned")
    assert abandoned.outcome == "302"
    assert abandoned.subjects["delivery"] == delivery_id
    assert abandoned.subjects["platform"] == world.platform.id
    # The audit log names neither the URL nor anything from the body.
    for entry in [*failed, abandoned]:
        assert URL_TOKEN not in repr(entry.to_dict())
        assert "127.0.0.1" not in repr(entry.to_dict())


async def test_unreachable_and_hanging_endpoints_fail_with_the_error_class(
    start_receiver: Callable[..., Awaitable[Receiver]],
    start_gateway: Callable[..., Awaitable[TestClient]],
    clock: FrozenClock,
) -> None:
    receiver = await start_receiver(0)
    quick = WebhookConfig(
        schedule=RetrySchedule(delays=(), jitter=0.0), poll_interval=0.02, timeout=0.2, lease=1.0
    )
    gateway = await start_gateway(quick)
    services = gateway.app[SERVICES]
    hanging = await seed_world(services, webhook_url=receiver.url)
    refused = await seed_world(services, webhook_url="http://127.0.0.1:9/nobody-listens")

    await services.events.publish(event(hanging, EventKind.PARTICIPANT_DENIED, clock))
    await services.events.publish(event(refused, EventKind.PARTICIPANT_LEFT, clock))
    worker = gateway.app[WEBHOOKS]
    await eventually(lambda: len(receiver.received) == 1, "the hanging POST")

    async def abandoned() -> list[AuditEntry]:
        return await audit_entries(services, "webhook.abandoned")

    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE
    while len(await abandoned()) < 2 or worker.in_flight:
        assert loop.time() < deadline, "timed out waiting for both give-ups"
        await asyncio.sleep(0.01)
    outcomes = {e.subjects["platform"]: e.outcome for e in await abandoned()}
    assert set(outcomes) == {hanging.platform.id, refused.platform.id}
    for outcome in outcomes.values():
        assert outcome.endswith("Error"), outcome
    assert outcomes[refused.platform.id] == "ClientConnectorError"
    assert await outbox_is_empty(services, clock)


async def test_a_platform_without_a_webhook_url_gets_nothing(
    start_receiver: Callable[..., Awaitable[Receiver]],
    start_gateway: Callable[..., Awaitable[TestClient]],
    clock: FrozenClock,
) -> None:
    receiver = await start_receiver(200)
    gateway = await start_gateway()
    services = gateway.app[SERVICES]
    world = await seed_world(services, webhook_url=None)
    assert world.secret is None
    assert await services.store.get_webhook_secret(world.platform.id) is None

    for kind in EventKind:
        await services.events.publish(event(world, kind, clock))
    await asyncio.sleep(0.1)
    assert receiver.received == []
    assert await outbox_is_empty(services, clock)


async def test_only_the_documented_events_are_sent(
    start_receiver: Callable[..., Awaitable[Receiver]],
    start_gateway: Callable[..., Awaitable[TestClient]],
    clock: FrozenClock,
) -> None:
    receiver = await start_receiver(200)
    gateway = await start_gateway()
    services = gateway.app[SERVICES]
    world = await seed_world(services, webhook_url=receiver.url)

    for kind in EventKind:
        await services.events.publish(event(world, kind, clock))
    # A participant event that names nobody (the host's own) is not sent either.
    await services.events.publish(event(world, EventKind.PARTICIPANT_LEFT, clock, client=False))
    await settle(gateway, receiver, 9)
    await asyncio.sleep(0.1)
    types = sorted(json.loads(p.body)["type"] for p in receiver.received)
    assert types == sorted(
        [
            "participant.waiting",
            "participant.admitted",
            "participant.denied",
            "participant.left",
            "participant.removed",
            "session.ended",
            "recording.started",
            "recording.stopped",
            "recording.refused",
        ]
    )


async def test_two_gateways_on_one_store_send_each_delivery_once(
    start_receiver: Callable[..., Awaitable[Receiver]],
    start_gateway: Callable[..., Awaitable[TestClient]],
    clock: FrozenClock,
) -> None:
    receiver = await start_receiver(200)
    first = await start_gateway()
    second = await start_gateway()
    services = first.app[SERVICES]
    world = await seed_world(services, webhook_url=receiver.url)

    for _ in range(10):
        await services.events.publish(event(world, EventKind.PARTICIPANT_ADMITTED, clock))
    await eventually(lambda: len(receiver.received) >= 10, "10 POSTs")
    await eventually(
        lambda: first.app[WEBHOOKS].in_flight == 0 and second.app[WEBHOOKS].in_flight == 0,
        "both workers to finish",
    )
    await asyncio.sleep(0.1)
    ids = [p.headers[DELIVERY_HEADER] for p in receiver.received]
    assert len(ids) == 10
    assert len(set(ids)) == 10


async def test_webhook_urls_are_checked_when_a_platform_is_created(
    start_gateway: Callable[..., Awaitable[TestClient]],
) -> None:
    gateway = await start_gateway()
    services = gateway.app[SERVICES]
    for url in (
        "http://platform.example/hook",
        "https://user:pw@platform.example/hook",
        "https://platform.example/" + "a" * 3000,
    ):
        with pytest.raises(InvalidInput) as caught:
            await services.provisioning.create_platform(name="P", webhook_url=url, actor="test")
        assert caught.value.field == "webhook_url"
    platform, secret = await services.provisioning.create_platform(
        name="P", webhook_url="https://platform.example/hook", actor="test"
    )
    assert secret is not None
    assert await services.store.get_webhook_secret(platform.id) == secret
