"""The one module that touches aiortc's and aioice's private API.

aiortc's public API decodes every incoming video frame and re-encodes for every sender;
a forwarding gateway needs the packets instead. Everything below leans on internals of
aiortc 1.16.0 and aioice 0.13, checked when this module is imported: a missing piece
raises :class:`ImportError` naming it, so an upgrade fails at start, not mid-call.

What is wrapped, and where aiortc does it:

* incoming RTP: ``RTCDtlsTransport._handle_rtp_data`` parses, ``RtpRouter.route_rtp``
  picks the receiver, ``RTCRtpReceiver._handle_rtp_packet`` feeds the jitter buffer and
  decoder thread. :func:`intercept_receiver` replaces that last method on one instance
  and stops the decoder thread as soon as ``receive()`` starts it, keeping only the
  receive statistics (its receiver reports still go out), in
  :class:`gateway.media.receive_statistics.ReceiveStatistics`, which has every field and
  property of aiortc's ``StreamStatistics``.
* the synchronous data path (:func:`enable_fast_path`): aioice hands every datagram to
  ``StunProtocol.datagram_received``, which tries a STUN parse and queues the rest on
  ``Connection._queue`` for the DTLS transport's task (``_recv_next``). For SRTP
  datagrams, once the DTLS transport is connected, the fast path replaces that
  per protocol instance: unprotect with the transport's ``_rx_srtp``, parse and route as
  ``_handle_rtp_data`` does, and call the intercepted receiver's handler at once.
  SRTCP likewise goes straight to what ``_handle_rtcp_data`` does (unprotect with
  ``_rx_srtp``, parse, ``route_rtcp``, each recipient's ``_handle_rtcp_packet``). DTLS
  and STUN keep aioice's and aiortc's path; that queue is bounded.
* outgoing RTP and RTCP: what ``RTCDtlsTransport._send_rtp`` does (SRTP protect with
  ``_tx_srtp``, then ``Connection.sendto`` on the nominated pair), done synchronously by
  :class:`_Leg`: protect and the pair's ``protocol.transport.sendto``, which is a UDP
  socket for a host pair and aioice's ``TurnTransport`` for a relayed one.
* feedback from a subscriber: ``RTCRtpSender._handle_rtcp_packet``; FIR is not routed by
  aiortc (it looks at the media SSRC, which FIR leaves 0), so the transport's router is
  taught to route it by the SSRCs in its FCI.
* feedback to a publisher: ``RTCRtpReceiver._send_rtcp_pli``, ``_send_rtcp_nack`` and
  ``_send_rtcp`` (for REMB), sent with the receiver's RTCP SSRC.
* sender and receiver reports: aiortc runs a task per sender and per receiver
  (``_run_rtcp``) that wakes about once a second to send one report. On the gateway's
  intercepted senders and receivers that task only waits to be cancelled (as aiortc's
  ``stop`` expects), and one timer per event loop (:class:`_Reports`) sends the same
  packets, built from the same private fields. :class:`SenderSink` writes the forwarded
  stream's values there (its counts just before a report or ``getStats`` reads them).
* host candidates: ``aioice.Connection.gather_candidates`` binds on
  ``get_host_addresses()`` (every interface but 127.0.0.1);
  :func:`restrict_gathering` makes one connection bind only on a given list.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import socket
import struct
import time
from asyncio import selector_events as _selector_events
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable
from types import CodeType
from typing import Any, Final

import aioice
import aiortc
import pylibsrtp
from aioice import Connection, TransportPolicy
from aioice.ice import CandidatePair, StunProtocol
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCStatsReport
from aiortc import rtcrtpreceiver as _receiver_module
from aiortc.rtcdtlstransport import RTCDtlsTransport, RtpRouter
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters, RTCRtpSendParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    HeaderExtensionsMap,
    RtcpByePacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
)
from pylibsrtp._binding import ffi as _srtp_ffi
from pylibsrtp._binding import lib as _srtp_lib

from gateway.media.counters import TrackCounters
from gateway.media.receive_statistics import ReceiveStatistics
from gateway.media.udp_drops import socket_inode

try:  # the compiled half of this module; absent if the package was built without a C compiler
    from gateway.media import _native

    _NATIVE_BUILT = True
except ImportError:  # pragma: no cover (CI builds it; tests/media_plane/test_native.py)
    _NATIVE_BUILT = False

__all__ = [
    "AIOICE_SERIES",
    "AIORTC_VERSION",
    "FastPath",
    "ReceiverFeedback",
    "SenderSink",
    "decoder_running",
    "drop_outgoing",
    "enable_fast_path",
    "intercept_receiver",
    "intercept_sender",
    "local_candidate_addresses",
    "native_available",
    "on_keyframe_request",
    "probe_native",
    "receiver_report",
    "restrict_gathering",
    "sender_report",
    "sender_ssrcs",
]

log = logging.getLogger(__name__)

AIORTC_VERSION: Final = "1.16.0"
AIOICE_SERIES: Final = "0.13."

RtpCallback = Callable[[RtpPacket], None]
RtcpCallback = Callable[[AnyRtcpPacket], Awaitable[None]]

# Name-mangled instance fields, read and written with getattr/setattr.
_RX_REMOTE_STREAMS: Final = "_RTCRtpReceiver__remote_streams"
_RX_RTCP_SSRC: Final = "_RTCRtpReceiver__rtcp_ssrc"
_RX_DECODER_THREAD: Final = "_RTCRtpReceiver__decoder_thread"
_RX_LSR: Final = "_RTCRtpReceiver__lsr"
_RX_LSR_TIME: Final = "_RTCRtpReceiver__lsr_time"
_RX_RTCP_STARTED: Final = "_RTCRtpReceiver__rtcp_started"
_RX_RTCP_EXITED: Final = "_RTCRtpReceiver__rtcp_exited"
_TX_NTP: Final = "_RTCRtpSender__ntp_timestamp"
_TX_RTP: Final = "_RTCRtpSender__rtp_timestamp"
_TX_PACKETS: Final = "_RTCRtpSender__packet_count"
_TX_OCTETS: Final = "_RTCRtpSender__octet_count"
#: On an intercepted sender: the TrackCounters its counts are copied from.
_TX_COUNTERS: Final = "_quietroom_counters"
_TX_LSR: Final = "_RTCRtpSender__lsr"
_TX_LSR_TIME: Final = "_RTCRtpSender__lsr_time"
_TX_CNAME: Final = "_RTCRtpSender__cname"
_TX_RTCP_STARTED: Final = "_RTCRtpSender__rtcp_started"
_TX_RTCP_EXITED: Final = "_RTCRtpSender__rtcp_exited"

# Marks set on instances this module has already patched (idempotence).
_PATCHED: Final = "_quietroom_patched"
# The synchronous RTP handler of an intercepted receiver, and a DTLS transport's _Leg.
_RTP_HANDLER: Final = "_quietroom_rtp"
_LEG: Final = "_quietroom_leg"
_FAST: Final = "_quietroom_fast"
#: On an event loop: its :class:`_Reports`, and its :class:`_native.Poller`.
_REPORTS: Final = "_quietroom_reports"
_POLLER: Final = "_quietroom_poller"
#: On an intercepted receiver: ssrc -> (forwarder, publisher track, aiortc statistics).
_NATIVE_SOURCE: Final = "_quietroom_native_source"
#: On a DTLS transport whose RTP the compiled path may forward.
_LANE: Final = "_quietroom_lane"
_HEADER_IDS: Final = "_HeaderExtensionsMap__ids"
_DTLS_CONNECTED: Final = DtlsState.CONNECTED
#: The component WebRTC uses (RTP and RTCP are multiplexed on one).
_COMPONENT: Final = 1
#: The longest SRTP or SRTCP datagram pylibsrtp unprotects (its buffer's size).
_SRTP_MAX_DATAGRAM: Final = 1500
#: The longest RTP packet pylibsrtp protects (its buffer, less the longest trailer).
_SRTP_MAX_PLAIN: Final = _SRTP_MAX_DATAGRAM - pylibsrtp.SRTP_MAX_TRAILER_LEN
#: libsrtp's functions as pylibsrtp's cffi module declares them (the compiled path
#: calls them on pylibsrtp's own sessions).
_SRTP_SIGNATURE: Final = "srtp_err_status_t(*)(struct srtp_ctx_t_ *, void *, int *)"


def _instance_fields(cls: type, method: str = "__init__") -> frozenset[str]:
    """Attribute names a method of ``cls`` stores or loads, nested code included (none
    if there is no such method)."""
    names: set[str] = set()
    function = getattr(cls, method, None)
    if function is None:
        return frozenset()
    pending: list[CodeType] = [function.__code__]
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
            "_run_rtcp": ["self"],
            "receive": ["self", "parameters"],
        },
        RTCRtpSender: {
            "_handle_rtcp_packet": ["self", "packet"],
            "_send_keyframe": ["self"],
            "_send_rtcp": ["self", "packets"],
            "_run_rtcp": ["self"],
            "send": ["self", "parameters"],
        },
        RTCDtlsTransport: {
            "_send_rtp": ["self", "data"],
            "_handle_rtp_data": ["self", "data", "arrival_time_ms"],
            "_handle_rtcp_data": ["self", "data"],
        },
        RtpRouter: {"route_rtcp": ["self", "packet"], "route_rtp": ["self", "packet"]},
        Connection: {
            "gather_candidates": ["self"],
            "get_component_candidates": ["self", "component", "addresses", "timeout"],
            "data_received": ["self", "data", "component"],
            "sendto": ["self", "data", "component"],
        },
        StunProtocol: {"datagram_received": ["self", "data", "addr"]},
        RtpPacket: {"parse": ["data", "extensions_map"]},
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
        # What _Reports sends in place of the _run_rtcp tasks, and how they start and stop.
        (RTCRtpSender, "_run_rtcp", (_TX_NTP, _TX_RTP, _TX_PACKETS, _TX_OCTETS)),
        (RTCRtpSender, "_run_rtcp", (_TX_LSR, _TX_LSR_TIME, _TX_CNAME, "_ssrc")),
        (RTCRtpSender, "_run_rtcp", (_TX_RTCP_STARTED, _TX_RTCP_EXITED, "_send_rtcp")),
        (RTCRtpSender, "send", ("_run_rtcp",)),
        # Readers of the counts, which are copied in first (not written per packet).
        (RTCRtpSender, "getStats", (_TX_PACKETS, _TX_OCTETS)),
        (RTCRtpSender, "_handle_rtcp_packet", (_TX_PACKETS,)),
        (RTCRtpSender, "stop", (_TX_RTCP_STARTED, _TX_RTCP_EXITED)),
        (RTCRtpReceiver, "_run_rtcp", (_RX_REMOTE_STREAMS, _RX_LSR, _RX_LSR_TIME)),
        (RTCRtpReceiver, "_run_rtcp", (_RX_RTCP_SSRC, _RX_RTCP_STARTED, _RX_RTCP_EXITED)),
        (RTCRtpReceiver, "_run_rtcp", ("_send_rtcp",)),
        (RTCRtpReceiver, "receive", ("_run_rtcp",)),
        (RTCRtpReceiver, "stop", (_RX_RTCP_STARTED, _RX_RTCP_EXITED)),
        (RTCDtlsTransport, "__init__", ("_rtp_router", "_state", "_rx_srtp", "_tx_srtp")),
        (RTCDtlsTransport, "__init__", ("_rtp_header_extensions_map", "_transport")),
        (RTCDtlsTransport, "_send_rtp", ("_tx_srtp", "protect", "protect_rtcp", "_send")),
        (RTCDtlsTransport, "_recv_next", ("_rx_srtp", "unprotect", "_handle_rtp_data")),
        (RTCDtlsTransport, "_handle_rtp_data", ("_rtp_header_extensions_map", "route_rtp")),
        (RTCDtlsTransport, "_recv_next", ("unprotect_rtcp", "_handle_rtcp_data")),
        (RTCDtlsTransport, "_handle_rtcp_data", ("parse", "route_rtcp", "_handle_rtcp_packet")),
        (Connection, "__init__", ("_nominated", "_queue", "_protocols")),
        (Connection, "sendto", ("_nominated", "protocol", "send_data", "remote_addr")),
        (Connection, "data_received", ("_queue", "put_nowait")),
        (StunProtocol, "datagram_received", ("receiver", "data_received")),
        (StunProtocol, "send_data", ("transport", "sendto")),
        (CandidatePair, "__init__", ("protocol", "remote_candidate")),
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
    missing.extend(_check_statistics())
    missing.extend(_check_native_internals())
    if not isinstance(getattr(CandidatePair, "remote_addr", None), property):
        missing.append("CandidatePair.remote_addr")
    return missing


def _check_statistics() -> list[str]:
    """aiortc's receiver reads its ``StreamStatistics``; what it keeps there (fields and
    properties) must be on the ReceiveStatistics the intercepted receivers keep instead."""
    reference = getattr(_receiver_module, "StreamStatistics", None)
    if reference is None:
        return ["aiortc.rtcrtpreceiver.StreamStatistics"]
    names = _instance_fields(reference, "__init__") | {
        name for name, value in vars(reference).items() if isinstance(value, property)
    }
    return [
        f"ReceiveStatistics lacks StreamStatistics.{name}"
        for name in sorted(names)
        if not hasattr(ReceiveStatistics, name)  # a slot, a C field or a property
    ]


def _check_native_internals() -> list[str]:
    """What the compiled path (``_native.pyx``) reads and writes besides Quietroom's own."""
    missing: list[str] = []
    for name in ("srtp_protect", "srtp_unprotect"):
        try:
            kind = _srtp_ffi.typeof(_srtp_ffi.addressof(_srtp_lib, name)).cname
        except (AttributeError, TypeError, _srtp_ffi.error):
            kind = None
        if kind != _SRTP_SIGNATURE:
            missing.append(f"pylibsrtp's {name} as {_SRTP_SIGNATURE}")
    if "_srtp" not in _instance_fields(pylibsrtp.Session):
        missing.append("pylibsrtp.Session._srtp")
    # asyncio's, for _read_natively: the transport stops reading and the loop reads
    # its socket with the compiled path's callback instead; and for ``Out``, which
    # sends past the transport only while the transport's own buffer is empty.
    for cls_name, name in (
        ("BaseSelectorEventLoop", "_add_reader"),
        ("BaseSelectorEventLoop", "_remove_reader"),
        ("_SelectorDatagramTransport", "pause_reading"),
    ):
        if not callable(getattr(getattr(_selector_events, cls_name, None), name, None)):
            missing.append(f"asyncio {cls_name}.{name}")
    transport_fields: dict[str, tuple[str, ...]] = {
        "__init__": ("_closing", "_sock_fd", "_buffer"),
        "pause_reading": ("_remove_reader", "_sock_fd"),
        "close": ("_remove_reader", "_sock_fd", "_closing"),
        # the protocol hears of it before the socket closes: the poller lets go then
        "_call_connection_lost": ("connection_lost", "_sock", "close"),
    }
    base = getattr(_selector_events, "_SelectorTransport", None)
    for method, names in transport_fields.items():
        present = _instance_fields(base, method) if base is not None else frozenset()
        missing.extend(
            f"asyncio _SelectorTransport.{method} using {name}"
            for name in names
            if name not in present
        )
    wanted = {
        (HeaderExtensionsMap, "__init__"): (_HEADER_IDS,),
    }
    for (cls, method), names in wanted.items():
        present = _instance_fields(cls, method)
        missing.extend(
            f"{cls.__name__}.{method} using {name}" for name in names if name not in present
        )
    ids = getattr(HeaderExtensionsMap(), _HEADER_IDS, None)
    for name in (
        "mid",
        "rtp_stream_id",
        "repaired_rtp_stream_id",
        "abs_send_time",
        "transmission_offset",
        "audio_level",
        "transport_sequence_number",
    ):
        if not hasattr(ids, name):
            missing.append(f"aiortc.rtp.HeaderExtensions.{name}")
    return missing


