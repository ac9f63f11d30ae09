"""Server-rendered pages: small templates, every value escaped."""

from __future__ import annotations

import html
import string
from functools import cache
from importlib import resources

from aiohttp import web

__all__ = ["render"]


@cache
def _template(name: str) -> string.Template:
    text = resources.files("gateway.web").joinpath("templates", name).read_text("utf-8")
    return string.Template(text)


def render(name: str, *, status: int = 200, title: str, **values: str) -> web.Response:
    """Render ``templates/<name>`` inside the common layout; every value is escaped."""
    body = _template(name).substitute({k: html.escape(v) for k, v in values.items()})
    page = _template("layout.html").substitute(title=html.escape(title), body=body)
    return web.Response(
        status=status,
        text=page,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )
