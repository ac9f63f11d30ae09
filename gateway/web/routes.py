"""HTTP routes: health, link redemption, and the pages a browser lands on."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from gateway.domain.links import LinkPurpose
from gateway.domain.model import BrowserSession, Role
from gateway.errors import (
    NotAllowed,
    TotpError,
    TotpInvalidFormat,
    TotpLockedOut,
    TotpNotEnrolled,
    TotpRejected,
    TotpReplayed,
)
from gateway.settings import Settings
from gateway.web.csrf import check_form_request, check_origin, csrf_token
from gateway.web.keys import SERVICES, SETTINGS
from gateway.web.pages import fragment, render

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
async def open_client_link(request: web.Request) -> web.Response:
    return await _link_page(
        request,
        LinkPurpose.CLIENT_JOIN,
        heading="Join your session",
        lead="This link works once. When you're ready, press the button below. You'll wait "
        "in the waiting room until your therapist lets you in.",
        button="Join the waiting room",
    )


@routes.post("/j/{token}")
async def redeem_client_link(request: web.Request) -> web.Response:
    return await _redeem(request, LinkPurpose.CLIENT_JOIN, "/join")


@routes.get("/h/{token}")
async def open_host_link(request: web.Request) -> web.Response:
    return await _link_page(
        request,
        LinkPurpose.HOST_SIGN_IN,
        heading="Open your console",
        lead="This sign-in link works once. Press the button below to continue.",
        button="Open my console",
    )


@routes.post("/h/{token}")
async def redeem_host_link(request: web.Request) -> web.Response:
    return await _redeem(request, LinkPurpose.HOST_SIGN_IN, "/host")


#: The link page's hidden field that carries "opened in a cross-site frame" to its post.
_FRAME_FIELD = "frame"
_CROSS_SITE = "cross-site"


async def _link_page(
    request: web.Request, purpose: LinkPurpose, *, heading: str, lead: str, button: str
) -> web.Response:
    """Opening a link (GET, HEAD) uses nothing up: mail scanners and link previews open
    links too. A refused link gets its page here; a usable one a form that posts to
    itself when the person presses its button, or at once inside a platform's frame
    (static/client/open-link.js)."""
    await request.app[SERVICES].links.check(purpose, request.match_info["token"])
    return render(
        "open_link.html",
        title=heading,
        heading=heading,
        lead=lead,
        button=button,
        action=request.path,
        frame=_CROSS_SITE if _opened_in_cross_site_frame(request) else "",
    )


async def _redeem(request: web.Request, purpose: LinkPurpose, landing: str) -> web.Response:
    services = request.app[SERVICES]
    settings = request.app[SETTINGS]
    # No session yet, so no form token: the Origin keeps other sites from posting a link
    # (and signing a browser in to someone else's session).
    check_origin(request, settings)
    form = await request.post()
    redemption = await services.links.redeem(purpose, request.match_info["token"])
    # 303 to a URL without the token; no-referrer keeps it out of the next request.
    response = web.Response(status=303, headers={"Location": landing, "Cache-Control": "no-store"})
    max_age = int(redemption.session.expires_at - redemption.session.created_at)
    if settings.secure_cookies and _posted_in_cross_site_frame(request, form):
        # In a platform's frame the cookie is third-party: SameSite=None, kept in the
        # platform's partition only (CHIPS; docs/decisions/0005). Written by hand:
        # Python's cookies know no Partitioned attribute before 3.14.
        response.headers.add(
            "Set-Cookie",
            f"{cookie_name(settings)}={redemption.session_token}; Max-Age={max_age}; "
            "Path=/; Secure; HttpOnly; SameSite=None; Partitioned",
        )
        return response
    response.set_cookie(
        cookie_name(settings),
        redemption.session_token,
        max_age=max_age,
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="Lax",
    )
    return response


def _opened_in_cross_site_frame(request: web.Request) -> bool:
    """Whether the browser loads this in a frame of another site (Fetch Metadata)."""
    return (
        request.headers.get("Sec-Fetch-Dest") == "iframe"
        and request.headers.get("Sec-Fetch-Site") == "cross-site"
    )


def _posted_in_cross_site_frame(request: web.Request, form: Mapping[str, object]) -> bool:
    """Whether the link page's post comes from a cross-site frame. The post itself is
    same-origin (the frame's page posts to its own origin), so the page carries what its
    GET saw; it counts only for a post that a frame makes."""
    return (
        form.get(_FRAME_FIELD) == _CROSS_SITE and request.headers.get("Sec-Fetch-Dest") == "iframe"
    )


async def current_session(request: web.Request) -> tuple[str, BrowserSession] | None:
    """(hash, session) of this request's cookie, if the session is alive."""
    token = request.cookies.get(cookie_name(request.app[SETTINGS]))
    return await request.app[SERVICES].sessions.resolve(token)


@routes.get("/join")
async def join_page(request: web.Request) -> web.Response:
    found = await current_session(request)
    if found is None or found[1].role is not Role.CLIENT:
        return render("no_session.html", status=401, title="Open your link")
    settings = request.app[SETTINGS]
    # The client app (static/client/join.js): device check, identity, consent, waiting
    # room, call. It posts embed events only to one of these origins (see the embed SDK).
    return render(
        "join.html",
        title="Waiting room",
        totp_digits=str(settings.totp_digits),
        embedders=" ".join(settings.frame_ancestors),
        trusted={"consent_text": fragment("telehealth_consent.html")},
    )


@routes.get("/host")
async def host_page(request: web.Request) -> web.Response:
    """The console once signed in; before that, the sign-in (or first set-up) form."""
    found = await current_session(request)
    if found is None or found[1].role is not Role.HOST:
        return render("no_session.html", status=401, title="Open your link")
    session_hash, session = found
    settings = request.app[SETTINGS]
    if session.verified:
        return render("host_console.html", title="Console")
    services = request.app[SERVICES]
    csrf = csrf_token(settings, session_hash)
    if not await services.identity.is_enrolled(session.participant_id):
        return render("host_enrol_offer.html", title="Set up sign-in", csrf=csrf)
    return render("host_sign_in.html", title="Sign in", csrf=csrf, trusted={"error": ""})


@routes.post("/host/enrol")
async def host_enrol(request: web.Request) -> web.Response:
    """First sign-in: the authenticator set-up, shown once."""
    session_hash, session = await _host_form_session(request)
    form = await request.post()
    settings = request.app[SETTINGS]
    check_form_request(request, settings, session_hash, form.get("csrf"))
    enrolment = await request.app[SERVICES].waiting_room.enrol_identity(session)
    return render(
        "host_enrol.html",
        title="Set up sign-in",
        csrf=csrf_token(settings, session_hash),
        secret=enrolment.secret,
        trusted={"qr_svg": enrolment.qr_svg},
    )


@routes.post("/host/sign-in")
async def host_sign_in(request: web.Request) -> web.Response:
    session_hash, session = await _host_form_session(request)
    form = await request.post()
    settings = request.app[SETTINGS]
    check_form_request(request, settings, session_hash, form.get("csrf"))
    try:
        await request.app[SERVICES].waiting_room.prove_identity(
            session_hash, session, form.get("code")
        )
    except TotpError as exc:
        status = 429 if isinstance(exc, TotpLockedOut) else 400
        return render(
            "host_sign_in.html",
            status=status,
            title="Sign in",
            csrf=csrf_token(settings, session_hash),
            trusted={"error": _SIGN_IN_ERRORS.get(type(exc), _SIGN_IN_ERRORS[TotpRejected])},
        )
    return web.Response(status=303, headers={"Location": "/host", "Cache-Control": "no-store"})


_SIGN_IN_ERRORS = {
    TotpRejected: '<p role="alert">That code did not work. Check it and try again.</p>',
    TotpReplayed: '<p role="alert">That code was just used. Wait for the next one.</p>',
    TotpInvalidFormat: '<p role="alert">Type the 6 digits your app shows.</p>',
    TotpLockedOut: '<p role="alert">Too many wrong codes. Please wait a while, then try again.</p>',
    TotpNotEnrolled: '<p role="alert">Set up your authenticator app first.</p>',
}


async def _host_form_session(request: web.Request) -> tuple[str, BrowserSession]:
    found = await current_session(request)
    if found is None or found[1].role is not Role.HOST:
        raise NotAllowed("this needs a host sign-in link")
    return found