_missing = _check_internals()
if _missing:
    raise ImportError(
        "gateway.media needs aiortc internals that are missing or changed: " + "; ".join(_missing)
    )


def _srtp_pointer(session: pylibsrtp.Session) -> int:
    """A pylibsrtp session's libsrtp context (``srtp_t``), for the compiled path."""
    return int(_srtp_ffi.cast("uintptr_t", session._srtp[0]))


def _srtp_function(name: str) -> int:
    return int(_srtp_ffi.cast("uintptr_t", _srtp_ffi.addressof(_srtp_lib, name)))


if _NATIVE_BUILT:
    _native.configure(
        _srtp_function("srtp_protect"),
        _srtp_function("srtp_unprotect"),
        _SRTP_MAX_PLAIN,
        _SRTP_MAX_DATAGRAM,
    )


def native_available() -> bool:
    """Whether the compiled path was built (it needs a C compiler at install time)."""
    return _NATIVE_BUILT


# --- receivers: the publisher's media, before aiortc's jitter buffer --------------------------


def intercept_receiver(
    receiver: RTCRtpReceiver,
    *,
    on_started: Callable[[RTCRtpReceiveParameters], Awaitable[None]],
    on_rtp: RtpCallback,
    on_rtcp: RtcpCallback,
    forwarding: Callable[[], tuple[Any, Any] | None] | None = None,
) -> None:
    """Hand this receiver's RTP to ``on_rtp`` instead of aiortc's jitter buffer and decoder.

    Call before negotiation. When aiortc starts the receiver, its decoder thread is
    stopped at once (it never sees a packet) and ``on_started`` gets the negotiated
    parameters. aiortc's per-SSRC statistics are still fed, and the receiver reports
    aiortc would send go to the publisher (from :class:`_Reports`). Every RTCP packet
    routed to this receiver (sender reports, BYE) goes to aiortc first and then to
    ``on_rtcp``. ``on_rtp`` is called synchronously, from aiortc's receive task or from
    the fast path (:func:`enable_fast_path`), and must not block. ``forwarding`` names what
    ``on_rtp`` does, as (RoomForwarder, PublishedTrack), once it is known: with it the
    compiled path may forward this receiver's packets in the forwarder's place.
    """
    if getattr(receiver, _PATCHED, False):
        raise RuntimeError("receiver already intercepted")
    setattr(receiver, _PATCHED, True)
    original_receive = receiver.receive
    original_rtcp = receiver._handle_rtcp_packet
    streams: dict[int, Any] = getattr(receiver, _RX_REMOTE_STREAMS)
    statistics = ReceiveStatistics
    clock_rates: dict[int, int] = {}
    started = False

    def handle_rtp(packet: RtpPacket) -> None:
        stream = streams.get(packet.ssrc)
        if stream is None:
            clock_rate = clock_rates.get(packet.payload_type)
            if clock_rate is None:
                return
            stream = streams[packet.ssrc] = statistics(clock_rate)
        stream.add(packet)
        on_rtp(packet)

    async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
        handle_rtp(packet)

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

    def native_source(ssrc: int) -> tuple[Any, Any, Any] | None:
        target = forwarding() if forwarding is not None else None
        stream = streams.get(ssrc)
        if target is None or stream is None:
            return None
        return (*target, stream)

    async def run_rtcp() -> None:
        await _reported(receiver, receiver_report, _RX_RTCP_STARTED, _RX_RTCP_EXITED)

    setattr(receiver, _RTP_HANDLER, handle_rtp)
    setattr(receiver, _NATIVE_SOURCE, native_source)
    receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]
    receiver._handle_rtcp_packet = handle_rtcp_packet  # type: ignore[method-assign]
    receiver.receive = receive  # type: ignore[method-assign]
    receiver._run_rtcp = run_rtcp  # type: ignore[method-assign]


