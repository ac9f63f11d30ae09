"""CSRF defence for the few HTML forms: the Origin must be ours, and the form must
carry a token bound to the browser session (HMAC under the signing keys). A link's own
form has no session yet: the Origin alone keeps other sites from posting it."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from aiohttp import web

from gateway.errors import NotAllowed
from gateway.settings import Settings

__all__ = ["check_form_request", "check_origin", "csrf_token"]


def _mac(key: str, session_hash: str) -> str:
    return hmac.new(key.encode(), f"csrf:{session_hash}".encode(), hashlib.sha256).hexdigest()


def csrf_token(settings: Settings, session_hash: str) -> str:
    return _mac(settings.secret_keys[0], session_hash)


def _token_ok(keys: Sequence[str], session_hash: str, presented: object) -> bool:
    if not isinstance(presented, str) or len(presented) != 64:
        return False
    return any(hmac.compare_digest(_mac(key, session_hash), presented) for key in keys)


def check_origin(request: web.Request, settings: Settings) -> None:
    """Refuse a post that another origin's page sent (Origin, else Fetch Metadata)."""
    origin = request.headers.get("Origin")
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if origin == "null" and fetch_site == "same-origin":
        # Under Referrer-Policy: no-referrer browsers post our own forms with "Origin:
        # null"; Sec-Fetch-Site, which pages cannot set, says where the post came from.
        origin = None
    if origin is not None and origin not in settings.origins:
        raise NotAllowed("form posted from another origin")
    if origin is None and fetch_site not in (None, "same-origin"):
        raise NotAllowed("form posted from another site")


def check_form_request(
    request: web.Request, settings: Settings, session_hash: str, presented: object
) -> None:
    """Refuse a form post from another origin or without this session's token."""
    check_origin(request, settings)
    if not _token_ok(settings.secret_keys, session_hash, presented):
        raise NotAllowed("form token missing or wrong")
