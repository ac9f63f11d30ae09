"""bench/relay.py still runs: one session through the forwarder for a few seconds.

No timing is asserted (the benchmark's numbers belong in docs/BENCHMARKS.md); this only
checks that packets were forwarded and that the JSON has the fields the write-up reads.
Like the media-plane tests, it needs a loopback-only network namespace.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_relay_bench_forwards_one_session(tmp_path: Path) -> None:
    out = tmp_path / "relay.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.relay",
            "--sessions",
            "1",
            "--seconds",
            "3",
            "--warmup",
            "2",
            "--baseline-sessions",
            "0",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(out.read_text())
    [phase] = result["phases"]
    assert phase["gateway"] == "forwarder"
    assert phase["sessions"] == 1
    assert phase["packets_out"] > 0
    assert phase["forwarder"]["packets_in"] > 0
    assert phase["cpu_us_per_packet_out"] > 0
    assert phase["sessions_per_core"] > 0
    assert phase["latency"]["samples"] > 0
    assert {"p50_ms", "p99_ms"} <= phase["latency"].keys()
    assert {"expected", "received", "percent"} <= phase["loss"].keys()
    assert phase["loss"]["received"] > 0
    assert result["ratios"] == {}
    assert "forwarder" in completed.stdout