def decoder_running(receiver: RTCRtpReceiver) -> bool:
    """Whether aiortc's decoder thread exists for this receiver."""
    return getattr(receiver, _RX_DECODER_THREAD) is not None


class ReceiverFeedback:
    """RTCP toward a publisher, sent at once on the receiver's transport with its RTCP SSRC.

    The packets are those of aiortc's ``_send_rtcp_pli`` and ``_send_rtcp_nack``; like
    them, nothing is sent before the receiver has an RTCP SSRC or while the leg is down.
    """

    __slots__ = ("_receiver",)

    def __init__(self, receiver: RTCRtpReceiver) -> None:
        self._receiver = receiver

    def _send(self, packet: AnyRtcpPacket) -> None:
        _leg(self._receiver.transport).send(bytes(packet))

    def _rtcp_ssrc(self) -> int | None:
        ssrc: int | None = getattr(self._receiver, _RX_RTCP_SSRC)
        return ssrc

    def request_keyframe(self, media_ssrc: int) -> None:
        """A picture loss indication (PLI) for ``media_ssrc``."""
        rtcp_ssrc = self._rtcp_ssrc()
        if rtcp_ssrc is not None:
            self._send(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=rtcp_ssrc, media_ssrc=media_ssrc))

    def nack(self, media_ssrc: int, lost: list[int]) -> None:
        """A generic NACK for these sequence numbers of ``media_ssrc``."""
        rtcp_ssrc = self._rtcp_ssrc()
        if rtcp_ssrc is not None:
            packet = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=rtcp_ssrc, media_ssrc=media_ssrc)
            packet.lost = list(lost)
            self._send(packet)

    def remb(self, bitrate: int, ssrcs: list[int]) -> None:
        """A receiver estimated maximum bitrate for ``ssrcs``."""
        rtcp_ssrc = self._rtcp_ssrc()
        if rtcp_ssrc is not None:
            fci = pack_remb_fci(bitrate, ssrcs)
            self._send(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=fci))


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
    gets the negotiated parameters. The sender reports aiortc would send go out from
    :class:`_Reports`, and a BYE when the sender stops, as aiortc's.
    """
    if getattr(sender, _PATCHED, False):
        raise RuntimeError("sender already intercepted")
    setattr(sender, _PATCHED, True)
    original_send = sender.send
    original_rtcp = sender._handle_rtcp_packet
    started = False

    async def handle_rtcp_packet(packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
            _copy_counts(sender)  # aiortc's stats of a report read the packet count
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

    async def bye() -> None:  # aiortc's last word for a stopped sender
        await sender._send_rtcp([RtcpByePacket(sources=[sender._ssrc])])

    async def run_rtcp() -> None:
        await _reported(sender, sender_report, _TX_RTCP_STARTED, _TX_RTCP_EXITED, bye)

    original_stats = sender.getStats

    async def get_stats() -> RTCStatsReport:
        _copy_counts(sender)
        return await original_stats()

    sender._handle_rtcp_packet = handle_rtcp_packet  # type: ignore[method-assign]
    sender.send = send  # type: ignore[method-assign]
    sender._run_rtcp = run_rtcp  # type: ignore[method-assign]
    sender.getStats = get_stats  # type: ignore[method-assign]


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
    """Raw RTP/RTCP out on a sender's transport, and what its sender reports say.

    ``_leg`` and ``_sender`` are never replaced (the compiled path keeps them)."""

    __slots__ = ("_leg", "_sender")

    def __init__(self, sender: RTCRtpSender) -> None:
        self._sender = sender
        self._leg = _leg(sender.transport)

    def send(self, data: bytes) -> bool:
        """SRTP-protect and send one RTP or RTCP packet now; False if the leg cannot send."""
        return self._leg.send(data)

    def report(self, *, ntp_timestamp: int, rtp_timestamp: int) -> None:
        """The NTP time and RTP timestamp the next sender reports pair up."""
        setattr(self._sender, _TX_NTP, ntp_timestamp)
        setattr(self._sender, _TX_RTP, rtp_timestamp)

    def count_from(self, counters: TrackCounters) -> None:
        """The sender reports (and aiortc's ``getStats``) carry these counters' packets
        and payload octets: they are copied to the sender just before anything of
        aiortc's or this module reads them (a report sent or received, ``getStats``)."""
        setattr(self._sender, _TX_COUNTERS, counters)


def _copy_counts(sender: RTCRtpSender) -> None:
    """Bring aiortc's packet and octet counts of ``sender`` up to its sink's counters."""
    counters: TrackCounters | None = getattr(sender, _TX_COUNTERS, None)
    if counters is not None:
        setattr(sender, _TX_PACKETS, counters.packets)
        setattr(sender, _TX_OCTETS, counters.octets)


# --- sender and receiver reports --------------------------------------------------------------


def sender_report(sender: RTCRtpSender) -> bytes:
    """The sender report (and SDES CNAME) aiortc's ``RTCRtpSender._run_rtcp`` would send
    now; notes its NTP time for the round-trip estimate, as aiortc does."""
    _copy_counts(sender)
    ntp_timestamp: int = getattr(sender, _TX_NTP)
    packets: list[AnyRtcpPacket] = [
        RtcpSrPacket(
            ssrc=sender._ssrc,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=ntp_timestamp,
                rtp_timestamp=getattr(sender, _TX_RTP),
                packet_count=getattr(sender, _TX_PACKETS) & 0xFFFFFFFF,
                octet_count=getattr(sender, _TX_OCTETS) & 0xFFFFFFFF,
            ),
        )
    ]
    setattr(sender, _TX_LSR, (ntp_timestamp >> 16) & 0xFFFFFFFF)
    setattr(sender, _TX_LSR_TIME, time.time())
    cname: str | None = getattr(sender, _TX_CNAME)
    if cname is not None:
        chunk = RtcpSourceInfo(ssrc=sender._ssrc, items=[(1, cname.encode("utf8"))])
        packets.append(RtcpSdesPacket(chunks=[chunk]))
    return b"".join(bytes(packet) for packet in packets)


