"""The room forwarder against in-memory legs: rewriting, RTCP, slots, closing."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
    pack_rtcp_packet,
)

from gateway.media.forwarder import RoomForwarder
from gateway.media.reasons import MediaCloseReason
from gateway.media.tracks import MediaKind
from tests.media_plane.fakes import (
    VP8_CONTINUATION,
    VP8_DELTA_START,
    VP8_KEYFRAME_START,
    Clock,
    extension_map,
    extensions,
    h264,
    published,
    rtp,
    rtx,
    subscribed,
    vp8,
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def forwarder(clock: Clock) -> RoomForwarder:
    return RoomForwarder(room_id="rm_1", monotonic=clock)


def parse(data: bytes) -> RtpPacket:
    return RtpPacket.parse(data, extension_map(extensions()))


async def test_rewrites_to_the_subscriber_leg(forwarder: RoomForwarder) -> None:
    source, _ = published()
    target, sink = subscribed(mid="7")
    await forwarder.publish(source)
    await forwarder.add_subscriber(target)

    await forwarder.on_rtp(source, rtp(100, ts=5000, payload=VP8_KEYFRAME_START))
    await forwarder.on_rtp(source, rtp(101, ts=8000, payload=VP8_DELTA_START))

    first, second = (parse(d) for d in sink.sent)
    assert (first.ssrc, first.payload_type) == (0xAAAA, 120)
    assert first.payload == VP8_KEYFRAME_START
    assert first.extensions.mid == "7"
    assert first.extensions.abs_send_time is not None
    assert second.sequence_number == (first.sequence_number + 1) % 65536
    assert (second.timestamp - first.timestamp) % (1 << 32) == 3000
    # The extension ids are the subscriber leg's (4 for the MID), not the publisher's.
    assert RtpPacket.parse(sink.sent[0], extension_map(extensions(mid=1))).extensions.mid is None
    assert forwarder.stats.packets_out == 2
    assert sink.counts == (2, len(VP8_KEYFRAME_START) + len(VP8_DELTA_START))


async def test_sequence_and_timestamp_continue_across_an_ssrc_change(
    forwarder: RoomForwarder, clock: Clock
) -> None:
    source, _ = published()
    target, sink = subscribed()
    await forwarder.publish(source)
    await forwarder.add_subscriber(target)
    await forwarder.on_rtp(source, rtp(100, ts=1000, payload=VP8_KEYFRAME_START))
    await forwarder.on_rtp(source, rtp(101, ts=4000))
    clock.now += 0.5
    # The publisher reconnects: a new SSRC with unrelated numbers.
    await forwarder.on_rtp(
        source, rtp(40000, ts=7_000_000, ssrc=0x9999, payload=VP8_KEYFRAME_START)
    )
    await forwarder.on_rtp(source, rtp(40001, ts=7_003_000, ssrc=0x9999))

    packets = [parse(d) for d in sink.sent]
    seqs = [p.sequence_number for p in packets]
    assert [(s - seqs[0]) % 65536 for s in seqs] == [0, 1, 2, 3]
    assert {p.ssrc for p in packets} == {0xAAAA}
    # About half a second of 90 kHz ticks between the old stream's last and the new first.
    assert (packets[2].timestamp - packets[1].timestamp) % (1 << 32) == 45000
    assert (packets[3].timestamp - packets[2].timestamp) % (1 << 32) == 3000


async def test_a_new_subscriber_gets_video_from_a_keyframe_after_one_pli(
    forwarder: RoomForwarder,
) -> None:
    source, feedback = published()
    await forwarder.publish(source)
    await forwarder.on_rtp(source, rtp(1, payload=VP8_KEYFRAME_START))
    target, sink = subscribed()
    await forwarder.add_subscriber(target)
    assert feedback.keyframes == [0x1111]

    await forwarder.on_rtp(source, rtp(2, ts=2000, payload=VP8_DELTA_START))
    await forwarder.on_rtp(source, rtp(3, ts=2000, payload=VP8_CONTINUATION))
    assert sink.sent == []
    assert forwarder.stats.held_for_keyframe == 2
    await forwarder.on_rtp(source, rtp(4, ts=3000, payload=VP8_KEYFRAME_START))
    await forwarder.on_rtp(source, rtp(5, ts=3000, payload=VP8_CONTINUATION))
    assert [parse(d).payload for d in sink.sent] == [VP8_KEYFRAME_START, VP8_CONTINUATION]
    # The held packets asked again, but within the interval: one PLI in all.
    assert feedback.keyframes == [0x1111]


async def test_each_new_subscriber_triggers_a_pli_at_once(forwarder: RoomForwarder) -> None:
    source, feedback = published()
    await forwarder.publish(source)
    await forwarder.on_rtp(source, rtp(1, payload=VP8_KEYFRAME_START))
    for name in ("ptc_b", "ptc_c"):
        target, _ = subscribed(name)
        await forwarder.add_subscriber(target)
    assert feedback.keyframes == [0x1111, 0x1111]


async def test_subscriber_plis_are_rate_limited_per_publisher_track(
    forwarder: RoomForwarder, clock: Clock
) -> None:
    source, feedback = published()
    target, _ = subscribed()
    await forwarder.publish(source)
    await forwarder.add_subscriber(target)
    await forwarder.on_rtp(source, rtp(1, payload=VP8_KEYFRAME_START))
    feedback.keyframes.clear()
    clock.now += 1
    pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=5, media_ssrc=0xAAAA)
    for _ in range(5):
        await forwarder.on_subscriber_rtcp(target, pli)
        clock.now += 0.05
    assert len(feedback.keyframes) == 1
    assert forwarder.stats.keyframe_requests_suppressed == 4
    # The suppressed request is remembered and goes out once the interval has passed.
    clock.now += 0.5
    await forwarder.on_rtp(source, rtp(2, ts=2000))
    assert len(feedback.keyframes) == 2
    # A keyframe that came meanwhile answers any request still pending.
    await forwarder.on_subscriber_rtcp(target, pli)
    await forwarder.on_rtp(source, rtp(3, ts=3000, payload=VP8_KEYFRAME_START))
    clock.now += 1
    await forwarder.on_rtp(source, rtp(4, ts=4000))
    assert len(feedback.keyframes) == 2


async def test_fir_from_a_subscriber_becomes_a_pli(forwarder: RoomForwarder, clock: Clock) -> None:
    source, feedback = published()
    target, _ = subscribed()
    await forwarder.publish(source)
    await forwarder.add_subscriber(target)
    await forwarder.on_rtp(source, rtp(1, payload=VP8_KEYFRAME_START))
    clock.now += 1
    fir = RtcpPsfbPacket(
        fmt=RTCP_PSFB_FIR, ssrc=5, media_ssrc=0, fci=struct.pack("!LB3x", 0xAAAA, 1)
    )
    await forwarder.on_subscriber_rtcp(target, fir)
    assert feedback.keyframes == [0x1111, 0x1111]


async def _stream(forwarder: RoomForwarder, count: int, first_seq: int = 10):  # type: ignore[no-untyped-def]
    source, feedback = published()
    target, sink = subscribed()
    await forwarder.publish(source)
    await forwarder.add_subscriber(target)
    for n in range(count):
        payload = VP8_KEYFRAME_START if n == 0 else VP8_DELTA_START + bytes([n])
        await forwarder.on_rtp(
            source, rtp((first_seq + n) % 65536, ts=1000 + 3000 * n, payload=payload)
        )
    return source, feedback, target, sink


async def test_nacks_are_answered_with_rtx(forwarder: RoomForwarder) -> None:
    _source, _fb, target, sink = await _stream(forwarder, 5)
    sent = [parse(d) for d in sink.sent]
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=5, media_ssrc=0xAAAA)
    nack.lost = [sent[2].sequence_number]
    await forwarder.on_subscriber_rtcp(target, nack)

    resent = parse(sink.sent[-1])
    assert (resent.ssrc, resent.payload_type) == (0xBBBB, 121)
    assert resent.timestamp == sent[2].timestamp
    assert resent.extensions.mid == "3"
    assert resent.payload == struct.pack("!H", sent[2].sequence_number) + sent[2].payload
    assert forwarder.stats.retransmissions_sent == 1
    # Asked again at once: not resent until the resend interval has passed.
    await forwarder.on_subscriber_rtcp(target, nack)
    assert forwarder.stats.retransmissions_sent == 1


async def test_nacks_are_answered_plainly_without_rtx(forwarder: RoomForwarder) -> None:
    source, _ = published()
    target, sink = subscribed(codecs=vp8(120, rtx=None))
    await forwarder.publish(source)
    await forwarder.add_subscriber(target)
    await forwarder.on_rtp(source, rtp(1, payload=VP8_KEYFRAME_START))
    await forwarder.on_rtp(source, rtp(2, ts=4000))
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=5, media_ssrc=0xAAAA)
    nack.lost = [parse(sink.sent[0]).sequence_number, 12345]
    await forwarder.on_subscriber_rtcp(target, nack)
    assert sink.sent[-1] == sink.sent[0]
    assert forwarder.stats.retransmissions_missed == 1


async def test_nacks_across_the_sequence_wrap(forwarder: RoomForwarder) -> None:
    source, _ = published()
    target, sink = subscribed()
    target.rewriter = type(target.rewriter)(90000, first_seq=65534)
    await forwarder.publish(source)
    await forwarder.add_subscriber(target)
    for n in range(5):
        payload = VP8_KEYFRAME_START if n == 0 else VP8_DELTA_START
        await forwarder.on_rtp(source, rtp(7 + n, ts=1000 + 90 * n, payload=payload))
    assert [parse(d).sequence_number for d in sink.sent] == [65534, 65535, 0, 1, 2]
    # pid 65535 with bits for +1 and +2: aiortc's parser says 65536 and 65537.
    wire = pack_rtcp_packet(205, RTCP_RTPFB_NACK, struct.pack("!LLHH", 5, 0xAAAA, 65535, 0b11))
    (nack,) = RtcpPacket.parse(wire)
    assert isinstance(nack, RtcpRtpfbPacket)
    assert nack.lost == [65535, 65536, 65537]
    await forwarder.on_subscriber_rtcp(target, nack)
    originals = [struct.unpack("!H", parse(d).payload[:2])[0] for d in sink.sent[5:]]
    assert originals == [65535, 0, 1]


async def test_publisher_retransmissions_are_unwrapped_and_forwarded(
    forwarder: RoomForwarder,
) -> None:
    source, feedback = published()
    target, sink = subscribed()
    await forwarder.publish(source)
    await forwarder.add_subscriber(target)
    await forwarder.on_rtp(source, rtp(1, payload=VP8_KEYFRAME_START))
    await forwarder.on_rtp(source, rtp(2, ts=4000))
    await forwarder.on_rtp(source, rtp(5, ts=7000))
    # The gap (3, 4) is NACKed upstream on the publisher's media SSRC.
    assert feedback.nacks == [(0x1111, [3, 4])]
    await forwarder.on_rtp(source, rtx(900, 3, payload=VP8_DELTA_START + b"three", ts=4000))
    late = parse(sink.sent[-1])
    first = parse(sink.sent[0])
    assert late.sequence_number == (first.sequence_number + 2) % 65536
    assert late.payload == VP8_DELTA_START + b"three"
    assert (late.ssrc, late.payload_type) == (0xAAAA, 120)
    assert forwarder.stats.retransmissions_received == 1


async def test_remb_minimum_goes_to_the_publisher(forwarder: RoomForwarder, clock: Clock) -> None:
    source, feedback = published()
    fast, _ = subscribed("ptc_b")
    slow, _ = subscribed("ptc_c", ssrc=0xCCCC)
    await forwarder.publish(source)
    await forwarder.add_subscriber(fast)
    await forwarder.add_subscriber(slow)
    await forwarder.on_rtp(source, rtp(1, payload=VP8_KEYFRAME_START))

    def remb(bitrate: int, ssrc: int) -> RtcpPsfbPacket:
        return RtcpPsfbPacket(
            fmt=RTCP_PSFB_APP, ssrc=5, media_ssrc=0, fci=pack_remb_fci(bitrate, [ssrc])
        )

    await forwarder.on_subscriber_rtcp(fast, remb(2_000_000, 0xAAAA))
    await forwarder.on_subscriber_rtcp(slow, remb(300_000, 0xCCCC))
    assert [b for b, _ in feedback.rembs][-1] == pytest.approx(300_000, rel=0.01)
    assert feedback.rembs[-1][1] == [0x1111]
    sent = len(feedback.rembs)
    # A rise within the interval waits; a fall goes at once.
    await forwarder.on_subscriber_rtcp(slow, remb(400_000, 0xCCCC))
    assert len(feedback.rembs) == sent
    await forwarder.on_subscriber_rtcp(slow, remb(100_000, 0xCCCC))
    assert feedback.rembs[-1][0] == pytest.approx(100_000, rel=0.01)
    clock.now += 1.5
    await forwarder.on_subscriber_rtcp(slow, remb(400_000, 0xCCCC))
    assert feedback.rembs[-1][0] == pytest.approx(400_000, rel=0.01)


async def test_sender_reports_carry_the_publishers_mapping(forwarder: RoomForwarder) -> None:
    source, _ = published()
    target, sink = subscribed()
    await forwarder.publish(source)
    await forwarder.add_subscriber(target)
    await forwarder.on_rtp(source, rtp(1, ts=90_000, payload=VP8_KEYFRAME_START))
    out = parse(sink.sent[0])
    offset = (out.timestamp - 90_000) % (1 << 32)
    ntp = 0xE000_0000_8000_0000
    report = RtcpSrPacket(
        ssrc=0x1111,
        sender_info=RtcpSenderInfo(
            ntp_timestamp=ntp, rtp_timestamp=123_456, packet_count=1, octet_count=10
        ),
    )
    await forwarder.on_publisher_rtcp(source, report)
    assert sink.reports[-1] == (ntp, (123_456 + offset) % (1 << 32))
    # A report about another SSRC (not what the subscriber currently gets) changes nothing.
    await forwarder.on_publisher_rtcp(
        source, RtcpSrPacket(ssrc=0x5555, sender_info=report.sender_info)
    )
    assert len(sink.reports) == 2


async def test_no_common_codec_means_no_packets(forwarder: RoomForwarder) -> None:
    source, _ = published()
    target, sink = subscribed(codecs=h264())
    await forwarder.publish(source)
    await forwarder.add_subscriber(target)
    await forwarder.on_rtp(source, rtp(1, payload=VP8_KEYFRAME_START))
    assert sink.sent == []
    assert forwarder.stats.not_forwarded == 1


async def test_unknown_payload_types_are_dropped(forwarder: RoomForwarder) -> None:
    source, _ = published()
    await forwarder.publish(source)
    await forwarder.on_rtp(source, rtp(1, pt=50))
    assert forwarder.stats.unknown_payload == 1
    assert forwarder.stats.packets_in == 0


async def test_audio_is_forwarded_from_the_first_packet(forwarder: RoomForwarder) -> None:
    source, _ = published(kind=MediaKind.AUDIO)
    target, sink = subscribed(kind=MediaKind.AUDIO)
    await forwarder.publish(source)
    await forwarder.add_subscriber(target)
    packet = rtp(1, pt=111, payload=b"\xfc opus")
    packet.extensions.audio_level = (True, 30)
    await forwarder.on_rtp(source, packet)
    out = parse(sink.sent[0])
    assert out.payload_type == 109
    assert out.extensions.audio_level == (True, 30)


async def test_a_leg_that_cannot_send_counts_as_not_forwarded(forwarder: RoomForwarder) -> None:
    source, _ = published(kind=MediaKind.AUDIO)
    target, sink = subscribed(kind=MediaKind.AUDIO)
    sink.connected = False
    await forwarder.publish(source)
    await forwarder.add_subscriber(target)
    await forwarder.on_rtp(source, rtp(1, pt=111, payload=b"x"))
    assert forwarder.stats.not_forwarded == 1
    assert target.counters.dropped == 1


async def test_slots_are_filled_from_other_participants(forwarder: RoomForwarder) -> None:
    mine, _ = published("ptc_b", name="v")
    theirs, _ = published("ptc_a", name="v")
    third, _ = published("ptc_c", name="v")
    slot_1, _ = subscribed("ptc_b", name="s1")
    slot_2, _ = subscribed("ptc_b", name="s2")
    await forwarder.add_subscriber(slot_1)
    await forwarder.add_subscriber(slot_2)
    await forwarder.publish(mine)
    assert slot_1.source is None  # never one's own media
    await forwarder.publish(theirs)
    await forwarder.publish(third)
    assert {slot_1.source, slot_2.source} == {theirs, third}
    await forwarder.remove_participant("ptc_a")
    freed = slot_1 if slot_1.source is None else slot_2
    assert freed.source is None
    late, _ = published("ptc_d", name="v")
    await forwarder.publish(late)
    assert freed.source is late
    # Audio slots take only audio.
    audio_slot, _ = subscribed("ptc_b", kind=MediaKind.AUDIO, name="a")
    await forwarder.add_subscriber(audio_slot)
    assert audio_slot.source is None


async def test_audio_and_video_slots_pair_up_per_participant(forwarder: RoomForwarder) -> None:
    slots = {
        (kind, number): subscribed("ptc_x", kind=kind, name=f"{kind.value}{number}", slot=number)[0]
        for number in (0, 1)
        for kind in (MediaKind.AUDIO, MediaKind.VIDEO)
    }
    for slot in slots.values():
        await forwarder.add_subscriber(slot)
    # The first to arrive has its camera off: their video slot waits for them.
    voice_only, _ = published("ptc_p1", kind=MediaKind.AUDIO, name="a")
    await forwarder.publish(voice_only)
    both_audio, _ = published("ptc_p2", kind=MediaKind.AUDIO, name="a")
    both_video, _ = published("ptc_p2", kind=MediaKind.VIDEO, name="v")
    await forwarder.publish(both_video)
    await forwarder.publish(both_audio)
    assert slots[MediaKind.AUDIO, 0].source is voice_only
    assert slots[MediaKind.VIDEO, 0].source is None
    assert slots[MediaKind.AUDIO, 1].source is both_audio
    assert slots[MediaKind.VIDEO, 1].source is both_video
    # The first one's camera comes on: it joins its own audio's pair.
    camera, _ = published("ptc_p1", kind=MediaKind.VIDEO, name="v")
    await forwarder.publish(camera)
    assert slots[MediaKind.VIDEO, 0].source is camera


async def test_the_host_is_shown_to_everyone_even_with_every_slot_taken(
    forwarder: RoomForwarder,
) -> None:
    # A client with two slot pairs, in a session of three other clients and the host.
    slots = {
        (kind, number): subscribed("ptc_x", kind=kind, name=f"{kind.value}{number}", slot=number)[0]
        for number in (0, 1)
        for kind in (MediaKind.AUDIO, MediaKind.VIDEO)
    }
    for slot in slots.values():
        await forwarder.add_subscriber(slot)
    clients = {}
    for name in ("ptc_c1", "ptc_c2", "ptc_c3"):
        for kind in (MediaKind.AUDIO, MediaKind.VIDEO):
            clients[name, kind] = published(name, kind=kind, name=kind.value)[0]
            await forwarder.publish(clients[name, kind])
    shown = {t.source.participant_id for t in slots.values() if t.source is not None}
    assert shown == {"ptc_c1", "ptc_c2"}

    # The host's media arrives last (or comes back after a reconnect): the pair filled
    # last gives way, and its video waits for the host's camera.
    host_audio, _ = published("ptc_host", kind=MediaKind.AUDIO, name="a", featured=True)
    await forwarder.publish(host_audio)
    assert slots[MediaKind.AUDIO, 1].source is host_audio
    assert slots[MediaKind.VIDEO, 1].source is None
    assert slots[MediaKind.AUDIO, 0].source is clients["ptc_c1", MediaKind.AUDIO]
    host_video, _ = published("ptc_host", kind=MediaKind.VIDEO, name="v", featured=True)
    await forwarder.publish(host_video)
    assert slots[MediaKind.VIDEO, 1].source is host_video
    assert forwarder._targets[clients["ptc_c2", MediaKind.VIDEO].track_id] == []

    # The host reconnects: while away a client takes the pair; back, the host takes it again.
    await forwarder.remove_tracks([host_audio.track_id, host_video.track_id])
    assert slots[MediaKind.AUDIO, 1].source is not None
    assert slots[MediaKind.AUDIO, 1].source.participant_id != "ptc_host"
    again_audio, _ = published("ptc_host", kind=MediaKind.AUDIO, name="a2", featured=True)
    again_video, _ = published("ptc_host", kind=MediaKind.VIDEO, name="v2", featured=True)
    await forwarder.publish(again_video)
    await forwarder.publish(again_audio)
    pair = {t.source.participant_id for t in slots.values() if t.slot == 1 and t.source}
    assert pair == {"ptc_host"}
    assert slots[MediaKind.VIDEO, 1].source is again_video
    assert slots[MediaKind.AUDIO, 1].source is again_audio


async def test_a_free_pair_takes_the_host_before_other_clients(forwarder: RoomForwarder) -> None:
    slot, _ = subscribed("ptc_x", kind=MediaKind.AUDIO, name="a0", slot=0)
    client, _ = published("ptc_c1", kind=MediaKind.AUDIO, name="a")
    host, _ = published("ptc_host", kind=MediaKind.AUDIO, name="a", featured=True)
    await forwarder.publish(client)
    await forwarder.publish(host)
    await forwarder.add_subscriber(slot)
    assert slot.source is host


async def test_removed_subscriber_gets_nothing_more(forwarder: RoomForwarder) -> None:
    source, _ = published(kind=MediaKind.AUDIO)
    target, sink = subscribed(kind=MediaKind.AUDIO)
    await forwarder.publish(source)
    await forwarder.add_subscriber(target)
    await forwarder.remove_tracks([target.track_id])
    await forwarder.on_rtp(source, rtp(1, pt=111, payload=b"x"))
    assert sink.sent == []
    assert target.source is None


async def test_close_is_safe_twice_and_stops_forwarding(forwarder: RoomForwarder) -> None:
    source, _ = published(kind=MediaKind.AUDIO)
    target, sink = subscribed(kind=MediaKind.AUDIO)
    await forwarder.publish(source)
    await forwarder.add_subscriber(target)
    forwarder.close(MediaCloseReason.SESSION_ENDED)
    forwarder.close(MediaCloseReason.SHUTDOWN)
    assert forwarder.closed is MediaCloseReason.SESSION_ENDED
    await forwarder.on_rtp(source, rtp(1, pt=111, payload=b"x"))
    await forwarder.on_subscriber_rtcp(
        target, RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=2)
    )
    await forwarder.publish(published("ptc_z")[0])
    assert sink.sent == []
    assert forwarder.published == []


async def test_publishing_a_track_twice_is_refused(forwarder: RoomForwarder) -> None:
    source, _ = published()
    await forwarder.publish(source)
    with pytest.raises(ValueError, match="already published"):
        await forwarder.publish(source)


async def test_a_new_ssrc_mid_stream_restarts_from_a_keyframe(forwarder: RoomForwarder) -> None:
    source, feedback = published()
    target, sink = subscribed()
    await forwarder.publish(source)
    await forwarder.add_subscriber(target)
    await forwarder.on_rtp(source, rtp(1, payload=VP8_KEYFRAME_START))
    await forwarder.on_rtp(source, rtp(500, ssrc=0x7777, ts=9000, payload=VP8_DELTA_START))
    assert len(sink.sent) == 1
    assert feedback.keyframes == [0x1111, 0x7777]
    await forwarder.on_rtp(source, rtp(501, ssrc=0x7777, ts=12000, payload=VP8_KEYFRAME_START))
    assert len(sink.sent) == 2


async def test_rtx_padding_probes_are_ignored(forwarder: RoomForwarder) -> None:
    source, _ = published()
    await forwarder.publish(source)
    await forwarder.on_rtp(source, rtp(1, payload=VP8_KEYFRAME_START))
    await forwarder.on_rtp(source, rtp(2, ssrc=0x2222, pt=97, payload=b""))
    assert forwarder.stats.unknown_payload == 0
    assert forwarder.stats.packets_in == 1
