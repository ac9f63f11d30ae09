"""Recording a real call: a running gateway, a host and a client as aiortc peers sending
VP8 (or H.264) and Opus over the real sockets, and the sealed file the gateway writes.

Recording is refused until everyone consents; a withdrawal stops it within a second; the
sealed file holds no container bytes and cannot be opened without the key;
``quietroom recordings export`` turns it into a file PyAV decodes, video and audio; the
recording's record links the consents to the sealed file's hash; and a draining process
(SIGTERM) seals what it is recording.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import av
import pytest

from gateway.domain.model import RoomPolicy
from gateway.domain.recording import RECORDING_CONSENT, Recording, StopReason
from gateway.errors import RecordingKeyUnknown
from gateway.media.codecs import VideoCodec
from gateway.media.sealed import RecordingKeyring, open_sealed, sealed_hash
from gateway.settings import new_data_key, new_recording_key, new_secret_key
from gateway.web.keys import LIFECYCLE
from tests.gateway_harness import RunningGateway, SocketClient, running_gateway
from tests.media_plane.harness import LOOPBACK, Caller, wait_for
from tests.media_plane.media import Clip

pytestmark = [pytest.mark.timeout(120), pytest.mark.integration]

log = logging.getLogger(__name__)

EBML_MAGIC = b"\x1a\x45\xdf\xa3"
VERSION = RECORDING_CONSENT.version


@asynccontextmanager
async def recording_gateway(directory: Path, key: str) -> AsyncIterator[RunningGateway]:
    async with running_gateway(
        media_addresses=[LOOPBACK],
        media_allow_loopback=True,
        recording_keys=[key],
        recording_dir=str(directory),
    ) as gateway:
        yield gateway


@asynccontextmanager
async def a_call(
    gateway: RunningGateway, video: Clip, audio: Clip, *, video_codec: VideoCodec | None = None
) -> AsyncIterator[tuple[Any, Caller, Caller]]:
    """An admitted client and the host, both sending and receiving media."""
    seeded = await gateway.seed(policy=RoomPolicy(recording_allowed=True))
    host_browser = await gateway.signed_in_host(seeded)
    host = Caller(await host_browser.socket("/host"), video, audio, video_codec=video_codec)
    _, client_sock = await gateway.verified_client(seeded)
    client = Caller(client_sock, video, audio, video_codec=video_codec)
    try:
        assert (await host.sock.call("admit", {"participant_id": seeded.client.id}))["ok"]
        assert (await client.offer())["ok"]
        assert (await host.offer())["ok"]
        assert await wait_for(
            lambda: all(
                side.received[kind].count >= 10
                for side in (host, client)
                for kind in ("video", "audio")
            ),
            timeout=20,
        ), "media did not flow"
        yield seeded, host, client
    finally:
        await client.close()
        await host.close()


def time_events(sock: SocketClient, name: str) -> tuple[list[tuple[float, Any]], asyncio.Event]:
    """Every ``name`` event with when it arrived (also kept in ``sock.received``), and
    an event set at the first one."""
    arrivals: list[tuple[float, Any]] = []
    arrived = asyncio.Event()

    async def record(data: Any = None) -> None:
        arrivals.append((time.monotonic(), data))
        sock.received.append((name, data))
        arrived.set()

    sock.sio.on(name, record, namespace=sock.namespace)
    return arrivals, arrived


async def consent(sock: SocketClient, given: bool) -> dict[str, Any]:
    answer = await sock.call("consent.recording", {"version": VERSION, "given": given})
    assert answer["ok"], answer
    return dict(answer)


async def export(sealed: Path, out: Path, key: str) -> str:
    """``quietroom recordings export`` as an operator runs it."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "QUIETROOM_SECRET_KEYS": new_secret_key(),
        "QUIETROOM_DATA_KEYS": new_data_key(),
        "QUIETROOM_RECORDING_KEYS": key,
    }
    command = Path(sys.executable).with_name("quietroom")
    process = await asyncio.create_subprocess_exec(
        str(command),
        "recordings",
        "export",
        str(sealed),
        str(out),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


def decoded_frames(path: Path) -> dict[str, int]:
    """Decoded frames per stream: ``video:<codec>`` and ``audio<n>:<codec>``."""
    counts: dict[str, int] = {}
    with av.open(str(path)) as container:
        names = {}
        audio = 0
        for stream in container.streams:
            if stream.type == "video":
                names[stream.index] = f"video:{stream.codec_context.name}"
            else:
                names[stream.index] = f"audio{audio}:{stream.codec_context.name}"
                audio += 1
            counts[names[stream.index]] = 0
        for packet in container.demux():
            if packet.size:
                counts[names[packet.stream.index]] += len(packet.decode())
    return counts


async def finished(gateway: RunningGateway, recording_id: str) -> Recording:
    record = await gateway.services.store.get_recording(recording_id)
    assert record is not None
    assert not record.active
    assert record.sealed is not None
    return record


async def test_refused_without_consent_then_recorded_and_stopped_by_a_withdrawal(
    tmp_path: Path, vp8_clip: Clip, opus_clip: Clip
) -> None:
    directory = tmp_path / "recordings"
    key = new_recording_key()
    async with (
        recording_gateway(directory, key) as gateway,
        a_call(gateway, vp8_clip, opus_clip) as (seeded, host, client),
    ):
        # Nobody agreed: refused, naming both (host first), and nothing on disk.
        refused = await host.sock.call("recording.start")
        assert refused["error"]["code"] == "consent_missing"
        assert refused["error"]["lacking"] == [seeded.host.id, seeded.client.id]
        await consent(client.sock, True)
        refused = await host.sock.call("recording.start")
        assert refused["error"]["lacking"] == [seeded.host.id]
        assert not directory.exists() or os.listdir(directory) == []

        await consent(host.sock, True)
        started = await host.sock.call("recording.start")
        assert started["ok"], started
        recording_id = started["recording_id"]
        await client.sock.wait_for("recording", lambda r: r == {"active": True})
        await asyncio.sleep(3)  # about 90 video frames and 150 audio frames each

        stops, stopped = time_events(client.sock, "recording")
        sent = time.monotonic()
        await consent(client.sock, False)
        acked = time.monotonic()
        async with asyncio.timeout(5):
            await stopped.wait()
        stopped_at, payload = stops[0]
        assert payload == {"active": False}
        latency = stopped_at - sent
        log.info(
            "recording stopped %.1f ms after the withdrawal was sent (%.1f ms after its ack)",
            latency * 1000,
            (stopped_at - acked) * 1000,
        )
        assert stopped_at - acked < 1.5
        assert latency < 1.5
        await host.sock.wait_for("recording", lambda r: r == {"active": False})

        record = await finished(gateway, recording_id)
        assert record.stop_reason is StopReason.CONSENT_WITHDRAWN
        assert record.sealed is not None
        sealed = directory / record.sealed.file_name
        assert sealed.name == f"{recording_id}.sealed"
        assert os.listdir(directory) == [sealed.name]  # no temporary file left behind

        # The consents it rests on are linked to the sealed file's hash.
        consents = await gateway.services.store.list_consents(seeded.appointment.id)
        assert record.sealed.sealed_hash == sealed_hash(sealed)
        assert {c.participant_id for c in record.consents} == {seeded.host.id, seeded.client.id}
        assert all(any(link.matches(c) for c in consents) for link in record.consents)
        entries = await gateway.services.store.read_audit(after_seq=0, limit=10_000)
        stopped_entry = next(e for e in entries if e.action == "recording.stopped")
        assert stopped_entry.subjects["sealed_hash"] == record.sealed.sealed_hash
        assert stopped_entry.subjects["reason"] == "consent_withdrawn"

    # Sealed: no container bytes, no media bytes, useless without the key.
    content = sealed.read_bytes()
    assert EBML_MAGIC not in content
    assert b"OpusHead" not in content
    for data, _key in vp8_clip.frames[:3]:
        assert data[len(data) // 2 : len(data) // 2 + 24] not in content
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(sealed)).close()
    with pytest.raises(RecordingKeyUnknown):
        open_sealed(sealed, keyring=RecordingKeyring.from_text([new_recording_key()]))

    # An authorised operator exports it; the result plays.
    out = tmp_path / "session.webm"
    printed = await export(sealed, out, key)
    assert recording_id in printed
    assert out.read_bytes().startswith(EBML_MAGIC)
    frames = decoded_frames(out)
    assert set(frames) == {"video:vp8", "audio0:opus", "audio1:opus"}
    assert frames["video:vp8"] >= 45  # 3 s at 30 fps, with a generous margin
    assert frames["audio0:opus"] >= 75  # the host, 20 ms frames
    assert frames["audio1:opus"] >= 75  # the client


async def test_h264_is_recorded_into_matroska_and_the_host_stops_it(
    tmp_path: Path, h264_clip: Clip, opus_clip: Clip
) -> None:
    directory = tmp_path / "recordings"
    key = new_recording_key()
    async with (
        recording_gateway(directory, key) as gateway,
        a_call(gateway, h264_clip, opus_clip, video_codec=VideoCodec.H264) as (_, host, client),
    ):
        await consent(client.sock, True)
        await consent(host.sock, True)
        started = await host.sock.call("recording.start")
        assert started["ok"], started
        await asyncio.sleep(2)
        assert await host.sock.call("recording.stop") == {"ok": True}
        await client.sock.wait_for("recording", lambda r: r == {"active": False})
        record = await finished(gateway, started["recording_id"])
        assert record.stop_reason is StopReason.HOST
        assert record.sealed is not None
        sealed = directory / record.sealed.file_name
    assert EBML_MAGIC not in sealed.read_bytes()
    out = tmp_path / "session.mkv"
    await export(sealed, out, key)
    with av.open(str(out)) as container:
        assert "matroska" in container.format.name
        assert container.streams.video[0].codec_context.name == "h264"
    frames = decoded_frames(out)
    assert frames["video:h264"] >= 30
    assert frames["audio0:opus"] >= 50
    assert frames["audio1:opus"] >= 50


async def test_a_draining_process_seals_the_recording(
    tmp_path: Path, vp8_clip: Clip, opus_clip: Clip
) -> None:
    directory = tmp_path / "recordings"
    key = new_recording_key()
    async with (
        recording_gateway(directory, key) as gateway,
        a_call(gateway, vp8_clip, opus_clip) as (_, host, client),
    ):
        await consent(client.sock, True)
        await consent(host.sock, True)
        started = await host.sock.call("recording.start")
        assert started["ok"], started
        await asyncio.sleep(1.5)
        assert gateway.app is not None
        # What SIGTERM does first (gateway.web.serve): the closers run, media still up.
        await gateway.app[LIFECYCLE].drain()
        record = await finished(gateway, started["recording_id"])
        assert record.stop_reason is StopReason.SHUTDOWN
        assert record.sealed is not None
        sealed = directory / record.sealed.file_name
    out = tmp_path / "session.webm"
    await export(sealed, out, key)
    frames = decoded_frames(out)
    assert frames["video:vp8"] >= 20
    assert frames["audio0:opus"] >= 40
