"""Log lines for operators: text or JSON, with the ids of what they are about.

Code logs with ``logging.getLogger(__name__)`` and passes ids as
``extra={"participant_id": ..., "appointment_id": ...}``. Only the context fields named
in :data:`CONTEXT_FIELDS` reach a line, and only when their value looks like an opaque
id, so a name or a token passed by mistake in ``extra`` is dropped, never written.
Messages themselves must hold no secret and no PHI (see STYLE.md); nothing here can
guess what a message means.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from gateway.domain.ids import is_valid_id

__all__ = [
    "CONTEXT_FIELDS",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "context_of",
]

#: ``extra=`` keys that are copied onto a line: opaque ids only.
CONTEXT_FIELDS = (
    "appointment_id",
    "room_id",
    "participant_id",
    "host_id",
    "platform_id",
    "apikey_id",
    "delivery_id",
    "recording_id",
)

_METHOD = re.compile(r"^[A-Z]{1,16}$")

#: Libraries whose debug lines carry addresses, SDP or ICE candidates: never below this.
_QUIET_LIBRARIES = {"aioice": logging.WARNING, "aiortc": logging.WARNING}


def context_of(record: logging.LogRecord) -> dict[str, Any]:
    """The id (and access log) fields of ``record`` that may be written."""
    context: dict[str, Any] = {}
    for name in CONTEXT_FIELDS:
        value = getattr(record, name, None)
        if is_valid_id(value):
            context[name] = value
    method = getattr(record, "http_method", None)
    if isinstance(method, str) and _METHOD.fullmatch(method):
        context["http_method"] = method
    path = getattr(record, "http_path", None)
    if isinstance(path, str):
        context["http_path"] = path[:200]
    for name in ("http_status", "duration_ms"):
        value = getattr(record, name, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            context[name] = value
    return context


def _timestamp(record: logging.LogRecord) -> str:
    # Milliseconds, not microseconds: fewer digit runs for a log scanner to trip on.
    at = datetime.fromtimestamp(record.created, UTC)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, ids, and any error."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(context_of(record))
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=True, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [id=... ...]`` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = {key: value for key, value in context_of(record).items() if key in CONTEXT_FIELDS}
        if not context:
            return text
        first, newline, rest = text.partition("\n")
        ids = " ".join(f"{key}={value}" for key, value in context.items())
        return f"{first} [{ids}]{newline}{rest}"


def configure_logging(
    *, log_format: str = "text", level: str = "INFO", stream: TextIO | None = None
) -> None:
    """Send every log line to ``stream`` (standard error) in ``log_format``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric if isinstance(numeric, int) else logging.INFO)
    for name, floor in _QUIET_LIBRARIES.items():
        logging.getLogger(name).setLevel(max(root.level, floor))
