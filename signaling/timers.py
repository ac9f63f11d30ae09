"""Delayed actions (grace periods) owned by the signaling server: kept, replaceable,
cancelled on stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["GraceTimers"]

log = logging.getLogger(__name__)


class GraceTimers:
    """At most one pending action per key; scheduling again replaces it."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def schedule(self, key: str, delay: float, action: Callable[[], Awaitable[object]]) -> None:
        self.cancel(key)
        self._tasks[key] = asyncio.create_task(self._run(key, delay, action), name=f"grace:{key}")

    def cancel(self, key: str) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()

    def pending(self, key: str) -> bool:
        return key in self._tasks

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, key: str, delay: float, action: Callable[[], Awaitable[object]]) -> None:
        try:
            await asyncio.sleep(delay)
            await action()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("grace action failed")
        finally:
            if self._tasks.get(key) is asyncio.current_task():
                del self._tasks[key]
