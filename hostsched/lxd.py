"""Reading a live LXD/Incus host over its REST API with pylxd: TLS, pinning, usage.

Only ``collect`` and ``trust`` import this module, so pylxd never slows the other commands.
Every pylxd/requests failure becomes :class:`HostUnreachable` here.

TLS: the client certificate authenticates hostsched; the server is verified by the SHA-256
fingerprint of its pinned certificate (LXD's certificates are self-signed, so a CA check would
prove nothing). The session ignores ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` (``trust_env``
off): the environment must never change what is verified.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pylxd
import requests
import urllib3
from pylxd import exceptions as lxd_exceptions
from requests.adapters import HTTPAdapter

from hostsched.errors import HostUnreachable, QuantityError
from hostsched.lxdconfig import LiveHost, LxdConfig
from hostsched.model import Resources
from hostsched.quantity import parse_bytes
from hostsched.yamlnodes import MAX_SECRET_BYTES, read_limited


@dataclass(frozen=True)
class Reading:
    """A host's capacity and usage as read from its API."""

    capacity: Resources
    used: Resources
    instances: int  # instances that are not stopped
    names: tuple[str, ...]  # every instance, for reconciliation


def default_client_paths() -> tuple[Path, Path]:
    """hostsched's own client certificate and key in the user config directory."""
    import platformdirs

    base = Path(platformdirs.user_config_dir("hostsched"))
    return base / "client.crt", base / "client.key"


def default_server_cert(name: str) -> Path:
    """Where ``trust`` pins a host's certificate unless the config names a file."""
    import platformdirs

    return Path(platformdirs.user_config_dir("hostsched")) / "servercerts" / f"{name}.crt"


def client_paths(live: LiveHost) -> tuple[Path, Path]:
    cert, key = default_client_paths()
    return live.client_cert or cert, live.client_key or key


def fingerprint(pem: str | bytes) -> str:
    """SHA-256 of a PEM certificate's DER bytes, as lowercase hex (what ``lxc`` shows)."""
    text = pem.decode() if isinstance(pem, bytes) else pem
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(text)).hexdigest()


class _PinnedAdapter(HTTPAdapter):
    """Accept exactly the certificate with this SHA-256 fingerprint, whatever its issuer."""

    def __init__(self, expected: str) -> None:
        self.expected = expected
        super().__init__()

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        conn.assert_fingerprint = self.expected
        super().cert_verify(conn, url, False, cert)


def _pinned_fingerprint(name: str, live: LiveHost) -> str:
    if live.pinned_fingerprint:
        return live.pinned_fingerprint
    path = Path(live.server_cert) if live.server_cert else default_server_cert(name)
    try:
        return fingerprint(read_limited(path, MAX_SECRET_BYTES))
    except (OSError, ValueError) as exc:
        raise HostUnreachable(
            name,
            f"no pinned server certificate ({path}: {getattr(exc, 'strerror', None) or exc})",
            hint=f"run `hostsched trust {name}` to pin it, or set server_cert:",
        ) from None


def _session(name: str, live: LiveHost, *, client_cert: bool = True) -> requests.Session:
    if live.is_unix:
        unix: requests.Session = pylxd.client.get_session_for_url(_unix_url(live.address))
        unix.trust_env = False
        return unix
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE and friends must not change verification
    if client_cert:
        cert, key = client_paths(live)
        if not cert.is_file() or not key.is_file():
            raise HostUnreachable(
                name, f"no client certificate at {cert}", hint=f"run `hostsched trust {name}`"
            )
        session.cert = (str(cert), str(key))
    session.verify = False  # never a CA check: the pinned fingerprint (or nothing) decides
    if not live.insecure:
        session.mount("https://", _PinnedAdapter(_pinned_fingerprint(name, live)))
    return session


def _unix_url(path: str) -> str:
    return f"http+unix://{quote(path, safe='')}"


@contextmanager
def translated(name: str) -> Iterator[None]:
    """pylxd and requests errors as HostUnreachable, with one readable reason."""
    try:
        yield
    except HostUnreachable:
        raise
    except (requests.exceptions.SSLError, lxd_exceptions.ClientConnectionFailed) as exc:
        # pylxd wraps the SSL error of its first request in ClientConnectionFailed.
        text = str(exc)
        if "ingerprints did not match" in text:
            raise HostUnreachable(
                name,
                "server certificate does not match the pinned one",
                hint=f"if the host's certificate changed on purpose, run `hostsched trust {name}`",
            ) from None
        if isinstance(exc, requests.exceptions.SSLError):
            raise HostUnreachable(name, f"TLS failed: {_first_line(text)}") from None
        raise HostUnreachable(name, f"cannot connect: {_reason(text)}") from None
    except requests.exceptions.Timeout:
        raise HostUnreachable(name, "timed out") from None
    except requests.exceptions.RequestException as exc:
        raise HostUnreachable(name, f"cannot connect: {_reason(str(exc))}") from None
    except lxd_exceptions.LXDAPIException as exc:
        raise HostUnreachable(name, f"API error: {_first_line(str(exc))}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HostUnreachable(name, f"unexpected answer: {type(exc).__name__}: {exc}") from None


def _reason(text: str) -> str:
    """The useful end of a urllib3 error (``... Connection refused``), not its pool details."""
    for marker in ("Errno", "NewConnectionError", "timed out"):
        if marker in text:
            return _first_line(text[text.index(marker) :]).rstrip("')\"")
    return _first_line(text)


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]


