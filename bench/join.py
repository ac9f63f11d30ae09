"""Join-time benchmark: from the link opened to the first frame of the other person's video
decoded, in real Chromium through a real gateway, split into phases.

    .venv/bin/python bench/join.py              # 10 joins
    .venv/bin/python bench/join.py --joins 20

Everything runs on loopback inside a fresh network namespace (the script re-runs itself
under ``unshare --net`` with ``lo`` up, as the browser tests run in CI). The gateway runs
in this process with its media on 127.0.0.1; Debian's ``/usr/bin/chromium`` is driven by
Playwright with a fake camera and microphone.

Each join is a fresh appointment: the host has signed in and waits in the console; the
client opens the link, checks the camera and microphone, sets up and types the sign-in
code (taken from the store as an authenticator app would show it), and waits; the host
clicks Admit as soon as the row appears; both sides start their call. The client page
marks each step with User Timing marks (``quietroom:*``, relative to the navigation that
opened the link), which is where the phases come from:

    page       link opened -> the first screen is decided (page, scripts, socket, status)
    identity   -> sign-in code accepted (device check and enrolment included, automated)
    admit      -> admitted (knock, the host's Admit)
    ICE+DTLS   -> media connected (camera opened again, media.config, offer, answer, ICE,
                  DTLS)
    frame      -> the first frame of the host's video decoded and shown

Baseline, in the same run and the same browser: two pages connected directly (no
gateway, no signaling server: SDP passed by this script, the answerer's candidates in its
answer as the gateway does it, the offerer trickling). Its "ICE+DTLS + first frame" is
compared with the same span of a join: from the client creating its peer connection to
the first remote frame shown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyotp  # noqa: E402
from aiohttp import web  # noqa: E402
from playwright.async_api import Browser, Page, async_playwright  # noqa: E402

from gateway.clock import SystemClock  # noqa: E402
from gateway.domain.links import LinkPurpose  # noqa: E402
from gateway.domain.model import RoomPolicy  # noqa: E402
from gateway.services import Services  # noqa: E402
from gateway.settings import Settings, new_data_key, new_secret_key  # noqa: E402
from gateway.web import SERVICES, create_app  # noqa: E402
from gateway.web.access_log import RedactingAccessLogger  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
STEP_TIMEOUT_MS = 60_000
PHASES = [
    ("page", None, "ready"),
    ("identity", "ready", "verified"),
    ("admit", "verified", "admitted"),
    ("ICE+DTLS", "admitted", "media-connected"),
    ("frame", "media-connected", "first-frame"),
]
_NETNS_FLAG = "QUIETROOM_BENCH_NETNS"


def in_own_network_namespace() -> None:
    """Re-run this script under ``unshare --net`` with loopback up, once."""
    if os.environ.get(_NETNS_FLAG) == "1":
        return
    if shutil.which("unshare") is None:
        sys.exit("bench/join.py needs unshare (util-linux) to run in its own network namespace")
    env = {**os.environ, _NETNS_FLAG: "1"}
    argv = [
        "unshare",
        "--net",
        "--",
        "sh",
        "-c",
        'ip link set lo up && exec "$0" "$@"',
        sys.executable,
        *sys.argv,
    ]
    sys.exit(subprocess.call(argv, env=env))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Gateway:
    """The gateway, in this process, on loopback, media on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = Settings.load(
            {},
            overrides={
                "secret_keys": [new_secret_key()],
                "data_keys": [new_data_key()],
                "public_url": self.url,
                "port": self.port,
                "media_addresses": ["127.0.0.1"],
                "media_allow_loopback": True,
                "host_away_grace": 0,
            },
        )
        self.app = create_app(self.settings, clock=SystemClock())
        self.runner = web.AppRunner(
            self.app, access_log_class=RedactingAccessLogger, shutdown_timeout=1
        )

    @property
    def services(self) -> Services:
        return self.app[SERVICES]

    async def start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def appointment(self, n: int) -> dict[str, str]:
        """A fresh host, room (sign-in code required) and appointment with one client."""
        prov = self.services.provisioning
        platform_, _ = await prov.create_platform(name=f"Bench {n}", actor="bench")
        host = await prov.create_host(
            display_name="Bench host", platform_id=platform_.id, actor="bench"
        )
        room = await prov.create_room(host_id=host.id, policy=RoomPolicy(), actor="bench")
        appointment, host_participant = await prov.create_appointment(
            room_id=room.id, actor="bench"
        )
        client = await prov.add_client(
            appointment_id=appointment.id, display_name=f"Client {n}", actor="bench"
        )
        links = self.services.links
        client_link = await links.issue(
            LinkPurpose.CLIENT_JOIN, participant_id=client.id, actor="bench"
        )
        host_link = await links.issue(
            LinkPurpose.HOST_SIGN_IN, participant_id=host_participant.id, actor="bench"
        )
        return {
            "client_id": client.id,
            "client_name": f"Client {n}",
            "client_path": "/j/" + client_link.url.rsplit("/j/", 1)[1],
            "host_id": host_participant.id,
            "host_path": "/h/" + host_link.url.rsplit("/h/", 1)[1],
        }

    async def code(self, participant_id: str) -> str:
        secret = await self.services.store.get_totp_secret(participant_id)
        assert secret is not None, "not enrolled"
        return str(pyotp.TOTP(secret).now())


