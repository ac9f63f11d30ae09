"""Benchmark worker processes: one object per process, its methods called over a pipe.

The parent drives every step (offer, answer, mark a window, stop); each child runs one
event loop that serves the object's methods between forwarding packets. A child stops
by itself when told to, when its parent goes away, or when its time limit passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import multiprocessing
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Protocol

from gateway.media.event_loop import loop_factory

__all__ = ["Served", "Worker", "call_all"]

_STOP = "stop"


class Served(Protocol):
    """What a worker process serves: any methods, and a ``close`` for the end."""

    async def close(self) -> None: ...


async def _next_request(conn: Connection) -> tuple[str, dict[str, Any]]:
    """The next (method, arguments) from the parent, waited for on the event loop."""
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(conn.fileno(), wake)
    try:
        await readable
    finally:
        loop.remove_reader(conn.fileno())
    method, arguments = conn.recv()
    return method, arguments


async def _serve(conn: Connection, served: Served) -> None:
    while True:
        try:
            method, arguments = await _next_request(conn)
        except EOFError:
            return  # the parent is gone
        if method == _STOP:
            conn.send(("ok", None))
            return
        try:
            result = getattr(served, method)(**arguments)
            if inspect.isawaitable(result):
                result = await result
        except Exception:  # noqa: BLE001 - reported to the parent, which raises it
            conn.send(("error", traceback.format_exc()))
        else:
            conn.send(("ok", result))


async def _run(
    conn: Connection, factory: Callable[..., Served], kwargs: dict[str, Any], time_limit: float
) -> None:
    served = factory(**kwargs)
    try:
        await asyncio.wait_for(_serve(conn, served), timeout=time_limit)
    except TimeoutError:
        pass  # bounded: a worker never outlives its time limit
    finally:
        await served.close()


def _main(
    conn: Connection,
    factory: Callable[..., Served],
    kwargs: dict[str, Any],
    time_limit: float,
    use_uvloop: bool,
    poll_interval_us: int,
) -> None:
    if use_uvloop:
        import uvloop

        uvloop.run(_run(conn, factory, kwargs, time_limit))
        return
    # The gateway's own event loop (``quietroom serve`` makes the same).
    with asyncio.Runner(loop_factory=loop_factory(poll_interval_us)) as runner:
        runner.run(_run(conn, factory, kwargs, time_limit))


class Worker:
    """A child process serving the object ``factory(**kwargs)`` builds there."""

    def __init__(
        self,
        factory: Callable[..., Served],
        kwargs: dict[str, Any],
        *,
        name: str,
        time_limit: float,
        use_uvloop: bool = False,
        poll_interval_us: int = 0,
    ) -> None:
        """``poll_interval_us``: the event loop's (``gateway.media.event_loop``; not
        with uvloop)."""
        context = multiprocessing.get_context("spawn")
        self.name = name
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_main,
            args=(child, factory, kwargs, time_limit, use_uvloop, poll_interval_us),
            name=name,
            daemon=True,
        )
        self._process.start()
        child.close()

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    def send(self, method: str, **arguments: Any) -> None:
        """Start a call; :meth:`result` waits for its answer."""
        self._conn.send((method, arguments))

    def result(self, timeout: float) -> Any:
        """The answer to the call started last; raises what the child raised."""
        if not self._conn.poll(timeout):
            raise TimeoutError(f"{self.name} did not answer within {timeout:.0f} s")
        status, value = self._conn.recv()
        if status == "error":
            raise RuntimeError(f"{self.name} failed:\n{value}")
        return value

    def call(self, method: str, timeout: float = 60.0, **arguments: Any) -> Any:
        self.send(method, **arguments)
        return self.result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Close the served object and end the process; kill it if it does not end."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(TimeoutError, OSError, EOFError):  # ended below either way
            self.call(_STOP, timeout=timeout)
        self._process.join(max(0.0, deadline - time.monotonic()))
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


def call_all(
    workers: list[Worker], method: str, timeout: float = 60.0, **arguments: Any
) -> list[Any]:
    """The same call on every worker at once; their answers in order."""
    for worker in workers:
        worker.send(method, **arguments)
    deadline = time.monotonic() + timeout
    return [worker.result(max(0.0, deadline - time.monotonic())) for worker in workers]
