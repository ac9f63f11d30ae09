# The fields of gateway/media/receive_statistics.py's ReceiveStatistics when compiled,
# which the compiled path (_native.pyx) reads and writes directly.
from libc.stdint cimport int64_t


cdef class ReceiveStatistics:
    cdef public object base_seq, max_seq, _clockrate, _last_arrival, _last_timestamp
    cdef public int64_t cycles, packets_received, _jitter_q4, _expected_prior, _received_prior
