"""Packet taps on the room forwarder (what the recorder listens with), on in-memory legs."""

from __future__ import annotations

from aiortc.rtp import RtpPacket

from gateway.media.codecs import CodecFormat
from gateway.media.forwarder import RoomForwarder
from gateway.media.tracks import PublishedTrack
from tests.media_plane.fakes import (
    VP8_DELTA_START,
    VP8_KEYFRAME_START,
    Clock,
    published,
    rtp,
    rtx,
    subscribed,
)


class Tap:
    def __init__(self, *, wants_keyframe: bool = False) -> None:
        self.seen: list[tuple[str, str, int, int]] = []
        self.wants_keyframe = wants_keyframe

    def __call__(self, source: PublishedTrack, fmt: CodecFormat, packet: RtpPacket) -> bool:
        self.seen.append(
            (source.track_id, fmt.mime_type, packet.payload_type, packet.sequence_number)
        )
        return self.wants_keyframe


async def test_a_tap_sees_every_publisher_packet_even_without_subscribers() -> None:
    forwarder = RoomForwarder(room_id="rm_1", monotonic=Clock())
    source, _ = published()
    await forwarder.publish(source)
    tap = Tap()
    forwarder.add_tap(tap)
    forwarder.add_tap(tap)  # once is enough
    await forwarder.on_rtp(source, rtp(1))
    await forwarder.on_rtp(source, rtx(50, 2))  # a retransmission, unwrapped
    await forwarder.on_rtp(source, rtp(3, pt=55))  # a payload type nobody negotiated
    assert tap.seen == [("ptc_a/1", "video/vp8", 96, 1), ("ptc_a/1", "video/vp8", 96, 2)]
    forwarder.remove_tap(tap)
    await forwarder.on_rtp(source, rtp(4))
    assert len(tap.seen) == 2


async def test_a_tap_that_wants_a_keyframe_gets_one_asked_at_most_every_interval() -> None:
    clock = Clock()
    forwarder = RoomForwarder(room_id="rm_1", monotonic=clock, keyframe_interval=0.5)
    source, feedback = published()
    await forwarder.publish(source)
    tap = Tap(wants_keyframe=True)
    forwarder.add_tap(tap)
    for seq in range(1, 5):
        await forwarder.on_rtp(source, rtp(seq, payload=VP8_DELTA_START))
    assert feedback.keyframes == [0x1111]
    clock.now += 0.6
    await forwarder.on_rtp(source, rtp(5, payload=VP8_DELTA_START))
    assert feedback.keyframes == [0x1111, 0x1111]
    tap.wants_keyframe = False
    clock.now += 0.6
    await forwarder.on_rtp(source, rtp(6, payload=VP8_KEYFRAME_START))
    assert len(feedback.keyframes) == 2


async def test_with_subscribers_the_tap_and_forwarding_both_work() -> None:
    clock = Clock()
    forwarder = RoomForwarder(room_id="rm_1", monotonic=clock)
    source, _ = published()
    target, sink = subscribed()
    await forwarder.publish(source)
    await forwarder.add_subscriber(target)
    tap = Tap()
    forwarder.add_tap(tap)
    await forwarder.on_rtp(source, rtp(1, payload=VP8_KEYFRAME_START))
    await forwarder.on_rtp(source, rtp(2, payload=VP8_DELTA_START, ts=4000))
    assert len(sink.sent) == 2
    assert [seen[3] for seen in tap.seen] == [1, 2]


async def test_a_failing_tap_is_removed_and_forwarding_goes_on() -> None:
    forwarder = RoomForwarder(room_id="rm_1", monotonic=Clock())
    source, _ = published()
    target, sink = subscribed()
    await forwarder.publish(source)
    await forwarder.add_subscriber(target)

    def broken(source: PublishedTrack, fmt: CodecFormat, packet: RtpPacket) -> bool:
        raise RuntimeError("boom")

    good = Tap()
    forwarder.add_tap(broken)
    forwarder.add_tap(good)
    await forwarder.on_rtp(source, rtp(1, payload=VP8_KEYFRAME_START))
    await forwarder.on_rtp(source, rtp(2, payload=VP8_DELTA_START, ts=4000))
    assert len(sink.sent) == 2
    assert len(good.seen) == 2


async def test_without_taps_nothing_changes_for_a_lone_publisher() -> None:
    forwarder = RoomForwarder(room_id="rm_1", monotonic=Clock())
    source, feedback = published()
    await forwarder.publish(source)
    source.keyframe_wanted = True
    await forwarder.on_rtp(source, rtp(1, payload=VP8_DELTA_START))
    assert feedback.keyframes == []