def receiver_report(receiver: RTCRtpReceiver) -> bytes:
    """The receiver report aiortc's ``RTCRtpReceiver._run_rtcp`` would send now (empty
    before the receiver has an RTCP SSRC or a stream to report on)."""
    rtcp_ssrc: int | None = getattr(receiver, _RX_RTCP_SSRC)
    streams: dict[int, ReceiveStatistics] = getattr(receiver, _RX_REMOTE_STREAMS)
    if rtcp_ssrc is None or not streams:
        return b""
    lsrs: dict[int, int] = getattr(receiver, _RX_LSR)
    lsr_times: dict[int, float] = getattr(receiver, _RX_LSR_TIME)
    reports = []
    for ssrc, stream in streams.items():
        if stream.max_seq is None:
            continue  # nothing received yet (a stream is made for its first packet)
        lsr = dlsr = 0
        if ssrc in lsrs:
            lsr = lsrs[ssrc]
            delay = time.time() - lsr_times[ssrc]
            if 0 < delay < 65536:
                dlsr = int(delay * 65536)
        reports.append(
            RtcpReceiverInfo(
                ssrc=ssrc,
                fraction_lost=stream.fraction_lost,
                packets_lost=stream.packets_lost,
                highest_sequence=stream.max_seq,
                jitter=stream.jitter,
                lsr=lsr,
                dlsr=dlsr,
            )
        )
    # An RR holds 31 report blocks (a 5-bit count); aiortc writes one RR whatever the
    # number, which is malformed past 31. More than 31 streams (a publisher that keeps
    # changing SSRC) go into further RRs of the same compound packet (RFC 3550 6.4.2).
    return b"".join(
        bytes(RtcpRrPacket(ssrc=rtcp_ssrc, reports=reports[start : start + 31]))
        for start in range(0, len(reports), 31)
    )


