"""Every signaling test runs against a real gateway on loopback, on both stores."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.storage import Store
from tests.gateway_harness import RunningGateway, running_gateway


@pytest.fixture
async def gateway(any_store: Store) -> AsyncIterator[RunningGateway]:
    async with running_gateway(any_store, reconnect_grace=1, host_away_grace=0) as running:
        yield running
