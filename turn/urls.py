"""STUN and TURN URLs (RFC 7064, RFC 7065) as browsers take them in ``RTCIceServer.urls``.

Only stdlib here: the settings import this module to validate ``QUIETROOM_TURN_URLS``.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass

__all__ = ["IceUrl", "IceUrlScheme", "parse_ice_url"]

_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_PORT = re.compile(r"^[0-9]{1,5}$")


class IceUrlScheme(enum.Enum):
    STUN = "stun"
    TURN = "turn"
    TURNS = "turns"


@dataclass(frozen=True, slots=True)
class IceUrl:
    """One checked URL; ``str()`` gives it back in a normal form."""

    scheme: IceUrlScheme
    #: A DNS name or an IP address (an IPv6 address without brackets).
    host: str
    port: int | None = None
    #: ``"udp"`` or ``"tcp"`` for turn: and turns: when the URL says so.
    transport: str | None = None

    @property
    def is_turn(self) -> bool:
        """True for turn: and turns:, which need credentials."""
        return self.scheme is not IceUrlScheme.STUN

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port is None else f":{self.port}"
        query = "" if self.transport is None else f"?transport={self.transport}"
        return f"{self.scheme.value}:{host}{port}{query}"


def parse_ice_url(text: str) -> IceUrl:
    """Check a stun:, turn: or turns: URL; ValueError says what is wrong with it."""
    scheme_text, colon, rest = text.partition(":")
    try:
        scheme = IceUrlScheme(scheme_text.lower())
    except ValueError:
        raise ValueError("expected a stun:, turn: or turns: URL") from None
    if not colon or not rest:
        raise ValueError("the URL has no host")
    if rest.startswith("//") or "@" in rest or "#" in rest:
        raise ValueError("expected scheme:host[:port][?transport=udp|tcp], nothing else")
    hostport, question, query = rest.partition("?")
    host, port = _split_host_port(hostport)
    transport: str | None = None
    if question:
        if scheme is IceUrlScheme.STUN:
            raise ValueError("a stun: URL takes no query")
        key, _, value = query.partition("=")
        if key.lower() != "transport" or value.lower() not in {"udp", "tcp"}:
            raise ValueError("the only query allowed is ?transport=udp or ?transport=tcp")
        transport = value.lower()
    if scheme is IceUrlScheme.TURNS and transport == "udp":
        # TURN over DTLS: browsers do not speak it, and the coturn config turns it off.
        raise ValueError("turns: runs over TLS on TCP; use ?transport=tcp or no query")
    return IceUrl(scheme=scheme, host=host, port=port, transport=transport)


def _split_host_port(hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise ValueError("an IPv6 address needs its closing ]")
        host, after = hostport[1:end], hostport[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
        if after and not after.startswith(":"):
            raise ValueError("expected :port after the IPv6 address")
        port_text = after[1:] if after else None
    else:
        host, colon, port_text_or_empty = hostport.partition(":")
        port_text = port_text_or_empty if colon else None
        if not _is_hostname(host):
            raise ValueError(f"{host!r} is not a host name or an IPv4 address")
    port: int | None = None
    if port_text is not None:
        if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{port_text!r} is not a port (1 to 65535)")
        port = int(port_text)
    return host.lower(), port


def _is_hostname(host: str) -> bool:
    if not host or len(host) > 253:
        return False
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        pass
    else:
        return True
    labels = host.rstrip(".").split(".")
    # An all-numeric last label would be a malformed IPv4 address, not a name.
    return all(_HOST_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()
