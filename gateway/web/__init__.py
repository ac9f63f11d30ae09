"""The HTTP edge: aiohttp application, routes, pages and middleware."""

from gateway.web.app import create_app, open_store
from gateway.web.keys import SERVICES, SETTINGS

__all__ = ["SERVICES", "SETTINGS", "create_app", "open_store"]