async def new_page(browser: Browser) -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(STEP_TIMEOUT_MS)
    return await context.new_page()


async def host_console(browser: Browser, gateway: Gateway, seeded: dict[str, str]) -> Page:
    page = await new_page(browser)
    await page.goto(gateway.url + seeded["host_path"])
    # The link's page waits for a press at top level (docs/decisions/0011).
    await page.get_by_role("button", name="Open my console").click()
    await page.get_by_role("button", name="Show my set-up code").click()
    await page.fill("#code", await gateway.code(seeded["host_id"]))
    await page.get_by_role("button", name="Sign in").click()
    await page.locator("#room-state").filter(has_text="Open").wait_for()
    return page


async def marks(page: Page) -> dict[str, float]:
    """The page's quietroom:* marks, in ms since the post that redeemed the link."""
    found: dict[str, float] = await page.evaluate(
        """() => {
            const out = {};
            for (const m of performance.getEntriesByType("mark")) {
                const name = m.name.replace(/^quietroom:/, "");
                if (m.name.startsWith("quietroom:") && !(name in out)) {
                    out[name] = m.startTime;
                }
            }
            return out;
        }"""
    )
    return found


async def one_join(browser: Browser, gateway: Gateway, n: int) -> dict[str, float]:
    seeded = await gateway.appointment(n)
    console = await host_console(browser, gateway, seeded)
    client = await new_page(browser)
    await client.goto(gateway.url + seeded["client_path"])
    await client.get_by_role("button", name="Join the waiting room").click()
    await client.click("#check-start")
    await client.click("#check-continue")
    await client.locator("#enrol").wait_for()
    await client.fill("#code-input", await gateway.code(seeded["client_id"]))
    await client.click("#code-submit")
    admit = console.get_by_role("button", name=f"Admit {seeded['client_name']}")
    await admit.click()
    # A promise awaited in the page (wait_for_function would need eval, which the CSP refuses).
    await asyncio.wait_for(
        client.evaluate(
            """() => new Promise((resolve) => {
                const seen = () => performance.getEntriesByName("quietroom:first-frame").length;
                const check = () => (seen() ? resolve() : setTimeout(check, 10));
                check();
            })"""
        ),
        STEP_TIMEOUT_MS / 1000,
    )
    found = await marks(client)
    # End the session: media closes on both sides before the next join.
    await console.click("#end-session")
    await console.locator("#confirm-dialog").get_by_role("button", name="End the session").click()
    await console.locator("#console-ended").wait_for()
    await client.context.close()
    await console.context.close()
    return found


_DIRECT = """
async ({role}) => {
  const stream = await navigator.mediaDevices.getUserMedia({
    video: {width: {ideal: 1280}, height: {ideal: 720}, frameRate: {ideal: 30, max: 30}},
    audio: true,
  });
  const pc = new RTCPeerConnection({bundlePolicy: "max-bundle", rtcpMuxPolicy: "require"});
  window.bench = {pc, stream, candidates: [], t: {}};
  window.bench.t.start = performance.now();
  if (role === "offerer") {
    for (const track of stream.getTracks()) {
      pc.addTransceiver(track, {direction: "sendrecv", streams: [stream]});
    }
  }
  pc.onicecandidate = ({candidate}) => {
    if (candidate) { window.bench.candidates.push(candidate.toJSON()); }
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "connected" && !window.bench.t.connected) {
      window.bench.t.connected = performance.now();
    }
  };
  const video = document.createElement("video");
  video.muted = true;
  video.autoplay = true;
  video.playsInline = true;
  document.body.append(video);
  pc.ontrack = ({streams}) => {
    if (streams[0] && video.srcObject !== streams[0]) {
      video.srcObject = streams[0];
      video.play().catch(() => {});
    }
  };
  video.addEventListener("resize", () => {
    if (video.videoWidth > 0 && !window.bench.t.frame) { window.bench.t.frame = performance.now(); }
  });
  return role;
}
"""


