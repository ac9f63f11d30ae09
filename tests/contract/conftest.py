"""The contract suite runs every test against MemoryStore and a real Redis."""

from __future__ import annotations

import pytest

from gateway.storage import Store


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store
