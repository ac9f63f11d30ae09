"""Janus (Debian's ``janus`` package) as a comparison: its VideoRoom forwarding the same load.

Janus gathers no ICE candidate on loopback, so the benchmark makes it an interface: a
veth pair inside the benchmark's own network namespace (which has nothing else but
loopback), addressed from the benchmarking range 198.18.0.0/15 (RFC 2544). Janus
gathers on one end (``ice_enforce_list``), its clients on the other; both ends are in
that namespace, so no packet leaves it. Janus's HTTP API listens on 127.0.0.1.

Each participant publishes on one connection and subscribes to the other participant's
feed on a second one, as VideoRoom clients do. Janus's CPU is read from /proc; what it
forwarded is what the subscribers received.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from bench._relay_gateway import LOOPBACK
from bench._relay_load import LoadPeers
from gateway.media import _aiortc
from tests.media_plane.media import Clip

__all__ = ["JanusClients", "JanusServer", "janus_available"]

JANUS_ADDRESS = "198.18.0.1"
CLIENT_ADDRESS = "198.18.0.2"
_VETH = ("qrbench0", "qrbench1")
_PLUGINS = Path("/usr/lib/x86_64-linux-gnu/janus")
_REQUEST_TIMEOUT = 30.0


def janus_available() -> str | None:
    """Why Janus cannot be measured here, or None if it can."""
    if shutil.which("janus") is None:
        return "janus is not installed (apt-get install --no-install-recommends janus)"
    if not (_PLUGINS / "plugins" / "libjanus_videoroom.so").exists():
        return f"no VideoRoom plugin under {_PLUGINS}"
    return None


def _config(directory: Path, http_port: int) -> Path:
    """A throwaway configuration: VideoRoom only, HTTP on loopback, ICE on the veth."""
    for kind, library in (("plugins", "libjanus_videoroom.so"), ("transports", "libjanus_http.so")):
        (directory / kind).mkdir(parents=True, exist_ok=True)
        (directory / kind / library).symlink_to(_PLUGINS / kind / library)
    (directory / "janus.jcfg").write_text(
        f"""general: {{
    configs_folder = "{directory}"
    plugins_folder = "{directory}/plugins"
    transports_folder = "{directory}/transports"
    events_folder = "{directory}/none"
    loggers_folder = "{directory}/none"
    debug_level = 3
}}
media: {{
    rtp_port_range = "20000-40000"
}}
nat: {{
    ice_enforce_list = "{_VETH[0]}"
}}
"""
    )
    (directory / "janus.transport.http.jcfg").write_text(
        f"""general: {{
    json = "compact"
    base_path = "/janus"
    http = true
    ip = "{LOOPBACK}"
    port = {http_port}
}}
admin: {{
    admin_http = false
}}
"""
    )
    (directory / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
    return directory / "janus.jcfg"


@contextmanager
def _veth() -> Iterator[None]:
    """The veth pair Janus binds to, for as long as it runs."""
    subprocess.run(
        ["ip", "link", "add", _VETH[0], "type", "veth", "peer", "name", _VETH[1]], check=True
    )
    try:
        for address, name in zip((JANUS_ADDRESS, CLIENT_ADDRESS), _VETH, strict=True):
            subprocess.run(["ip", "addr", "add", f"{address}/30", "dev", name], check=True)
        for name in _VETH:
            subprocess.run(["ip", "link", "set", name, "up"], check=True)
            # Janus binds its sockets to its interface, so its packets cross the veth and
            # arrive from an address of this namespace: accept them (this namespace only).
            for setting, value in (("accept_local", "1"), ("rp_filter", "0")):
                Path(f"/proc/sys/net/ipv4/conf/{name}/{setting}").write_text(value)
        yield
    finally:
        subprocess.run(["ip", "link", "delete", _VETH[0]], check=False)


class JanusServer:
    """A janus process with its own configuration, its rooms created over HTTP."""

    def __init__(self, workdir: Path, http_port: int) -> None:
        self.url = f"http://{LOOPBACK}:{http_port}/janus"
        self._workdir = workdir
        self._http_port = http_port
        self._process: subprocess.Popen[bytes] | None = None
        self._log = workdir / "janus.log"
        self._window: tuple[float, float, float] | None = None

    @contextmanager
    def running(self) -> Iterator[JanusServer]:
        """Janus started on its veth; stopped, and the veth removed, on the way out."""
        config = _config(self._workdir, self._http_port)
        with _veth():
            with self._log.open("wb") as log:
                self._process = subprocess.Popen(
                    ["janus", "-C", str(config), "-F", str(self._workdir)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            try:
                self._wait_ready()
                yield self
            except Exception as exc:
                exc.add_note("janus log:\n" + self._log.read_text()[-6000:])
                raise
            finally:
                self._process.terminate()
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - always http://127.0.0.1
            self.url + path,
            data=json.dumps({**body, "transaction": os.urandom(6).hex()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=_REQUEST_TIMEOUT) as response:  # noqa: S310
            answer: dict[str, Any] = json.load(response)
        if answer.get("janus") not in ("success", "ack", "pong"):
            raise RuntimeError(f"janus answered {answer}")
        return answer

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self._post("", {"janus": "ping"})
            except OSError:
                time.sleep(0.2)
            else:
                return
        raise RuntimeError("janus did not start")

    def create_rooms(self, rooms: list[int]) -> None:
        """One VideoRoom per session, two VP8 + Opus publishers each."""
        session = self._post("", {"janus": "create"})["data"]["id"]
        handle = self._post(f"/{session}", {"janus": "attach", "plugin": "janus.plugin.videoroom"})
        path = f"/{session}/{handle['data']['id']}"
        for room in rooms:
            body = {
                "request": "create",
                "room": room,
                "publishers": 2,
                "videocodec": "vp8",
                "audiocodec": "opus",
            }
            answer = self._post(path, {"janus": "message", "body": body})
            result = answer["plugindata"]["data"]
            if result.get("videoroom") != "created":
                raise RuntimeError(f"janus did not create room {room}: {result}")
        self._post(f"/{session}", {"janus": "destroy"})

    def _cpu_times(self) -> tuple[float, float]:
        """User and system CPU seconds of the janus process so far (all its threads)."""
        assert self._process is not None
        stat = Path(f"/proc/{self._process.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / ticks, int(fields[12]) / ticks

    def start_window(self) -> None:
        """Begin measuring Janus's CPU time."""
        self._window = (time.monotonic(), *self._cpu_times())

    def end_window(self) -> dict[str, Any]:
        """Janus's CPU seconds since :meth:`start_window`, shaped like a gateway's window.

        What Janus forwarded is counted by its subscribers, so packets are left to them.
        """
        if self._window is None:
            raise RuntimeError("end_window without start_window")
        wall, user, system = self._window
        now_user, now_system = self._cpu_times()
        return {
            "wall": time.monotonic() - wall,
            "cpu": now_user - user + now_system - system,
            "user": now_user - user,
            "packets_out": None,
            "latency": {"samples": 0},
            "event_loop": "janus (C, GLib)",
        }


