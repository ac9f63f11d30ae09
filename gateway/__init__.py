"""Quietroom: a secure video session gateway for teletherapy."""

from gateway.clock import Clock, FrozenClock, SystemClock
from gateway.errors import GatewayError

__all__ = ["Clock", "FrozenClock", "GatewayError", "SystemClock", "__version__"]

__version__ = "0.1.0"