def connect(name: str, live: LiveHost, lxd: LxdConfig, *, client_cert: bool = True) -> Any:
    """A pylxd Client for the host (one GET of /1.0), verified as configured."""
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # we warn ourselves
    with translated(name):
        endpoint = live.address
        if live.is_unix and not Path(endpoint).exists():
            raise HostUnreachable(name, f"no socket at {endpoint}")
        session = _session(name, live, client_cert=client_cert)
        return pylxd.Client(endpoint=endpoint, session=session, timeout=lxd.timeout)


def read_host(name: str, live: LiveHost, lxd: LxdConfig, *, pending: Sequence[str] = ()) -> Reading:
    """Capacity, usage and instance names of one live host (four API requests)."""
    client = connect(name, live, lxd)
    with translated(name):
        if not client.trusted:
            raise HostUnreachable(
                name, "this client is not trusted by the host", hint=f"run `hostsched trust {name}`"
            )
        resources = _get(client.api.resources)
        pool = _get(client.api.storage_pools[live.pool].resources)
        params = {"recursion": "1"}
        if client.has_api_extension("instance_all_projects"):
            params["all-projects"] = "true"
        instances = _get(client.api.instances, params=params)
        if not isinstance(instances, list):
            raise ValueError("instances is not a list")
        return usage_from_api(
            resources, pool, instances, defaults=lxd.defaults, mode=live.usage, pending=pending
        )


def _get(node: Any, params: Mapping[str, str] | None = None) -> Any:
    response = node.get(params=params) if params else node.get()
    return response.json()["metadata"]


# -- usage: pure functions of the API's JSON ---------------------------------------------


def cpu_limit(value: str) -> int:
    """``limits.cpu`` in millicores: a count (``"2"``) or a CPU set (``"0-3,8"`` is 5 CPUs)."""
    value = value.strip()
    if value.isdigit():
        return int(value) * 1000
    cpus: set[int] = set()
    for part in value.split(","):
        first, _, last = part.strip().partition("-")
        low, high = int(first), int(last or first)
        if high < low or high - low > 65536:
            raise ValueError(f"bad CPU range {part!r}")
        cpus.update(range(low, high + 1))
    return len(cpus) * 1000


def memory_limit(value: str, host_total: int) -> int:
    """``limits.memory`` in bytes: LXD units (``512MB``, ``1GiB``) or a share (``"10%"``)."""
    value = value.strip()
    if value.endswith("%"):
        return int(host_total * float(value[:-1]) / 100)
    return parse_bytes(value, what="limits.memory")


def _limit(config: Mapping[str, Any], key: str, parse: Any, default: int) -> int:
    raw = config.get(key)
    if not raw:
        return default
    try:
        return int(parse(str(raw)))
    except (ValueError, QuantityError):
        return default  # LXD validated it; a form we do not know counts as the default


def usage_from_api(
    resources: Mapping[str, Any],
    pool: Mapping[str, Any],
    instances: Sequence[Mapping[str, Any]],
    *,
    defaults: Resources,
    mode: str = "allocated",
    pending: Sequence[str] = (),
) -> Reading:
    """What a host holds, from ``/1.0/resources``, its pool's resources and its instances.

    Instances that are not stopped count their limits (or ``defaults`` where a limit is unset)
    and GPU devices; every instance counts its root disk. A stopped instance whose name is a
    pending reservation counts in full: it is being started, and its reservation is dropped in
    the same write, so it must not fall out of the count in between.
    """
    memory_total = int(resources["memory"]["total"])
    capacity = Resources(
        cpu=int(resources["cpu"]["total"]) * 1000,
        memory=memory_total,
        disk=int(pool["space"]["total"]),
        gpu=int((resources.get("gpu") or {}).get("total", 0)),
    )
    cpu = memory = disk = gpu = 0
    active = 0
    waiting = set(pending)
    for instance in instances:
        config = instance.get("expanded_config") or {}
        devices = instance.get("expanded_devices") or {}
        root: Mapping[str, Any] = next(
            (d for d in devices.values() if d.get("type") == "disk" and d.get("path") == "/"), {}
        )
        disk += _limit(root, "size", lambda v: parse_bytes(v, what="size"), defaults.disk)
        running = instance.get("status") != "Stopped" or instance.get("name") in waiting
        if not running:
            continue
        active += 1
        cpu += _limit(config, "limits.cpu", cpu_limit, defaults.cpu)
        memory += _limit(
            config, "limits.memory", lambda v: memory_limit(v, memory_total), defaults.memory
        )
        gpu += sum(1 for d in devices.values() if d.get("type") == "gpu")
    if mode == "measured":
        memory = int(resources["memory"].get("used", memory))
    return Reading(
        capacity=capacity,
        used=Resources(cpu, memory, disk, gpu),
        instances=active,
        names=tuple(sorted(str(i["name"]) for i in instances)),
    )


def fetch_server_certificate(name: str, address: str, timeout: float) -> str:
    """The PEM certificate a host presents, unverified: ``trust`` shows its fingerprint."""
    parts = urlsplit(address)
    try:
        return ssl.get_server_certificate(
            (parts.hostname or "", parts.port or 8443), timeout=timeout
        )
    except (OSError, ValueError) as exc:
        raise HostUnreachable(name, f"cannot connect: {exc}") from None
