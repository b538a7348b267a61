"""The client's IP address. `X-Forwarded-For` is believed only when the request came through a proxy
listed in GUAHAO_TRUSTED_PROXIES; anyone else could write any address into it."""

from __future__ import annotations

import functools
import ipaddress

from django.conf import settings
from django.http import HttpRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.cache
def _trusted(spec: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in spec if item.strip())


def _is_trusted(address: Address) -> bool:
    return any(address in network for network in _trusted(tuple(settings.TRUSTED_PROXIES)))


def _parse(value: str) -> Address | None:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def client_ip(request: HttpRequest) -> str:
    """The address of whoever sent the request: the peer, or, when the peer is a trusted proxy, the
    right-most address in X-Forwarded-For that is not itself a trusted proxy."""
    cached = getattr(request, "_guahao_client_ip", None)
    if cached is not None:
        return cached
    peer = _parse(request.META.get("REMOTE_ADDR", "")) or ipaddress.ip_address("0.0.0.0")
    address: Address = peer
    if _is_trusted(peer):
        hops = [h for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
        for hop in reversed(hops):
            parsed = _parse(hop)
            if parsed is None:
                break  # a garbled hop: stop at the last address we could trust
            address = parsed
            if not _is_trusted(parsed):
                break
    request._guahao_client_ip = str(address)
    return request._guahao_client_ip


def network_of(ip: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) an address belongs to: one home, office or mobile cell."""
    address = _parse(ip)
    if address is None:
        return ip
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
