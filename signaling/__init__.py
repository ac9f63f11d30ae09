"""Socket.IO signaling: a host namespace and a client namespace, thin adapters over
the gateway's services."""

from signaling.server import SIO, attach_signaling

__all__ = ["SIO", "attach_signaling"]
