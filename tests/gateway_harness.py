"""A real gateway on a loopback port, with helpers to sign people in over HTTP and
connect real Socket.IO clients, as browsers would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import aiohttp
import pyotp
import socketio
from aiohttp import web

from gateway.clock import Clock, SystemClock
from gateway.domain.links import LinkPurpose
from gateway.domain.model import Participant, RoomPolicy
from gateway.services import Services, hash_session_token
from gateway.settings import Settings
from gateway.storage import Store
from gateway.web import SERVICES, create_app
from gateway.web.access_log import RedactingAccessLogger
from gateway.web.csrf import csrf_token
from tests.factories import Seeded, make_settings, seed
from tests.fixtures.servers import free_port

__all__ = [
    "Browser",
    "Invite",
    "Refused",
    "RunningGateway",
    "SocketClient",
    "eventually",
    "link_form",
    "running_gateway",
]


async def eventually(
    probe: Callable[[], Awaitable[bool]], *, timeout: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``probe`` until it is true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.02)


class Refused(socketio.exceptions.ConnectionError):  # type: ignore[misc]
    """The gateway refused a connection; ``data`` is what the namespace refused with
    (None when the refusal came before the namespace, e.g. at the Engine.IO handshake)."""

    def __init__(self, data: Any) -> None:
        super().__init__(f"connection refused: {data!r}")
        self.data = data

    @property
    def code(self) -> str | None:
        """The gateway's refusal code (``err.data.code`` in a browser), if it sent one."""
        detail = self.data.get("data") if isinstance(self.data, dict) else None
        return detail.get("code") if isinstance(detail, dict) else None


