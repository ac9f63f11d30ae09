"""Server-rendered pages: small templates, every value escaped."""

from __future__ import annotations

import html
import string
from collections.abc import Mapping
from functools import cache
from importlib import resources

from aiohttp import web

from gateway.web.static import static_prefix

__all__ = ["fragment", "render"]


@cache
def _template(name: str) -> string.Template:
    text = resources.files("gateway.web").joinpath("templates", name).read_text("utf-8")
    return string.Template(text)


def fragment(name: str) -> str:
    """The raw markup of ``templates/<name>``: the gateway's own text, to embed as trusted."""
    return _template(name).template


def render(
    name: str,
    *,
    status: int = 200,
    title: str,
    trusted: Mapping[str, str] | None = None,
    **values: str,
) -> web.Response:
    """Render ``templates/<name>`` inside the common layout. Every value is escaped,
    except ``trusted`` markup that the gateway made itself (a QR code's SVG)."""
    escaped = {k: html.escape(v) for k, v in values.items()}
    # $static: the versioned prefix of the client's files (scripts, the stylesheet).
    static = static_prefix()
    body = _template(name).substitute({**escaped, **(trusted or {}), "static": static})
    page = _template("layout.html").substitute(title=html.escape(title), body=body, static=static)
    return web.Response(
        status=status,
        text=page,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )
