"""Security headers on every answer, and the one place errors become HTTP."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.errors import (
    GatewayError,
    InvalidInput,
    LinkError,
    NotFound,
    StoreUnavailable,
)
from gateway.settings import Settings
from gateway.web.pages import render

__all__ = ["error_middleware", "security_headers"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Every refused link gets this one status, whatever the reason.
LINK_REFUSED_STATUS = 410


def _csp(settings: Settings) -> str:
    ancestors = " ".join(settings.frame_ancestors) or "'none'"
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "media-src 'self' blob:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            f"frame-ancestors {ancestors}",
        )
    )


def security_headers(settings: Settings) -> Middleware:
    csp = _csp(settings)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
            _apply(response, csp, settings)
            raise
        _apply(response, csp, settings)
        return response

    return middleware


def _apply(response: web.StreamResponse, csp: str, settings: Settings) -> None:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", csp)
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Permissions-Policy"] = "camera=(self), microphone=(self), geolocation=()"
    if settings.secure_cookies:
        headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map the gateway's errors to pages; nothing else builds error answers."""
    try:
        return await handler(request)
    except LinkError:
        return render("link_refused.html", status=LINK_REFUSED_STATUS, title="Link not valid")
    except StoreUnavailable:
        log.error("store unavailable while serving %s", request.path)
        return render("unavailable.html", status=503, title="Try again shortly")
    except NotFound:
        return render(
            "error.html",
            status=404,
            title="Not found",
            heading="Not found",
            message="There is nothing here.",
        )
    except InvalidInput as exc:
        return render(
            "error.html", status=400, title="Not accepted", heading="Not accepted", message=str(exc)
        )
    except GatewayError as exc:
        log.warning("refused %s: %s", request.path, exc.code)
        return render(
            "error.html",
            status=400,
            title="Not possible",
            heading="That is not possible right now",
            message="Please go back and try again.",
        )
