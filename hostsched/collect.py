"""collect: read each host's actual resources and store them, holding the host's lock.

Hosts are read in parallel (``lxd.parallel`` at once, each bounded by ``lxd.timeout``), so a
fleet takes about as long as its slowest host. Each host's lock is taken before it is read, and
the write is fenced by that lock's token and by the server time at which reading began: so
concurrent collectors split the fleet, and an older reading never overwrites a newer one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from hostsched.codec import encode_actual
from hostsched.config import Config, HostConfig
from hostsched.errors import HostUnreachable, NoHostsError
from hostsched.model import Resources
from hostsched.replies import LockGrant
from hostsched.store import Store


@dataclass(frozen=True)
class HostCollected:
    name: str
    status: str  # stored | unreachable | skipped
    error: str | None = None
    reconciled: tuple[str, ...] = ()


@dataclass(frozen=True)
class CollectReport:
    hosts: tuple[HostCollected, ...]
    warnings: tuple[str, ...] = ()

    @property
    def stored(self) -> int:
        return sum(h.status == "stored" for h in self.hosts)

    @property
    def failed(self) -> int:
        return sum(h.status == "unreachable" for h in self.hosts)


@dataclass(frozen=True)
class _Reading:
    capacity: Resources
    used: Resources
    instances: int
    names: tuple[str, ...]
    source: str


def _read(host: HostConfig, config: Config, pending: Sequence[str]) -> _Reading:
    """The host's capacity and usage: declared (static) or read over its API (live)."""
    if host.static is not None:
        static = host.static
        return _Reading(static.capacity, static.used, static.instances, (), "static")
    assert host.live is not None
    from hostsched.lxd import read_host  # pylxd is imported only when a live host is read

    live = read_host(host.name, host.live, config.lxd, pending=pending)
    return _Reading(live.capacity, live.used, live.instances, live.names, "lxd")


def collect_host(host: HostConfig, config: Config, store: Store) -> HostCollected:
    """Lock, read, store and unlock one host; its failure is reported, never raised."""
    grant: LockGrant = store.acquire_locks([host.name], ttl=config.lock_ttl)[host.name]
    if not grant.acquired:
        held = "another collector holds its lock" if grant.holder else "its lock key is not a lock"
        return HostCollected(host.name, "skipped", held)
    try:
        reading = _read(host, config, grant.pending)
        body = encode_actual(
            capacity=reading.capacity,
            used=reading.used,
            overcommit=host.overcommit,
            labels=host.labels,
            names=reading.names,
            instances=reading.instances,
            source=reading.source,
        )
        outcome = store.write_actual(
            {host.name: (grant, body, reading.names)}, resource_ttl=config.resource_ttl
        )[host.name]
    except HostUnreachable as exc:
        return HostCollected(host.name, "unreachable", exc.reason)
    finally:
        store.release_locks({host.name: grant})
    if outcome.status == "ok":
        return HostCollected(host.name, "stored", None, outcome.dropped)
    reason = {
        "newer": "a newer reading is already stored",
        "foreign": "a key of this host holds data that is not hostsched's; nothing overwritten",
    }.get(outcome.status, "its lock expired while it was read")
    return HostCollected(host.name, "skipped", reason)


def collect(
    config: Config,
    store: Store,
    *,
    on_host: Callable[[HostCollected], None] | None = None,
) -> CollectReport:
    """Store the actual resources of every configured host, reading them in parallel."""
    if not config.hosts:
        raise NoHostsError(
            "no hosts configured", hint="list hosts under `hosts:` (see config.example.yaml)"
        )

    def one(host: HostConfig) -> HostCollected:
        result = collect_host(host, config, store)
        if on_host is not None:
            on_host(result)
        return result

    workers = min(config.lxd.parallel, len(config.hosts))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="collect") as pool:
        results = tuple(pool.map(one, config.hosts))
    warnings = tuple(
        f"{h.name}: TLS verification is off (insecure: true)"
        for h in config.hosts
        if h.live is not None and h.live.insecure and not h.live.is_unix
    )
    return CollectReport(results, warnings)
