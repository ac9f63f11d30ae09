"""An SDP offer from a browser, checked before aiortc sees it.

aiortc's SDP parser trusts its input (it asserts, indexes and unpacks freely), so an
offer is first held to a size cap and a line grammar here, its candidates are filtered
by the :class:`~gateway.media.ice_policy.CandidatePolicy`, and only then is it parsed;
anything the parser raises becomes one :class:`~gateway.errors.SdpRejected`. The
structure the gateway needs is checked last: bundled DTLS-SRTP media with rtcp-mux, ICE
credentials and a fingerprint, unique MIDs. Reasons are short fixed phrases: an SDP
holds addresses, so none of it is ever quoted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiortc import sdp as aiortc_sdp

from gateway.errors import SdpRejected
from gateway.media.ice_policy import CandidatePolicy

__all__ = [
    "MAX_MEDIA_SECTIONS",
    "MAX_OFFER_BYTES",
    "CheckedOffer",
    "MediaSection",
    "check_candidate",
    "check_offer",
]

#: Larger offers are refused before anything parses them.
MAX_OFFER_BYTES = 64 * 1024
MAX_MEDIA_SECTIONS = 16
_MAX_CANDIDATES = 64
_MEDIA_PROFILE = "UDP/TLS/RTP/SAVPF"
_FINGERPRINT_ALGORITHMS = frozenset({"sha-256", "sha-384", "sha-512"})
_LINE = re.compile(r"[a-z]=[\x20-\x7e]*")
_CANDIDATE_PREFIX = "a=candidate:"

# What aiortc's parser is known to raise on malformed input.
_PARSE_ERRORS = (
    AssertionError,
    AttributeError,
    IndexError,
    KeyError,
    LookupError,
    StopIteration,
    TypeError,
    ValueError,
)


@dataclass(frozen=True, slots=True)
class MediaSection:
    """One audio or video m-line, as the browser offered it."""

    kind: str
    mid: str
    #: The browser's direction: ``sendonly`` means it publishes, ``recvonly`` it subscribes.
    direction: str


@dataclass(frozen=True, slots=True)
class CheckedOffer:
    #: The offer as aiortc gets it: normalised line ends, refused candidates removed.
    sdp: str
    sections: tuple[MediaSection, ...]
    dropped_candidates: int


def check_candidate(value: str, policy: CandidatePolicy) -> bool:
    """Whether one ``candidate:`` attribute value is well formed and allowed by ``policy``."""
    bits = value.split()
    if len(bits) < 8 or bits[6] != "typ" or len(bits) > 32:
        return False
    component, transport, priority, address, port = bits[1], bits[2], bits[3], bits[4], bits[5]
    if not (component.isdigit() and priority.isdigit() and port.isdigit()):
        return False
    if not (1 <= int(component) <= 256 and 1 <= int(port) <= 65535 and int(priority) < 1 << 32):
        return False
    if bits[7] not in {"host", "srflx", "prflx", "relay"}:
        return False
    for name, field in zip(bits[8::2], bits[9::2], strict=False):
        if name == "rport" and not (field.isdigit() and int(field) <= 65535):
            return False
    return policy.permits(address, protocol=transport)


def check_offer(sdp: object, sdp_type: object, *, policy: CandidatePolicy) -> CheckedOffer:
    """The offer, checked and filtered; :class:`SdpRejected` if it cannot be answered."""
    if sdp_type != "offer":
        raise SdpRejected(reason="not an offer")
    if not isinstance(sdp, str):
        raise SdpRejected(reason="not text")
    if len(sdp) > MAX_OFFER_BYTES:
        raise SdpRejected(reason="too large")
    try:
        size = len(sdp.encode("utf-8"))
    except UnicodeEncodeError:
        raise SdpRejected(reason="not UTF-8") from None
    if size > MAX_OFFER_BYTES:
        raise SdpRejected(reason="too large")

    kept: list[str] = []
    dropped = 0
    candidates = 0
    for raw in sdp.split("\n"):
        line = raw.removesuffix("\r")
        if not line:
            continue
        if not _LINE.fullmatch(line):
            raise SdpRejected(reason="malformed line")
        if line.startswith(_CANDIDATE_PREFIX):
            candidates += 1
            if candidates > _MAX_CANDIDATES:
                raise SdpRejected(reason="too many candidates")
            if not check_candidate(line[len(_CANDIDATE_PREFIX) :], policy):
                dropped += 1
                continue
        kept.append(line)
    if not kept or not kept[0].startswith("v="):
        raise SdpRejected(reason="malformed")
    text = "\r\n".join(kept) + "\r\n"

    try:
        description = aiortc_sdp.SessionDescription.parse(text)
    except _PARSE_ERRORS:
        raise SdpRejected(reason="malformed") from None

    sections = _check_structure(description)
    return CheckedOffer(sdp=text, sections=sections, dropped_candidates=dropped)


def _check_structure(description: aiortc_sdp.SessionDescription) -> tuple[MediaSection, ...]:
    media = description.media
    if not media:
        raise SdpRejected(reason="no media")
    if len(media) > MAX_MEDIA_SECTIONS:
        raise SdpRejected(reason="too many media sections")
    bundle = next((g for g in description.group if g.semantic == "BUNDLE"), None)
    bundled = {str(item) for item in bundle.items} if bundle is not None else set()
    sections: list[MediaSection] = []
    mids: set[str] = set()
    for m in media:
        mid = m.rtp.muxId
        if not mid or mid in mids:
            raise SdpRejected(reason="missing or repeated mid")
        mids.add(mid)
        if mid not in bundled:
            raise SdpRejected(reason="media not bundled")
        if m.ice is None or not m.ice.usernameFragment or not m.ice.password:
            raise SdpRejected(reason="no ICE credentials")
        if m.dtls is None or not any(
            f.algorithm.lower() in _FINGERPRINT_ALGORITHMS for f in m.dtls.fingerprints
        ):
            raise SdpRejected(reason="no DTLS fingerprint or setup")
        if m.port == 0:
            raise SdpRejected(reason="rejected media section")
        if m.kind == "application":
            continue
        if m.kind not in {"audio", "video"}:
            raise SdpRejected(reason="unsupported media kind")
        if m.profile != _MEDIA_PROFILE:
            raise SdpRejected(reason="media is not DTLS-SRTP")
        if not m.rtcp_mux:
            raise SdpRejected(reason="rtcp-mux required")
        if not m.rtp.codecs:
            raise SdpRejected(reason="no codecs")
        sections.append(MediaSection(kind=m.kind, mid=mid, direction=m.direction or "sendrecv"))
    if not sections:
        raise SdpRejected(reason="no audio or video")
    return tuple(sections)
