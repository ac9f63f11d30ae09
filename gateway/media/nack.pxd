# The fields of gateway/media/nack.py's MissingPackets when compiled, which the compiled
# path (_native.pyx) reads and writes directly.


cdef class MissingPackets:
    cdef public object _highest, _horizon
    cdef public set _missing
