"""Event payloads: checked for type, shape and size before anything else looks at them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import InvalidInput

__all__ = ["NO_PAYLOAD", "Field", "Schema"]


@dataclass(frozen=True, slots=True)
class Field:
    kind: type
    max_length: int = 0  # for str: at most this many characters

    def check(self, name: str, value: Any) -> Any:
        # bool is an int in Python; keep them apart.
        if self.kind is not bool and isinstance(value, bool):
            raise InvalidInput(f"{name} has the wrong type", field=name)
        if not isinstance(value, self.kind):
            raise InvalidInput(f"{name} has the wrong type", field=name)
        if isinstance(value, str) and len(value) > self.max_length:
            raise InvalidInput(f"{name} is too long", field=name)
        return value


@dataclass(frozen=True, slots=True)
class Schema:
    """An object payload with exactly these fields (all required)."""

    fields: Mapping[str, Field]

    def check(self, payload: Any) -> dict[str, Any]:
        if not self.fields and payload in (None, {}):
            return {}
        if not isinstance(payload, dict):
            raise InvalidInput("the payload must be an object")
        unknown = set(payload) - set(self.fields)
        missing = set(self.fields) - set(payload)
        if unknown or missing:
            raise InvalidInput("the payload has unexpected or missing fields")
        return {name: field.check(name, payload[name]) for name, field in self.fields.items()}


NO_PAYLOAD = Schema({})
