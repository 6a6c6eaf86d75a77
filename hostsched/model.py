"""Frozen dataclasses that flow between the layers: requests, hosts, reservations, plans.

Units are integers so that sums are exact on both sides of the Lua boundary: CPU in
millicores, memory and disk in bytes, GPUs as whole devices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

DIMENSIONS = ("cpu", "memory", "disk", "gpu")


@dataclass(frozen=True)
class Resources:
    """An amount of each resource: CPU millicores, memory bytes, disk bytes, GPUs."""

    cpu: int = 0
    memory: int = 0
    disk: int = 0
    gpu: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu + other.cpu,
            self.memory + other.memory,
            self.disk + other.disk,
            self.gpu + other.gpu,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu - other.cpu,
            self.memory - other.memory,
            self.disk - other.disk,
            self.gpu - other.gpu,
        )

    def fits_in(self, free: Resources) -> bool:
        """True if this amount is no larger than ``free`` in every dimension."""
        return (
            self.cpu <= free.cpu
            and self.memory <= free.memory
            and self.disk <= free.disk
            and self.gpu <= free.gpu
        )

    def as_dict(self) -> dict[str, int]:
        return {"cpu": self.cpu, "memory": self.memory, "disk": self.disk, "gpu": self.gpu}

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> Resources:
        """Build from a stored mapping; raises ValueError on a missing or non-integer field."""
        values = []
        for name in DIMENSIONS:
            value = data.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} is not a number")
            if value != int(value) or value < 0:
                raise ValueError(f"{name} is not a non-negative integer")
            values.append(int(value))
        return cls(*values)


ZERO = Resources()


@dataclass(frozen=True)
class Overcommit:
    """Ratios by which capacity may be exceeded; GPUs are never overcommitted."""

    cpu: float = 1.0
    memory: float = 1.0
    disk: float = 1.0

    def apply(self, capacity: Resources) -> Resources:
        """The capacity that reservations may fill."""
        return Resources(
            int(capacity.cpu * self.cpu),
            int(capacity.memory * self.memory),
            int(capacity.disk * self.disk),
            capacity.gpu,
        )


class HostStatus(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    STALE = "stale"
    CORRUPT = "corrupt"


@dataclass(frozen=True)
class Request:
    """What one workload needs, and where it may go."""

    resources: Resources
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Reservation:
    """Capacity held on a host for a workload not yet seen as an instance."""

    id: str
    host: str
    resources: Resources
    age: float


@dataclass(frozen=True)
class HostSnapshot:
    """One host as read from the store at one instant (ages by the server clock)."""

    name: str
    status: HostStatus
    capacity: Resources = ZERO
    used: Resources = ZERO
    overcommit: Overcommit = Overcommit()
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    instances: int = 0
    age: float | None = None
    reservations: tuple[Reservation, ...] = ()
    instance_names: frozenset[str] = frozenset()
    lock: str | None = None
    problem: str | None = None
    generation: int = 0

    @property
    def reserved(self) -> Resources:
        total = ZERO
        for reservation in self.reservations:
            total = total + reservation.resources
        return total

    @property
    def limit(self) -> Resources:
        """Capacity × overcommit: what used + reserved may reach."""
        return self.overcommit.apply(self.capacity)

    @property
    def free(self) -> Resources:
        return self.limit - self.used - self.reserved


@dataclass(frozen=True)
class Placement:
    """A workload placed (or, in a dry run, planned) on a host."""

    id: str
    host: str
    resources: Resources
    existing: bool = False
    #: With ``redis.wait_replicas``: whether that many replicas had it when schedule returned
    #: (None when not asked). An unreplicated one is lost if its primary fails now.
    replicated: bool | None = None


@dataclass(frozen=True)
class Plan:
    """The outcome of ``schedule``: the strategy used and one placement per workload."""

    strategy: str
    placements: tuple[Placement, ...]
    dry_run: bool = False
