"""Relay benchmark: gateway CPU per forwarded packet, sessions per core, added latency, loss.

    python -m bench.relay --sessions 8 --seconds 30 --baseline-sessions 1 --json relay.json

N one-to-one sessions, each two aiortc clients sending each other pre-encoded 720p VP8
(about 1.5 Mbit/s) and Opus, go through a gateway in its own process: Quietroom's
packet forwarder (GatewayPeer + RoomForwarder, one event loop), then, in the same run
and with the same load, aiortc's decode-and-re-encode MediaRelay as the baseline.
Clients live in separate load processes and never decode what they receive.

Over a steady-state window after a warm-up it reports the gateway process's CPU time
(user + system, all threads) per forwarded packet, the sessions one core could carry at
that cost, the time a packet spends inside the gateway (from the kernel's receipt of
its datagram to the rewritten copy handed to the socket; see bench/_relay_probe.py),
p50 and p99, and loss (RTP sequence numbers the subscribers expected against packets
they received). The gateway runs on its own event loop, with the default poll interval
(``--poll-interval-us``). ``--no-poll-interval`` forwards once more with a poll each
time asyncio asks; ``--uvloop`` once more on uvloop; ``--python-path`` once more with the
compiled path off (every packet on Python, as on a gateway built without a C compiler);
``--janus`` runs the same sessions through Janus's VideoRoom (Debian's janus package)
for comparison.

WebRTC peers send to every address they know, so everything stays in a network
namespace with nothing but loopback (``--janus`` adds a veth pair inside it, with
addresses from the benchmarking range 198.18.0.0/15). Run as root, the benchmark makes
that namespace itself (``unshare --net``, then ``ip link set lo up``) and re-runs
itself inside; otherwise start it inside one, as ``scripts/dev.sh test`` does for the
tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench._relay_gateway import (
    FORWARDER_COUNTERS,
    LOOPBACK,
    SIDES,
    ForwardingGateway,
    Gateway,
    MediaRelayGateway,
    PythonForwardingGateway,
)
from bench._relay_janus import JanusClients, JanusServer, janus_available
from bench._relay_load import LoadPeers
from bench._relay_media import FPS, HEIGHT, VIDEO_BITRATE, WIDTH, cached_clips
from bench._relay_rpc import Worker, call_all
from gateway.settings import Settings
from tests.media_plane.media import Clip

#: Set in the environment of the copy of this benchmark that runs under ``unshare``.
_IN_NAMESPACE = "QUIETROOM_BENCH_NETNS"
#: Seconds allowed for negotiating and connecting, plus this much per session.
_CONNECT_TIMEOUT = 30.0
_CONNECT_PER_SESSION = 2.0
#: Seconds the clients' last packets get to arrive after they stop sending.
_DRAIN = 1.0
#: A forwarder keeps up if it sends at least this share of the packets its clients send.
_KEEPING_UP = 0.98
#: Janus's VideoRoom numbers rooms; the benchmark's start here, one per session.
_JANUS_ROOM = 1000


# --- the network namespace ----------------------------------------------------------------


def _other_interfaces() -> list[str]:
    return [name for _index, name in socket.if_nameindex() if name != "lo"]


def _loopback_works() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((LOOPBACK, 0))
            probe.sendto(b"", probe.getsockname())
        except OSError:
            return False
    return True


def ensure_loopback_only(argv: Sequence[str]) -> None:
    """Return inside a loopback-only network namespace; re-run under ``unshare`` if needed."""
    others = _other_interfaces()
    if not others and _loopback_works():
        return
    where = f"this network namespace has {', '.join(others)}" if others else "loopback is down"
    if os.environ.get(_IN_NAMESPACE):
        sys.exit(f"bench.relay: still not loopback-only after unshare ({where})")
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        sys.exit(
            f"bench.relay: {where}; run it as root (it then makes its own namespace), or "
            "inside one: unshare --net -- sh -c 'ip link set lo up && exec python -m "
            "bench.relay ...'"
        )
    os.environ[_IN_NAMESPACE] = "1"
    script = 'ip link set lo up && exec "$0" "$@"'
    os.execvp(  # noqa: S606 - this benchmark again, inside its own namespace
        "unshare",
        ["unshare", "--net", "--", "sh", "-c", script, sys.executable, "-m", "bench.relay", *argv],
    )


# --- one measured phase ---------------------------------------------------------------------


def _say(message: str) -> None:
    """Progress, on stderr: the table and JSON are the output."""
    print(f"bench.relay: {message}", file=sys.stderr, flush=True)


def _machine_busy() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


def _placement(sessions: int, loads: int) -> list[list[tuple[int, str]]]:
    """Which load process hosts which (session, side): the two sides apart when possible."""
    hosted: list[list[tuple[int, str]]] = [[] for _ in range(loads)]
    for index in range(sessions):
        for offset, side in enumerate(SIDES):
            hosted[(2 * index + offset) % loads].append((index, side))
    return hosted


def _wait_until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        time.sleep(0.25)


def _measure(
    label: str,
    *,
    sessions: int,
    loads: list[Worker],
    start_window: Callable[[], object],
    end_window: Callable[[], dict[str, Any]],
    copies_packets: bool,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Warm up, measure one window, then stop the clients and count what they got."""
    _say(f"{label}: connected; {args.warmup:g} s warm-up, then {args.seconds:g} s measured")
    time.sleep(args.warmup)
    busy_before, all_before = _machine_busy()
    start_window()
    before = call_all(loads, "counts")
    time.sleep(args.seconds)
    window = end_window()
    at_end = call_all(loads, "counts")
    busy_after, all_after = _machine_busy()
    # Loss counts what was still on its way when the window closed.
    call_all(loads, "stop_sending")
    time.sleep(_DRAIN)
    drained = call_all(loads, "counts")
    call_all(loads, "close")

    def clients(key: str, until: list[dict[str, float]]) -> float:
        return float(sum(a[key] - b[key] for a, b in zip(until, before, strict=True)))

    if window["packets_out"] is None:
        # Janus: what it forwarded is what the subscribers received.
        window["packets_out"] = int(clients("received", at_end))
        window["octets_out"] = int(clients("octets_received", at_end))
    return _phase_result(
        label,
        sessions=sessions,
        window=window,
        copies_packets=copies_packets,
        sent=int(clients("sent", at_end)),
        expected=int(clients("expected", drained)),
        received=int(clients("received", drained)),
        load_cpu=clients("cpu", at_end),
        machine_busy=busy_after - busy_before,
        machine_all=all_after - all_before,
    )


