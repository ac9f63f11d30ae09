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
    NotAllowed,
    NotFound,
    RateLimited,
    ServiceRestarting,
    StoreError,
    StoreUnavailable,
    Unauthenticated,
    UnsupportedMediaType,
)
from gateway.metrics import AuthFailure
from gateway.settings import Settings
from gateway.web.access_log import redact_path
from gateway.web.api import API_PREFIX, dumps
from gateway.web.keys import METRICS
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
    """Map the gateway's errors to pages, or to JSON under the platform API; nothing
    else builds error answers."""
    if request.path.startswith(f"{API_PREFIX}/"):
        return await _api_errors(request, handler)
    try:
        return await handler(request)
    except LinkError:
        return render("link_refused.html", status=LINK_REFUSED_STATUS, title="Link not valid")
    except ServiceRestarting:
        response = render(
            "error.html",
            status=503,
            title="Restarting",
            heading="The service is restarting",
            message="Your link has not been used up. Please open it again in a minute.",
        )
        response.headers["Retry-After"] = "30"
        return response
    except StoreUnavailable:
        log.error("store unavailable while serving %s", redact_path(request.path))
        return render("unavailable.html", status=503, title="Try again shortly")
    except (NotFound, web.HTTPNotFound):  # the router's own 404 gets the same page
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
    except NotAllowed:
        log.warning("not allowed: %s %s", request.method, redact_path(request.path))
        return render(
            "error.html",
            status=403,
            title="Not allowed",
            heading="That is not allowed",
            message="Please open the link you were sent and try again.",
        )
    except GatewayError as exc:
        log.warning("refused %s: %s", redact_path(request.path), exc.code)
        return render(
            "error.html",
            status=400,
            title="Not possible",
            heading="That is not possible right now",
            message="Please go back and try again.",
        )


# --- the platform API: JSON errors --------------------------------------------------------------

#: HTTP status of each error, by the first class in this order that the error is.
_API_STATUS: tuple[tuple[type[GatewayError], int], ...] = (
    (Unauthenticated, 401),
    (NotAllowed, 403),
    (NotFound, 404),
    (UnsupportedMediaType, 415),
    (InvalidInput, 400),
    (RateLimited, 429),
    (StoreUnavailable, 503),
    (ServiceRestarting, 503),
    (StoreError, 500),
    (LinkError, LINK_REFUSED_STATUS),
    (GatewayError, 409),
)

#: Codes for what aiohttp itself refuses (no such route, wrong method, body too large).
_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


async def _api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        status = next(status for kind, status in _API_STATUS if isinstance(exc, kind))
        if isinstance(exc, Unauthenticated) and METRICS in request.app:
            # Counted here, not from the audit log, which records a flood only in part.
            request.app[METRICS].auth_failed(AuthFailure.API_KEY_REFUSED)
        if status >= 500:
            log.error("api %s %s failed: %s", request.method, request.path, exc.code)
        headers = {"WWW-Authenticate": 'Bearer realm="quietroom"'} if status == 401 else {}
        return _api_error(status, exc.code, str(exc), headers=headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        code = _HTTP_CODES.get(exc.status, "http_error")
        return _api_error(exc.status, code, exc.reason.lower(), headers=allow)
    except Exception:  # the API answers JSON even for a bug; the log has the traceback
        log.exception("api %s %s failed unexpectedly", request.method, request.path)
        return _api_error(500, "internal_error", "internal error")


def _api_error(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}},
        status=status,
        dumps=dumps,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )
