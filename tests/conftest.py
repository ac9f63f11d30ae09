"""Fixtures shared by every test: a frozen clock, a secret box, stores, real servers."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from gateway.clock import FrozenClock
from gateway.storage import MemoryStore, SecretBox, Store

# Real servers (redis-server, later coturn and chromium) started by fixtures.
pytest_plugins = ["tests.fixtures.servers", "tests.fixtures.chromium"]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def secret_box() -> SecretBox:
    return SecretBox([Fernet.generate_key().decode("ascii")])


@pytest.fixture
def memory_store(secret_box: SecretBox) -> MemoryStore:
    return MemoryStore(secret_box=secret_box)


@pytest.fixture(params=["memory", "redis"])
def any_store(request: pytest.FixtureRequest) -> Store:
    """The same test against the embedded store and a real Redis."""
    if request.param == "memory":
        return request.getfixturevalue("memory_store")  # type: ignore[no-any-return]
    return request.getfixturevalue("redis_store")  # type: ignore[no-any-return]
