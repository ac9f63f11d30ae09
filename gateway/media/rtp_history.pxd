# The fields of gateway/media/rtp_history.py's PacketHistory when compiled, which the
# compiled path (_native.pyx) writes directly.


cdef class PacketHistory:
    cdef public Py_ssize_t _capacity
    cdef public list _seqs, _data, _resent_at
