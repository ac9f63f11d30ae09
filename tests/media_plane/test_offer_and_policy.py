"""Offers checked before aiortc parses them, and the candidate policy, tried to break."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import InvalidInput, SdpRejected
from gateway.media.ice_policy import CandidatePolicy, MediaNetwork
from gateway.media.offer import MAX_OFFER_BYTES, check_candidate, check_offer

STRICT = CandidatePolicy.build(denied_ranges=["10.0.0.0/8", "fd00::/8"])
LOOPBACK_OK = CandidatePolicy.build(allow_loopback=True)

OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=msid-semantic:WMS *",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=sendonly",
        "a=mid:0",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=candidate:1 1 udp 2130706431 203.0.113.7 50000 typ host",
        "a=candidate:2 1 udp 2130706431 127.0.0.1 50001 typ host",
        "a=candidate:3 1 udp 2130706431 10.1.2.3 50002 typ host",
        "a=candidate:4 1 udp 2130706431 abcd-1234.local 50003 typ host",
        "a=candidate:5 1 udp 2130706431 ::ffff:127.0.0.1 50004 typ host",
        "a=candidate:6 1 udp 2130706431 169.254.1.1 50005 typ host",
        "a=candidate:7 1 tcp 2130706431 203.0.113.7 9 typ host tcptype active",
        "a=candidate:8 1 udp 2130706431 0.0.0.0 50006 typ host",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
        "a=setup:actpass",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        "a=recvonly",
        "a=mid:1",
        "a=rtcp-mux",
        "a=rtpmap:96 VP8/90000",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
        "a=setup:actpass",
        "",
    ]
)


def test_a_good_offer_keeps_only_allowed_candidates() -> None:
    checked = check_offer(OFFER, "offer", policy=STRICT)
    assert [(s.kind, s.mid, s.direction) for s in checked.sections] == [
        ("audio", "0", "sendonly"),
        ("video", "1", "recvonly"),
    ]
    assert "203.0.113.7 50000" in checked.sdp
    for refused in (
        "127.0.0.1",
        "10.1.2.3",
        ".local",
        "::ffff:",
        "169.254.",
        "tcp",
        "0.0.0.0 50006",
    ):
        assert refused not in checked.sdp.split("a=ice-ufrag")[0].split("a=rtpmap")[1]
    assert checked.dropped_candidates == 7


def test_loopback_is_kept_only_when_allowed() -> None:
    checked = check_offer(OFFER, "offer", policy=LOOPBACK_OK)
    assert "127.0.0.1 50001" in checked.sdp
    assert "::ffff:127.0.0.1" in checked.sdp


@pytest.mark.parametrize(
    ("sdp", "sdp_type", "reason"),
    [
        (OFFER, "answer", "not an offer"),
        (OFFER.encode(), "offer", "not text"),
        (None, "offer", "not text"),
        ("v=0\r\n" + "a=x\r\n" * (MAX_OFFER_BYTES // 4), "offer", "too large"),
        ("é" * (MAX_OFFER_BYTES // 2 + 1), "offer", "too large"),
        ("v=0\r\n\x00\r\n", "offer", "malformed line"),
        ("hello", "offer", "malformed line"),
        ("", "offer", "malformed"),
        ("s=-\r\nv=0\r\n", "offer", "malformed"),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "offer", "no media"),
        (OFFER.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0"), "offer", "media not bundled"),
        (OFFER.replace("a=mid:1", "a=mid:0"), "offer", "missing or repeated mid"),
        (
            OFFER.replace("a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n", ""),
            "offer",
            "no ICE credentials",
        ),
        (OFFER.replace("a=setup:actpass", "a=setup:sideways"), "offer", "malformed"),
        (
            OFFER.replace("a=fingerprint:sha-256", "a=fingerprint:md5"),
            "offer",
            "no DTLS fingerprint or setup",
        ),
        (OFFER.replace("UDP/TLS/RTP/SAVPF 96", "RTP/AVP 96"), "offer", "media is not DTLS-SRTP"),
        (OFFER.replace("a=rtcp-mux\r\na=rtpmap:96", "a=rtpmap:96"), "offer", "rtcp-mux required"),
        (OFFER.replace("m=video 9", "m=video 0"), "offer", "rejected media section"),
        (
            OFFER.replace("m=video 9 UDP/TLS/RTP/SAVPF 96", "m=video 9 UDP/TLS/RTP/SAVPF 73"),
            "offer",
            "malformed",
        ),
        (OFFER.replace("a=rtpmap:96 VP8/90000", "a=rtpmap:96 VP8"), "offer", "malformed"),
        (OFFER.replace("c=IN IP4 0.0.0.0", "c=IN IP4"), "offer", "malformed"),
        (OFFER + "a=fmtp:55 x=1\r\n", "offer", "malformed"),
        (OFFER.replace("m=audio", "m=text"), "offer", "unsupported media kind"),
    ],
)
def test_bad_offers_are_refused_with_one_error(sdp: object, sdp_type: str, reason: str) -> None:
    with pytest.raises(SdpRejected) as refused:
        check_offer(sdp, sdp_type, policy=STRICT)
    assert refused.value.reason == reason
    assert isinstance(refused.value, InvalidInput)
    assert refused.value.code == "sdp_rejected"


_sdp_lines = st.lists(
    st.one_of(
        st.sampled_from(OFFER.split("\r\n")),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(
            lambda s: "a=" + s
        ),
        st.sampled_from(
            [
                "m=audio 9 UDP/TLS/RTP/SAVPF 0",
                "a=fmtp:96 apt=x",
                "a=rtcp-fb:* nack",
                "a=ssrc:1",
                "a=ssrc-group:FID x",
            ]
        ),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_sdp_lines)
def test_fuzzed_offers_raise_nothing_but_sdp_rejected(lines: list[str]) -> None:
    with contextlib.suppress(SdpRejected):
        check_offer("\r\n".join(["v=0", *lines]), "offer", policy=STRICT)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_raises_nothing_but_sdp_rejected(text: str) -> None:
    with contextlib.suppress(SdpRejected):
        check_offer(text, "offer", policy=STRICT)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("203.0.113.7", True),
        ("2001:db8::7", True),
        ("127.0.0.1", False),
        ("127.8.9.10", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:203.0.113.7", True),
        ("0.0.0.0", False),
        ("::", False),
        ("169.254.169.254", False),
        ("fe80::1", False),
        ("fe80::1%eth0", False),
        ("224.0.0.251", False),
        ("255.255.255.255", False),
        ("240.0.0.1", False),
        ("10.9.8.7", False),
        ("fd12::1", False),
        ("192.168.1.10", True),
        ("host.local", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_candidate_policy(address: str, allowed: bool) -> None:
    assert STRICT.permits(address) is allowed


def test_candidate_policy_loopback_only_when_allowed() -> None:
    assert LOOPBACK_OK.permits("127.0.0.1")
    assert LOOPBACK_OK.permits("::ffff:127.0.0.1")
    assert not LOOPBACK_OK.permits("127.0.0.1", protocol="tcp")
    assert not LOOPBACK_OK.permits("0.0.0.0")


@pytest.mark.parametrize(
    "value",
    [
        "1 1 udp 2130706431 203.0.113.7 50000 typ host",
        "1 1 UDP 2130706431 203.0.113.7 50000 typ srflx raddr 0.0.0.0 rport 0",
    ],
)
def test_well_formed_candidates(value: str) -> None:
    assert check_candidate(value, STRICT)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1 1 udp 1 203.0.113.7 50000 host",
        "1 x udp 1 203.0.113.7 50000 typ host",
        "1 1 udp 1 203.0.113.7 0 typ host",
        "1 1 udp 1 203.0.113.7 70000 typ host",
        "1 1 udp 99999999999 203.0.113.7 5 typ host",
        "1 1 udp 1 203.0.113.7 5 typ nonsense",
        "1 1 udp 1 203.0.113.7 5 typ srflx rport x",
    ],
)
def test_malformed_candidates(value: str) -> None:
    assert not check_candidate(value, STRICT)


def test_media_network_refuses_what_settings_refuse() -> None:
    with pytest.raises(ValueError, match="loopback"):
        MediaNetwork.build(addresses=["127.0.0.1"])
    with pytest.raises(ValueError, match="unspecified"):
        MediaNetwork.build(addresses=["0.0.0.0"], allow_loopback=True)
    network = MediaNetwork.build(addresses=["127.0.0.1", "2001:db8::1"], allow_loopback=True)
    assert network.is_own("127.0.0.1")
    assert network.is_own("2001:0db8::1")
    assert not network.is_own("127.0.0.2")
    assert not network.is_own("nonsense")
