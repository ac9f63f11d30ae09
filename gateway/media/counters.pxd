# The fields of gateway/media/counters.py's classes when compiled: C integers, which the
# compiled path (_native.pyx) adds to directly.
from libc.stdint cimport uint64_t


cdef class TrackCounters:
    cdef public uint64_t packets, octets, dropped, retransmissions, nacks, keyframe_requests


cdef class ForwarderStats:
    cdef public uint64_t packets_in, octets_in, packets_out, octets_out
    cdef public uint64_t audio_packets_out, audio_octets_out
    cdef public uint64_t video_packets_out, video_octets_out
    cdef public uint64_t unknown_payload, not_forwarded, held_for_keyframe
    cdef public uint64_t keyframe_requests_sent, keyframe_requests_suppressed
    cdef public uint64_t nacks_received, retransmissions_sent, retransmissions_missed
    cdef public uint64_t nacks_sent_upstream, retransmissions_received
    cdef public uint64_t remb_received, remb_sent_upstream, sender_reports_received