def run_phase(
    label: str,
    gateway_class: type[Gateway],
    *,
    sessions: int,
    loads: list[Worker],
    args: argparse.Namespace,
    use_uvloop: bool = False,
    poll_interval_us: int = 0,
) -> dict[str, Any]:
    """Connect ``sessions`` through a fresh gateway process, warm up, measure a window."""
    connect_timeout = _CONNECT_TIMEOUT + _CONNECT_PER_SESSION * sessions
    gateway = Worker(
        gateway_class,
        {},
        name=f"gateway ({label})",
        time_limit=connect_timeout + args.warmup + args.seconds + _DRAIN + 60,
        use_uvloop=use_uvloop,
        poll_interval_us=poll_interval_us,
    )
    _say(f"{label}: gateway process {gateway.pid}, {sessions} sessions")
    try:
        for load, hosted in zip(loads, _placement(sessions, len(loads)), strict=True):
            offers = load.call("offer", participants=[f"s{i}/{side}" for i, side in hosted])
            answers = {}
            for (index, side), (participant, sdp) in zip(hosted, offers.items(), strict=True):
                answers[participant] = gateway.call(
                    "answer", session=f"s{index}", side=side, sdp=sdp
                )
            load.call("accept", answers=answers)
        peers = 2 * sessions
        _wait_until(
            lambda: (
                gateway.call("connected") == peers and sum(call_all(loads, "connected")) == peers
            ),
            connect_timeout,
            f"{peers} peers did not connect",
        )
        return _measure(
            label,
            sessions=sessions,
            loads=loads,
            start_window=lambda: gateway.call("start_window"),
            end_window=lambda: gateway.call("end_window"),
            copies_packets=gateway_class.copies_packets,
            args=args,
        )
    finally:
        gateway.stop()


