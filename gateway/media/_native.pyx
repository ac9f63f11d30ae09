# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled half of :mod:`gateway.media._aiortc`: RTP forwarded without Python frames.

The synchronous data path (``_aiortc.enable_fast_path``) hands each SRTP datagram to
:meth:`Lane.receive`. In the steady state of a call (the publisher's SSRC and payload
type known, video in order, no recorder tapping the room, no subscriber waiting for a
keyframe, no keyframe being asked for, every subscriber's leg a connected host pair)
this does, in C, exactly what the Python path does: SRTP unprotect; the receive
statistics aiortc's reports read; the forwarder's counters and gap tracking; per
subscriber the sequence rewriter, the header
:class:`gateway.media.rtp_header.OutgoingHeader` would write, the packet history, SRTP
protect and ``sendto``; the counters its sender reports read. It reads and writes the
very objects the Python path uses, so there is one state and nothing to synchronise. The
classes of the ones it touches per packet (counters, gap tracker, rewriter, history,
receive statistics) are plain Python files compiled with C fields (their .pxd), which
it reads and writes without attribute lookups; it loads only if they are compiled.
Anything else (RTX, a new SSRC, a gap, a new subscriber, a tap, an extension it does
not check, a leg that is not a plain UDP socket) returns the unprotected packet and the
Python path does the rest, as it did before this module.
What never changes while a subscriber exists (its parts, its header's fixed bytes) is
looked up once, in a :class:`Target`; its state is still read from the Python objects.

SRTP is the session pylibsrtp made for aiortc, called through libsrtp's own functions
(pointers taken from pylibsrtp's cffi module when `_aiortc` is imported), so both
paths share replay windows and rollover counters. Everything runs on the event loop's
thread, as the Python path does.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Size
from cpython.exc cimport PyErr_CheckSignals
from cpython.list cimport PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.tuple cimport PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.errno cimport EAGAIN, EEXIST, EINTR, errno
from libc.math cimport ceil
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memcmp, memcpy, memset, strerror

from gateway.media.counters cimport ForwarderStats, TrackCounters
from gateway.media.nack cimport MissingPackets
from gateway.media.receive_statistics cimport ReceiveStatistics
from gateway.media.rtp_history cimport PacketHistory
from gateway.media.rtp_rewriter cimport SequenceRewriter

from gateway.media import counters, nack, receive_statistics, rtp_history, rtp_rewriter

for _module in (counters, nack, receive_statistics, rtp_history, rtp_rewriter):
    if _module.__file__.endswith(".py"):
        # Built, but that module's classes are the plain Python ones: the C fields this
        # module reads and writes would not exist. The gateway then runs on the Python
        # path alone.
        raise ImportError(f"{_module.__name__} is not compiled")

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec* ts)
    int clock_nanosleep(int clk, int flags, const timespec* request, timespec* remain)
    enum: CLOCK_MONOTONIC
    enum: CLOCK_REALTIME

cdef extern from "<sys/uio.h>" nogil:
    cdef struct iovec:
        void* iov_base
        size_t iov_len

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    cdef struct sockaddr:
        pass
    cdef struct sockaddr_storage:
        unsigned short ss_family
    cdef struct msghdr:
        void* msg_name
        socklen_t msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags
    cdef struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    cdef struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    cmsghdr* CMSG_FIRSTHDR(msghdr* message)
    cmsghdr* CMSG_NXTHDR(msghdr* message, cmsghdr* header)
    unsigned char* CMSG_DATA(cmsghdr* header)
    size_t CMSG_LEN(size_t length)
    int setsockopt(int fd, int level, int name, const void* value, socklen_t size)
    enum: SOL_SOCKET
    enum: SO_TIMESTAMPNS
    enum: SCM_TIMESTAMPNS
    ssize_t sendto(int fd, const void* buf, size_t n, int flags, const sockaddr* addr,
                   socklen_t addrlen)
    int recvmmsg(int fd, mmsghdr* messages, unsigned int count, int flags, timespec* timeout)
    enum: MSG_DONTWAIT
    enum: MSG_TRUNC
    enum: AF_INET
    enum: AF_INET6

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void* ptr
        int fd
        uint32_t u32
        uint64_t u64
    cdef struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event* event)
    int epoll_wait(int epfd, epoll_event* events, int maxevents, int timeout)
    enum: EPOLL_CLOEXEC
    enum: EPOLL_CTL_ADD
    enum: EPOLL_CTL_MOD
    enum: EPOLL_CTL_DEL
    enum: EPOLLIN
    enum: EPOLLOUT

cdef extern from "<unistd.h>" nogil:
    int close(int fd)

cdef extern from "<netinet/in.h>" nogil:
    cdef struct in_addr:
        pass
    cdef struct in6_addr:
        pass
    cdef struct sockaddr_in:
        uint16_t sin_port
        in_addr sin_addr
    cdef struct sockaddr_in6:
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id

cdef extern from "<arpa/inet.h>" nogil:
    uint16_t ntohs(uint16_t value)
    uint32_t ntohl(uint32_t value)
    const char* inet_ntop(int family, const void* source, char* destination, socklen_t size)
    enum: INET6_ADDRSTRLEN

ctypedef int (*srtp_fn)(void* ctx, void* packet, int* length) noexcept nogil

# libsrtp's functions, set once by configure().
cdef srtp_fn _protect = NULL
cdef srtp_fn _unprotect = NULL
cdef int _max_plain = 0
cdef int _max_datagram = 0

#: At most this many subscribers of one publisher track are served here per packet.
DEF MAX_TARGETS = 32
#: SSRCs whose routes a lane remembers (audio, video, and a spare for a change).
DEF KNOWN = 4
#: Room for any datagram the Python path handles (pylibsrtp's buffer is 1500 bytes).
DEF BUFFER = 2048
DEF WORDS = 512  # BUFFER in 32-bit words (libsrtp reads headers as words)
#: Room for one copy's header: 12 bytes, up to 15 CSRCs, the extension block.
DEF HEADER_MAX = 384


def configure(uintptr_t protect, uintptr_t unprotect, int max_plain, int max_datagram):
    """Give this module libsrtp's ``srtp_protect`` and ``srtp_unprotect``.

    ``max_plain`` is the longest RTP packet the Python path protects (pylibsrtp refuses
    longer ones); a longer copy goes back to the Python path, which drops it there.
    ``max_datagram`` is the longest SRTP or SRTCP datagram it unprotects; a
    :class:`Reader` drops longer ones, as ``_aiortc._divert_rtp`` does.
    """
    global _protect, _unprotect, _max_plain, _max_datagram
    _protect = <srtp_fn>protect
    _unprotect = <srtp_fn>unprotect
    _max_plain = max_plain
    _max_datagram = max_datagram


cdef inline double _now(int clock) noexcept nogil:
    cdef timespec ts
    clock_gettime(clock, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline bint _seq_newer(uint32_t a, uint32_t b) noexcept nogil:
    return a != b and ((a - b) & 0xFFFF) < 0x8000


cdef inline bint _ts_newer(uint32_t a, uint32_t b) noexcept nogil:
    return a != b and <uint32_t>(a - b) < 0x80000000u


cdef class Out:
    """Where one leg's SRTP goes: its nominated pair's socket and address, its session.

    Made by the Python path (``_aiortc._Leg``) for a host pair once DTLS is up, and
    valid while that pair stays nominated.
    """

    cdef readonly object pair
    cdef readonly object session
    cdef void* ctx
    cdef int fd
    cdef bytes address
    # asyncio's write buffer of the socket's transport (a deque; never replaced): while
    # it holds datagrams, copies go through the transport, behind them
    cdef object buffer

    def __init__(self, pair, transport, int fd, bytes address, session, uintptr_t ctx):
        self.pair = pair
        self.buffer = transport._buffer
        self.fd = fd
        self.address = address
        self.session = session
        self.ctx = <void*>ctx


cdef class Target:
    """What the compiled path reads of one subscriber (``SubscribedTrack``) and that
    never changes while it exists: its parts, and its header's fixed bytes.

    The header's extension block is laid out once per form (without and with the audio
    level) as ``OutgoingHeader.build`` writes it; each copy fills in abs-send-time's
    value and the level byte.
    """

    cdef object track
    cdef SequenceRewriter rewriter
    cdef PacketHistory history  # or None, for audio
    cdef TrackCounters counters
    cdef object leg
    cdef dict nominated
    cdef object dtls
    cdef dict payload_types
    # the last format looked up in payload_types (never changed once made), and its
    # payload type on this leg (None: not negotiated)
    cdef object last_format
    cdef object last_payload_type
    cdef uint8_t ssrc[4]
    # the extension block (its 4-byte header included; empty without extensions), where
    # abs-send-time's 3 bytes and the level byte go in it (-1: not there); [0] without
    # the audio level, [1] with it
    cdef uint8_t ext[2][HEADER_MAX]
    cdef int ext_len[2]
    cdef int abs_at[2]
    cdef int level_at[2]

    def __init__(self, track):
        cdef uint32_t ssrc
        header = track.header
        sink = track.sink
        self.track = track
        self.rewriter = track.rewriter
        self.history = track.history
        self.counters = track.counters
        self.leg = sink._leg
        self.nominated = self.leg._nominated
        self.dtls = self.leg._dtls
        self.payload_types = track.payload_types
        self.last_format = None
        self.last_payload_type = None
        ssrc = header._ssrc
        self.ssrc[0] = (ssrc >> 24) & 0xFF
        self.ssrc[1] = (ssrc >> 16) & 0xFF
        self.ssrc[2] = (ssrc >> 8) & 0xFF
        self.ssrc[3] = ssrc & 0xFF
        self._layout(0, header._without_level, False)
        self._layout(1, header._with_level, True)

    cdef int _layout(self, int k, layout, bint level) except -1:
        cdef uint8_t* e = self.ext[k]
        cdef bytes mid = layout.mid
        cdef bytes abs_prefix = layout.abs_prefix
        cdef bytes level_prefix = layout.level_prefix
        cdef int n = 4, profile = layout.profile, body
        self.ext_len[k] = -1  # too long for this module: every copy goes back to Python
        if (
            4 + PyBytes_GET_SIZE(mid) + PyBytes_GET_SIZE(abs_prefix) + 3
            + PyBytes_GET_SIZE(level_prefix) + 1 + 3 > HEADER_MAX
        ):
            return 0
        self.abs_at[k] = -1
        self.level_at[k] = -1
        memcpy(e + n, PyBytes_AS_STRING(mid), PyBytes_GET_SIZE(mid))
        n += PyBytes_GET_SIZE(mid)
        if PyBytes_GET_SIZE(abs_prefix):
            memcpy(e + n, PyBytes_AS_STRING(abs_prefix), PyBytes_GET_SIZE(abs_prefix))
            n += PyBytes_GET_SIZE(abs_prefix)
            self.abs_at[k] = n
            memset(e + n, 0, 3)
            n += 3
        if level and PyBytes_GET_SIZE(level_prefix):
            memcpy(e + n, PyBytes_AS_STRING(level_prefix), PyBytes_GET_SIZE(level_prefix))
            n += PyBytes_GET_SIZE(level_prefix)
            self.level_at[k] = n
            e[n] = 0
            n += 1
        if n == 4:
            self.ext_len[k] = 0
            return 0
        while n % 4:
            e[n] = 0
            n += 1
        body = (n - 4) >> 2
        e[0] = (profile >> 8) & 0xFF
        e[1] = profile & 0xFF
        e[2] = (body >> 8) & 0xFF
        e[3] = body & 0xFF
        self.ext_len[k] = n
        return 0


cdef class Route:
    """One incoming SSRC of a lane: the publisher track and forwarder it feeds."""

    cdef object forwarder
    cdef object source
    cdef object track_id
    cdef object ssrc
    cdef ReceiveStatistics statistics
    # parts of the forwarder, the source and the statistics that are never replaced
    cdef ForwarderStats stats
    cdef TrackCounters counters
    cdef MissingPackets missing
    cdef dict published
    cdef dict subscribers
    cdef list taps
    cdef double clockrate
    # payload type -> (CodecFormat, is video); never changed once made
    cdef dict formats
    # the last payload type looked up there (-1: none yet), and what it gave
    cdef int last_payload_type
    cdef object last_format
    cdef bint last_video
    # a Target per subscriber, in the order of the forwarder's list of them
    cdef list cached

    def __init__(self, forwarder, source, ssrc, statistics, dict formats):
        self.forwarder = forwarder
        self.source = source
        self.track_id = source.track_id
        self.ssrc = ssrc
        self.statistics = statistics
        self.stats = forwarder.stats
        self.counters = source.counters
        self.missing = source.missing
        self.published = forwarder._published
        self.subscribers = forwarder._targets
        self.taps = forwarder._taps
        self.clockrate = statistics._clockrate
        self.formats = {pt: (fmt, bool(fmt.is_video)) for pt, fmt in formats.items()}
        self.last_payload_type = -1
        self.last_format = None
        self.last_video = False
        self.cached = []

    cdef Target target(self, int i, track):
        """The Target of ``track``, the forwarder's ``i``-th subscriber of this route."""
        cdef Target found
        cdef list cached = self.cached
        if i < PyList_GET_SIZE(cached):
            found = cached[i]
            if found.track is track:
                return found
            found = Target(track)
            cached[i] = found
            return found
        found = Target(track)
        cached.append(found)
        return found


cdef struct Copy:
    int payload_type
    # the header's length, and where abs-send-time's three bytes go (-1: none)
    int header_len
    int abs_at


cdef class Lane:
    """The RTP of one ICE connection: forwarded here when the state allows."""

    cdef object dtls
    cdef object connected
    cdef object fast
    cdef object monotonic
    cdef object pointer_of
    cdef object rx_session
    cdef void* rx_ctx
    cdef readonly dict routes
    # the routes of the last SSRCs looked up (a connection sends a few at most); ``learn``
    # is the only writer of ``routes`` and empties it
    cdef uint32_t known_ssrcs[KNOWN]
    cdef list known
    cdef int known_next
    # incoming header extension ids (0: not negotiated)
    cdef int mid_id, rid_id, rrid_id, abs_id, toffset_id, level_id, tsn_id
    #: A benchmark's latency probe: ``on_ingress(arrival_ns)`` before a :class:`Reader`
    #: hands an RTP datagram on (when the kernel received it, ``CLOCK_REALTIME``
    #: nanoseconds, if :meth:`Reader.stamp` asked for it; else 0), ``on_ingress(None)``
    #: once it is done with it, and ``on_egress()`` after each copy sent here.
    cdef public object on_ingress
    cdef public object on_egress
    #: Packets forwarded here, and packets handed back to the Python path.
    cdef readonly uint64_t forwarded
    cdef readonly uint64_t handed_back
    cdef uint32_t plain[WORDS]
    cdef uint32_t out[WORDS]
    cdef uint8_t hdr[MAX_TARGETS][HEADER_MAX]
    cdef Copy copies[MAX_TARGETS]
    cdef list targets
    cdef list outs

    def __init__(self, dtls, connected, fast, monotonic, pointer_of, ids):
        """``pointer_of(session)`` is a pylibsrtp session's ``srtp_t`` as an int;
        ``ids`` aiortc's incoming header extension ids for this transport."""
        self.dtls = dtls
        self.connected = connected
        self.fast = fast
        self.monotonic = monotonic
        self.pointer_of = pointer_of
        self.rx_session = None
        self.rx_ctx = NULL
        self.routes = {}
        self.known = [None] * KNOWN
        self.known_next = 0
        self.on_ingress = None
        self.on_egress = None
        self.targets = [None] * MAX_TARGETS
        self.outs = [None] * MAX_TARGETS
        self.mid_id = ids.mid or 0
        self.rid_id = ids.rtp_stream_id or 0
        self.rrid_id = ids.repaired_rtp_stream_id or 0
        self.abs_id = ids.abs_send_time or 0
        self.toffset_id = ids.transmission_offset or 0
        self.level_id = ids.audio_level or 0
        self.tsn_id = ids.transport_sequence_number or 0

    def learn(self, ssrc, forwarder, source, statistics):
        """Forward this SSRC here from now on, while the forwarder's state allows."""
        if forwarder._monotonic is not self.monotonic:
            return  # a test's clock: the Python path reads it, this module could not
        if type(statistics) is not ReceiveStatistics:
            return  # not the receive statistics this module writes
        self.routes[ssrc] = Route(forwarder, source, ssrc, statistics, source.formats)
        for i in range(KNOWN):
            self.known[i] = None

    cdef int _check_extensions(self, const uint8_t* p, int length, int profile,
                               int* level) except -2:
        """0 if aiortc would parse these extensions and this module can forward them
        (else -1); sets ``level`` to the audio level byte, or -1 without one."""
        cdef int pos = 0, x_id, x_len, i
        level[0] = -1
        if profile != 0xBEDE and profile != 0x1000:
            return 0  # aiortc ignores other profiles
        while pos < length:
            if p[pos] == 0:
                pos += 1
                continue
            if profile == 0xBEDE:
                x_id = p[pos] >> 4
                x_len = (p[pos] & 0x0F) + 1
                pos += 1
            else:
                if pos + 2 > length:
                    return -1
                x_id = p[pos]
                x_len = p[pos + 1]
                pos += 2
            if pos + x_len > length:
                return -1
            if x_id == 0:
                pass
            elif x_id == self.mid_id:
                try:
                    PyUnicode_DecodeUTF8(<const char*>p + pos, x_len, NULL)
                except UnicodeDecodeError:
                    return -1
            elif x_id == self.rid_id or x_id == self.rrid_id:
                for i in range(x_len):
                    if p[pos + i] > 127:
                        return -1
            elif x_id == self.abs_id or x_id == self.toffset_id:
                if x_len != 3:
                    return -1
            elif x_id == self.level_id:
                if x_len != 1:
                    return -1
                level[0] = p[pos]
            elif x_id == self.tsn_id:
                if x_len != 2:
                    return -1
            pos += x_len
        return 0

    def receive(self, bytes data):
        """One SRTP datagram (not SRTCP) that came while DTLS is connected.

        Returns None when it was forwarded here, False when SRTP refused it (replayed,
        forged; aiortc drops those too), and otherwise the unprotected packet, for the
        Python path to parse and forward.
        """
        return self._receive(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))

    cdef object _receive(self, const uint8_t* data, Py_ssize_t n):
        """:meth:`receive` on a datagram still in a :class:`Reader`'s buffer."""
        cdef int length = <int>n
        cdef uint8_t* p = <uint8_t*>self.plain
        if _unprotect == NULL or n > BUFFER - 64:
            return self._unprotect_only(PyBytes_FromStringAndSize(<const char*>data, n))
        session = self.dtls._rx_srtp
        if session is not self.rx_session:
            self.rx_ctx = <void*><uintptr_t>self.pointer_of(session)
            self.rx_session = session
        memcpy(p, data, n)
        if _unprotect(self.rx_ctx, p, &length) != 0:
            return False
        if self._forward(length) == 0:
            self.forwarded += 1
            return None
        self.handed_back += 1
        return PyBytes_FromStringAndSize(<char*>p, length)

    def _unprotect_only(self, bytes data):
        try:
            return self.dtls._rx_srtp.unprotect(data)
        except Exception:
            return False

    cdef Route _route(self, uint32_t ssrc):
        """The route of ``ssrc`` (None: not learnt), from the last few looked up."""
        cdef int i
        cdef Route found
        for i in range(KNOWN):
            if self.known_ssrcs[i] == ssrc and self.known[i] is not None:
                return self.known[i]
        found = self.routes.get(ssrc)
        if found is None:
            return None
        i = self.known_next
        self.known_ssrcs[i] = ssrc
        self.known[i] = found
        self.known_next = (i + 1) % KNOWN
        return found

    cdef int _forward(self, int length) except -1:
        """0 if forwarded here; 1 to hand the packet back to the Python path."""
        cdef uint8_t* p = <uint8_t*>self.plain
        cdef int first, cc, pos, ext_len = 0, profile = 0, padding = 0
        cdef int payload_len, level = -1, i, count, total, payload_type
        cdef uint32_t seq, ts, ssrc_value, highest
        cdef bint marker, video
        cdef Route route
        cdef ForwarderStats stats
        cdef MissingPackets missing
        cdef ReceiveStatistics statistics
        cdef Target target
        cdef Out out
        cdef tuple epoch
        if length < 12:
            return 1
        first = p[0]
        if (first >> 6) != 2:
            return 1
        cc = first & 0x0F
        pos = 12 + 4 * cc
        if length < pos:
            return 1
        if first & 0x10:
            if length < pos + 4:
                return 1
            profile = (p[pos] << 8) | p[pos + 1]
            ext_len = ((p[pos + 2] << 8) | p[pos + 3]) * 4
            pos += 4
            if length < pos + ext_len:
                return 1
            if self._check_extensions(p + pos, ext_len, profile, &level) != 0:
                return 1
            pos += ext_len
        if first & 0x20:
            padding = p[length - 1]
            if padding == 0 or padding > length - pos:
                return 1
        payload_len = length - pos - padding
        marker = (p[1] >> 7) != 0
        payload_type = p[1] & 0x7F
        seq = (<uint32_t>p[2] << 8) | p[3]
        ts = (<uint32_t>p[4] << 24) | (<uint32_t>p[5] << 16) | (<uint32_t>p[6] << 8) | p[7]
        ssrc_value = (<uint32_t>p[8] << 24) | (<uint32_t>p[9] << 16) | (<uint32_t>p[10] << 8) | p[11]

        route = self._route(ssrc_value)
        if route is None:
            return 1
        if payload_type == route.last_payload_type:
            fmt = route.last_format
            video = route.last_video
        else:
            entry = route.formats.get(payload_type)
            if entry is None:
                return 1  # RTX, or a payload type the Python path counts as unknown
            fmt = entry[0]
            video = entry[1]
            route.last_payload_type = payload_type
            route.last_format = fmt
            route.last_video = video
        source = route.source
        if PyList_GET_SIZE(route.taps) or route.published.get(route.track_id) is not source:
            return 1
        ssrc = route.ssrc
        media_ssrc = source.media_ssrc
        if media_ssrc is not ssrc and media_ssrc != ssrc:
            return 1
        if source.keyframe_wanted or source.keyframe_urgent:
            return 1
        missing = route.missing
        if video:
            last = missing._highest
            if last is None or missing._missing:
                return 1
            highest = last
            if seq != ((highest + 1) & 0xFFFF):
                return 1
        statistics = route.statistics
        last = statistics.max_seq
        if last is None or not _seq_newer(seq, <uint32_t>last):
            return 1

        # Every subscriber must be in the steady state too, before anything changes.
        targets = route.subscribers.get(route.track_id)
        count = 0 if targets is None else PyList_GET_SIZE(targets)
        if count > MAX_TARGETS:
            return 1
        if PyList_GET_SIZE(route.cached) > count:
            del route.cached[count:]  # subscribers gone: let go of them
        for i in range(count):
            target = route.target(i, targets[i])
            if fmt is target.last_format:
                out_pt = target.last_payload_type
            else:
                out_pt = target.payload_types.get(fmt)
                target.last_format = fmt
                target.last_payload_type = out_pt
            if out_pt is None or target.track.waiting_keyframe:
                return 1
            epoch_object = target.rewriter._epoch
            if type(epoch_object) is not tuple:
                return 1
            epoch = epoch_object
            if PyTuple_GET_SIZE(epoch) != 2:
                return 1
            part = epoch[1]
            if part is not ssrc and part != ssrc:
                return 1
            part = epoch[0]
            if part is not route.track_id and part != route.track_id:
                return 1
            leg = target.leg
            out_object = leg._out
            if out_object is None or leg.drop is not None:
                return 1
            out = out_object
            if (
                target.nominated.get(1) is not out.pair
                or target.dtls._state is not self.connected
                or out.buffer
            ):
                return 1
            total = self._header(i, target, level, cc, p)
            if total < 0 or total + payload_len + padding > _max_plain:
                return 1
            self.copies[i].payload_type = out_pt
            self.targets[i] = target
            self.outs[i] = out

        # From here on the packet is forwarded here, with the Python path's effects.
        now = _now(CLOCK_MONOTONIC)
        self._statistics(statistics, route.clockrate, seq, ts)
        route.counters.packets += 1
        route.counters.octets += payload_len
        stats = route.stats
        stats.packets_in += 1
        stats.octets_in += payload_len
        if video:
            missing._highest = seq
        self.fast.packets += 1
        if count:
            abs_send_time = (<uint64_t>(_now(CLOCK_REALTIME) * 262144.0)) & 0xFFFFFF
            try:
                for i in range(count):
                    self._send_copy(
                        i, stats, video, now, abs_send_time, marker, seq, ts,
                        p + length - padding - payload_len, payload_len, padding,
                    )
            finally:
                for i in range(count):
                    self.targets[i] = None
                    self.outs[i] = None
        return 0

    cdef void _statistics(self, ReceiveStatistics statistics, double clockrate, uint32_t seq,
                          uint32_t ts) except *:
        """``ReceiveStatistics.add`` for an in-order packet (the only kind here)."""
        # Every value here is an RTP number, a clock in its units or a count: int64 holds
        # them, as the Python ints of the plain class do.
        cdef int64_t arrival = <int64_t>(_now(CLOCK_REALTIME) * clockrate)
        cdef int64_t received = statistics.packets_received + 1
        cdef int64_t last_timestamp, diff, jitter
        statistics.packets_received = received
        if statistics.base_seq is None:
            statistics.base_seq = seq
        if seq < <uint32_t>statistics.max_seq:
            statistics.cycles += 1 << 16
        statistics.max_seq = seq
        last_timestamp = statistics._last_timestamp
        if last_timestamp != ts and received > 1:
            diff = (arrival - <int64_t>statistics._last_arrival) - (<int64_t>ts - last_timestamp)
            if diff < 0:
                diff = -diff
            jitter = statistics._jitter_q4
            statistics._jitter_q4 = jitter + diff - ((jitter + 8) >> 4)
        statistics._last_arrival = arrival
        statistics._last_timestamp = ts

    cdef int _header(self, int i, Target target, int level, int cc,
                     const uint8_t* packet) noexcept:
        """Copy ``i``'s header as ``OutgoingHeader.build`` writes it, but for the
        marker, payload type, sequence number, timestamp and abs-send-time value,
        which ``_send_copy`` fills in; returns its length, or -1 if it is too long for
        this module (the packet then goes back to the Python path)."""
        cdef uint8_t* h = self.hdr[i]
        cdef int k = 0 if level < 0 else 1
        cdef int pos = 12 + 4 * cc, ext_len = target.ext_len[k]
        if ext_len < 0 or pos + ext_len > HEADER_MAX:
            return -1
        h[0] = (0x90 if ext_len else 0x80) | cc
        memcpy(h + 8, target.ssrc, 4)
        if cc:
            memcpy(h + 12, packet + 12, 4 * cc)
        memcpy(h + pos, target.ext[k], ext_len)
        self.copies[i].abs_at = pos + target.abs_at[k] if target.abs_at[k] >= 0 else -1
        if target.level_at[k] >= 0:
            h[pos + target.level_at[k]] = level
        self.copies[i].header_len = pos + ext_len
        return pos + ext_len

    cdef int _send_copy(self, int i, ForwarderStats stats, bint video, double now,
                        uint32_t abs_send_time, bint marker, uint32_t seq, uint32_t ts,
                        const uint8_t* payload, int payload_len, int padding) except -1:
        cdef uint8_t* h = self.hdr[i]
        cdef uint8_t* o = <uint8_t*>self.out
        cdef Out out = self.outs[i]
        cdef Target target = self.targets[i]
        cdef int header_len = self.copies[i].header_len, at = self.copies[i].abs_at, length
        cdef uint32_t out_seq, out_ts
        cdef Py_ssize_t slot
        cdef TrackCounters counters = target.counters
        cdef SequenceRewriter rewriter = target.rewriter
        cdef PacketHistory history = target.history
        out_seq = (seq + rewriter._seq_offset) & 0xFFFF
        out_ts = <uint32_t>((<uint64_t>ts + <uint64_t>rewriter._ts_offset) & 0xFFFFFFFF)
        if _seq_newer(out_seq, rewriter._last_seq):
            rewriter._last_seq = out_seq
        if _ts_newer(out_ts, rewriter._last_ts):
            rewriter._last_ts = out_ts
            rewriter._last_wall = now
        if padding:
            h[0] |= 0x20
        h[1] = (0x80 if marker else 0) | self.copies[i].payload_type
        h[2] = (out_seq >> 8) & 0xFF
        h[3] = out_seq & 0xFF
        h[4] = (out_ts >> 24) & 0xFF
        h[5] = (out_ts >> 16) & 0xFF
        h[6] = (out_ts >> 8) & 0xFF
        h[7] = out_ts & 0xFF
        if at >= 0:
            h[at] = (abs_send_time >> 16) & 0xFF
            h[at + 1] = (abs_send_time >> 8) & 0xFF
            h[at + 2] = abs_send_time & 0xFF
        length = header_len + payload_len + padding
        memcpy(o, h, header_len)
        memcpy(o + header_len, payload, payload_len)
        if padding:
            memset(o + header_len + payload_len, 0, padding - 1)
            o[length - 1] = padding
        if history is not None:
            slot = out_seq % history._capacity
            history._seqs[slot] = out_seq
            history._data[slot] = PyBytes_FromStringAndSize(<char*>o, length)
            history._resent_at[slot] = 0.0
        if _protect(out.ctx, o, &length) != 0:
            stats.not_forwarded += 1
            counters.dropped += 1
            return 0
        # A full socket buffer loses the copy, as the network would; the kernel counts it.
        sendto(out.fd, o, length, MSG_DONTWAIT, <const sockaddr*>PyBytes_AS_STRING(out.address),
               <socklen_t>PyBytes_GET_SIZE(out.address))
        if self.on_egress is not None:
            self.on_egress()
        counters.packets += 1
        counters.octets += payload_len
        stats.packets_out += 1
        stats.octets_out += payload_len
        if video:
            stats.video_packets_out += 1
            stats.video_octets_out += payload_len
        else:
            stats.audio_packets_out += 1
            stats.audio_octets_out += payload_len
        return 0


#: Datagrams one ``recvmmsg`` call reads, and calls per wake-up (then the event loop
#: serves other sockets; the rest wait for its next turn).
DEF BATCH = 16
DEF ROUNDS = 4
#: A UDP datagram's longest payload, so that nothing is ever cut short.
DEF SLOT = 65536
#: Room for the control messages a stamped reader asks for (one timestamp).
DEF CONTROL = 64

# One set of buffers for every Reader: they run one at a time, on the event loop's thread.
cdef uint8_t _slots[BATCH][SLOT]
cdef sockaddr_storage _names[BATCH]
cdef iovec _vectors[BATCH]
cdef mmsghdr _messages[BATCH]
cdef union Control:  # a cmsghdr's alignment, and room for the timestamp after it
    cmsghdr header
    uint8_t space[CONTROL]
cdef Control _controls[BATCH]
cdef bint _reading = False
# Datagrams every Reader has read so far (the event loop's poll interval watches it).
cdef uint64_t _datagrams = 0


def datagrams_read():
    """How many datagrams the readers have read since the process started."""
    return _datagrams


cdef class Reader:
    """Reads one UDP socket of an ICE connection in place of asyncio's transport.

    ``_aiortc.enable_fast_path`` pauses the transport's own reading and gives the event
    loop :meth:`ready` for the socket instead. Each wake-up drains it with ``recvmmsg``
    and sorts the datagrams as ``_aiortc._divert_rtp`` does: SRTP on a connected DTLS
    transport goes to the lane, and what the lane hands back to ``plain``; SRTCP on a
    connected DTLS transport to ``rtcp(data)`` (if given); anything else (STUN, DTLS,
    and SRTCP without ``rtcp``) to ``other(data, addr)``, aioice's own
    ``datagram_received``, with the address tuple Python's ``recvfrom`` would give.
    SRTP or SRTCP too long for the SRTP library is dropped there and here.
    """

    cdef int fd
    cdef object transport
    cdef Lane lane
    cdef object other
    cdef object plain
    cdef object failed
    cdef object error_received
    cdef object report
    cdef object rtcp
    # the last sender's address, raw and as Python's tuple (most datagrams repeat it)
    cdef sockaddr_storage last_name
    cdef socklen_t last_name_len
    cdef object last_address
    # whether the kernel stamps each datagram's arrival (a benchmark's probe asked)
    cdef bint stamped
    #: ``recvmmsg`` calls that returned datagrams, and the datagrams they returned.
    cdef readonly uint64_t reads
    cdef readonly uint64_t datagrams

    def __init__(self, int fd, transport, Lane lane, other, plain, failed, error_received,
                 report, rtcp=None):
        """``failed(exc)``: the compiled path raised on one datagram (it is lost);
        ``error_received(exc)``: the socket reported an error (asyncio's transport calls
        its protocol's); ``report(exc)``: ``other`` raised (asyncio's loop would log it)."""
        self.fd = fd
        self.transport = transport
        self.lane = lane
        self.other = other
        self.plain = plain
        self.failed = failed
        self.error_received = error_received
        self.report = report
        self.rtcp = rtcp
        self.last_name_len = 0
        self.last_address = None
        self.stamped = False
        self.reads = 0
        self.datagrams = 0

    def stamp(self):
        """Have the kernel note when each datagram arrives (``SO_TIMESTAMPNS``), for
        ``Lane.on_ingress``: a benchmark's latency probe then counts the time a datagram
        waited in the socket and for the event loop, not just the time spent on it."""
        cdef int on = 1
        if setsockopt(self.fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) != 0:
            raise OSError(errno, strerror(errno).decode())
        self.stamped = True

    def ready(self):
        """The socket has datagrams to read (:class:`Poller` calls :meth:`_drain`)."""
        self._drain()

    cdef int _drain(self) except -1:
        """Read what the socket holds, up to ``ROUNDS`` batches; 0 once the transport is
        closing (nothing is read then), else 1."""
        global _reading, _datagrams
        cdef int n, i, rounds, error
        if self.transport._closing:
            return 0
        if _reading:
            raise RuntimeError("a Reader ran inside another")
        _reading = True
        try:
            for rounds in range(ROUNDS):
                for i in range(BATCH):
                    _messages[i].msg_hdr.msg_name = &_names[i]
                    _messages[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
                    _messages[i].msg_hdr.msg_iov = &_vectors[i]
                    _messages[i].msg_hdr.msg_iovlen = 1
                    if self.stamped:
                        _messages[i].msg_hdr.msg_control = &_controls[i]
                        _messages[i].msg_hdr.msg_controllen = CONTROL
                    else:
                        _messages[i].msg_hdr.msg_control = NULL
                        _messages[i].msg_hdr.msg_controllen = 0
                    _messages[i].msg_hdr.msg_flags = 0
                    _vectors[i].iov_base = _slots[i]
                    _vectors[i].iov_len = SLOT
                n = recvmmsg(self.fd, _messages, BATCH, MSG_DONTWAIT, NULL)
                if n < 0:
                    error = errno
                    if error == EINTR:
                        continue
                    if error != EAGAIN:  # Linux's EWOULDBLOCK, as recvmmsg is Linux's
                        self.error_received(OSError(error, strerror(error).decode()))
                    return 1
                self.reads += 1
                self.datagrams += n
                _datagrams += n
                # A BaseException (a cancellation, KeyboardInterrupt) raised by a
                # callback ends the batch: what is left of it is lost, as if dropped.
                for i in range(n):
                    if self.transport._closing:
                        return 0
                    self._one(i)
                if n < BATCH:
                    return 1
        finally:
            _reading = False
        return 1

    cdef int _one(self, int i) except -1:
        cdef const uint8_t* data = _slots[i]
        cdef Py_ssize_t length = _messages[i].msg_len
        cdef int first = data[0] if length else 0
        if 127 < first < 192:
            if length > _max_datagram:
                return 0  # too long for the SRTP library: nobody's media
            if length > 1 and self.lane.dtls._state is self.lane.connected:
                if not (192 <= data[1] <= 208):
                    self._rtp(data, length, self._arrival(i) if self.stamped else 0)
                    return 0
                if self.rtcp is not None:
                    try:
                        self.rtcp(PyBytes_FromStringAndSize(<const char*>data, length))
                    except Exception as exc:
                        self.report(exc)
                    return 0
        try:
            self.other(PyBytes_FromStringAndSize(<const char*>data, length), self._address(i))
        except Exception as exc:
            self.report(exc)
        return 0

    cdef int64_t _arrival(self, int i) noexcept:
        """When the kernel received datagram ``i`` (``CLOCK_REALTIME`` ns; 0: unknown)."""
        cdef msghdr* message = &_messages[i].msg_hdr
        cdef cmsghdr* header = CMSG_FIRSTHDR(message)
        cdef timespec stamp
        while header != NULL:
            if (
                header.cmsg_level == SOL_SOCKET
                and header.cmsg_type == SCM_TIMESTAMPNS
                and header.cmsg_len >= CMSG_LEN(sizeof(timespec))
            ):
                memcpy(&stamp, CMSG_DATA(header), sizeof(timespec))
                return <int64_t>stamp.tv_sec * 1000000000 + stamp.tv_nsec
            header = CMSG_NXTHDR(message, header)
        return 0

    cdef int _rtp(self, const uint8_t* data, Py_ssize_t length, int64_t arrival) except -1:
        lane = self.lane
        probe = lane.on_ingress
        if probe is not None:
            probe(arrival)
        try:
            try:
                result = lane._receive(data, length)
            except Exception as exc:
                self.failed(exc)
                return 0
            if result is not None and result is not False:
                try:
                    self.plain(result)
                except Exception as exc:  # one packet lost; the batch goes on
                    self.failed(exc)
        finally:
            if probe is not None:
                probe(None)
        return 0

    cdef object _address(self, int i):
        """The sender of datagram ``i`` as ``socket.recvfrom`` gives it."""
        cdef sockaddr_storage* name = &_names[i]
        cdef socklen_t size = _messages[i].msg_hdr.msg_namelen
        cdef char host[INET6_ADDRSTRLEN]
        cdef sockaddr_in* v4
        cdef sockaddr_in6* v6
        if size == self.last_name_len and memcmp(name, &self.last_name, size) == 0:
            return self.last_address
        if name.ss_family == AF_INET:
            v4 = <sockaddr_in*>name
            inet_ntop(AF_INET, &v4.sin_addr, host, INET6_ADDRSTRLEN)
            address = (host.decode(), ntohs(v4.sin_port))
        elif name.ss_family == AF_INET6:
            v6 = <sockaddr_in6*>name
            inet_ntop(AF_INET6, &v6.sin6_addr, host, INET6_ADDRSTRLEN)
            address = (host.decode(), ntohs(v6.sin6_port), ntohl(v6.sin6_flowinfo),
                       v6.sin6_scope_id)
        else:
            return None
        memcpy(&self.last_name, name, size)
        self.last_name_len = size
        self.last_address = address
        return address


cdef epoll_event* _room(epoll_event* events, int* capacity, Py_ssize_t wanted) except NULL:
    """``events``, grown if need be to hold ``wanted`` (at least 1) events."""
    cdef epoll_event* grown
    if wanted < 1:
        wanted = 1
    if events != NULL and wanted <= capacity[0]:
        return events
    if wanted > 1 << 20:
        raise MemoryError("too many descriptors to poll")
    grown = <epoll_event*>PyMem_Realloc(events, <size_t>wanted * sizeof(epoll_event))
    if grown == NULL:
        raise MemoryError()
    capacity[0] = <int>wanted
    return grown


cdef class Poller:
    """Every :class:`Reader` of one event loop, behind one descriptor of the loop's own.

    asyncio handles each ready socket in Python: the selector maps its descriptor to a
    key, the loop makes a callback of it, queues it and runs it, for every socket at
    every wake-up. The loop watches this poller's epoll descriptor instead (``fileno``),
    and :meth:`ready` asks the kernel which of its sockets are ready and drains each
    with its reader, in C. A reader whose transport is closing leaves at once (its
    socket may hold datagrams nobody will read, and would keep the loop awake); closing
    the socket would take it out of the kernel's set too, and :meth:`remove` takes it
    out of both before that. When the last reader leaves, ``empty()`` is called: the
    owner stops watching the descriptor and :meth:`close` s it.
    """

    cdef int fd
    cdef dict readers  # socket descriptor -> Reader
    cdef object report
    cdef object empty
    # room for every reader's event, so that one wake-up serves every ready socket
    cdef epoll_event* events
    cdef int capacity
    #: Wake-ups that found ready sockets, and the sockets they found.
    cdef readonly uint64_t wakeups
    cdef readonly uint64_t sockets

    def __cinit__(self):
        self.fd = -1
        self.events = NULL
        self.capacity = 0

    def __init__(self, report, empty):
        """``report(exc)``: a reader raised (asyncio's loop would log it);
        ``empty()``: the last reader left."""
        self.fd = epoll_create1(EPOLL_CLOEXEC)
        if self.fd < 0:
            raise OSError(errno, strerror(errno).decode())
        self.readers = {}
        self.report = report
        self.empty = empty
        self.wakeups = 0
        self.sockets = 0

    def __dealloc__(self):
        if self.fd >= 0:
            close(self.fd)
        PyMem_Free(self.events)

    def fileno(self):
        """The descriptor the event loop watches (-1 once closed)."""
        return self.fd

    def __len__(self):
        return len(self.readers)

    def __contains__(self, reader):
        return isinstance(reader, Reader) and self.readers.get((<Reader>reader).fd) is reader

    def add(self, Reader reader not None):
        """Watch ``reader``'s socket."""
        cdef epoll_event event
        if self.fd < 0:
            raise ValueError("the poller is closed")
        memset(&event, 0, sizeof(event))
        event.events = EPOLLIN
        event.data.fd = reader.fd
        if epoll_ctl(self.fd, EPOLL_CTL_ADD, reader.fd, &event) != 0:
            if errno != EEXIST or epoll_ctl(self.fd, EPOLL_CTL_MOD, reader.fd, &event) != 0:
                raise OSError(errno, strerror(errno).decode())
        self.readers[reader.fd] = reader

    def remove(self, Reader reader not None):
        """Stop watching ``reader``'s socket (nothing if it is not watched); call before
        the socket is closed, so that its descriptor's number can be reused."""
        if self.readers.get(reader.fd) is not reader:
            return
        del self.readers[reader.fd]
        if self.fd >= 0:
            # ENOENT or EBADF: the socket was closed already, and left the set with it.
            epoll_ctl(self.fd, EPOLL_CTL_DEL, reader.fd, NULL)
        if not self.readers:
            self.empty()

    def close(self):
        """Let go of every reader and of the descriptor (the loop must not watch it)."""
        self.readers.clear()
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1

    def ready(self):
        """The event loop's callback: some of the sockets are ready."""
        cdef int n, i
        cdef Reader reader
        if self.fd < 0:
            return
        self.events = _room(self.events, &self.capacity, PyDict_Size(self.readers))
        n = epoll_wait(self.fd, self.events, self.capacity, 0)
        if n <= 0:
            return  # nothing after all, or EINTR: the next turn asks again
        self.wakeups += 1
        self.sockets += n
        for i in range(n):
            found = self.readers.get(self.events[i].data.fd)
            if found is None:
                continue  # removed by a reader before it in this wake-up
            reader = <Reader>found
            try:
                if reader._drain() == 0:
                    self.remove(reader)
            except Exception as exc:  # that socket's turn is lost; the others go on
                self.report(exc)
            if self.fd < 0:
                return


#: ``selectors.EVENT_READ`` and ``EVENT_WRITE``.
DEF EVENT_READ = 1
DEF EVENT_WRITE = 2


cdef class Polling:
    """``event_loop.PollingSelector.select`` in C: the poll interval, and the poll.

    Before it polls, a selector whose loop read media datagrams since its last poll
    (:func:`datagrams_read` moved) waits until ``interval`` seconds have passed since
    then; if asyncio's ``timeout`` (0 for ready callbacks, else the time to its next
    timer) ends first, it waits that long and returns without polling. The poll is
    ``selectors.EpollSelector.select`` on the selector's own epoll descriptor and keys.
    Asyncio's loop calls it at every turn, so what Python did there, about a tenth of
    the gateway's time with media flowing, is done here without Python frames.

    ``activity``, ``clock``, ``sleep`` and ``record`` stand in for the datagram counter,
    the monotonic clock and the wait, and note each poll's timeout (tests).
    """

    cdef int fd
    cdef dict keys
    cdef readonly double interval
    cdef double polled
    cdef uint64_t seen
    cdef object activity
    cdef object clock
    cdef object sleep
    cdef object record
    #: Polls that waited first; calls that did not poll (callbacks or a timer were due
    #: first); the seconds both waited.
    cdef readonly uint64_t waits
    cdef readonly uint64_t skipped
    cdef readonly double waited
    # room for an event per registered descriptor, as EpollSelector asks for
    cdef epoll_event* events
    cdef int capacity

    def __cinit__(self):
        self.events = NULL
        self.capacity = 0

    def __dealloc__(self):
        PyMem_Free(self.events)

    def __init__(self, double interval, int fd, dict keys not None, activity=None,
                 clock=None, sleep=None, record=None):
        if not 0 < interval <= 0.05:
            raise ValueError("the poll interval must be more than 0 and at most 50 ms")
        self.fd = fd
        self.keys = keys
        self.interval = interval
        self.activity = activity
        self.clock = clock
        self.sleep = sleep
        self.record = record
        self.polled = -interval
        self.seen = self._activity()
        self.waits = 0
        self.skipped = 0
        self.waited = 0.0

    def close(self):
        """The selector closed its epoll descriptor: never poll it again."""
        self.fd = -1

    cdef uint64_t _activity(self) except? 0:
        if self.activity is None:
            return _datagrams
        return self.activity()

    cdef double _clock(self) except? -1.0:
        if self.clock is None:
            return _now(CLOCK_MONOTONIC)
        return self.clock()

    cdef int _wait(self, double seconds) except -1:
        cdef timespec request
        cdef int error
        if self.sleep is not None:
            self.sleep(seconds)
            return 0
        request.tv_sec = <time_t>seconds
        request.tv_nsec = <long>((seconds - <double>request.tv_sec) * 1e9)
        with nogil:
            error = clock_nanosleep(CLOCK_MONOTONIC, 0, &request, NULL)
        if error == EINTR:
            PyErr_CheckSignals()  # a handler that raises ends the wait; else it was short
        return 0

    def select(self, timeout=None):
        """What ``selectors.EpollSelector.select(timeout)`` returns, after the wait."""
        cdef bint forever = timeout is None
        cdef double left = 0.0 if forever else timeout
        cdef double due
        if self._activity() != self.seen:
            due = min(self.polled + self.interval - self._clock(), self.interval)
            if due > 0:
                if not forever and left < due:
                    # Callbacks are ready (timeout 0) or a timer is due before the next
                    # poll: they run now, and I/O waits for that poll.
                    if left > 0:
                        self._wait(left)
                        self.waited += left
                    self.skipped += 1
                    return []
                self._wait(due)
                self.waits += 1
                self.waited += due
                left -= due
        try:
            return self._poll(forever, left)
        finally:
            self.polled = self._clock()
            self.seen = self._activity()

    cdef list _poll(self, bint forever, double left):
        cdef int ms, n, i, error
        cdef uint32_t event
        cdef int events
        if self.fd < 0:
            raise ValueError("I/O operation on closed epoll object")
        if self.record is not None:
            self.record.append(None if forever else left)
        if forever:
            ms = -1
        elif left <= 0:
            ms = 0
        else:
            # epoll_wait counts whole milliseconds: round up, to wait at least that long
            # (asyncio never asks for more than a day; anything past 23 days is cut).
            ms = <int>ceil(left * 1e3) if left < 2e6 else 2000000000
        self.events = _room(self.events, &self.capacity, PyDict_Size(self.keys))
        with nogil:
            n = epoll_wait(self.fd, self.events, self.capacity, ms)
        ready = []
        if n < 0:
            error = errno
            if error == EINTR:
                PyErr_CheckSignals()
                return ready  # as EpollSelector does; asyncio asks again
            raise OSError(error, strerror(error).decode())
        for i in range(n):
            # EpollSelector's mapping: anything but EPOLLIN (errors, hang-ups) makes the
            # descriptor writable, and anything but EPOLLOUT readable.
            event = self.events[i].events
            events = 0
            if event & ~(<uint32_t>EPOLLIN):
                events |= EVENT_WRITE
            if event & ~(<uint32_t>EPOLLOUT):
                events |= EVENT_READ
            key = self.keys.get(self.events[i].data.fd)
            if key is not None:
                ready.append((key, events & <int>key[2]))  # SelectorKey.events
        return ready
