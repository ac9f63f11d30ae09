"""Waiting-room benchmark: how many waiting clients one gateway process holds, what each
costs in memory, and how fast knocks and admissions reach the other side.

    .venv/bin/python bench/waiting_room.py                 # one process, MemoryStore
    .venv/bin/python bench/waiting_room.py --redis         # two processes on one Redis

Everything runs on 127.0.0.1. The gateway runs in its own process; clients are real
python-socketio clients in load processes; a bare python-socketio server measured in
the same run is the baseline (what the gateway adds beyond the Socket.IO stack itself).
Clients skip TOTP (room policy) so the benchmark measures the waiting room, not pyotp.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import pyotp
import socketio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.services import hash_session_token  # noqa: E402
from gateway.settings import Settings, new_data_key, new_secret_key  # noqa: E402
from gateway.web.csrf import csrf_token  # noqa: E402
from signaling.base import RATE_PER_PARTICIPANT  # noqa: E402

CONNECT_CONCURRENCY = 64
PHASE_TIMEOUT = 900.0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Process:
    """A server child process that prints "ready" when it listens."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, cwd=ROOT
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"{argv} did not start:\n{log.read_text()[-3000:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- load workers (separate processes) --------------------------------------------------------


async def _open_client(
    http: aiohttp.ClientSession, base: str, path: str | None, origin: str, knock: bool
) -> socketio.AsyncClient:
    headers = {"Origin": origin}
    if path is not None:
        async with http.get(base + path, allow_redirects=False) as resp:
            await resp.read()
            if resp.status != 303:
                raise RuntimeError(f"link answered {resp.status}")
            cookie = resp.cookies["qr_session"].value
        headers["Cookie"] = f"qr_session={cookie}"
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(
        base, headers=headers, namespaces=["/client"], transports=["websocket"], wait_timeout=30
    )
    if knock:
        answer = await sio.call("knock", namespace="/client", timeout=30)
        if answer != {"ok": True, "state": "waiting"}:
            await sio.disconnect()
            raise RuntimeError(f"knock answered {answer}")
    return sio


