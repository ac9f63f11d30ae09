"""Helpers for operations tests: ``quietroom serve`` as a real process, and a browser
that talks to any base URL (plain HTTP or through nginx over TLS)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from tests.gateway_harness import Refused, SocketClient, link_form

__all__ = ["REPO", "ServeProcess", "WebBrowser", "form_csrf", "serve_process"]

REPO = Path(__file__).resolve().parents[2]

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class ServeProcess:
    """One ``quietroom serve`` process; everything it logs is in ``log_path``."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float) -> int:
        """The exit status, once the process has exited (AssertionError after timeout)."""
        try:
            return await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"quietroom serve did not exit within {timeout} s:\n{self.log_path.read_text()}"
            ) from None


@contextmanager
def serve_process(env: dict[str, str], port: int, log_path: Path) -> Iterator[ServeProcess]:
    """``quietroom serve`` with ``env`` (and nothing else from this environment) on
    127.0.0.1:``port``; yields once it answers /healthz; killed at the end if still up."""
    url = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve"],
            env={
                "PATH": os.environ["PATH"],
                **env,
                "QUIETROOM_BIND_HOST": "127.0.0.1",
                "QUIETROOM_PORT": str(port),
            },
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = ServeProcess(process=process, url=url, log_path=log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"quietroom serve did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def form_csrf(page: str) -> str:
    """The CSRF token of the form on an HTML page."""
    found = _CSRF.search(page)
    assert found is not None, page
    return found.group(1)


@dataclass
class WebBrowser:
    """A browser's cookie for one gateway origin; ``ssl`` for HTTPS through a proxy."""

    base_url: str
    cookie_name: str = "qr_session"
    ssl_context: ssl.SSLContext | None = None
    cookie: str | None = None
    sockets: list[SocketClient] = field(default_factory=list)

    def _session(self) -> aiohttp.ClientSession:
        # No cookie jar: the cookie goes in a header, as this browser's only cookie.
        connector = aiohttp.TCPConnector(ssl=self.ssl_context or True)
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    def _headers(self, **extra: str) -> dict[str, str]:
        headers = dict(extra)
        if self.cookie:
            headers["Cookie"] = f"{self.cookie_name}={self.cookie}"
        return headers

    async def get(self, path: str) -> tuple[int, str, dict[str, str]]:
        """GET without following redirects; keeps a session cookie it is given."""
        async with (
            self._session() as http,
            http.get(self.base_url + path, headers=self._headers(), allow_redirects=False) as resp,
        ):
            body = await resp.text()
            morsel = resp.cookies.get(self.cookie_name)
            if morsel is not None:
                self.cookie = morsel.value
            return resp.status, body, dict(resp.headers)

    async def post_form(self, path: str, form: dict[str, str]) -> tuple[int, str]:
        status, body, _ = await self._post(path, form)
        return status, body

    async def open_link(self, path: str) -> tuple[int, dict[str, str]]:
        """Open a link as a browser does: its page (which sets no cookie), then its form
        posted; the post's status and headers (303 once redeemed, the cookie kept)."""
        status, page, headers = await self.get(path)
        assert status == 200, (status, page)
        assert "Set-Cookie" not in headers
        action, fields = link_form(page)
        status, _, headers = await self._post(action, fields)
        return status, headers

    async def _post(self, path: str, form: dict[str, str]) -> tuple[int, str, dict[str, str]]:
        """POST a form from this origin; keeps a session cookie it is given."""
        async with (
            self._session() as http,
            http.post(
                self.base_url + path,
                data=form,
                headers=self._headers(Origin=self.base_url),
                allow_redirects=False,
            ) as resp,
        ):
            body = await resp.text()
            morsel = resp.cookies.get(self.cookie_name)
            if morsel is not None:
                self.cookie = morsel.value
            return resp.status, body, dict(resp.headers)

    async def socket(self, namespace: str, *, transport: str = "websocket") -> SocketClient:
        """A Socket.IO connection as the gateway's pages open it; :class:`Refused` when
        the gateway refuses."""
        # Engine.IO moves the Cookie header into its session's cookie jar: a real jar.
        http = (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ssl_context))
            if self.ssl_context is not None
            else None
        )
        sio = socketio.AsyncClient(reconnection=False, http_session=http)
        client = SocketClient(sio=sio, namespace=namespace)
        refusals: list[Any] = []

        async def record(event: str, *args: Any) -> None:
            client.received.append((event, args[0] if args else None))

        async def refused(*args: Any) -> None:
            refusals.append(args[0] if args else None)

        sio.on("*", record, namespace=namespace)
        sio.on("connect_error", refused, namespace=namespace)
        headers = self._headers(Origin=self.base_url)
        try:
            await sio.connect(
                self.base_url,
                headers=headers,
                namespaces=[namespace],
                transports=[transport],
                wait_timeout=5,
            )
        except socketio.exceptions.ConnectionError as exc:
            await sio.disconnect()
            if http is not None:
                await http.close()
            raise Refused(refusals[0] if refusals else None) from exc
        self.sockets.append(client)
        return client

    async def close(self) -> None:
        for client in self.sockets:
            await client.close()
            session = client.sio.eio.http
            if session is not None and not session.closed:
                await session.close()
        self.sockets.clear()
