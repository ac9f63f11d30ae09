"""Small tools for the tests that try to break the waiting room."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pyotp

from tests.gateway_harness import Browser, SocketClient

__all__ = [
    "INVALID_INPUT",
    "Spread",
    "error_code",
    "fresh_rate_window",
    "wrong_codes",
]

#: The one answer to anything malformed, whatever was wrong with it.
INVALID_INPUT = {
    "ok": False,
    "error": {"code": "invalid_input", "message": "That request was not understood."},
}


def error_code(ack: Any) -> str:
    """The code of a refusal ack; fails the test if the ack is not a refusal."""
    assert isinstance(ack, dict), ack
    assert ack.get("ok") is False, ack
    code = ack["error"]["code"]
    assert isinstance(code, str)
    return code


@dataclass
class Spread:
    """Calls spread over sockets of one browser, a few per socket, so the per-connection
    rate limit never answers in place of the rule a test is about."""

    browser: Browser
    namespace: str
    per_socket: int = 6
    #: Sockets already open (the last one is used first, as if fresh), then new ones.
    sockets: list[SocketClient] = field(default_factory=list)
    _left: int = field(init=False)

    def __post_init__(self) -> None:
        self._left = self.per_socket if self.sockets else 0

    async def call(self, event: str, data: Any = None) -> Any:
        if not self.sockets or self._left == 0:
            self.sockets.append(await self.browser.socket(self.namespace))
            self._left = self.per_socket
        self._left -= 1
        return await self.sockets[-1].call(event, data)


def wrong_codes(secret: str, count: int) -> list[str]:
    """``count`` six-digit codes that no time step near now accepts."""
    totp = pyotp.TOTP(secret)
    now = time.time()
    near = {totp.at(now + 30 * step) for step in range(-3, 4)}
    codes = []
    candidate = 0
    while len(codes) < count:
        code = f"{(candidate * 7919 + 104729) % 1_000_000:06d}"
        candidate += 1
        if code not in near and code not in codes:
            codes.append(code)
    return codes


async def fresh_rate_window(window: float = 60.0, margin: float = 3.0) -> None:
    """Wait (at most ``margin`` seconds) so a fixed rate window does not roll over in
    the next few seconds of the test."""
    left = window - time.time() % window
    if left < margin:
        await asyncio.sleep(left + 0.05)
