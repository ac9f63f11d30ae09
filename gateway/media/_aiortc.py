"""The one module that touches aiortc's and aioice's private API.

aiortc's public API decodes every incoming video frame and re-encodes for every sender;
a forwarding gateway needs the packets instead. Everything below leans on internals of
aiortc 1.16.0 and aioice 0.13, checked when this module is imported: a missing piece
raises :class:`ImportError` naming it, so an upgrade fails at start, not mid-call.

What is wrapped, and where aiortc does it:

* incoming RTP: ``RTCDtlsTransport._handle_rtp_data`` parses, ``RtpRouter.route_rtp``
  picks the receiver, ``RTCRtpReceiver._handle_rtp_packet`` feeds the jitter buffer and
  decoder thread. :func:`intercept_receiver` replaces that last method on one instance
  and stops the decoder thread as soon as ``receive()`` starts it, keeping only aiortc's
  receive statistics (its receiver reports still go out).
* outgoing RTP and RTCP: ``RTCDtlsTransport._send_rtp`` (SRTP protect, send).
* feedback from a subscriber: ``RTCRtpSender._handle_rtcp_packet``; FIR is not routed by
  aiortc (it looks at the media SSRC, which FIR leaves 0), so the transport's router is
  taught to route it by the SSRCs in its FCI.
* feedback to a publisher: ``RTCRtpReceiver._send_rtcp_pli``, ``_send_rtcp_nack`` and
  ``_send_rtcp`` (for REMB), sent with the receiver's RTCP SSRC.
* sender reports: ``RTCRtpSender._run_rtcp`` sends what it last noted in private fields;
  :class:`SenderSink` writes the forwarded stream's values there.
* host candidates: ``aioice.Connection.gather_candidates`` binds on
  ``get_host_addresses()`` (every interface but 127.0.0.1);
  :func:`restrict_gathering` makes one connection bind only on a given list.
"""

from __future__ import annotations

import inspect
import logging
import struct
from collections.abc import Awaitable, Callable, Iterable
from types import CodeType
from typing import Any, Final

import aioice
import aiortc
import pylibsrtp
from aioice import Connection, TransportPolicy
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc import rtcrtpreceiver as _receiver_module
from aiortc.rtcdtlstransport import RTCDtlsTransport, RtpRouter
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters, RTCRtpSendParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
)

__all__ = [
    "AIOICE_SERIES",
    "AIORTC_VERSION",
    "ReceiverFeedback",
    "SenderSink",
    "decoder_running",
    "drop_outgoing",
    "intercept_receiver",
    "intercept_sender",
    "local_candidate_addresses",
    "on_keyframe_request",
    "restrict_gathering",
    "sender_ssrcs",
]

log = logging.getLogger(__name__)

AIORTC_VERSION: Final = "1.16.0"
AIOICE_SERIES: Final = "0.13."

RtpCallback = Callable[[RtpPacket, int], Awaitable[None]]
RtcpCallback = Callable[[AnyRtcpPacket], Awaitable[None]]

# Name-mangled instance fields, read and written with getattr/setattr.
_RX_REMOTE_STREAMS: Final = "_RTCRtpReceiver__remote_streams"
_RX_RTCP_SSRC: Final = "_RTCRtpReceiver__rtcp_ssrc"
_RX_DECODER_THREAD: Final = "_RTCRtpReceiver__decoder_thread"
_TX_NTP: Final = "_RTCRtpSender__ntp_timestamp"
_TX_RTP: Final = "_RTCRtpSender__rtp_timestamp"
_TX_PACKETS: Final = "_RTCRtpSender__packet_count"
_TX_OCTETS: Final = "_RTCRtpSender__octet_count"

# Marks set on instances this module has already patched (idempotence).
_PATCHED: Final = "_quietroom_patched"


def _instance_fields(cls: type, method: str = "__init__") -> frozenset[str]:
    """Attribute names a method of ``cls`` stores or loads, nested code included."""
    names: set[str] = set()
    pending: list[CodeType] = [getattr(cls, method).__code__]
    while pending:
        code = pending.pop()
        names.update(code.co_names)
        pending.extend(c for c in code.co_consts if isinstance(c, CodeType))
    return frozenset(names)


def _parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


