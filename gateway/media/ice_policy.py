"""Which addresses ICE may touch: the gateway's own, and those clients point it at.

A client's candidates tell the gateway where to send connectivity checks. Left alone,
a client could point the gateway at its own loopback services or at the operator's
private networks, so candidates toward loopback, link-local, unspecified, multicast,
IPv4-mapped loopback or configured private ranges are dropped, and so are mDNS and other
host names (resolving them would mean multicast queries on the gateway's network).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = ["CandidatePolicy", "MediaNetwork"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class CandidatePolicy:
    """Decides whether a remote ICE candidate's address may be used."""

    allow_loopback: bool = False
    denied_ranges: tuple[IPNetwork, ...] = ()

    @classmethod
    def build(
        cls, *, allow_loopback: bool = False, denied_ranges: Iterable[str] = ()
    ) -> CandidatePolicy:
        return cls(
            allow_loopback=allow_loopback,
            denied_ranges=tuple(ipaddress.ip_network(r, strict=False) for r in denied_ranges),
        )

    def permits(self, address: str, *, protocol: str = "udp") -> bool:
        """Whether checks may be sent to ``address`` (an IP literal, never a host name)."""
        if protocol.lower() != "udp":
            return False
        try:
            ip: IPAddress = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.scope_id is not None:
                return False
            mapped = ip.ipv4_mapped
            if mapped is not None:
                ip = mapped
        if ip.is_unspecified or ip.is_link_local or ip.is_multicast or ip.is_reserved:
            return False
        if isinstance(ip, ipaddress.IPv4Address) and ip == ipaddress.IPv4Address("255.255.255.255"):
            return False
        if ip.is_loopback:
            return self.allow_loopback
        return not any(ip.version == net.version and ip in net for net in self.denied_ranges)


@dataclass(frozen=True, slots=True)
class MediaNetwork:
    """Where the gateway's media sockets live and which client candidates it accepts."""

    #: The only addresses the gateway gathers host candidates on.
    addresses: tuple[str, ...] = ()
    policy: CandidatePolicy = field(default_factory=CandidatePolicy)

    @classmethod
    def build(
        cls,
        *,
        addresses: Iterable[str],
        allow_loopback: bool = False,
        denied_ranges: Iterable[str] = (),
    ) -> MediaNetwork:
        """Checked like the settings: loopback only when allowed; never a wildcard."""
        chosen: list[str] = []
        for text in addresses:
            ip = ipaddress.ip_address(text)
            if ip.is_loopback and not allow_loopback:
                raise ValueError(f"{text} is loopback and loopback is not allowed")
            if ip.is_unspecified or ip.is_multicast or ip.is_link_local:
                raise ValueError(f"{text} is unspecified, multicast or link-local")
            chosen.append(str(ip))
        return cls(
            addresses=tuple(chosen),
            policy=CandidatePolicy.build(
                allow_loopback=allow_loopback, denied_ranges=denied_ranges
            ),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaNetwork:
        """The media network the settings describe (already validated there)."""
        return cls.build(
            addresses=settings.media_addresses,
            allow_loopback=settings.media_allow_loopback,
            denied_ranges=settings.media_denied_ranges,
        )

    def is_own(self, address: str) -> bool:
        """Whether a local candidate's address is one the gateway was told to use."""
        try:
            return str(ipaddress.ip_address(address)) in self.addresses
        except ValueError:
            return False
