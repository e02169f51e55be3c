"""The data guard: MedAlign's data use agreement forbids sending the release to services that are
not HIPAA-compliant, so generation on real data only talks to loopback or to hosts the config
explicitly allows."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlparse


class DataGuardError(PermissionError):
    """An endpoint the data may not go to."""


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_endpoint(url: str, synthetic: bool, allowed_hosts=()) -> str:
    """Return the endpoint's host when the data may go there; raise `DataGuardError` otherwise.

    Synthetic data (a `SYNTHETIC` marker) may go anywhere. Real data may go to loopback
    (127.0.0.0/8, ::1, localhost) and to the hosts in `allowed_hosts` only.
    """
    parsed = urlparse(url)
    host = parsed.hostname
    if parsed.scheme not in ("http", "https") or not host:
        raise DataGuardError(f"endpoint {url!r} is not an http(s) URL")
    if synthetic or is_loopback(host) or host.lower() in {h.lower() for h in allowed_hosts or ()}:
        return host
    raise DataGuardError(
        f"refusing to send MedAlign data to {host}: the release has no SYNTHETIC marker, and its data use agreement "
        f"forbids sending it to services that are not HIPAA-compliant. Use a server on loopback (e.g. vLLM on "
        f"127.0.0.1), or add {host} to allowed_hosts in the config if it is an approved, HIPAA-compliant deployment."
    )
