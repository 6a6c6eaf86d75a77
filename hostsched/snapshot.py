"""Decode one fleet read into host snapshots, containing bad data to the host that has it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from hostsched.codec import BadValue, decode_actual, decode_reservation
from hostsched.model import HostSnapshot, HostStatus, Reservation
from hostsched.replies import RawFleet, RawHost


@dataclass(frozen=True)
class Fleet:
    """Every known host at one instant of the server clock."""

    now: float
    hosts: tuple[HostSnapshot, ...]
    round_robin_cursor: str | None = None
    problems: tuple[str, ...] = ()  # fleet-wide data that was not ours and was ignored

    def get(self, name: str) -> HostSnapshot | None:
        return next((h for h in self.hosts if h.name == name), None)

    def holder(self, reservation_id: str) -> HostSnapshot | None:
        """The host that holds this id as a live reservation or as an instance."""
        for host in self.hosts:
            if reservation_id in host.instance_names:
                return host
            if any(r.id == reservation_id for r in host.reservations):
                return host
        return None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def host_snapshot(
    raw: RawHost,
    *,
    now: float,
    stale_after: float,
    reservation_ttl: float,
    labels: Mapping[str, str] | None = None,
) -> HostSnapshot:
    """One host's status and numbers; ``labels`` (from the config) apply until it is collected."""
    fallback_labels = MappingProxyType(dict(labels or {}))
    lock = None if raw.lock is None or isinstance(raw.lock, Exception) else _text(raw.lock)
    if isinstance(raw.actual, Exception):
        return _broken(raw.name, f"actual resources: {raw.actual}", fallback_labels, lock)
    if raw.actual is None:
        return HostSnapshot(
            raw.name,
            HostStatus.OFFLINE,
            labels=fallback_labels,
            lock=lock,
            problem="no actual resources stored (not collected, or expired)",
        )
    try:
        actual = decode_actual(raw.actual)
        reservations = tuple(_reservations(raw, now, reservation_ttl))
    except BadValue as exc:
        return _broken(raw.name, str(exc), fallback_labels, lock)
    age = max(0.0, now - actual.collected_at)
    return HostSnapshot(
        name=raw.name,
        status=HostStatus.STALE if age > stale_after else HostStatus.ONLINE,
        capacity=actual.capacity,
        used=actual.used,
        overcommit=actual.overcommit,
        labels=actual.labels,
        instances=actual.instances,
        age=age,
        reservations=reservations,
        instance_names=frozenset(actual.names),
        lock=lock,
        generation=_generation(raw.generation),
    )


def _generation(raw: bytes | Exception | None) -> int:
    """The host's generation; 0 if unset or not a counter (it only orders fleet-view hints)."""
    if isinstance(raw, bytes) and raw.isdigit():
        return int(raw)
    return 0


def _reservations(raw: RawHost, now: float, ttl: float) -> Iterable[Reservation]:
    if isinstance(raw.reservations, Exception):
        raise BadValue(f"reservations: {raw.reservations}")
    for key, value in sorted(raw.reservations.items()):
        try:
            amounts, created = decode_reservation(value)
        except BadValue as exc:
            raise BadValue(f"reservation {_text(key)!r}: {exc}") from exc
        age = max(0.0, now - created)
        if age <= ttl:
            yield Reservation(_text(key), raw.name, amounts, age)


def _broken(name: str, problem: str, labels: Mapping[str, str], lock: str | None) -> HostSnapshot:
    return HostSnapshot(name, HostStatus.CORRUPT, labels=labels, lock=lock, problem=problem)


def fleet_snapshot(
    raw: RawFleet,
    *,
    stale_after: float,
    reservation_ttl: float,
    configured_labels: Mapping[str, Mapping[str, str]],
) -> Fleet:
    """Snapshots of every host that is stored or configured, sorted by name."""
    hosts = [
        host_snapshot(
            host,
            now=raw.now,
            stale_after=stale_after,
            reservation_ttl=reservation_ttl,
            labels=configured_labels.get(host.name),
        )
        for host in raw.hosts
        if host.name in raw.members or host.name in configured_labels
    ]
    return Fleet(
        raw.now, tuple(sorted(hosts, key=lambda h: h.name)), raw.round_robin_cursor, raw.problems
    )