class _LinkForm(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form" and values.get("method") == "post":
            self.action = values.get("action") or ""
        if tag == "input" and values.get("type") == "hidden" and values.get("name"):
            self.fields[str(values["name"])] = values.get("value") or ""


def link_form(page: str) -> tuple[str, dict[str, str]]:
    """The action and hidden fields of a link page's form (what a browser posts)."""
    parsed = _LinkForm()
    parsed.feed(page)
    assert parsed.action, "the link page has a form that posts"
    return parsed.action, parsed.fields


@dataclass(frozen=True)
class Invite:
    """A client of a seeded appointment and the path of its (unredeemed) link."""

    participant: Participant
    path: str


@dataclass
class SocketClient:
    """A Socket.IO client that records every event it receives."""

    sio: socketio.AsyncClient
    namespace: str
    received: list[tuple[str, Any]] = field(default_factory=list)

    async def call(self, event: str, data: Any = None, *, timeout: float = 5.0) -> Any:
        if data is None:
            return await self.sio.call(event, namespace=self.namespace, timeout=timeout)
        return await self.sio.call(event, data, namespace=self.namespace, timeout=timeout)

    def events(self, name: str) -> list[Any]:
        return [data for event, data in self.received if event == name]

    async def wait_for(
        self, name: str, predicate: Callable[[Any], bool] = lambda _: True, timeout: float = 5.0
    ) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event, data in self.received:
                if event == name and predicate(data):
                    return data
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {name!r} event within {timeout} s; got {self.received!r}")

    async def close(self) -> None:
        await self.sio.disconnect()


@dataclass
class Browser:
    """One browser: a cookie jar bound to the gateway."""

    gateway: RunningGateway
    cookie: str | None = None

    @property
    def session_hash(self) -> str:
        assert self.cookie is not None
        return hash_session_token(self.cookie)

    async def open_link(self, path: str) -> int:
        """Open a link as a browser does: GET its page (which uses nothing up and sets no
        cookie), then post the page's form from the page's origin. The post's status:
        303 once redeemed, with the session cookie kept."""
        async with aiohttp.ClientSession() as http:
            async with http.get(self.gateway.url + path, allow_redirects=False) as page:
                body = await page.text()
                assert page.status == 200, (page.status, body)
                assert "Set-Cookie" not in page.headers
            action, fields = link_form(body)
            async with http.post(
                self.gateway.url + action,
                data=fields,
                headers={"Origin": self.gateway.url},
                allow_redirects=False,
            ) as resp:
                await resp.read()
                morsel = resp.cookies.get(self.gateway.cookie_name)
                if morsel is not None:
                    self.cookie = morsel.value
                return resp.status

    async def post_form(
        self,
        path: str,
        form: dict[str, str],
        *,
        origin: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        """POST a form; ``origin=""`` sends no Origin header."""
        headers = {"Origin": origin or self.gateway.url, **(headers or {})}
        if origin == "":
            del headers["Origin"]
        cookies = {self.gateway.cookie_name: self.cookie} if self.cookie else {}
        async with (
            aiohttp.ClientSession(cookies=cookies) as http,
            http.post(
                self.gateway.url + path, data=form, headers=headers, allow_redirects=False
            ) as resp,
        ):
            return resp.status, await resp.text()

    async def get(self, path: str) -> tuple[int, str]:
        cookies = {self.gateway.cookie_name: self.cookie} if self.cookie else {}
        async with (
            aiohttp.ClientSession(cookies=cookies) as http,
            http.get(self.gateway.url + path, allow_redirects=False) as resp,
        ):
            return resp.status, await resp.text()

    def csrf(self) -> str:
        return csrf_token(self.gateway.settings, self.session_hash)

    async def socket(
        self,
        namespace: str,
        *,
        origin: str | None = None,
        cookie: str | None = None,
        transport: str = "websocket",
    ) -> SocketClient:
        """Connect like a browser page would; raises :class:`Refused` (a
        socketio.exceptions.ConnectionError) when the gateway refuses. ``origin=""``
        sends no Origin header; ``transport`` is "websocket" or "polling"."""
        sio = socketio.AsyncClient(reconnection=False)
        client = SocketClient(sio=sio, namespace=namespace)
        refusals: list[Any] = []

        async def record(event: str, *args: Any) -> None:
            client.received.append((event, args[0] if args else None))

        async def refused(*args: Any) -> None:
            refusals.append(args[0] if args else None)

        sio.on("*", record, namespace=namespace)
        sio.on("connect_error", refused, namespace=namespace)
        headers = {"Origin": origin if origin is not None else self.gateway.url}
        if origin == "":
            del headers["Origin"]
        value = cookie if cookie is not None else self.cookie
        if value:
            headers["Cookie"] = f"{self.gateway.cookie_name}={value}"
        try:
            await sio.connect(
                self.gateway.url,
                headers=headers,
                namespaces=[namespace],
                transports=[transport],
                wait_timeout=5,
            )
        except socketio.exceptions.ConnectionError as exc:
            await sio.disconnect()
            raise Refused(refusals[0] if refusals else None) from exc
        except BaseException:
            await sio.disconnect()
            raise
        self.gateway.sockets.append(client)
        return client


@dataclass
class RunningGateway:
    url: str
    settings: Settings
    services: Services
    sockets: list[SocketClient] = field(default_factory=list)
    #: The application, when it runs in this process (running_gateway).
    app: web.Application | None = None

    @property
    def cookie_name(self) -> str:
        return "qr_session"

    async def seed(self, *, policy: RoomPolicy | None = None) -> Seeded:
        return await seed(self.services, policy=policy)

    def browser(self) -> Browser:
        return Browser(gateway=self)

    async def snapshot(self, *appointment_ids: str) -> list[dict[str, Any]]:
        """What the store holds about these appointments, their rooms and participants:
        compare before and after an attempt that must change nothing."""
        store = self.services.store
        views: list[dict[str, Any]] = []
        for appointment_id in appointment_ids:
            appointment = await store.get_appointment(appointment_id)
            assert appointment is not None
            room = await store.get_room(appointment.room_id)
            assert room is not None
            participants = await store.list_participants(appointment_id)
            views.append(
                {
                    "appointment": appointment.to_dict(),
                    "room": room.to_dict(),
                    "participants": sorted(
                        (p.to_dict() for p in participants), key=lambda p: str(p["id"])
                    ),
                }
            )
        return views

    async def signed_in_host(self, seeded: Seeded) -> Browser:
        """A host who opened the sign-in link, set up TOTP and signed in over HTTP."""
        host = self.browser()
        assert await host.open_link(seeded.host_path) == 303
        status, _ = await host.post_form("/host/enrol", {"csrf": host.csrf()})
        assert status == 200
        secret = await self.services.store.get_totp_secret(seeded.host.id)
        assert secret is not None
        code = pyotp.TOTP(secret).now()
        status, _ = await host.post_form("/host/sign-in", {"csrf": host.csrf(), "code": code})
        assert status == 303
        return host

    async def invite_client(self, seeded: Seeded, display_name: str) -> Invite:
        """Another client in the seeded appointment, with a fresh link."""
        participant = await self.services.provisioning.add_client(
            appointment_id=seeded.appointment.id, display_name=display_name, actor="test"
        )
        link = await self.services.links.issue(
            LinkPurpose.CLIENT_JOIN, participant_id=participant.id, actor="test"
        )
        return Invite(participant=participant, path="/j/" + link.url.rsplit("/j/", 1)[1])

    async def verified_client(
        self, seeded: Seeded, invite: Invite | None = None
    ) -> tuple[Browser, SocketClient]:
        """A client who opened the link, enrolled, verified and is waiting (the seeded
        client, or the invited one)."""
        participant = seeded.client if invite is None else invite.participant
        client = self.browser()
        assert await client.open_link(seeded.client_path if invite is None else invite.path) == 303
        sock = await client.socket("/client")
        enrolment = await sock.call("identity.enrol")
        assert enrolment["ok"], enrolment
        secret = await self.services.store.get_totp_secret(participant.id)
        assert secret is not None
        verified = await sock.call("identity.verify", {"code": pyotp.TOTP(secret).now()})
        assert verified["ok"], verified
        knocked = await sock.call("knock")
        assert knocked == {"ok": True, "state": "waiting"}, knocked
        return client, sock


@asynccontextmanager
async def running_gateway(
    store: Store | None = None,
    *,
    clock: Clock | None = None,
    **overrides: Any,
) -> AsyncIterator[RunningGateway]:
    """A gateway serving on 127.0.0.1; ``store`` defaults to the settings' store."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = make_settings(public_url=url, port=port, **overrides)
    kwargs: dict[str, Any] = {"clock": clock or SystemClock()}
    if store is not None:
        kwargs["store_factory"] = lambda _: store
    app = create_app(settings, **kwargs)
    runner = web.AppRunner(app, access_log_class=RedactingAccessLogger, shutdown_timeout=1)
    await runner.setup()
    gateway: RunningGateway | None = None
    try:
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        gateway = RunningGateway(url=url, settings=settings, services=app[SERVICES], app=app)
        yield gateway
    finally:
        if gateway is not None:
            for client in gateway.sockets:
                await client.close()
        await runner.cleanup()
