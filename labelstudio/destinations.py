"""The SSRF guard: which addresses a task's image may be downloaded from.

A task's URL is written by whoever can create tasks, so before every request (and every redirect)
`check_destination` resolves the host and refuses non-http(s) URLs and hosts on internal networks
(loopback, link-local, private, carrier-grade NAT, reserved) unless ALLOWED_MEDIA_HOSTS lists them or the
host is the configured Label Studio's. It returns the addresses it checked, so that the fetcher connects
to those and not to a second DNS answer.
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlparse

from labelstudio.media_errors import MediaError
from labelstudio.media_settings import MediaSettings
from labelstudio.urls import short_url


def _is_internal(ip: ipaddress._BaseAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_reserved
        or ip.is_multicast or ip.is_unspecified or ip in ipaddress.ip_network("100.64.0.0/10")
    )


def _allowed(host: str, port: int, ips, allowed: tuple[str, ...]) -> bool:
    for entry in allowed:
        if entry in (host, f"{host}:{port}"):
            return True
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue
        if ips and all(ip in network for ip in ips):
            return True
    return False


def check_destination(url: str, settings: MediaSettings, trusted_netloc: str | None = None) -> list:
    """Refuse non-http(s) URLs and hosts resolving to internal addresses (unless trusted/allowed).

    Returns the host's checked addresses.
    """
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise MediaError(f"refused {short_url(url)}: only http and https URLs are fetched")
    host = (parsed.hostname or "").lower()
    if not host:
        raise MediaError(f"refused {short_url(url)}: the URL has no host")
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        raise MediaError(f"refused {short_url(url)}: invalid port") from None
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise MediaError(f"cannot resolve the host {host!r} of {short_url(url)} ({exc})") from None
    ips = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    if _allowed(host, port, ips, settings.allowed_media_hosts):
        return ips
    internal = [ip for ip in ips if _is_internal(ip)]
    if not internal:
        return ips
    link_local = any(
        (ip.ipv4_mapped or ip).is_link_local if isinstance(ip, ipaddress.IPv6Address) else ip.is_link_local
        for ip in internal
    )
    if trusted_netloc and parsed.netloc.lower() == trusted_netloc and not link_local:
        return ips  # the configured Label Studio host may be on a private network
    raise MediaError(
        f"the image's host is on an internal network and not trusted: add it to ALLOWED_MEDIA_HOSTS if it is "
        f"(refused {short_url(url)}: {host} resolves to the loopback, link-local or private address {internal[0]})"
    )