def _check_internals() -> list[str]:
    """Everything this module relies on that aiortc or aioice do not promise."""
    missing: list[str] = []
    if aiortc.__version__ != AIORTC_VERSION:
        missing.append(f"aiortc version {AIORTC_VERSION} (found {aiortc.__version__})")
    if not aioice.__version__.startswith(AIOICE_SERIES):
        missing.append(f"aioice version {AIOICE_SERIES}x (found {aioice.__version__})")
    methods: dict[type, dict[str, list[str] | None]] = {
        RTCRtpReceiver: {
            "_handle_rtp_packet": ["self", "packet", "arrival_time_ms"],
            "_handle_rtcp_packet": ["self", "packet"],
            "_handle_disconnect": ["self"],
            "_send_rtcp": ["self", "packet"],
            "_send_rtcp_pli": ["self", "media_ssrc"],
            "_send_rtcp_nack": ["self", "media_ssrc", "lost"],
            "receive": ["self", "parameters"],
        },
        RTCRtpSender: {
            "_handle_rtcp_packet": ["self", "packet"],
            "_send_keyframe": ["self"],
            "_run_rtcp": None,
            "send": ["self", "parameters"],
        },
        RTCDtlsTransport: {
            "_send_rtp": ["self", "data"],
            "_handle_rtp_data": ["self", "data", "arrival_time_ms"],
            "_handle_rtcp_data": ["self", "data"],
        },
        RtpRouter: {"route_rtcp": ["self", "packet"]},
        Connection: {
            "gather_candidates": ["self"],
            "get_component_candidates": ["self", "component", "addresses", "timeout"],
        },
    }
    for cls, wanted in methods.items():
        for name, parameters in wanted.items():
            function = getattr(cls, name, None)
            if function is None:
                missing.append(f"{cls.__name__}.{name}")
            elif parameters is not None and _parameters(function) != parameters:
                missing.append(f"{cls.__name__}.{name}({', '.join(parameters[1:])})")
    fields: list[tuple[type, str, tuple[str, ...]]] = [
        (RTCRtpReceiver, "__init__", (_RX_REMOTE_STREAMS, _RX_RTCP_SSRC, _RX_DECODER_THREAD)),
        (RTCRtpSender, "__init__", (_TX_NTP, _TX_RTP, _TX_PACKETS, _TX_OCTETS)),
        (RTCRtpSender, "__init__", ("_ssrc", "_rtx_ssrc", "_stream_id")),
        (RTCRtpSender, "_run_rtcp", (_TX_NTP, _TX_RTP, _TX_PACKETS, _TX_OCTETS)),
        (RTCDtlsTransport, "__init__", ("_rtp_router",)),
        (RtpRouter, "__init__", ("senders",)),
        (RTCIceTransport, "__init__", ("_connection", "_send")),
        (Connection, "__init__", ("_transport_policy",)),
        (Connection, "gather_candidates", ("get_component_candidates", "_transport_policy")),
    ]
    for cls, method, names in fields:
        present = _instance_fields(cls, method)
        missing.extend(
            f"{cls.__name__}.{method} using {name}" for name in names if name not in present
        )
    for name in ("StreamStatistics",):
        if not hasattr(_receiver_module, name):
            missing.append(f"aiortc.rtcrtpreceiver.{name}")
    return missing


_missing = _check_internals()
if _missing:
    raise ImportError(
        "gateway.media needs aiortc internals that are missing or changed: " + "; ".join(_missing)
    )


# --- receivers: the publisher's media, before aiortc's jitter buffer --------------------------


def intercept_receiver(
    receiver: RTCRtpReceiver,
    *,
    on_started: Callable[[RTCRtpReceiveParameters], Awaitable[None]],
    on_rtp: RtpCallback,
    on_rtcp: RtcpCallback,
) -> None:
    """Hand this receiver's RTP to ``on_rtp`` instead of aiortc's jitter buffer and decoder.

    Call before negotiation. When aiortc starts the receiver, its decoder thread is
    stopped at once (it never sees a packet) and ``on_started`` gets the negotiated
    parameters. aiortc's per-SSRC statistics are still fed, so its receiver reports
    keep going to the publisher. Every RTCP packet routed to this receiver (sender
    reports, BYE) goes to aiortc first and then to ``on_rtcp``.
    """
    if getattr(receiver, _PATCHED, False):
        raise RuntimeError("receiver already intercepted")
    setattr(receiver, _PATCHED, True)
    original_receive = receiver.receive
    original_rtcp = receiver._handle_rtcp_packet
    streams: dict[int, Any] = getattr(receiver, _RX_REMOTE_STREAMS)
    statistics = _receiver_module.StreamStatistics
    clock_rates: dict[int, int] = {}
    started = False

    async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
        stream = streams.get(packet.ssrc)
        if stream is None:
            clock_rate = clock_rates.get(packet.payload_type)
            if clock_rate is None:
                return
            stream = streams[packet.ssrc] = statistics(clock_rate)
        stream.add(packet)
        await on_rtp(packet, arrival_time_ms)

    async def handle_rtcp_packet(packet: AnyRtcpPacket) -> None:
        await original_rtcp(packet)
        await on_rtcp(packet)

    async def receive(parameters: RTCRtpReceiveParameters) -> None:
        nonlocal started
        if not started:
            clock_rates.update(
                {c.payloadType: c.clockRate for c in parameters.codecs if c.payloadType is not None}
            )
        await original_receive(parameters)
        # aiortc starts a decoder thread per receiver; forwarded media never reaches it.
        receiver._handle_disconnect()
        if not started:
            started = True
            await on_started(parameters)

    receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]
    receiver._handle_rtcp_packet = handle_rtcp_packet  # type: ignore[method-assign]
    receiver.receive = receive  # type: ignore[method-assign]