async def one_direct(browser: Browser, origin: str) -> dict[str, float]:
    """Two pages, peer to peer on loopback: start -> connected -> first frame on the offerer."""
    offerer = await new_page(browser)
    answerer = await new_page(browser)
    for page in (offerer, answerer):
        await page.goto(origin)
    await offerer.evaluate(_DIRECT, {"role": "offerer"})
    await answerer.evaluate(_DIRECT, {"role": "answerer"})
    offer = await offerer.evaluate(
        """async () => {
            const pc = window.bench.pc;
            await pc.setLocalDescription(await pc.createOffer());
            return pc.localDescription.sdp;
        }"""
    )
    # The answerer answers with all of its candidates, as the gateway does.
    answer = await answerer.evaluate(
        """async (sdp) => {
            const {pc, stream} = window.bench;
            await pc.setRemoteDescription({type: "offer", sdp});
            for (const transceiver of pc.getTransceivers()) {
                const kind = transceiver.receiver.track.kind;
                const track = stream.getTracks().find((t) => t.kind === kind);
                await transceiver.sender.replaceTrack(track);
                transceiver.sender.setStreams(stream);
                transceiver.direction = "sendrecv";
            }
            await pc.setLocalDescription(await pc.createAnswer());
            if (pc.iceGatheringState !== "complete") {
                await new Promise((resolve) => {
                    pc.addEventListener("icegatheringstatechange", () => {
                        if (pc.iceGatheringState === "complete") { resolve(); }
                    });
                });
            }
            return pc.localDescription.sdp;
        }""",
        offer,
    )
    await offerer.evaluate(
        "async (sdp) => { await window.bench.pc.setRemoteDescription({type: 'answer', sdp}); }",
        answer,
    )
    # The offerer trickles.
    sent = 0
    deadline = time.monotonic() + STEP_TIMEOUT_MS / 1000
    while True:
        candidates = await offerer.evaluate("window.bench.candidates")
        for candidate in candidates[sent:]:
            await answerer.evaluate(
                "async (c) => { await window.bench.pc.addIceCandidate(c); }", candidate
            )
        sent = len(candidates)
        if await offerer.evaluate("Boolean(window.bench.t.frame)"):
            break
        if time.monotonic() > deadline:
            states = await offerer.evaluate(
                "[window.bench.pc.connectionState, window.bench.pc.iceConnectionState,"
                " window.bench.candidates.length, window.bench.pc.remoteDescription.sdp]"
            )
            raise TimeoutError(f"no frame between the two pages: {states}")
        await asyncio.sleep(0.005)
    t: dict[str, float] = await offerer.evaluate("window.bench.t")
    await offerer.context.close()
    await answerer.context.close()
    return {"ICE+DTLS": t["connected"] - t["start"], "frame": t["frame"] - t["connected"]}


async def blank_site() -> tuple[web.AppRunner, str]:
    """A plain page on loopback (a secure context, so the camera opens)."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text="<!doctype html><title>direct</title><body></body>", content_type="text/html"
        )

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/"


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 1),
        "max": round(max(values), 1),
        "min": round(min(values), 1),
    }


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    chromium = subprocess.run(
        [CHROMIUM, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "chromium": chromium,
        "aiortc": metadata.version("aiortc"),
        "aiohttp": metadata.version("aiohttp"),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--joins", type=int, default=10)
    args = parser.parse_args()

    gateway = Gateway()
    await gateway.start()
    site, origin = await blank_site()
    joins: list[dict[str, float]] = []
    direct: list[dict[str, float]] = []
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                # One unmeasured round of each: the browser's and the gateway's first
                # calls load codecs and warm caches.
                await one_join(browser, gateway, 0)
                await one_direct(browser, origin)
                for n in range(1, args.joins + 1):
                    # Alternate, so that a noisy moment of the shared machine hits both.
                    joins.append(await one_join(browser, gateway, n))
                    direct.append(await one_direct(browser, origin))
                    print(f"join {n}/{args.joins}", file=sys.stderr, flush=True)
            finally:
                await browser.close()
    finally:
        await site.cleanup()
        await gateway.stop()

    phases: dict[str, dict[str, float]] = {}
    for name, start, end in PHASES:
        phases[name] = summary([j[end] - (j[start] if start else 0.0) for j in joins])
    phases["total: link opened -> first frame"] = summary([j["first-frame"] for j in joins])
    through = [j["first-frame"] - j["media-start"] for j in joins]
    baseline = [d["ICE+DTLS"] + d["frame"] for d in direct]
    result = {
        "machine": machine(),
        "joins": args.joins,
        "phases_ms": phases,
        "media_start_to_first_frame_ms": {
            "gateway": summary(through),
            "direct_baseline": summary(baseline),
            "direct_baseline_ice_dtls": summary([d["ICE+DTLS"] for d in direct]),
            "direct_baseline_frame": summary([d["frame"] for d in direct]),
            "ratio_p50": round(statistics.median(through) / statistics.median(baseline), 2),
        },
        "raw": {"joins": joins, "direct": direct},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    in_own_network_namespace()
    asyncio.run(main())
