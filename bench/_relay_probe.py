"""How long the gateway holds a packet: from its datagram's arrival to its copy's departure.

The gateway forwards RTP synchronously (``gateway.media._aiortc.enable_fast_path``): a
datagram's arrival callback unprotects, forwards, protects and sends every copy before
it returns. The probe wraps the two ends of that, per aioice ``StunProtocol`` of a
gateway peer connection, below DTLS and SRTP:

* ``StunProtocol.datagram_received``: the event loop has just read a datagram out of
  the socket. For RTP, the probe notes the time as the *ingress* of what the call does.
* Where the compiled path reads the socket itself (``_native.Reader``, a batch per
  wake-up), ``datagram_received`` sees no RTP; the reader calls
  :meth:`LatencyProbe.ingress` for each RTP datagram instead, with the time the kernel
  received it (``SO_TIMESTAMPNS``, turned on for the probed sockets only).
* ``StunProtocol.transport.sendto``: a datagram goes to the socket (or to the TURN
  client). For RTP sent while an ingress is noted, ``now - ingress`` is one sample:
  SRTP unprotect, parsing, forwarding, rewriting, SRTP protect and ``sendto``. A copy
  the compiled path sends (``gateway/media/_native.pyx``) goes to the socket directly;
  its lane calls :meth:`LatencyProbe.egress` right after, which samples the same way.

So with the reader (the compiled path on asyncio, the gateway's default) a sample
covers everything from the kernel's receipt of a datagram to its copy's ``sendto``: the
wait in the socket buffer, the poll interval (``gateway/media/event_loop.py``) and the
wait behind earlier datagrams of a batch included. Without it (``--python-path``,
``--uvloop``) a sample starts when the event loop hands the datagram over, and those
waits are not covered. Both clocks are ``CLOCK_REALTIME`` (``time.time_ns``). Wrappers
go on instances only, after the answer and before the connection carries data.
Benchmark code, pinned to aiortc 1.16 and aioice 0.13 like :mod:`gateway.media._aiortc`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCPeerConnection

from gateway.media import _aiortc

__all__ = ["LatencyProbe"]


def _is_rtp(data: bytes) -> bool:
    """SRTP, not SRTCP (RFC 7983 demultiplexing, then RFC 5761 payload types)."""
    return len(data) > 1 and 127 < data[0] < 192 and not 192 <= data[1] <= 223


class _TimedTransport:
    """A datagram transport that reports RTP sent during a probed arrival."""

    def __init__(self, inner: Any, probe: LatencyProbe) -> None:
        self._inner = inner
        self._probe = probe

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self._inner.sendto(data, addr)
        probe = self._probe
        ingress = probe.ingress_ns
        if ingress is not None and probe.recording and _is_rtp(data):
            probe.samples_ns.append(time.time_ns() - ingress)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class LatencyProbe:
    """Ingress-to-egress times (nanoseconds) of RTP through some peer connections."""

    def __init__(self) -> None:
        #: Samples are kept only while this is set.
        self.recording = False
        self.samples_ns: list[int] = []
        #: The arrival time of the RTP datagram being handled, if any.
        self.ingress_ns: int | None = None
        self._probed: set[int] = set()

    def attach(self, pc: RTCPeerConnection) -> None:
        """Probe every ICE transport of ``pc``: after the answer, before it connects."""
        for transceiver in pc.getTransceivers():
            connection: Any = transceiver.receiver.transport.transport._connection
            for protocol in connection._protocols:
                if id(protocol) not in self._probed:
                    self._probed.add(id(protocol))
                    self._wrap(protocol)
        _aiortc.probe_native(pc, ingress=self.ingress, egress=self.egress)

    def _wrap(self, protocol: Any) -> None:
        inner: Callable[[bytes, Any], None] = protocol.datagram_received
        clock = time.time_ns

        def timed_datagram_received(data: bytes, addr: Any) -> None:
            if not _is_rtp(data):
                inner(data, addr)
                return
            self.ingress_ns = clock()
            try:
                inner(data, addr)
            finally:
                self.ingress_ns = None

        protocol.datagram_received = timed_datagram_received
        protocol.transport = _TimedTransport(protocol.transport, self)

    def ingress(self, arrival_ns: int | None) -> None:
        """The compiled path's socket reader (which reads in place of the transport, so
        ``datagram_received`` above sees no RTP) is handing on an RTP datagram that the
        kernel received at ``arrival_ns``, or (None) is done with it."""
        self.ingress_ns = None if arrival_ns is None else arrival_ns or time.time_ns()

    def egress(self) -> None:
        """A copy the compiled path sent itself, bypassing the transport (it sends only
        RTP, and only inside a probed arrival)."""
        ingress = self.ingress_ns
        if ingress is not None and self.recording:
            self.samples_ns.append(time.time_ns() - ingress)
