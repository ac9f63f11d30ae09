"""The browser client's files (``static/client/``), served under ``/static/``.

Pages link to ``/static/<version>/...``, where the version is a digest of every file:
those answers may be cached for a year. ``/static/<path>`` (the embed SDK that platforms
include) is revalidated on every use. Only files found at start are served, so no
request path ever reaches the file system.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from aiohttp import web

from gateway.errors import NotFound

__all__ = ["CLIENT_ROOT", "ClientAssets", "client_assets", "static_prefix", "static_routes"]

log = logging.getLogger(__name__)

#: ``static/client/`` of the source tree the gateway runs from.
CLIENT_ROOT = Path(__file__).resolve().parents[2] / "static" / "client"

#: What may be served: the client's code, styles and images, never notes or licences.
_SERVED_SUFFIXES = frozenset({".js", ".css", ".svg", ".png", ".ico", ".webmanifest"})
_VERSION_LENGTH = 12

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


@dataclass(frozen=True, slots=True)
class ClientAssets:
    """The client's files by URL path (relative to the root), and their joint version."""

    root: Path
    files: dict[str, Path]
    version: str

    @classmethod
    def scan(cls, root: Path) -> ClientAssets:
        files: dict[str, Path] = {}
        digest = hashlib.sha256()
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                relative = path.relative_to(root).as_posix()
                if (
                    path.is_file()
                    and not path.is_symlink()
                    and path.suffix in _SERVED_SUFFIXES
                    and not any(part.startswith(".") for part in path.relative_to(root).parts)
                ):
                    files[relative] = path
                    digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
        else:
            log.error("browser client missing: %s is not a directory", root)
        return cls(root=root, files=files, version=digest.hexdigest()[:_VERSION_LENGTH])

    @property
    def prefix(self) -> str:
        """The versioned URL prefix pages use: ``/static/<version>``."""
        return f"/static/{self.version}"


@cache
def client_assets() -> ClientAssets:
    """The client's files, read once per process (like the page templates)."""
    return ClientAssets.scan(CLIENT_ROOT)


def static_prefix() -> str:
    return client_assets().prefix


static_routes = web.RouteTableDef()


@static_routes.get(r"/static/{version:[0-9a-f]{12}}/{path:.+}")
async def versioned_file(request: web.Request) -> web.StreamResponse:
    assets = client_assets()
    current = request.match_info["version"] == assets.version
    # An old version (a page from before a deploy) gets today's file, but not for a year.
    return _file(assets, request.match_info["path"], IMMUTABLE if current else REVALIDATE)


@static_routes.get("/static/{path:.+}")
async def unversioned_file(request: web.Request) -> web.StreamResponse:
    return _file(client_assets(), request.match_info["path"], REVALIDATE)


def _file(assets: ClientAssets, path: str, cache_control: str) -> web.FileResponse:
    found = assets.files.get(path)
    if found is None:
        raise NotFound("no such file")
    return web.FileResponse(found, headers={"Cache-Control": cache_control})