class _JanusSession:
    """One Janus API session: requests, and the long poll that brings their answers."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self._http = http
        self._url = url
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._poll_task: asyncio.Task[None] | None = None
        self._transactions = itertools.count(1)

    async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self._http.post(url, json=body) as response:
            answer: dict[str, Any] = await response.json()
        if answer.get("janus") not in ("success", "ack"):
            raise RuntimeError(f"janus answered {answer}")
        return answer

    async def start(self) -> None:
        answer = await self._post(self._url, {"janus": "create", "transaction": "create"})
        self._url = f"{self._url}/{answer['data']['id']}"
        self._poll_task = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        """Hand each plugin event to the request it answers (by transaction)."""
        while True:
            async with self._http.get(self._url, params={"maxev": "10"}) as response:
                events = await response.json()
            for event in events if isinstance(events, list) else [events]:
                waiting = self._waiting.pop(event.get("transaction", ""), None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(event)

    async def attach(self) -> int:
        answer = await self._post(
            self._url,
            {"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": "attach"},
        )
        handle: int = answer["data"]["id"]
        return handle

    async def message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Send a plugin request; its event (data, and JSEP if any) when it comes."""
        transaction = str(next(self._transactions))
        request: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            request["jsep"] = jsep
        answered = self._waiting[transaction] = asyncio.get_running_loop().create_future()
        await self._post(f"{self._url}/{handle}", request)
        event: dict[str, Any] = await asyncio.wait_for(answered, _REQUEST_TIMEOUT)
        data = event["plugindata"]["data"]
        if "error" in data:
            raise RuntimeError(f"videoroom refused {body['request']}: {data['error']}")
        return event

    async def close(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await self._poll_task
        with contextlib.suppress(aiohttp.ClientError, RuntimeError):  # Janus may be gone
            await self._post(self._url, {"janus": "destroy", "transaction": "destroy"})


class JanusClients(LoadPeers):
    """Load clients for Janus: per participant, a publishing and a subscribing connection."""

    def __init__(self, *, video: Clip, audio: Clip, url: str) -> None:
        super().__init__(video=video, audio=audio)
        self._url = url
        self._http: aiohttp.ClientSession | None = None
        self._session: _JanusSession | None = None

    async def _janus(self) -> _JanusSession:
        if self._session is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
            self._session = _JanusSession(self._http, self._url)
            await self._session.start()
        return self._session

    async def publish(self, *, feeds: list[tuple[int, int]]) -> None:
        """Join each (room, feed id) as a publisher and send the clips."""
        janus = await self._janus()
        for room, feed in feeds:
            handle = await janus.attach()
            await janus.message(
                handle, {"request": "join", "ptype": "publisher", "room": room, "id": feed}
            )
            pc = self._pcs[f"{feed}/publish"] = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            self._add_clips(pc, direction="sendonly")
            _aiortc.restrict_gathering(pc, [CLIENT_ADDRESS])
            await pc.setLocalDescription(await pc.createOffer())
            event = await janus.message(
                handle,
                {"request": "publish", "audio": True, "video": True},
                {"type": "offer", "sdp": pc.localDescription.sdp, "trickle": False},
            )
            jsep = event["jsep"]
            await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type=jsep["type"]))

    async def subscribe(self, *, feeds: list[tuple[int, int, int]]) -> None:
        """For each (room, own feed id, feed to receive): subscribe and count what comes."""
        janus = await self._janus()
        for room, own, other in feeds:
            handle = await janus.attach()
            event = await janus.message(
                handle,
                {
                    "request": "join",
                    "ptype": "subscriber",
                    "room": room,
                    "streams": [{"feed": other}],
                },
            )
            pc = self._pcs[f"{own}/subscribe"] = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            jsep = event["jsep"]
            await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type=jsep["type"]))
            for transceiver in pc.getTransceivers():
                self._count(transceiver.receiver)
            _aiortc.restrict_gathering(pc, [CLIENT_ADDRESS])
            await pc.setLocalDescription(await pc.createAnswer())
            await janus.message(
                handle,
                {"request": "start"},
                {"type": "answer", "sdp": pc.localDescription.sdp, "trickle": False},
            )

    async def close(self) -> None:
        await super().close()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._http is not None:
            await self._http.close()
            self._http = None
