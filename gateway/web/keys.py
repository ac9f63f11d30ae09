"""Typed keys for what the aiohttp application holds."""

from __future__ import annotations

from aiohttp import web

from gateway.services import Services
from gateway.settings import Settings

__all__ = ["SERVICES", "SETTINGS"]

SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", Services)
