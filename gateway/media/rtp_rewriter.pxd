# The fields of gateway/media/rtp_rewriter.py's SequenceRewriter when compiled, which the
# compiled path (_native.pyx) reads and writes directly: the numbers as C integers.
from libc.stdint cimport uint32_t


cdef class SequenceRewriter:
    cdef public object _clock_rate, _epoch, _last_wall
    cdef public uint32_t _last_seq, _last_ts, _seq_offset, _ts_offset
