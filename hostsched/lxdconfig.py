"""Live LXD/Incus hosts as configured: how to reach one, and the fleet-wide ``lxd:`` defaults.

Parsed by :mod:`hostsched.config`; used by :mod:`hostsched.lxd` and :mod:`hostsched.trust`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from hostsched.model import Resources

USAGE_MODES = ("allocated", "measured")
FINGERPRINT = re.compile(r"(?:sha256:)?(?:[0-9a-f]{2}:?){32}", re.IGNORECASE)


@dataclass(frozen=True)
class LiveHost:
    """How to reach a live LXD/Incus host. Secrets are only named here; ``trust`` reads them."""

    address: str  # https://host:port, or a unix socket path
    server_cert: str | None = None  # path or SHA-256 fingerprint to pin; None: `trust`'s file
    trust_password_file: Path | None = None
    trust_password_env: str | None = None
    insecure: bool = False  # no certificate verification at all (warned about on every run)
    client_cert: Path | None = None  # None: <user config dir>/client.crt
    client_key: Path | None = None
    pool: str = "default"  # the storage pool whose size is the host's disk capacity
    usage: str = "allocated"  # or "measured": memory in use instead of the sum of limits

    @property
    def is_unix(self) -> bool:
        return not self.address.startswith("https://")

    @property
    def pinned_fingerprint(self) -> str | None:
        """The pinned certificate's SHA-256 as lowercase hex, when given as a fingerprint."""
        if self.server_cert and FINGERPRINT.fullmatch(self.server_cert):
            return self.server_cert.lower().removeprefix("sha256:").replace(":", "")
        return None


#: What an instance without limits counts: 1 core, 1 GiB of memory, 10 GiB of disk.
DEFAULT_INSTANCE = Resources(cpu=1000, memory=1 << 30, disk=10 << 30)


@dataclass(frozen=True)
class LxdConfig:
    """Fleet-wide settings of live hosts (``lxd:``); each host may override the shared ones."""

    client_cert: Path | None = None
    client_key: Path | None = None
    pool: str = "default"
    usage: str = "allocated"
    timeout: float = 10.0  # seconds per host request
    parallel: int = 16  # hosts read at once
    defaults: Resources = DEFAULT_INSTANCE


def address_problem(address: str) -> str | None:
    """An LXD endpoint: an https:// URL with a host, or a unix socket path."""
    if address.startswith("https://"):
        try:
            parts = urlsplit(address)
            _ = parts.port
        except ValueError:
            return "not a valid URL"
        return None if parts.hostname else "an https:// address needs a host"
    path = address.removeprefix("unix://")
    if path.startswith("/"):
        return None
    return "an address is https://host:port or the path of a unix socket (/var/lib/lxd/unix.socket)"
