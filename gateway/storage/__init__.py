"""State that must survive a process: one Store protocol, two implementations."""

from gateway.storage.base import Store
from gateway.storage.memory import MemoryStore
from gateway.storage.redis import RedisStore
from gateway.storage.secretbox import ResealReport, SecretBox

__all__ = ["MemoryStore", "RedisStore", "ResealReport", "SecretBox", "Store"]