async def _reported(
    member: RTCRtpSender | RTCRtpReceiver,
    report: Callable[[Any], bytes],
    started: str,
    exited: str,
    last_word: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """What an intercepted sender's or receiver's ``_run_rtcp`` task does: its reports
    go out from the loop's :class:`_Reports` until aiortc's ``stop`` cancels the task,
    then ``last_word``. The events are aiortc's own: ``stop`` waits for both."""
    getattr(member, started).set()
    loop = asyncio.get_running_loop()
    reports = _Reports.of(loop)
    try:
        try:
            reports.add(member, report)
            await loop.create_future()  # until cancelled
        except asyncio.CancelledError:
            pass
        finally:
            reports.remove(member)
        if last_word is not None:
            await last_word()
    finally:
        getattr(member, exited).set()


class _Reports:
    """Every intercepted sender's and receiver's reports, sent from one timer per loop.

    aiortc gives each sender and receiver a task that sleeps 0.5 to 1.5 s (at random),
    sends one report through four coroutines, and sleeps again: with two participants
    of a call each sending and receiving audio and video, 8 timers and task wake-ups a
    second per call, each of which also broke the event loop's poll interval
    (``event_loop.py``). Here each member keeps its own time of next report, drawn as
    aiortc draws it, and one timer, every ``tick`` seconds, sends the reports that are
    due synchronously on the member's leg (:class:`_Leg`): the same bytes, at most
    ``tick`` later. Nothing is sent while a leg is down, as aiortc's send fails then.
    """

    __slots__ = ("_due", "_failed", "_loop", "_timer", "tick")

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float = 0.1) -> None:
        self._loop = loop
        self.tick = tick
        #: member -> (its report, when it is due)
        self._due: dict[Any, tuple[Callable[[Any], bytes], float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._failed = False

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Reports:
        """The loop's reports (the loop keeps them)."""
        reports: _Reports | None = getattr(loop, _REPORTS, None)
        if reports is None:
            reports = cls(loop)
            setattr(loop, _REPORTS, reports)
        return reports

    def __len__(self) -> int:
        return len(self._due)

    @property
    def timer(self) -> asyncio.TimerHandle | None:
        """The pending timer; None while there is nobody to report for."""
        return self._timer

    def _next(self) -> float:
        # The interval between RTCP packets is varied randomly over the range [0.5, 1.5]
        # times the calculated interval (aiortc's words and numbers).
        return self._loop.time() + 0.5 + random.random()  # noqa: S311 (timing, not secrets)

    def add(self, member: Any, report: Callable[[Any], bytes]) -> None:
        self._due[member] = (report, self._next())
        if self._timer is None:
            self._timer = self._loop.call_later(self.tick, self._run)

    def remove(self, member: Any) -> None:
        self._due.pop(member, None)
        if not self._due and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _run(self) -> None:
        now = self._loop.time()
        for member, (report, due) in list(self._due.items()):
            if due <= now:
                self._due[member] = (report, self._next())
                self._send(member, report)
        self._timer = self._loop.call_later(self.tick, self._run) if self._due else None

    def _send(self, member: Any, report: Callable[[Any], bytes]) -> None:
        try:
            data = report(member)
            if data:
                _leg(member.transport).send(data)
        except Exception:  # one member's report must not stop the others'
            if not self._failed:
                self._failed = True
                log.exception("an RTCP report failed (further failures not logged)")


# --- the synchronous data path ----------------------------------------------------------------


class _Leg:
    """Sends SRTP and SRTCP on one DTLS transport's nominated pair, synchronously.

    ``_nominated`` and ``_dtls`` are never replaced (the compiled path keeps them).

    What ``RTCDtlsTransport._send_rtp`` and ``Connection.sendto`` do, minus the two
    coroutines per packet. The pair's ``protocol.transport`` is a UDP socket's transport
    for a host pair and aioice's ``TurnTransport`` (ChannelData through the TURN server)
    for a relayed one; both take ``sendto(data, addr)`` without awaiting.
    """

    __slots__ = ("_addr", "_dtls", "_nominated", "_out", "_pair", "drop")

    def __init__(self, dtls: RTCDtlsTransport) -> None:
        self._dtls = dtls
        self._nominated: dict[int, CandidatePair] = dtls.transport._connection._nominated
        self._pair: CandidatePair | None = None
        self._addr: tuple[str, int] = ("", 0)
        #: The nominated pair's socket, address and SRTP session, for the compiled path
        #: (None: it cannot send on this leg, or is not in use).
        self._out: Any = None
        #: Fault injection (:func:`drop_outgoing`): protected datagrams it picks are lost.
        self.drop: Callable[[bytes], bool] | None = None

    def send(self, data: bytes) -> bool:
        """Protect one RTP or RTCP packet and send it; False if the leg cannot send."""
        dtls = self._dtls
        if dtls._state is not _DTLS_CONNECTED:
            return False
        pair = self._nominated.get(_COMPONENT)
        if pair is None:
            return False
        try:
            if len(data) > 1 and 192 <= data[1] <= 208:  # RTCP, as aiortc's is_rtcp tells
                protected = dtls._tx_srtp.protect_rtcp(data)
            else:
                protected = dtls._tx_srtp.protect(data)
        except (pylibsrtp.Error, ValueError):
            # ValueError: too long to protect (over 1356 bytes of RTP): dropped, as a
            # router past the path's MTU would drop it.
            return False
        if pair is not self._pair:
            self._pair, self._addr = pair, pair.remote_addr
            self._out = _native_out(dtls, pair) if getattr(dtls, _LANE, None) else None
        if self.drop is not None and self.drop(protected):
            return True
        pair.protocol.transport.sendto(protected, self._addr)
        return True


def _sockaddr(family: int, addr: tuple[Any, ...]) -> bytes | None:
    """``addr`` as the C ``struct sockaddr`` the compiled path gives ``sendto``."""
    host, port = addr[0], addr[1]
    if not isinstance(host, str) or not isinstance(port, int) or "%" in host:
        return None
    try:
        packed = socket.inet_pton(family, host)
    except (OSError, ValueError):
        return None
    if family == socket.AF_INET:
        return struct.pack("=H", family) + struct.pack("!H4s8x", port, packed)
    if family == socket.AF_INET6:
        return struct.pack("=H", family) + struct.pack("!HL16s", port, 0, packed) + bytes(4)
    return None


def _native_out(dtls: RTCDtlsTransport, pair: CandidatePair) -> Any:
    """What the compiled path needs to send on ``pair``; None for anything but a UDP
    socket of this host (a relayed candidate's ``TurnTransport`` stays on Python)."""
    if not _NATIVE_BUILT:
        return None
    transport = pair.protocol.transport
    get_extra_info = getattr(transport, "get_extra_info", None)
    sock = get_extra_info("socket") if get_extra_info is not None else None
    if sock is None or sock.type != socket.SOCK_DGRAM:
        return None
    address = _sockaddr(sock.family, pair.remote_addr)
    session = dtls._tx_srtp
    if address is None or session is None:
        return None
    return _native.Out(pair, transport, sock.fileno(), address, session, _srtp_pointer(session))


def _leg(dtls: RTCDtlsTransport) -> _Leg:
    leg: _Leg | None = getattr(dtls, _LEG, None)
    if leg is None:
        leg = _Leg(dtls)
        setattr(dtls, _LEG, leg)
    return leg


class FastPath:
    """What the synchronous data path of one peer connection did, for metrics and tests."""

    __slots__ = ("dropped", "errors", "inodes", "lanes", "limit", "packets", "readers")

    def __init__(self, limit: int) -> None:
        #: At most this many datagrams wait in an ICE connection's receive queue.
        self.limit = limit
        #: RTP packets that took the fast path.
        self.packets = 0
        #: Datagrams dropped because the receive queue was full.
        self.dropped = 0
        #: RTP packets whose handler raised (logged once per connection).
        self.errors = 0
        #: The inodes of the connection's own UDP sockets (for the kernel's drop counts).
        self.inodes: set[int] = set()
        #: The compiled path, one per ICE connection (empty when it is not in use).
        self.lanes: list[Any] = []
        #: The compiled path's socket readers, one per socket it reads in place of asyncio.
        self.readers: list[Any] = []

    @property
    def native_packets(self) -> int:
        """RTP packets the compiled path forwarded (also counted in ``packets``)."""
        return sum(lane.forwarded for lane in self.lanes)


def _dtls_by_ice(pc: RTCPeerConnection) -> dict[RTCIceTransport, RTCDtlsTransport]:
    found: dict[RTCIceTransport, RTCDtlsTransport] = {}
    for transceiver in pc.getTransceivers():
        for dtls in (transceiver.receiver.transport, transceiver.sender.transport):
            found.setdefault(dtls.transport, dtls)
    return found


def enable_fast_path(
    pc: RTCPeerConnection,
    *,
    queue_limit: int = 256,
    receive_buffer: int = 1 << 20,
    native: bool = True,
) -> FastPath:
    """Take ``pc``'s incoming RTP off aiortc's queue and tasks, and bound that queue.

    Call once negotiated and gathered (after setLocalDescription), before media flows.
    From then on an SRTP datagram that arrives while its DTLS transport is connected is
    unprotected, parsed, routed and handed to its receiver's ``on_rtp``
    (:func:`intercept_receiver`, required on every receiving transceiver) inside the
    socket's arrival callback; what the forwarder sends goes out before it returns.
    SRTCP goes the same way to the handlers of its senders and receivers
    (:func:`_rtcp_receiver`). Everything else (STUN, DTLS) takes aioice's queue as
    before, and that queue holds at most ``queue_limit`` datagrams: past it, newer ones
    are dropped, as a full socket buffer would drop them, instead of growing without
    bound. The sockets' kernel receive buffers are raised to ``receive_buffer`` bytes
    (0: left alone).

    With ``native`` (and the compiled path built), packets are forwarded in C while
    the forwarder is in its steady state (``gateway/media/_native.pyx``); the Python
    path takes every other packet, with the same effects.
    """
    if queue_limit < 1:
        raise ValueError("queue_limit must be positive")
    for transceiver in pc.getTransceivers():
        receives = transceiver.direction in ("recvonly", "sendrecv")
        if receives and not hasattr(transceiver.receiver, _RTP_HANDLER):
            raise RuntimeError("every receiver needs intercept_receiver before the fast path")
    fast = FastPath(queue_limit)
    for ice, dtls in _dtls_by_ice(pc).items():
        connection: Connection = ice._connection
        if getattr(connection, _FAST, None) is not None:
            continue
        setattr(connection, _FAST, fast)
        _bound_queue(connection, fast)
        lane = None
        if native and _NATIVE_BUILT:
            ids = getattr(dtls._rtp_header_extensions_map, _HEADER_IDS)
            lane = _native.Lane(dtls, _DTLS_CONNECTED, fast, time.monotonic, _srtp_pointer, ids)
            setattr(dtls, _LANE, lane)
            fast.lanes.append(lane)
        receive_plain = _plain_rtp_receiver(dtls, fast, lane)
        receive_rtp = _rtp_receiver(dtls, fast, lane, receive_plain)
        receive_rtcp = _rtcp_receiver(dtls, fast)
        for protocol in connection._protocols:
            original = _divert_rtp(protocol, dtls, receive_rtp, receive_rtcp)
            if lane is not None:
                _read_natively(protocol, lane, original, receive_plain, receive_rtcp, fast)
            _enlarge_receive_buffer(protocol, receive_buffer)
            sock = protocol.transport.get_extra_info("socket")
            inode = None if sock is None else socket_inode(sock)
            if inode is not None:
                fast.inodes.add(inode)
    return fast


def _enlarge_receive_buffer(protocol: StunProtocol, size: int) -> None:
    """Let the kernel hold more datagrams while the event loop is busy elsewhere.

    Each datagram is now handled in full before the next is read, so a burst waits in
    the socket's buffer (the Linux default holds a few hundred milliseconds of one
    participant's media). The kernel caps ``size`` at ``net.core.rmem_max``. A relayed
    candidate has no socket of its own here (``TurnTransport``), so nothing to do.
    """
    sock = protocol.transport.get_extra_info("socket")
    if sock is None or size <= 0:
        return
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < size:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    except OSError as exc:
        log.debug("receive buffer left as it is: %s", exc)


def _bound_queue(connection: Connection, fast: FastPath) -> None:
    queue: asyncio.Queue[tuple[bytes, int] | None] = connection._queue
    limit = fast.limit

    def data_received(data: bytes, component: int) -> None:
        if queue.qsize() >= limit:
            fast.dropped += 1
            return
        queue.put_nowait((data, component))

    connection.data_received = data_received  # type: ignore[method-assign]


def _forwarding_failed(
    fast: FastPath, exc: BaseException, what: str = "forwarding an RTP packet"
) -> None:
    """One packet lost to an unexpected error; the socket's callback lives on."""
    fast.errors += 1
    if fast.errors == 1:
        log.error(
            "%s failed (further failures not logged)",
            what,
            exc_info=(type(exc), exc, exc.__traceback__),
        )


def _rtp_receiver(
    dtls: RTCDtlsTransport, fast: FastPath, lane: Any, receive_plain: Callable[[bytes], None]
) -> Callable[[bytes], None]:
    """SRTP datagram -> unprotect, then ``receive_plain`` (:func:`_plain_rtp_receiver`).

    With a ``lane`` (the compiled path) the datagram goes there first, and only what it
    hands back, unprotected, continues.
    """

    def receive_rtp(data: bytes) -> None:
        try:
            if lane is None:
                plain = dtls._rx_srtp.unprotect(data)
            else:
                plain = lane.receive(data)
                if plain is None or plain is False:
                    return  # forwarded in C, or refused by SRTP
        except (pylibsrtp.Error, ValueError):
            return  # aiortc drops these too: replayed or unauthenticated
        except Exception as exc:  # noqa: BLE001 (the compiled path failed; logged once)
            _forwarding_failed(fast, exc)
            return
        receive_plain(plain)

    return receive_rtp


def _plain_rtp_receiver(
    dtls: RTCDtlsTransport, fast: FastPath, lane: Any
) -> Callable[[bytes], None]:
    """Unprotected RTP -> parse, route, the receiver's handler (``_recv_next``).

    With a ``lane``: once a packet of a new SSRC has been through the forwarder here,
    the lane learns where that SSRC goes.
    """
    router: RtpRouter = dtls._rtp_router
    extensions = dtls._rtp_header_extensions_map
    parse = RtpPacket.parse
    routes: dict[int, Any] = lane.routes if lane is not None else {}

    def receive_plain(plain: bytes) -> None:
        try:
            packet = parse(plain, extensions)
        except (ValueError, struct.error):
            # aiortc drops these too (struct.error: an extension of the wrong length,
            # which aiortc does not catch).
            return
        receiver = router.route_rtp(packet)
        handler = getattr(receiver, _RTP_HANDLER, None)
        if handler is None:
            return  # no receiver, or one the gateway does not forward from
        fast.packets += 1
        try:
            handler(packet)
        except Exception as exc:  # noqa: BLE001 (one bad packet must not take the callback down)
            _forwarding_failed(fast, exc)
            return
        if lane is not None and packet.ssrc not in routes:
            known = getattr(receiver, _NATIVE_SOURCE)(packet.ssrc)
            if known is not None:
                lane.learn(packet.ssrc, *known)

    return receive_plain


def _rtcp_receiver(dtls: RTCDtlsTransport, fast: FastPath) -> Callable[[bytes], None]:
    """SRTCP datagram -> unprotect, parse, route, each recipient's handler, at once.

    What aiortc's ``_recv_next`` and ``_handle_rtcp_data`` do, without aioice's queue
    and the DTLS transport's task: the handlers (:func:`intercept_receiver`,
    :func:`intercept_sender`, aiortc's own) run to their end before this returns, unless
    one really waits (:func:`_run_now`). A packet that fails SRTP or does not parse is
    dropped, as aiortc drops it; ``struct.error`` too, which aiortc does not catch.
    """
    router: RtpRouter = dtls._rtp_router
    parse = RtcpPacket.parse

    def failed(exc: BaseException) -> None:
        _forwarding_failed(fast, exc, "handling an RTCP packet")

    def receive_rtcp(data: bytes) -> None:
        try:
            packets = parse(dtls._rx_srtp.unprotect_rtcp(data))
        except (pylibsrtp.Error, ValueError, struct.error):
            return
        for packet in packets:
            try:
                # aiortc's router unpacks a REMB's FCI here: struct.error if truncated.
                recipients = router.route_rtcp(packet)
            except (ValueError, struct.error):
                continue
            for recipient in recipients:
                try:
                    _run_now(recipient._handle_rtcp_packet(packet), failed)
                # One failing handler must not stop the rest (nor the reader's batch).
                except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001
                    failed(exc)

    return receive_rtcp


def _run_now(coroutine: Coroutine[Any, Any, Any], failed: Callable[[BaseException], None]) -> None:
    """Run ``coroutine`` now, up to its end or its first real wait; a task finishes it.

    aiortc's RTCP handlers are coroutines that never wait (nor do the gateway's), so
    a task per packet would only add a turn of the event loop. Python 3.12's eager
    tasks do this; on 3.11 it is :class:`_Rest`. An exception raised before the first
    wait is raised here; one raised after it goes to ``failed``.
    """
    try:
        waiting = coroutine.send(None)
    except StopIteration:
        return
    task = asyncio.ensure_future(_finish(_Rest(coroutine, waiting)))
    _finishing.add(task)  # the loop keeps only a weak reference to a task

    def finished(task: asyncio.Future[None]) -> None:
        _finishing.discard(task)
        if task.cancelled():
            coroutine.close()  # cancelled before its first step: the handler is closed
        elif task.exception() is not None:
            failed(task.exception())  # type: ignore[arg-type]

    task.add_done_callback(finished)


#: The tasks finishing what :func:`_run_now` started.
_finishing: set[asyncio.Future[None]] = set()


async def _finish(rest: _Rest) -> None:
    await rest


class _Rest:
    """The rest of a coroutine that waited on ``waiting`` (what it yielded, a future or
    None), for a task to drive: the task waits on what the coroutine waits on, and sends
    or throws into it what it would have sent."""

    __slots__ = ("_coroutine", "_waiting")

    def __init__(self, coroutine: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self._coroutine = coroutine
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, None]:
        coroutine, waiting = self._coroutine, self._waiting
        while True:
            try:
                sent = yield waiting
            except GeneratorExit:  # the task itself is being closed: so is the coroutine
                coroutine.close()
                raise
            except BaseException as exc:  # noqa: BLE001 (a cancellation goes to the coroutine)
                try:
                    waiting = coroutine.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting = coroutine.send(sent)
                except StopIteration:
                    return


def _divert_rtp(
    protocol: StunProtocol,
    dtls: RTCDtlsTransport,
    receive_rtp: Callable[[bytes], None],
    receive_rtcp: Callable[[bytes], None],
) -> Callable[[bytes, tuple[Any, ...]], None]:
    """Send ``protocol``'s SRTP to ``receive_rtp`` and its SRTCP to ``receive_rtcp``;
    returns aioice's own handler."""
    original: Callable[[bytes, tuple[Any, ...]], None] = protocol.datagram_received

    def datagram_received(data: bytes | str, addr: tuple[Any, ...]) -> None:
        if len(data) > _SRTP_MAX_DATAGRAM and 127 < data[0] < 192:  # type: ignore[operator]
            # SRTP or SRTCP too long for the SRTP library, which raises ValueError, not
            # its own error: aiortc's receive task would die of it and close the call.
            # Anyone can send one to the port, so it goes no further.
            return
        # RFC 7983: 128-191 is RTP or RTCP; RTCP's packet types put 192-208 next.
        if (
            len(data) > 1
            and 127 < data[0] < 192  # type: ignore[operator]
            and dtls._state is _DTLS_CONNECTED
        ):
            if 192 <= data[1] <= 208:  # type: ignore[operator]
                receive_rtcp(data)  # type: ignore[arg-type]
            else:
                receive_rtp(data)  # type: ignore[arg-type]
        else:
            original(data, addr)  # type: ignore[arg-type]

    protocol.datagram_received = datagram_received  # type: ignore[method-assign]
    return original


def _read_natively(
    protocol: StunProtocol,
    lane: Any,
    original: Callable[[bytes, tuple[Any, ...]], None],
    receive_plain: Callable[[bytes], None],
    receive_rtcp: Callable[[bytes], None],
    fast: FastPath,
) -> bool:
    """Read ``protocol``'s socket with the compiled path's :class:`_native.Reader`.

    asyncio's datagram transport reads one datagram per wake-up and calls Python twice
    for it; the reader drains the socket with ``recvmmsg`` and sorts what it reads in C
    (``datagram_received`` above, in C). The transport stops reading (``pause_reading``)
    and the loop's :class:`_native.Poller` (one epoll set for every reader of the loop,
    which the loop watches as one descriptor) calls the reader for its socket instead;
    closing the transport takes the reader out. Only on asyncio's selector loop with its
    own datagram transport (uvloop and relayed candidates keep ``datagram_received``);
    False if not installed.
    """
    transport = protocol.transport
    try:
        loop = asyncio.get_running_loop()  # the transport's: aioice made it in this loop
    except RuntimeError:
        return False
    if (
        type(transport) is not getattr(_selector_events, "_SelectorDatagramTransport", None)
        or not isinstance(loop, _selector_events.BaseSelectorEventLoop)
        or transport.is_closing()
    ):
        return False
    sock = transport.get_extra_info("socket")
    if sock is None or sock.type != socket.SOCK_DGRAM:
        return False

    def report(exc: BaseException) -> None:
        loop.call_exception_handler(
            {"message": "Exception in datagram_received", "exception": exc, "protocol": protocol}
        )

    reader = _native.Reader(
        sock.fileno(),
        transport,
        lane,
        original,
        receive_plain,
        lambda exc: _forwarding_failed(fast, exc),
        protocol.error_received,
        report,
        receive_rtcp,
    )
    poller = _poller(loop)
    try:
        poller.add(reader)
    except OSError:  # the kernel's limit of watched descriptors: asyncio reads it
        if not len(poller):
            _drop_poller(loop, poller)
        return False
    transport.pause_reading()  # type: ignore[attr-defined]
    lost = protocol.connection_lost

    def connection_lost(exc: Exception | None) -> None:
        # asyncio's transport calls this just before it closes the socket.
        try:
            poller.remove(reader)
        finally:
            lost(exc)

    protocol.connection_lost = connection_lost  # type: ignore[method-assign]
    fast.readers.append(reader)
    return True


def _poller(loop: asyncio.AbstractEventLoop) -> _native.Poller:
    """The loop's :class:`_native.Poller`, watched by the loop while it has readers."""
    existing: _native.Poller | None = getattr(loop, _POLLER, None)
    if existing is not None:
        return existing

    def report(exc: BaseException) -> None:
        loop.call_exception_handler(
            {"message": "Exception in a media socket reader", "exception": exc}
        )

    def empty() -> None:
        _drop_poller(loop, poller)

    poller = _native.Poller(report, empty)
    loop._add_reader(poller.fileno(), poller.ready)  # type: ignore[attr-defined]
    setattr(loop, _POLLER, poller)
    return poller


def _drop_poller(loop: asyncio.AbstractEventLoop, poller: _native.Poller) -> None:
    """The loop stops watching ``poller`` (it has no reader left), which is closed."""
    loop._remove_reader(poller.fileno())  # type: ignore[attr-defined]
    poller.close()
    if getattr(loop, _POLLER, None) is poller:
        delattr(loop, _POLLER)


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

    Applies to what ``pc`` sends on its current ICE transports (call once negotiated),
    through aiortc and through the synchronous path alike.
    """
    for dtls in _dtls_by_ice(pc).values():
        _leg(dtls).drop = should_drop
    for ice in _ice_transports(pc):
        send = ice._send

        async def lossy_send(
            data: bytes, *, _send: Callable[[bytes], Awaitable[None]] = send
        ) -> None:
            if not should_drop(data):
                await _send(data)

        ice._send = lossy_send


def probe_native(
    pc: RTCPeerConnection,
    *,
    ingress: Callable[[int | None], None],
    egress: Callable[[], None],
) -> int:
    """Benchmarks: ``ingress(arrival_ns)`` before the compiled path's socket reader
    hands on an RTP datagram of ``pc`` (when the kernel received it, ``time.time_ns()``'s
    clock; the readers are told to ask the kernel for it), ``ingress(None)`` once done
    with it, and ``egress()`` after each copy the compiled path sends (the Python path's
    copies go through the pair's transport, where a probe sees them). Call after
    :func:`enable_fast_path`; returns how many lanes took them."""
    count = 0
    for ice, dtls in _dtls_by_ice(pc).items():
        lane = getattr(dtls, _LANE, None)
        if lane is not None:
            lane.on_ingress = ingress
            lane.on_egress = egress
            count += 1
        fast: FastPath | None = getattr(ice._connection, _FAST, None)
        for reader in fast.readers if fast is not None else ():
            reader.stamp()
    return count