async def _hold(
    conn: Connection, base: str, origin: str, paths: list[str | None], knock: bool
) -> None:
    clients: list[socketio.AsyncClient] = []
    failures = 0
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    connector = aiohttp.TCPConnector(limit=CONNECT_CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(path: str | None) -> None:
            nonlocal failures
            async with gate:
                try:
                    clients.append(await _open_client(http, base, path, origin, knock))
                except Exception:  # noqa: BLE001 - counted; the count is the result
                    failures += 1

        await asyncio.gather(*(one(p) for p in paths))
    conn.send({"connected": len(clients), "failed": failures})
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # wait for "check"
    waiting = 0
    for sio in clients:
        waiting += await _still_there(sio, knock)
    conn.send({"still_there": waiting})
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # wait for "stop"
    for sio in clients:
        await sio.disconnect()
    conn.send({"closed": True})


async def _still_there(sio: socketio.AsyncClient, knock: bool) -> bool:
    """Is this client still connected (and, for the gateway, still waiting)?"""
    try:
        if knock:
            status = await sio.call("status", namespace="/client", timeout=30)
            return bool(status.get("state") == "waiting")
        return bool(await sio.call("echo", 1, namespace="/client", timeout=30) == 1)
    except Exception:  # noqa: BLE001 - a lost client is what we are counting
        return False


def _worker(conn: Connection, base: str, origin: str, paths: list[str | None], knock: bool) -> None:
    asyncio.run(_hold(conn, base, origin, paths, knock))


class Load:
    """Clients held open by worker processes."""

    def __init__(
        self, base: str, origin: str, paths: list[str | None], *, knock: bool, workers: int
    ):
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs = []
        for index in range(workers):
            parent, child = ctx.Pipe()
            share = paths[index::workers]
            proc = ctx.Process(
                target=_worker, args=(child, base, origin, share, knock), daemon=True
            )
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    def _gather(self) -> list[dict[str, Any]]:
        deadline = time.monotonic() + PHASE_TIMEOUT
        answers = []
        for pipe in self.pipes:
            if not pipe.poll(max(deadline - time.monotonic(), 0)):
                raise TimeoutError("a load worker did not answer in time")
            answers.append(pipe.recv())
        return answers

    def connected(self) -> tuple[int, int]:
        answers = self._gather()
        return sum(a["connected"] for a in answers), sum(a["failed"] for a in answers)

    def still_there(self) -> int:
        for pipe in self.pipes:
            pipe.send("check")
        return sum(a["still_there"] for a in self._gather())

    def stop(self) -> None:
        for pipe in self.pipes:
            pipe.send("stop")
        self._gather()
        for proc in self.procs:
            proc.join(timeout=30)


# --- phases ----------------------------------------------------------------------------------


def capacity(
    server: Process, base: str, paths: list[str | None], *, knock: bool, workers: int
) -> dict[str, Any]:
    before = rss_kib(server.pid)
    cpu_before = cpu_seconds(server.pid)
    started = time.monotonic()
    load = Load(base, base, paths, knock=knock, workers=workers)
    try:
        connected, failed = load.connected()
        elapsed = time.monotonic() - started
        time.sleep(2)  # let the server settle before reading its memory
        after = rss_kib(server.pid)
        still = load.still_there()
    finally:
        load.stop()
    return {
        "clients": len(paths),
        "connected": connected,
        "failed": failed,
        "still_there": still,
        "rss_before_mib": round(before / 1024, 1),
        "rss_after_mib": round(after / 1024, 1),
        "kib_per_client": round((after - before) / max(connected, 1), 2),
        "connect_seconds": round(elapsed, 1),
        "server_cpu_ms_per_client": round(
            (cpu_seconds(server.pid) - cpu_before) * 1000 / max(connected, 1), 3
        ),
    }


async def _host_console(
    base: str, host_path: str, host_secret: str, settings: Settings
) -> socketio.AsyncClient:
    async with aiohttp.ClientSession() as http:
        async with http.get(base + host_path, allow_redirects=False) as resp:
            await resp.read()
            cookie = resp.cookies["qr_session"].value
        form = {
            "csrf": csrf_token(settings, hash_session_token(cookie)),
            "code": pyotp.TOTP(host_secret).now(),
        }
        async with http.post(
            base + "/host/sign-in",
            data=form,
            headers={"Origin": base, "Cookie": f"qr_session={cookie}"},
            allow_redirects=False,
        ) as resp:
            if resp.status != 303:
                raise RuntimeError(f"host sign-in answered {resp.status}")
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(
        base,
        headers={"Origin": base, "Cookie": f"qr_session={cookie}"},
        namespaces=["/host"],
        transports=["websocket"],
    )
    return sio


async def latency(
    client_base: str,
    host_base: str,
    samples: list[tuple[str, str]],
    host_path: str,
    host_secret: str,
    settings: Settings,
) -> dict[str, Any]:
    """knock -> host notified, and admit -> client notified, one at a time."""
    host = await _host_console(host_base, host_path, host_secret, settings)
    arrivals: dict[tuple[str, str], float] = {}

    @host.on("participant", namespace="/host")  # type: ignore[misc]
    async def on_participant(data: dict[str, Any]) -> None:
        arrivals[(data["participant_id"], data["state"])] = time.perf_counter()

    knock_ms, admit_ms = [], []
    clients = []
    async with aiohttp.ClientSession() as http:
        for participant_id, path in samples:
            sio = await _open_client(http, client_base, path, client_base, knock=False)
            clients.append(sio)
            admitted = asyncio.Event()
            sio.on("admitted", _setter(admitted), namespace="/client")
            sent = time.perf_counter()
            await sio.emit("knock", namespace="/client")
            while (participant_id, "waiting") not in arrivals:
                await asyncio.sleep(0.0005)
                if time.perf_counter() - sent > 10:
                    raise TimeoutError("host never heard the knock")
            knock_ms.append((arrivals[(participant_id, "waiting")] - sent) * 1000)
            # A host is limited to RATE_PER_PARTICIPANT events a minute; pace like one.
            await asyncio.sleep(60 / RATE_PER_PARTICIPANT)
            sent = time.perf_counter()
            answer = await host.call("admit", {"participant_id": participant_id}, namespace="/host")
            if not answer.get("ok"):
                raise RuntimeError(f"admit answered {answer}")
            await asyncio.wait_for(admitted.wait(), 10)
            admit_ms.append((time.perf_counter() - sent) * 1000)
    for sio in clients:
        await sio.disconnect()
    await host.disconnect()
    return {
        "samples": len(samples),
        "knock_to_host_ms": {
            "p50": round(pct(knock_ms, 0.5), 2),
            "p99": round(pct(knock_ms, 0.99), 2),
        },
        "admit_to_client_ms": {
            "p50": round(pct(admit_ms, 0.5), 2),
            "p99": round(pct(admit_ms, 0.99), 2),
        },
    }


def _setter(event: asyncio.Event) -> Any:
    async def handler(*_: Any) -> None:
        event.set()

    return handler


async def baseline_latency(base: str, count: int) -> dict[str, float]:
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(base, namespaces=["/client"], transports=["websocket"])
    times = []
    for _ in range(count):
        sent = time.perf_counter()
        await sio.call("echo", 1, namespace="/client")
        times.append((time.perf_counter() - sent) * 1000)
    await sio.disconnect()
    return {"p50": round(pct(times, 0.5), 3), "p99": round(pct(times, 0.99), 3)}


# --- the run ------------------------------------------------------------------------------------


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(workdir), "--maxclients", "20000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    return proc, f"redis://127.0.0.1:{port}/0"


def gateways(
    env: dict[str, str], workdir: Path, seed: int, *, two: bool, tag: str
) -> tuple[list[Process], dict[str, Any], list[str]]:
    ports = [free_port(), free_port()] if two else [free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    env = {**env, "QUIETROOM_PUBLIC_URL": urls[0], "QUIETROOM_ALLOWED_ORIGINS": ",".join(urls[1:])}
    seeded = workdir / f"seed-{tag}.json"
    procs = [
        Process(
            [sys.executable, "bench/_gateway.py", "--port", str(ports[0]), "--seed", str(seed),
             "--out", str(seeded)],
            env, workdir / f"gateway-{tag}-a.log",
        )
    ]  # fmt: skip
    if two:
        procs.append(
            Process(
                [sys.executable, "bench/_gateway.py", "--port", str(ports[1])],
                env,
                workdir / f"gateway-{tag}-b.log",
            )
        )
    return procs, json.loads(seeded.read_text()), urls


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="qr-bench-"))
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "QUIETROOM_SECRET_KEYS": new_secret_key(),
        "QUIETROOM_DATA_KEYS": new_data_key(),
        "QUIETROOM_RECONNECT_GRACE": "600",
    }
    redis = None
    if args.redis:
        redis, url = start_redis(workdir)
        env["QUIETROOM_REDIS_URL"] = url
    settings = Settings.load({k: v for k, v in env.items() if k.startswith("QUIETROOM_")})
    result: dict[str, Any] = {
        "mode": "two processes on Redis" if args.redis else "one process, MemoryStore",
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
    }
    try:
        # Baseline: a bare python-socketio server, same clients, same machine, same run.
        port = free_port()
        base = Process(
            [sys.executable, "bench/_baseline_sio.py", "--port", str(port)],
            env,
            workdir / "baseline.log",
        )
        try:
            url = f"http://127.0.0.1:{port}"
            result["baseline_capacity"] = capacity(
                base, url, [None] * args.clients, knock=False, workers=args.workers
            )
            result["baseline_echo_ms"] = asyncio.run(baseline_latency(url, args.samples))
        finally:
            base.stop()

        procs, seeded, urls = gateways(env, workdir, args.clients, two=False, tag="cap")
        try:
            paths: list[str | None] = [p for _, p in seeded["clients"]]
            result["gateway_capacity"] = capacity(
                procs[0], urls[0], paths, knock=True, workers=args.workers
            )
        finally:
            for proc in procs:
                proc.stop()
        if redis is not None:
            asyncio.run(_flush(env["QUIETROOM_REDIS_URL"]))

        total = args.waiting + args.samples
        procs, seeded, urls = gateways(env, workdir, total, two=args.redis, tag="lat")
        try:
            clients = seeded["clients"]
            load = Load(urls[0], urls[0], [p for _, p in clients[: args.waiting]], knock=True,
                        workers=args.workers)  # fmt: skip
            try:
                connected, _ = load.connected()
                result["latency_waiting"] = connected
                result["latency"] = asyncio.run(
                    latency(urls[0], urls[-1], [tuple(c) for c in clients[args.waiting :]],
                            seeded["host_path"], seeded["host_secret"], settings)
                )  # fmt: skip
            finally:
                load.stop()
        finally:
            for proc in procs:
                proc.stop()
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait()
    cap, basecap = result["gateway_capacity"], result["baseline_capacity"]
    result["ratios"] = {
        "memory_per_client_vs_baseline": round(
            cap["kib_per_client"] / max(basecap["kib_per_client"], 0.01), 2
        ),
        "knock_to_host_p50_vs_echo_p50": round(
            result["latency"]["knock_to_host_ms"]["p50"] / result["baseline_echo_ms"]["p50"], 2
        ),
    }
    return result


async def _flush(url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    await client.flushall()
    await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=10_000, help="waiting clients to hold")
    parser.add_argument("--waiting", type=int, default=1_000, help="waiting during latency runs")
    parser.add_argument("--samples", type=int, default=100, help="latency samples")
    parser.add_argument("--workers", type=int, default=2, help="load processes")
    parser.add_argument("--redis", action="store_true", help="two gateway processes on Redis")
    args = parser.parse_args()
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
