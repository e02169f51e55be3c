"""The data guard: MedAlign's data use agreement forbids sending the release to services that are
not HIPAA-compliant, so text from the real release only goes to loopback or to hosts the config
explicitly allows.

It is enforced where data leaves: every backend that sends text to an endpoint takes a `DataGuard`
when it is built (a required argument) and checks each of its URLs then, so no caller (a notebook,
the CLI, the judge, a user's script) can skip it. The backend speaks plain HTTP(S) with
`http.client`: it follows no redirect and reads no proxy variable, so the checked host is the one
contacted.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:  # annotations only
    from ..data.release import Release


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


def _hosts(allowed_hosts) -> set[str]:
    if allowed_hosts is None:
        return set()
    if isinstance(allowed_hosts, str) or not isinstance(allowed_hosts, (list, tuple, set, frozenset)):
        raise DataGuardError(
            f"allowed_hosts must be a list of host names, not {type(allowed_hosts).__name__} {allowed_hosts!r} "
            "(a string would allow each of its characters)"
        )
    bad = [h for h in allowed_hosts if not isinstance(h, str) or not h.strip()]
    if bad:
        raise DataGuardError(f"allowed_hosts holds entries that are not host names: {bad!r}")
    return {h.strip().lower() for h in allowed_hosts}


def check_endpoint(url: str, synthetic: bool, allowed_hosts=()) -> str:
    """Return the endpoint's host when the data may go there; raise `DataGuardError` otherwise.

    Synthetic data (a `SYNTHETIC` marker) may go anywhere. Real data may go to loopback
    (127.0.0.0/8, ::1, localhost) and to the hosts in `allowed_hosts` only.
    """
    parsed = urlparse(url)
    host = parsed.hostname
    if parsed.scheme not in ("http", "https") or not host:
        raise DataGuardError(f"endpoint {url!r} is not an http(s) URL")
    allowed = _hosts(allowed_hosts)
    if synthetic or is_loopback(host) or host.lower() in allowed:
        return host
    raise DataGuardError(
        f"refusing to send MedAlign data to {host}: the release has no SYNTHETIC marker, and its data use agreement "
        f"forbids sending it to services that are not HIPAA-compliant. Use a server on loopback (e.g. vLLM on "
        f"127.0.0.1), or add {host} to allowed_hosts in the config if it is an approved, HIPAA-compliant deployment."
    )


@dataclass(frozen=True)
class DataGuard:
    """Where text may be sent: anywhere for the synthetic cohort, else loopback and `allowed_hosts`.
    Build it from the release (`for_release`), or `loopback_only()` where no release is involved."""

    synthetic: bool
    allowed_hosts: tuple[str, ...] = ()

    def __post_init__(self):
        _hosts(list(self.allowed_hosts) if isinstance(self.allowed_hosts, tuple) else self.allowed_hosts)

    @classmethod
    def for_release(cls, release: Release, allowed_hosts=()) -> DataGuard:
        return cls(bool(release.is_synthetic), tuple(sorted(_hosts(allowed_hosts))))

    @classmethod
    def loopback_only(cls) -> DataGuard:
        return cls(False, ())

    def check(self, url: str) -> str:
        return check_endpoint(url, self.synthetic, list(self.allowed_hosts))
