"""Which webhook URLs the service will call (a documented SSRF policy).

A webhook URL comes from a caller, so it must not reach what only the service can reach:
- the scheme is http or https, with a host, no user info;
- every address the host resolves to is a public unicast address: loopback, private (RFC 1918,
  ULA), link-local (169.254/16, fe80::/10, which includes the cloud metadata endpoint
  169.254.169.254), shared (100.64/10), multicast, reserved and unspecified addresses are refused,
  as are the metadata host names themselves;
- `allow_loopback` (the setting `webhook_allow_loopback`, off by default) admits loopback addresses
  only, for local receivers in development and tests; link-local, metadata and private stay refused.
The URL is checked when the message is requested and again, with a fresh resolution, just before
each attempt (a name re-pointed at a refused address in between fails permanently). What remains
is the window between that check and the connection's own resolution; a deployment that must close
it routes webhooks through an egress proxy.
"""

import ipaddress
from urllib.parse import urlsplit

METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})
MAX_URL_LENGTH = 2048


class TargetRefused(Exception):
    pass


def parse_webhook_url(url: str) -> tuple[str, int]:
    """(host, port) of an acceptable URL's shape; TargetRefused otherwise."""
    if not url or len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"a webhook URL of 1 to {MAX_URL_LENGTH} characters is required")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise TargetRefused("the webhook URL does not parse") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("the webhook URL must be http or https")
    if not parts.hostname or parts.username or parts.password:
        raise TargetRefused("the webhook URL needs a host and no user info")
    if parts.hostname.lower().rstrip(".") in METADATA_HOSTS:
        raise TargetRefused("the webhook URL points at a metadata service")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def refused_address(address: str, *, allow_loopback: bool) -> str | None:
    """Why this resolved address may not be called, or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None if allow_loopback else "loopback"
    if ip.is_unspecified or ip.is_multicast:
        return "not a public unicast address"
    if ip.is_link_local:
        return "link-local or metadata"
    if ip.is_private or ip in ipaddress.ip_network("100.64.0.0/10"):
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "not a public unicast address"
    return None


def host_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None
