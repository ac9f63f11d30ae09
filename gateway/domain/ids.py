"""Opaque identifiers: random, URL-safe, and meaningless outside the gateway."""

from __future__ import annotations

import re
import secrets

__all__ = ["ID_PATTERN", "is_valid_id", "new_id"]

#: Every id the gateway makes: a short prefix, an underscore, 22 URL-safe characters.
ID_PATTERN = re.compile(r"^[a-z]{2,4}_[A-Za-z0-9_-]{22}$")


def new_id(prefix: str) -> str:
    """A new random id such as ``apt_3q2h...`` (128 bits of randomness)."""
    if not (2 <= len(prefix) <= 4 and prefix.isascii() and prefix.isalpha() and prefix.islower()):
        raise ValueError(f"id prefixes are 2 to 4 lowercase letters, not {prefix!r}")
    return f"{prefix}_{secrets.token_urlsafe(16)}"


def is_valid_id(value: object) -> bool:
    """True when ``value`` has the shape of an id the gateway makes."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None
