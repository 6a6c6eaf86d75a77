"""collect: read each host's actual resources and store them, holding the host's lock.

Each host's lock is taken before it is read and its write is fenced by that lock's token and by
the server time at which reading began, so concurrent collectors split the fleet and an older
reading never overwrites a newer one.
"""

from __future__ import annotations

from dataclasses import dataclass

from hostsched.codec import encode_actual
from hostsched.config import Config, HostConfig
from hostsched.errors import NoHostsError
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

    @property
    def stored(self) -> int:
        return sum(h.status == "stored" for h in self.hosts)

    @property
    def failed(self) -> int:
        return sum(h.status == "unreachable" for h in self.hosts)


def _static_body(host: HostConfig) -> str:
    assert host.static is not None
    return encode_actual(
        capacity=host.static.capacity,
        used=host.static.used,
        overcommit=host.overcommit,
        labels=host.labels,
        names=(),
        instances=host.static.instances,
        source="static",
    )


def collect(config: Config, store: Store) -> CollectReport:
    """Store the actual resources of every configured host."""
    hosts = [h for h in config.hosts if h.static is not None]
    if not hosts:
        raise NoHostsError(
            "no hosts configured", hint="list hosts under `hosts:` (see config.example.yaml)"
        )
    names = [h.name for h in hosts]
    grants = store.acquire_locks(names, ttl=config.lock_ttl)
    try:
        writes = {
            h.name: (grants[h.name], _static_body(h), ()) for h in hosts if grants[h.name].acquired
        }
        outcomes = store.write_actual(writes, resource_ttl=config.resource_ttl)
    finally:
        store.release_locks(grants)
    results = []
    for name in names:
        outcome = outcomes.get(name)
        if outcome is None:
            results.append(HostCollected(name, "skipped", "another collector holds its lock"))
        elif outcome.status == "ok":
            results.append(HostCollected(name, "stored", None, outcome.dropped))
        elif outcome.status == "newer":
            results.append(HostCollected(name, "skipped", "a newer reading is already stored"))
        else:
            results.append(HostCollected(name, "skipped", "its lock expired while collecting"))
    return CollectReport(tuple(results))
