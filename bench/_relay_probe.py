"""How long the gateway holds a packet: from its datagram's arrival to its copy's departure.

The probe wraps what a gateway peer connection's ICE transport takes from and hands to
its UDP socket, below DTLS and SRTP:

* ``Connection.data_received`` (aioice): the event loop has just read a datagram that
  is not STUN out of the socket. The probe notes the time, in order of arrival.
* ``RTCIceTransport._recv`` (aiortc): the DTLS transport takes the next datagram to
  unprotect and route. The probe pairs it with its arrival time (the queue between
  them is first in, first out) and, for RTP, makes that time the *ingress* of what
  the task does next, in a context variable.
* ``RTCIceTransport._send``: a datagram has gone to the socket. If it is RTP and the
  task carries an ingress time, ``now - ingress`` is one sample: event loop queueing,
  SRTP unprotect, parsing, forwarding, rewriting, SRTP protect and ``sendto``.

The forwarder handles a packet inside the receiving DTLS transport's task without
suspending, so an incoming packet and its copies share that task's context. Wrappers go
on instances only, before the connection carries data. Benchmark code, pinned to
aiortc 1.16 and aioice 0.13 like :mod:`gateway.media._aiortc`.
"""

from __future__ import annotations

import collections
import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.rtcicetransport import RTCIceTransport

__all__ = ["LatencyProbe"]

_ingress_ns: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "relay_bench_ingress_ns", default=None
)


def _is_rtp(data: bytes) -> bool:
    """SRTP, not SRTCP (RFC 7983 demultiplexing, then RFC 5761 payload types)."""
    return 127 < data[0] < 192 and len(data) > 1 and not 192 <= data[1] <= 223


class LatencyProbe:
    """Ingress-to-egress times (nanoseconds) of RTP through some peer connections."""

    def __init__(self) -> None:
        #: Samples are kept only while this is set.
        self.recording = False
        self.samples_ns: list[int] = []
        self._probed: set[int] = set()

    def attach(self, pc: RTCPeerConnection) -> None:
        """Probe every ICE transport of ``pc``: after negotiation, before it connects."""
        for transceiver in pc.getTransceivers():
            ice: RTCIceTransport = transceiver.receiver.transport.transport
            if id(ice) not in self._probed:
                self._probed.add(id(ice))
                self._wrap(ice)

    def _wrap(self, ice: RTCIceTransport) -> None:
        connection: Any = ice._connection
        data_received: Callable[[bytes, int], None] = connection.data_received
        recv: Callable[[], Awaitable[bytes]] = ice._recv
        send: Callable[[bytes], Awaitable[None]] = ice._send
        clock = time.perf_counter_ns
        arrivals: collections.deque[int] = collections.deque()

        def timed_data_received(data: bytes, component: int) -> None:
            arrivals.append(clock())
            data_received(data, component)

        async def timed_recv() -> bytes:
            data = await recv()
            arrived = arrivals.popleft() if arrivals else None
            _ingress_ns.set(arrived if _is_rtp(data) else None)
            return data

        async def timed_send(data: bytes) -> None:
            await send(data)
            if self.recording and _is_rtp(data):
                ingress = _ingress_ns.get()
                if ingress is not None:
                    self.samples_ns.append(clock() - ingress)

        connection.data_received = timed_data_received
        ice._recv = timed_recv
        ice._send = timed_send
