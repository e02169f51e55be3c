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


def _host_entries(allowed_hosts) -> dict[str, bool]:
    """`allowed_hosts` as host -> zero retention: each entry a host name, or a mapping
    ``{host: NAME, zero_retention: true}`` for a deployment that keeps nothing it is sent."""
    if allowed_hosts is None:
        return {}
    if isinstance(allowed_hosts, str) or not isinstance(allowed_hosts, (list, tuple, set, frozenset)):
        raise DataGuardError(
            f"allowed_hosts must be a list of host names, not {type(allowed_hosts).__name__} {allowed_hosts!r} "
            "(a string would allow each of its characters)"
        )
    out, bad = {}, []
    for entry in allowed_hosts:
        if isinstance(entry, dict):
            host, zero = entry.get("host"), entry.get("zero_retention", False)
            if (
                not isinstance(host, str)
                or not host.strip()
                or not isinstance(zero, bool)
                or set(entry)
                - {
                    "host",
                    "zero_retention",
                }
            ):
                bad.append(entry)
                continue
            out[host.strip().lower()] = zero
        elif isinstance(entry, str) and entry.strip():
            out.setdefault(entry.strip().lower(), False)
        else:
            bad.append(entry)
    if bad:
        raise DataGuardError(
            f"allowed_hosts holds entries that are not host names or {{host, zero_retention}} mappings: {bad!r}"
        )
    return out


def _hosts(allowed_hosts) -> set[str]:
    return set(_host_entries(allowed_hosts))


# PhysioNet's policy for credentialed data (September 2025): an LLM API only with zero data
# retention and no human review; local models strongly recommended.
ZERO_RETENTION_POLICY = "PhysioNet's responsible-use policy for credentialed data (2025)"


def check_endpoint(url: str, synthetic: bool, allowed_hosts=()) -> str:
    """Return the endpoint's host when the data may go there; raise `DataGuardError` otherwise.

    Synthetic data (a `SYNTHETIC` marker) may go anywhere. Real data may go to loopback
    (127.0.0.0/8, ::1, localhost) and to the hosts in `allowed_hosts` that are listed with
    ``zero_retention: true`` only (an LLM API that keeps nothing it is sent and has no human review).
    """
    parsed = urlparse(url)
    host = parsed.hostname
    if parsed.scheme not in ("http", "https") or not host:
        raise DataGuardError(f"endpoint {url!r} is not an http(s) URL")
    allowed = _host_entries(allowed_hosts)
    if synthetic or is_loopback(host) or allowed.get(host.lower()) is True:
        return host
    if host.lower() in allowed:
        raise DataGuardError(
            f"refusing to send MedAlign data to {host}: it is in allowed_hosts but not listed with"
            f" zero_retention: true. Following {ZERO_RETENTION_POLICY}, an API host must keep nothing it is"
            f" sent and have no human review: list it as {{host: {host}, zero_retention: true}} if the"
            " deployment guarantees that, or use a local model."
        )
    raise DataGuardError(
        f"refusing to send MedAlign data to {host}: the release has no SYNTHETIC marker, and its data use agreement "
        f"forbids sending it to services that are not HIPAA-compliant. Use a server on loopback (e.g. vLLM on "
        f"127.0.0.1), or add {{host: {host}, zero_retention: true}} to allowed_hosts in the config if it is an "
        "approved, HIPAA-compliant deployment that keeps nothing it is sent."
    )


@dataclass(frozen=True)
class DataGuard:
    """Where text may be sent: anywhere for the synthetic cohort, else loopback and `allowed_hosts`.
    Build it from the release (`for_release`), or `loopback_only()` where no release is involved."""

    synthetic: bool
    allowed_hosts: tuple[str, ...] = ()
    zero_retention: tuple[str, ...] = ()  # the allowed hosts that keep nothing they are sent

    def __post_init__(self):
        _hosts(list(self.allowed_hosts) if isinstance(self.allowed_hosts, tuple) else self.allowed_hosts)

    @classmethod
    def for_release(cls, release: Release, allowed_hosts=()) -> DataGuard:
        entries = _host_entries(allowed_hosts)
        zero = tuple(sorted(h for h, z in entries.items() if z))
        return cls(bool(release.is_synthetic), tuple(sorted(entries)), zero)

    @classmethod
    def loopback_only(cls) -> DataGuard:
        return cls(False, ())

    def check(self, url: str) -> str:
        entries = [{"host": h, "zero_retention": h in self.zero_retention} for h in self.allowed_hosts]
        return check_endpoint(url, self.synthetic, entries)
