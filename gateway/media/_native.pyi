# Types of the compiled half of gateway.media._aiortc (gateway/media/_native.pyx).
from collections.abc import Callable
from typing import Any

def datagrams_read() -> int: ...
def configure(protect: int, unprotect: int, max_plain: int, max_datagram: int) -> None: ...

class Out:
    pair: Any
    session: Any
    def __init__(
        self, pair: Any, transport: Any, fd: int, address: bytes, session: Any, ctx: int
    ) -> None: ...

class Route:
    def __init__(
        self, forwarder: Any, source: Any, ssrc: int, statistics: Any, formats: dict[int, Any]
    ) -> None: ...

class Lane:
    routes: dict[int, Route]
    on_ingress: Callable[[int | None], None] | None
    on_egress: Callable[[], None] | None
    forwarded: int
    handed_back: int
    def __init__(
        self,
        dtls: Any,
        connected: Any,
        fast: Any,
        monotonic: Callable[[], float],
        pointer_of: Callable[[Any], int],
        ids: Any,
    ) -> None: ...
    def learn(self, ssrc: int, forwarder: Any, source: Any, statistics: Any) -> None: ...
    def receive(self, data: bytes) -> bytes | bool | None: ...

class Reader:
    reads: int
    datagrams: int
    def __init__(
        self,
        fd: int,
        transport: Any,
        lane: Lane,
        other: Callable[[bytes, Any], None],
        plain: Callable[[bytes], None],
        failed: Callable[[BaseException], None],
        error_received: Callable[[Exception], None],
        report: Callable[[BaseException], None],
        rtcp: Callable[[bytes], None] | None = None,
    ) -> None: ...
    def stamp(self) -> None: ...
    def ready(self) -> None: ...

class Poller:
    wakeups: int
    sockets: int
    def __init__(
        self, report: Callable[[BaseException], None], empty: Callable[[], None]
    ) -> None: ...
    def fileno(self) -> int: ...
    def __len__(self) -> int: ...
    def __contains__(self, reader: object) -> bool: ...
    def add(self, reader: Reader) -> None: ...
    def remove(self, reader: Reader) -> None: ...
    def close(self) -> None: ...
    def ready(self) -> None: ...

class Polling:
    interval: float
    waits: int
    skipped: int
    waited: float
    def __init__(
        self,
        interval: float,
        fd: int,
        keys: dict[int, Any],
        activity: Callable[[], int] | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        record: list[float | None] | None = None,
    ) -> None: ...
    def close(self) -> None: ...
    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]: ...
