"""Media-plane tests: real aiortc peers through the gateway, only ever on loopback.

WebRTC peers try every address they know, so these tests refuse to run unless the
process sits in a network namespace whose only interface is loopback::

    unshare --net -- sh -c 'ip link set lo up && exec .venv/bin/pytest tests/media_plane'

(``scripts/dev.sh test`` runs the whole suite that way when it runs as root.)
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.media.codecs import VideoCodec
from tests.media_plane.harness import LoopbackRoom
from tests.media_plane.media import Clip, make_opus_clip, make_video_clip

NAMESPACE_HINT = (
    "the media-plane tests start WebRTC peers, which send to every address they know; "
    "run them in a network namespace with only loopback, e.g. as root: "
    "unshare --net -- sh -c 'ip link set lo up && exec .venv/bin/pytest tests/media_plane'"
)


def non_loopback_interfaces() -> list[str]:
    """Names of every network interface but loopback."""
    return [name for _index, name in socket.if_nameindex() if name != "lo"]


@pytest.fixture(autouse=True, scope="session")
def _loopback_only_namespace() -> None:
    others = non_loopback_interfaces()
    if others:
        pytest.fail(
            f"not in a loopback-only network namespace (also has {', '.join(others)}): "
            + NAMESPACE_HINT,
            pytrace=False,
        )


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def vp8_clip(clip_dir: Path) -> Clip:
    return make_video_clip(clip_dir / "clip.ivf", "vp8", seconds=6)


@pytest.fixture(scope="session")
def h264_clip(clip_dir: Path) -> Clip:
    return make_video_clip(clip_dir / "clip.h264", "h264", seconds=6)


@pytest.fixture(scope="session")
def opus_clip(clip_dir: Path) -> Clip:
    return make_opus_clip(clip_dir / "tone.ogg", seconds=2)


@pytest.fixture
async def room() -> AsyncIterator[LoopbackRoom]:
    room = LoopbackRoom(video_codecs=(VideoCodec.VP8,))
    try:
        yield room
    finally:
        await room.close()


@pytest.fixture
async def h264_room() -> AsyncIterator[LoopbackRoom]:
    room = LoopbackRoom(video_codecs=(VideoCodec.H264,))
    try:
        yield room
    finally:
        await room.close()
