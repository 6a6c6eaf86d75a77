"""Placement strategies: pure functions from candidate hosts and a request to a ranking.

A strategy sees only hosts that are eligible and have room for the request; it orders them,
best first. The reserve script remains the only judge of fit, so a ranking from a stale view
costs a retry, never an overcommit.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hostsched.model import Resources

STRATEGY_NAMES = (
    "least_loaded",
    "best_fit",
    "round_robin",
    "random",
    "least_cpu",
    "consistent_hash",
)
DEFAULT_STRATEGY = "least_loaded"


@dataclass(frozen=True)
class Candidate:
    """A host as a strategy sees it: what it may hold and what it holds now."""

    name: str
    limit: Resources
    load: Resources
    instances: int = 0


@dataclass(frozen=True)
class Context:
    """What some strategies need besides the hosts."""

    request: Resources
    request_id: str = ""
    weights: tuple[float, float, float] = (0.4, 0.4, 0.2)
    cursor: str | None = None
    rng: random.Random = field(default_factory=random.Random)


def _share(part: int, whole: int) -> float:
    return part / whole if whole > 0 else 0.0


def utilisation(candidate: Candidate, weights: tuple[float, float, float]) -> float:
    """Weighted share of CPU, memory and disk in use, 0.0 (idle) to 1.0 (full)."""
    cpu_w, mem_w, disk_w = weights
    load, limit = candidate.load, candidate.limit
    score = (
        cpu_w * _share(load.cpu, limit.cpu)
        + mem_w * _share(load.memory, limit.memory)
        + disk_w * _share(load.disk, limit.disk)
    )
    return score / (cpu_w + mem_w + disk_w)


def _least_loaded(hosts: Sequence[Candidate], ctx: Context) -> list[Candidate]:
    return sorted(hosts, key=lambda h: (utilisation(h, ctx.weights), ctx.rng.random()))


def _best_fit(hosts: Sequence[Candidate], ctx: Context) -> list[Candidate]:
    def remaining(h: Candidate) -> float:
        free = h.limit - h.load - ctx.request
        shares = [
            _share(free.cpu, h.limit.cpu),
            _share(free.memory, h.limit.memory),
            _share(free.disk, h.limit.disk),
        ]
        if h.limit.gpu:
            shares.append(_share(free.gpu, h.limit.gpu))
        return sum(shares) / len(shares)

    return sorted(hosts, key=lambda h: (remaining(h), ctx.rng.random()))


def _round_robin(hosts: Sequence[Candidate], ctx: Context) -> list[Candidate]:
    ordered = sorted(hosts, key=lambda h: h.name)
    after = [h for h in ordered if ctx.cursor is None or h.name > ctx.cursor]
    return after + [h for h in ordered if h not in after]


def _random(hosts: Sequence[Candidate], ctx: Context) -> list[Candidate]:
    shuffled = list(hosts)
    ctx.rng.shuffle(shuffled)
    return shuffled


def _least_cpu(hosts: Sequence[Candidate], ctx: Context) -> list[Candidate]:
    return sorted(
        hosts,
        key=lambda h: (_share(h.load.cpu, h.limit.cpu), h.instances, ctx.rng.random()),
    )


def rendezvous_score(request_id: str, host: str) -> int:
    """Highest-random-weight hash: stable across processes and machines."""
    digest = hashlib.blake2b(f"{request_id}\0{host}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _consistent_hash(hosts: Sequence[Candidate], ctx: Context) -> list[Candidate]:
    return sorted(hosts, key=lambda h: rendezvous_score(ctx.request_id, h.name), reverse=True)


_STRATEGIES: dict[str, Callable[[Sequence[Candidate], Context], list[Candidate]]] = {
    "least_loaded": _least_loaded,
    "best_fit": _best_fit,
    "round_robin": _round_robin,
    "random": _random,
    "least_cpu": _least_cpu,
    "consistent_hash": _consistent_hash,
}


def rank(strategy: str, hosts: Sequence[Candidate], ctx: Context) -> list[Candidate]:
    """The hosts with room for ``ctx.request``, best first by ``strategy``."""
    fitting = [h for h in hosts if ctx.request.fits_in(h.limit - h.load)]
    return _STRATEGIES[strategy](fitting, ctx)
