"""The client's IP address, believing X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

__all__ = ["ProxyTrust"]

_MAX_HOPS = 20


class ProxyTrust:
    """Resolves the client address of a request that may have come through reverse proxies."""

    def __init__(self, trusted: Iterable[str]) -> None:
        self._networks: tuple[IPv4Network | IPv6Network, ...] = tuple(
            ip_network(item, strict=False) for item in trusted
        )

    def is_trusted(self, address: str | None) -> bool:
        """True when ``address`` is one of the configured proxies."""
        if address is None or not self._networks:
            return False
        try:
            ip = ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def client_ip(self, peer: str | None, forwarded_for: Sequence[str]) -> str | None:
        """The socket peer, unless it is a trusted proxy: then the rightmost untrusted hop.

        ``forwarded_for`` holds every X-Forwarded-For header value in order. Walking from the
        right skips only addresses that our own proxies appended; the first other address is
        the client (anything left of it may be forged by the client itself).
        """
        if peer is None or not self.is_trusted(peer):
            return peer
        hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
        client = peer
        for hop in reversed(hops[-_MAX_HOPS:]):
            try:
                ip_address(hop)
            except ValueError:
                return client  # garbage: stop at the last address we could trust
            client = hop
            if not self.is_trusted(hop):
                return hop
        return client
