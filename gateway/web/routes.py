"""HTTP routes: health, link redemption, and the pages a browser lands on."""

from __future__ import annotations

from aiohttp import web

from gateway.domain.links import LinkPurpose
from gateway.domain.model import BrowserSession, Role
from gateway.services import hash_session_token
from gateway.settings import Settings
from gateway.web.keys import SERVICES, SETTINGS
from gateway.web.pages import render

__all__ = ["cookie_name", "routes"]

routes = web.RouteTableDef()


def cookie_name(settings: Settings) -> str:
    # The __Host- prefix pins the cookie to this origin, Secure, Path=/ (HTTPS only).
    return "__Host-qr_session" if settings.secure_cookies else "qr_session"


@routes.get("/healthz")
async def health(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


@routes.get("/j/{token}")
async def redeem_client_link(request: web.Request) -> web.Response:
    return await _redeem(request, LinkPurpose.CLIENT_JOIN, "/join")


@routes.get("/h/{token}")
async def redeem_host_link(request: web.Request) -> web.Response:
    return await _redeem(request, LinkPurpose.HOST_SIGN_IN, "/host")


async def _redeem(request: web.Request, purpose: LinkPurpose, landing: str) -> web.Response:
    services = request.app[SERVICES]
    settings = request.app[SETTINGS]
    redemption = await services.links.redeem(purpose, request.match_info["token"])
    # 303 to a URL without the token; no-referrer keeps it out of the next request.
    response = web.Response(status=303, headers={"Location": landing, "Cache-Control": "no-store"})
    response.set_cookie(
        cookie_name(settings),
        redemption.session_token,
        max_age=int(redemption.session.expires_at - redemption.session.created_at),
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="Lax",
    )
    return response


async def current_session(request: web.Request) -> BrowserSession | None:
    """The browser session of this request's cookie, if it is alive."""
    settings = request.app[SETTINGS]
    services = request.app[SERVICES]
    token = request.cookies.get(cookie_name(settings))
    if not token or len(token) > 128:
        return None
    return await services.store.get_session(hash_session_token(token), now=services.clock.now())


@routes.get("/join")
async def join_page(request: web.Request) -> web.Response:
    session = await current_session(request)
    if session is None or session.role is not Role.CLIENT:
        return render("no_session.html", status=401, title="Open your link")
    return render("waiting.html", title="Waiting room")


@routes.get("/host")
async def host_page(request: web.Request) -> web.Response:
    session = await current_session(request)
    if session is None or session.role is not Role.HOST:
        return render("no_session.html", status=401, title="Open your link")
    return render("host_sign_in.html", title="Sign in")