def decoder_running(receiver: RTCRtpReceiver) -> bool:
    """Whether aiortc's decoder thread exists for this receiver."""
    return getattr(receiver, _RX_DECODER_THREAD) is not None


class ReceiverFeedback:
    """RTCP toward a publisher, sent on the receiver's transport with its RTCP SSRC."""

    __slots__ = ("_receiver",)

    def __init__(self, receiver: RTCRtpReceiver) -> None:
        self._receiver = receiver

    async def request_keyframe(self, media_ssrc: int) -> None:
        """A picture loss indication (PLI) for ``media_ssrc``."""
        await self._receiver._send_rtcp_pli(media_ssrc)

    async def nack(self, media_ssrc: int, lost: list[int]) -> None:
        """A generic NACK for these sequence numbers of ``media_ssrc``."""
        await self._receiver._send_rtcp_nack(media_ssrc, lost)

    async def remb(self, bitrate: int, ssrcs: list[int]) -> None:
        """A receiver estimated maximum bitrate for ``ssrcs``."""
        rtcp_ssrc: int | None = getattr(self._receiver, _RX_RTCP_SSRC)
        if rtcp_ssrc is None:
            return
        packet = RtcpPsfbPacket(
            fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(bitrate, ssrcs)
        )
        await self._receiver._send_rtcp(packet)


# --- senders: the subscriber's leg ----------------------------------------------------------


def set_stream_id(sender: RTCRtpSender, stream_id: str) -> None:
    """Name the MediaStream the browser puts this sender's track in (the SDP's msid).

    aiortc gives every sender of a connection the same stream; a subscriber's audio and
    video slot that carry one participant share a stream of their own instead. Set it
    before the answer is created.
    """
    sender._stream_id = stream_id


def sender_ssrcs(sender: RTCRtpSender) -> tuple[int, int]:
    """The SSRC a sender announces for media, and the one for its retransmissions (RTX)."""
    return sender._ssrc, sender._rtx_ssrc


def intercept_sender(
    sender: RTCRtpSender,
    *,
    on_started: Callable[[RTCRtpSendParameters], Awaitable[None]],
    on_feedback: RtcpCallback,
) -> None:
    """Hand a subscriber's feedback about this sender (NACK, PLI, FIR, REMB) to ``on_feedback``.

    Receiver reports still reach aiortc (for its round-trip estimate). When aiortc starts
    the sender (DTLS is up), FIR routing is added to its transport and ``on_started``
    gets the negotiated parameters.
    """
    if getattr(sender, _PATCHED, False):
        raise RuntimeError("sender already intercepted")
    setattr(sender, _PATCHED, True)
    original_send = sender.send
    original_rtcp = sender._handle_rtcp_packet
    started = False

    async def handle_rtcp_packet(packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
            await original_rtcp(packet)
        else:
            await on_feedback(packet)

    async def send(parameters: RTCRtpSendParameters) -> None:
        nonlocal started
        await original_send(parameters)
        if not started:
            started = True
            _route_fir(sender.transport)
            await on_started(parameters)

    sender._handle_rtcp_packet = handle_rtcp_packet  # type: ignore[method-assign]
    sender.send = send  # type: ignore[method-assign]


def _route_fir(transport: RTCDtlsTransport) -> None:
    """Teach a transport's router to deliver FIR to the senders named in its FCI."""
    router: RtpRouter = transport._rtp_router
    if getattr(router, _PATCHED, False):
        return
    setattr(router, _PATCHED, True)
    original = router.route_rtcp

    def route_rtcp(packet: AnyRtcpPacket) -> set[Any]:
        recipients = original(packet)
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_FIR:
            fci = packet.fci
            for offset in range(0, len(fci) - 7, 8):
                (ssrc,) = struct.unpack_from("!L", fci, offset)
                sender = router.senders.get(ssrc)
                if sender is not None:
                    recipients.add(sender)
        return recipients

    router.route_rtcp = route_rtcp  # type: ignore[method-assign]


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback`` whenever the remote side asks this sender for a keyframe.

    For peers that send pre-encoded media (test and load peers): aiortc only forces a
    keyframe from its own encoder, so such a track must react by itself.
    """
    original = sender._send_keyframe

    def send_keyframe() -> None:
        original()
        callback()

    sender._send_keyframe = send_keyframe  # type: ignore[method-assign]


class SenderSink:
    """Raw RTP/RTCP out on a sender's transport, and what its sender reports say."""

    __slots__ = ("_sender", "_transport")

    def __init__(self, sender: RTCRtpSender) -> None:
        self._sender = sender
        self._transport = sender.transport

    async def send(self, data: bytes) -> bool:
        """SRTP-protect and send one RTP or RTCP packet; False if the leg cannot send."""
        try:
            await self._transport._send_rtp(data)
        except (ConnectionError, pylibsrtp.Error):
            return False
        return True

    def report(self, *, ntp_timestamp: int, rtp_timestamp: int) -> None:
        """The NTP time and RTP timestamp the next sender reports pair up."""
        setattr(self._sender, _TX_NTP, ntp_timestamp)
        setattr(self._sender, _TX_RTP, rtp_timestamp)

    def count(self, *, packets: int, octets: int) -> None:
        """The packet and payload octet counts the next sender reports carry."""
        setattr(self._sender, _TX_PACKETS, packets)
        setattr(self._sender, _TX_OCTETS, octets)


# --- ICE --------------------------------------------------------------------------------------


def _ice_transports(pc: RTCPeerConnection) -> list[RTCIceTransport]:
    transports: list[RTCIceTransport] = []
    for transceiver in pc.getTransceivers():
        for dtls in (transceiver.receiver.transport, transceiver.sender.transport):
            if dtls.transport not in transports:
                transports.append(dtls.transport)
    if pc.sctp is not None and pc.sctp.transport.transport not in transports:
        transports.append(pc.sctp.transport.transport)
    return transports


def restrict_gathering(pc: RTCPeerConnection, addresses: Iterable[str]) -> int:
    """Make every ICE connection of ``pc`` bind host candidates only on ``addresses``.

    aioice would use every interface but 127.0.0.1; this list replaces that, loopback
    included if it is listed. With the relay-only policy no host candidate is gathered
    either way. Call after setRemoteDescription and before setLocalDescription (which
    gathers). Returns how many connections were restricted.
    """
    allowed = list(addresses)
    count = 0
    for ice in _ice_transports(pc):
        connection: Connection = ice._connection
        if getattr(connection, _PATCHED, False):
            continue
        setattr(connection, _PATCHED, True)
        original = connection.get_component_candidates

        async def get_component_candidates(
            component: int,
            addresses: list[str],
            timeout: int = 5,  # noqa: ASYNC109 (aioice's own signature)
            *,
            _connection: Connection = connection,
            _original: Callable[..., Awaitable[list[aioice.Candidate]]] = original,
        ) -> list[aioice.Candidate]:
            host = allowed if _connection._transport_policy == TransportPolicy.ALL else []
            return await _original(component=component, addresses=list(host), timeout=timeout)

        connection.get_component_candidates = get_component_candidates  # type: ignore[method-assign]
        count += 1
    return count


def local_candidate_addresses(pc: RTCPeerConnection) -> set[str]:
    """The addresses of every local candidate ``pc`` has gathered."""
    return {c.host for ice in _ice_transports(pc) for c in ice._connection.local_candidates}


def drop_outgoing(pc: RTCPeerConnection, should_drop: Callable[[bytes], bool]) -> None:
    """Fault injection for tests and benchmarks: datagrams ``should_drop`` picks are lost.

    Applies to what ``pc`` sends on its current ICE transports (call once negotiated).
    """
    for ice in _ice_transports(pc):
        send = ice._send

        async def lossy_send(
            data: bytes, *, _send: Callable[[bytes], Awaitable[None]] = send
        ) -> None:
            if not should_drop(data):
                await _send(data)

        ice._send = lossy_send
