"""An access log without secrets or identifiers.

aiohttp's default access log writes the full path (a link token is in the path) and the
client address (an identifier of the person). This one writes the method, the path with
every token replaced, the status and the time taken.
"""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

__all__ = ["RedactingAccessLogger", "redact_path"]

#: Path segments after these prefixes are secrets (link tokens).
_SECRET_PATH = re.compile(r"^/(j|h)/[^/?#]*")


def redact_path(path: str) -> str:
    """``/j/<token>`` becomes ``/j/…``; query strings are dropped entirely."""
    path = path.split("?", 1)[0]
    return _SECRET_PATH.sub(lambda m: f"/{m.group(1)}/…", path)


class RedactingAccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        path = redact_path(request.rel_url.path)
        duration_ms = round(time * 1000, 1)
        self.logger.info(
            "%s %s %s %.1fms",
            request.method,
            path,
            response.status,
            duration_ms,
            # Structured copies for JSON logs (gateway.logs writes these fields only).
            extra={
                "http_method": request.method,
                "http_path": path,
                "http_status": response.status,
                "duration_ms": duration_ms,
            },
        )