def run_janus_phase(
    *, sessions: int, clips: dict[str, Clip], args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """The same sessions through Janus's VideoRoom, with Janus-speaking load processes."""
    connect_timeout = _CONNECT_TIMEOUT + _CONNECT_PER_SESSION * sessions
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port = int(probe.getsockname()[1])
    janus = JanusServer(workdir, http_port=port)
    with janus.running():
        janus.create_rooms([_JANUS_ROOM + i for i in range(sessions)])
        loads = [
            Worker(
                JanusClients,
                {**clips, "url": janus.url},
                name=f"janus load {k}",
                time_limit=connect_timeout + args.warmup + args.seconds + _DRAIN + 60,
            )
            for k in range(args.load_processes)
        ]
        _say(f"Janus: {sessions} sessions")
        try:
            placement = _placement(sessions, len(loads))

            def feed(index: int, side: str) -> int:
                return 2 * index + SIDES.index(side) + 1

            for load, hosted in zip(loads, placement, strict=True):
                load.call("publish", feeds=[(_JANUS_ROOM + i, feed(i, s)) for i, s in hosted])
            # A feed can be subscribed to once its publisher's connection is up.
            _wait_until(
                lambda: sum(call_all(loads, "connected")) == 2 * sessions,
                connect_timeout,
                f"{2 * sessions} publishers did not connect to Janus",
            )
            for load, hosted in zip(loads, placement, strict=True):
                load.call(
                    "subscribe",
                    feeds=[
                        (_JANUS_ROOM + i, feed(i, s), feed(i, SIDES[1 - SIDES.index(s)]))
                        for i, s in hosted
                    ],
                )
            connections = 4 * sessions  # each client publishes on one, subscribes on another
            _wait_until(
                lambda: sum(call_all(loads, "connected")) == connections,
                connect_timeout,
                f"{connections} connections to Janus did not connect",
            )
            return _measure(
                "Janus",
                sessions=sessions,
                loads=loads,
                start_window=janus.start_window,
                end_window=janus.end_window,
                copies_packets=True,
                args=args,
            )
        finally:
            for load in loads:
                load.stop()


def _phase_result(
    label: str,
    *,
    sessions: int,
    window: dict[str, Any],
    copies_packets: bool,
    sent: int,
    expected: int,
    received: int,
    load_cpu: float,
    machine_busy: float,
    machine_all: float,
) -> dict[str, Any]:
    seconds = window["wall"]
    cpu = window["cpu"]
    packets_out = window["packets_out"]
    cores = os.cpu_count() or 1
    result: dict[str, Any] = {
        "gateway": label,
        "event_loop": window["event_loop"],
        "poll_interval_us": window.get("poll_interval_us", 0),
        "sessions": sessions,
        "window_seconds": round(seconds, 2),
        "gateway_cpu_seconds": round(cpu, 3),
        "gateway_cores": round(cpu / seconds, 3),
        "gateway_user_share": round(window["user"] / cpu, 3) if cpu else None,
        "packets_sent_by_clients": sent,
        "packets_out": packets_out,
        "cpu_us_per_packet_in": round(cpu * 1e6 / sent, 1) if sent else None,
        "cpu_us_per_packet_out": round(cpu * 1e6 / packets_out, 1) if packets_out else None,
        "packets_out_per_session_second": round(packets_out / sessions / seconds, 1),
        "packets_out_per_packet_sent": round(packets_out / sent, 3) if sent else None,
        # A forwarder that sends fewer packets than it is sent is saturated (it, or the
        # machine): its figures are then not capacity figures.
        "fell_behind": copies_packets and packets_out < _KEEPING_UP * sent,
        "payload_kbps_out_per_participant": round(
            window["octets_out"] * 8 / 1000 / seconds / (2 * sessions), 1
        ),
        "sessions_per_core": round(sessions * seconds / cpu, 1) if cpu else None,
        "latency": window["latency"],
        "loss": {
            "expected": expected,
            "received": received,
            "percent": round(100 * (expected - received) / expected, 3) if expected else None,
        },
        "load_cores": round(load_cpu / seconds, 3),
        "machine_busy_cores": round(cores * machine_busy / machine_all, 3) if machine_all else None,
    }
    forwarder = {key: window[key] for key in FORWARDER_COUNTERS if key in window}
    if forwarder:
        result["forwarder"] = forwarder
    return result


# --- the run ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    video, audio = cached_clips()
    clips = {"video": video, "audio": audio}
    interval = args.poll_interval_us
    # label, gateway, sessions, uvloop, poll interval
    phases: list[tuple[str, type[Gateway], int, bool, int]] = [
        ("forwarder", ForwardingGateway, args.sessions, False, interval)
    ]
    if args.uvloop:
        phases.append(("forwarder", ForwardingGateway, args.sessions, True, 0))
    if args.no_poll_interval:
        phases.append(("forwarder", ForwardingGateway, args.sessions, False, 0))
    if args.python_path:
        phases.append(("Python path", PythonForwardingGateway, args.sessions, False, interval))
    if args.baseline_sessions:
        phases.append(("MediaRelay", MediaRelayGateway, args.baseline_sessions, False, interval))
    budget = sum(
        _CONNECT_TIMEOUT
        + _CONNECT_PER_SESSION * phase[2]
        + args.warmup
        + args.seconds
        + _DRAIN
        + 60
        for phase in phases
    )
    loads = [
        Worker(LoadPeers, clips, name=f"load {k}", time_limit=budget)
        for k in range(args.load_processes)
    ]
    try:
        results = [
            run_phase(
                label,
                factory,
                sessions=n,
                loads=loads,
                args=args,
                use_uvloop=uvloop,
                poll_interval_us=poll,
            )
            for label, factory, n, uvloop, poll in phases
        ]
    finally:
        for load in loads:
            load.stop()
    if args.janus:
        with tempfile.TemporaryDirectory(prefix="qr-bench-janus-") as workdir:
            results.append(
                run_janus_phase(
                    sessions=args.sessions, clips=clips, args=args, workdir=Path(workdir)
                )
            )
    _say("done")
    return {
        "command": "python -m bench.relay " + " ".join(sys.argv[1:]),
        "machine": _machine(),
        "media": f"VP8 {WIDTH}x{HEIGHT} {FPS} fps {VIDEO_BITRATE // 1000} kbit/s + Opus, both ways",
        "load_processes": args.load_processes,
        "warmup_seconds": args.warmup,
        "phases": results,
        "ratios": _ratios(results),
    }


def _label(phase: dict[str, Any]) -> str:
    if phase["event_loop"].startswith("uvloop"):
        return f"{phase['gateway']} (uvloop)"
    if phase["gateway"] == "forwarder" and not phase.get("poll_interval_us", 0):
        return "forwarder (no poll interval)"
    return str(phase["gateway"])


def _ratios(results: list[dict[str, Any]]) -> dict[str, float]:
    """Each other phase's CPU against the forwarder's: per session, and per packet out."""
    forwarder = results[0]
    ratios = {}
    for phase in results[1:]:
        name = _label(phase).lower().replace(" (", "_").replace(")", "").replace(" ", "_")
        ratios[f"{name}_vs_forwarder_cpu_per_session"] = round(
            forwarder["sessions_per_core"] / phase["sessions_per_core"], 2
        )
        ratios[f"{name}_vs_forwarder_cpu_per_packet_out"] = round(
            phase["cpu_us_per_packet_out"] / forwarder["cpu_us_per_packet_out"], 2
        )
    return ratios


def _machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return (
        f"{platform.machine()} {model}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def _format_table(result: dict[str, Any]) -> str:
    phases = result["phases"]

    def latency(phase: dict[str, Any]) -> str:
        found = phase["latency"]
        if not found["samples"]:
            return "n/a"
        return f"{found['p50_ms']:.2f} / {found['p99_ms']:.2f} ms"

    def loss(phase: dict[str, Any]) -> str:
        percent = phase["loss"]["percent"]
        return "n/a" if percent is None else f"{percent:.3f} %"

    rows: list[tuple[str, Callable[[dict[str, Any]], object]]] = [
        ("sessions", lambda p: p["sessions"]),
        ("gateway CPU, cores", lambda p: p["gateway_cores"]),
        ("CPU us per forwarded packet", lambda p: p["cpu_us_per_packet_out"]),
        ("CPU us per packet the clients sent", lambda p: p["cpu_us_per_packet_in"]),
        ("packets out per session-second", lambda p: p["packets_out_per_session_second"]),
        ("packets out per packet sent", lambda p: p["packets_out_per_packet_sent"]),
        ("payload kbit/s to each participant", lambda p: p["payload_kbps_out_per_participant"]),
        (
            "sessions per core",
            lambda p: f"{p['sessions_per_core']}{' *' if p['fell_behind'] else ''}",
        ),
        ("added latency p50 / p99", latency),
        ("loss (RTP expected vs received)", loss),
        ("load processes, cores", lambda p: p["load_cores"]),
        ("machine busy, cores", lambda p: p["machine_busy_cores"]),
    ]
    width = max(len(name) for name, _ in rows) + 2
    column = max(18, *(len(_label(p)) + 2 for p in phases))
    lines = ["".ljust(width) + "".join(_label(p).rjust(column) for p in phases)]
    for name, value in rows:
        lines.append(name.ljust(width) + "".join(str(value(p)).rjust(column) for p in phases))
    if any(p["fell_behind"] for p in phases):
        lines.append(
            f"* fell behind: forwarded less than {_KEEPING_UP:.0%} of what the clients sent "
            "(the gateway or the machine was saturated); not a capacity figure"
        )
    for key, ratio in result["ratios"].items():
        lines.append(f"{key}: {ratio}")
    return "\n".join(lines)


def main() -> None:
    argv = sys.argv[1:]
    parser = argparse.ArgumentParser(
        prog="python -m bench.relay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sessions", type=int, default=8, help="one-to-one sessions forwarded")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the window")
    parser.add_argument(
        "--baseline-sessions", type=int, default=1, help="sessions through MediaRelay (0: none)"
    )
    parser.add_argument("--load-processes", type=int, default=2, help="client processes")
    parser.add_argument(
        "--uvloop", action="store_true", help="also forward with uvloop (pip install uvloop)"
    )
    parser.add_argument(
        "--poll-interval-us",
        type=int,
        default=Settings.__dataclass_fields__["media_poll_interval_us"].default,
        help="the gateway event loop's poll interval (QUIETROOM_MEDIA_POLL_INTERVAL_US)",
    )
    parser.add_argument(
        "--no-poll-interval",
        action="store_true",
        help="also forward with the poll interval at 0 (a poll each time asyncio asks)",
    )
    parser.add_argument(
        "--python-path",
        action="store_true",
        help="also forward with the compiled path off (every packet on Python)",
    )
    parser.add_argument(
        "--janus",
        action="store_true",
        help="also measure Janus's VideoRoom with the same load (Debian package janus)",
    )
    parser.add_argument("--json", type=Path, help="write the full result here")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.baseline_sessions < 0 or args.load_processes < 1:
        parser.error("need at least one session and one load process")
    if args.uvloop:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            parser.error("--uvloop needs uvloop: .venv/bin/pip install uvloop")
    if args.janus and (reason := janus_available()) is not None:
        parser.error(f"--janus: {reason}")
    ensure_loopback_only(argv)
    result = run(args)
    print(_format_table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
