"""Browser tests: Debian Chromium against a gateway the test starts on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.browser.kit import LOOPBACK_MEDIA
from tests.gateway_harness import RunningGateway, running_gateway


@pytest.fixture
async def gateway() -> AsyncIterator[RunningGateway]:
    """A gateway on the embedded store, with media on loopback; the host counts as away
    at once when gone."""
    async with running_gateway(host_away_grace=0, **LOOPBACK_MEDIA) as running:
        yield running
