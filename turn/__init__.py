"""TURN for Quietroom: REST API credentials for coturn, and coturn's configuration."""

from turn.coturn_config import DENIED_PEER_RANGES, coturn_config, denied_peer_ip_ranges
from turn.credentials import (
    DEFAULT_TTL,
    IceConfiguration,
    IceServer,
    TurnCredential,
    TurnCredentials,
    ice_servers,
    turn_password,
)
from turn.urls import IceUrl, IceUrlScheme, parse_ice_url

__all__ = [
    "DEFAULT_TTL",
    "DENIED_PEER_RANGES",
    "IceConfiguration",
    "IceServer",
    "IceUrl",
    "IceUrlScheme",
    "TurnCredential",
    "TurnCredentials",
    "coturn_config",
    "denied_peer_ip_ranges",
    "ice_servers",
    "parse_ice_url",
    "turn_password",
]
