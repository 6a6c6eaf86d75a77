"""Placement strategies: pure functions from candidate hosts and a request to a ranking.

A strategy sees only hosts that are eligible and have room for the request; it orders them,
best first. The reserve script remains the only judge of fit, so a ranking from a stale view
costs a retry, never an overcommit.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

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
#: least_loaded's weights of CPU, memory and disk unless configured (scheduling.weights).
DEFAULT_WEIGHTS = (0.4, 0.4, 0.2)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A host as a strategy sees it: what it may hold and what it holds now."""

    name: str
    limit: Resources
    load: Resources
    instances: int = 0

    def has_room(self, request: Resources) -> bool:
        """True if ``request`` fits in what is left (without building the difference)."""
        limit, load = self.limit, self.load
        return (
            load.cpu + request.cpu <= limit.cpu
            and load.memory + request.memory <= limit.memory
            and load.disk + request.disk <= limit.disk
            and load.gpu + request.gpu <= limit.gpu
        )


@dataclass(frozen=True)
class Context:
    """What some strategies need besides the hosts."""

    request: Resources
    request_id: str = ""
    weights: tuple[float, float, float] = DEFAULT_WEIGHTS
    cursor: str | None = None
    rng: random.Random = field(default_factory=random.Random)


def _share(part: int, whole: int) -> float:
    return part / whole if whole > 0 else 0.0


def utilisation(candidate: Candidate, weights: tuple[float, float, float]) -> float:
    """Weighted share of CPU, memory and disk in use, 0.0 (idle) to 1.0 (full)."""
    load = candidate.load
    return weighted_use(candidate.limit, load.cpu, load.memory, load.disk, weights)


def weighted_use(
    limit: Resources, cpu: int, memory: int, disk: int, weights: tuple[float, float, float]
) -> float:
    """:func:`utilisation` of a host of ``limit`` that holds these amounts, without building
    a Candidate: 0.3-0.5 µs against 1.5-1.9 for each summary a scheduler publishes."""
    cpu_w, mem_w, disk_w = weights
    score = (
        cpu_w * _share(cpu, limit.cpu)
        + mem_w * _share(memory, limit.memory)
        + disk_w * _share(disk, limit.disk)
    )
    return score / (cpu_w + mem_w + disk_w)


def _free_share(h: Candidate, request: Resources) -> float:
    """Mean share of each dimension left after placing ``request`` (GPUs only where present)."""
    free = h.limit - h.load - request
    shares = [
        _share(free.cpu, h.limit.cpu),
        _share(free.memory, h.limit.memory),
        _share(free.disk, h.limit.disk),
    ]
    if h.limit.gpu:
        shares.append(_share(free.gpu, h.limit.gpu))
    return sum(shares) / len(shares)


Score = Callable[[Candidate, "Context"], "float | tuple[float, int]"]

#: Strategies that order hosts by a score of the host alone (lower is better), so a batch can
#: be planned greedily from a heap and a host's score changes only when its load does.
SCORES: dict[str, Score] = {
    "least_loaded": lambda h, ctx: utilisation(h, ctx.weights),
    "best_fit": lambda h, ctx: _free_share(h, ctx.request),
    "least_cpu": lambda h, ctx: (_share(h.load.cpu, h.limit.cpu), h.instances),
}
#: Scored strategies whose score does not depend on the request: an order of the hosts kept
#: for them (the fleet view's) is theirs exactly, whatever is asked for.
REQUEST_FREE_SCORES = frozenset({"least_loaded", "least_cpu"})


def _scored(strategy: str) -> Callable[[Sequence[Candidate], Context], list[Candidate]]:
    score = SCORES[strategy]

    def order(hosts: Sequence[Candidate], ctx: Context) -> list[Candidate]:
        return sorted(hosts, key=lambda h: (score(h, ctx), ctx.rng.random()))

    return order


def _round_robin(hosts: Sequence[Candidate], ctx: Context) -> list[Candidate]:
    ordered = sorted(hosts, key=lambda h: h.name)
    after = [h for h in ordered if ctx.cursor is None or h.name > ctx.cursor]
    return after + [h for h in ordered if h not in after]


def _random(hosts: Sequence[Candidate], ctx: Context) -> list[Candidate]:
    shuffled = list(hosts)
    ctx.rng.shuffle(shuffled)
    return shuffled


def rendezvous_score(request_id: str, host: str) -> int:
    """Highest-random-weight hash: stable across processes and machines."""
    digest = hashlib.blake2b(f"{request_id}\0{host}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _consistent_hash(hosts: Sequence[Candidate], ctx: Context) -> list[Candidate]:
    return sorted(hosts, key=lambda h: rendezvous_score(ctx.request_id, h.name), reverse=True)


_STRATEGIES: dict[str, Callable[[Sequence[Candidate], Context], list[Candidate]]] = {
    "least_loaded": _scored("least_loaded"),
    "best_fit": _scored("best_fit"),
    "round_robin": _round_robin,
    "random": _random,
    "least_cpu": _scored("least_cpu"),
    "consistent_hash": _consistent_hash,
}


def rank(strategy: str, hosts: Sequence[Candidate], ctx: Context) -> list[Candidate]:
    """The hosts with room for ``ctx.request``, best first by ``strategy``."""
    fitting = [h for h in hosts if h.has_room(ctx.request)]
    return _STRATEGIES[strategy](fitting, ctx)


def plan(
    strategy: str, hosts: Sequence[Candidate], ids: Sequence[str], ctx: Context
) -> list[tuple[str, str]] | None:
    """Choose a host for each id, as if each placement were made before the next is chosen.

    Returns ``(id, host)`` pairs, or None if one of them fits nowhere. Scored strategies keep
    the hosts in a heap, so a batch costs O(ids · log hosts); the others rank every host for
    each id (round robin moves its cursor, consistent hashing depends on the id).
    """
    request = ctx.request
    if len(ids) == 1 and len(hosts) == 1:  # (the fleet view's usual answer) nothing to weigh
        return [(ids[0], hosts[0].name)] if hosts[0].has_room(request) else None
    if strategy in SCORES and len(ids) == 1:  # the common case, without building a heap
        score = SCORES[strategy]
        fitting = [(score(h, ctx), ctx.rng.random(), h.name) for h in hosts if h.has_room(request)]
        return [(ids[0], min(fitting)[2])] if fitting else None
    if strategy in SCORES:
        score = SCORES[strategy]
        current = [h for h in hosts if h.has_room(request)]
        heap = [(score(h, ctx), ctx.rng.random(), i) for i, h in enumerate(current)]
        heapq.heapify(heap)
        chosen = []
        for rid in ids:
            while heap:
                _, tiebreak, i = heapq.heappop(heap)
                host = current[i]
                if host.has_room(request):
                    break
            else:
                return None  # loads only grow within a plan: a host dropped stays dropped
            current[i] = host = replace(host, load=host.load + request)
            heapq.heappush(heap, (score(host, ctx), tiebreak, i))
            chosen.append((rid, host.name))
        return chosen
    local = {h.name: h for h in hosts}
    chosen, cursor = [], ctx.cursor
    for rid in ids:
        ranked = rank(strategy, list(local.values()), replace(ctx, request_id=rid, cursor=cursor))
        if not ranked:
            return None
        best = ranked[0]
        local[best.name] = replace(best, load=best.load + request)
        chosen.append((rid, best.name))
        cursor = best.name
    return chosen
