"""gateway/media/counters.py, compiled (as CI builds it) and as the plain Python file.

Both must behave alike: the Python path and the tests use one, a machine without a C
compiler the other.
"""

from __future__ import annotations

from types import ModuleType

import pytest

from gateway.media import counters, nack, receive_statistics, rtp_history, rtp_rewriter
from gateway.media.tracks import MediaKind
from tests.media_plane.plain import as_plain_python

PLAIN = as_plain_python(counters)


@pytest.mark.parametrize("module", [counters, nack, receive_statistics, rtp_history, rtp_rewriter])
def test_ci_runs_the_modules_the_compiled_path_needs_compiled(module: ModuleType) -> None:
    # CI builds them (scripts/dev.sh installs a C compiler); _native refuses to load
    # without them, and test_native.py says so too.
    assert not module.__file__.endswith(".py")
    assert PLAIN.__file__.endswith(".py")


@pytest.mark.parametrize("module", [counters, PLAIN], ids=["compiled", "python"])
def test_counters_start_at_zero_add_compare_and_print_alike(module: ModuleType) -> None:
    track = module.TrackCounters()
    assert set(track.as_dict().values()) == {0}
    track.packets += 2
    track.octets += 1200
    assert track.as_dict() == {
        "packets": 2,
        "octets": 1200,
        "dropped": 0,
        "retransmissions": 0,
        "nacks": 0,
        "keyframe_requests": 0,
    }
    other = module.TrackCounters()
    assert track != other
    other.packets, other.octets = 2, 1200
    assert track == other
    assert track != object()
    assert repr(track) == (
        "TrackCounters(packets=2, octets=1200, dropped=0, retransmissions=0, nacks=0, "
        "keyframe_requests=0)"
    )
    with pytest.raises(TypeError):
        hash(track)
    with pytest.raises(AttributeError):
        track.packet = 1  # a misspelt counter is an error, not a new attribute

    stats = module.ForwarderStats()
    assert len(stats.as_dict()) == 21
    assert set(stats.as_dict().values()) == {0}
    stats.video_packets_out += 3
    stats.video_octets_out += 3000
    stats.audio_packets_out += 1
    assert stats.by_kind() == {MediaKind.AUDIO: (1, 0), MediaKind.VIDEO: (3, 3000)}
    assert stats != module.ForwarderStats()
    assert repr(stats).startswith("ForwarderStats(packets_in=0, octets_in=0, ")


def test_both_have_the_same_counters() -> None:
    assert counters.TrackCounters().as_dict() == PLAIN.TrackCounters().as_dict()
    assert counters.ForwarderStats().as_dict() == PLAIN.ForwarderStats().as_dict()


def test_compiled_counters_hold_what_c_can_add_to() -> None:
    track = counters.TrackCounters()
    track.octets = (1 << 64) - 1
    assert track.octets == (1 << 64) - 1
    with pytest.raises(OverflowError):
        track.packets = -1
    with pytest.raises(TypeError):
        track.packets = None  # type: ignore[assignment]
