"""bench: scheduling speed and correctness on a synthetic fleet, measured against PING.

The fleet lives under its own key prefix (``<prefix>:bench:<random>``), so real hosts and
reservations are never touched, and it is deleted afterwards. Each scheduler process reads the
fleet view first, then all start together and run as long-lived schedulers (one round trip per
placement or batch). Correctness is checked from the store once they are done: no host over
capacity × overcommit, every placement held exactly once, and each host's running sums equal
to its entries. Balance is the spread of utilisation across hosts.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from hostsched.codec import encode_actual
from hostsched.config import Config
from hostsched.connect import open_store_at
from hostsched.errors import InsufficientResources, UsageError
from hostsched.model import Overcommit, Request, Resources
from hostsched.scheduler import Scheduler
from hostsched.store import Store, translated
from hostsched.strategies import Candidate, utilisation
from hostsched.wire import Pending

G = 1 << 30
#: The fleet is sized so that every placement fits with this much room to spare.
HEADROOM = 1.5
#: How long scheduler processes may take to start and read the fleet view.
START_TIMEOUT = 120.0
#: A lone scheduler times PING_BURST PINGs after every PING_EVERY seconds of placements, so
#: that its rate and the PING baseline come from the same moments of a machine whose speed
#: swings from one second to the next.
PING_EVERY = 0.01
PING_BURST = 40


@dataclass(frozen=True)
class BenchSettings:
    hosts: int = 20
    placements: int = 1000
    processes: int = 1
    count: int = 1
    strategy: str = "least_loaded"
    request: Resources = Resources(cpu=1000, memory=G)
    wait_replicas: int | None = None  # None: as configured


@dataclass(frozen=True)
class BenchResult:
    """What SPEC's ``bench --json`` reports, plus the settings it ran with."""

    placements: int
    failures: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float
    overcommitted_hosts: int
    reservations: int
    baseline_ping_per_second: float
    ratio_to_ping: float
    refusals: int
    round_trips_per_placement: float
    lost_or_doubled: int
    sums_mismatched_hosts: int
    spread: float
    max_utilisation: float
    view_read_ms: float
    unreplicated: int
    client_cpu_us_per_placement: float
    server_cpu_us_per_placement: float
    primaries: int
    wait_replicas: int
    hosts: int
    processes: int
    count: int
    strategy: str

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


@dataclass(frozen=True)
class _Worker:
    """What one scheduler process needs to connect on its own (nothing is shared by fork)."""

    url: str = field(repr=False)  # may hold a password
    config: Config
    host_names: tuple[str, ...]
    calls: int
    settings: BenchSettings
    interleave_pings: bool = False


@dataclass(frozen=True)
class _Outcome:
    latencies: list[float]
    placed: list[str]
    failures: int
    refusals: int
    round_trips: int
    view_read: float
    unreplicated: int
    cpu_seconds: float  # the placements' alone
    pings: _PingTally | None = None  # a lone scheduler's PING bursts


@dataclass
class _PingTally:
    """What a lone scheduler's PING bursts took (see PING_EVERY)."""

    count: int = 0
    seconds: float = 0.0  # the PINGs' own wall time: the baseline's
    burst_seconds: float = 0.0  # the bursts' whole wall time, INFOs included: not placements'
    cpu_seconds: float = 0.0  # this process's CPU during the bursts
    server_seconds: float = 0.0  # the servers' CPU during the bursts


class _PingBursts:
    """PINGs timed between one scheduler's placements (see PING_EVERY)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._client = _ping_client(store)
        self._due = 0.0
        self.tally = _PingTally()

    def after(self, elapsed: float) -> None:
        """Note ``elapsed`` seconds of placements; PING a burst if one is due."""
        self._due -= elapsed
        if self._due > 0:
            return
        self._due = PING_EVERY
        tally = self.tally
        cpu, burst = _cpu_seconds(), time.perf_counter()
        server = server_cpu_seconds(self._store)
        began = time.perf_counter()
        for _ in range(PING_BURST):
            self._client.ping()
        tally.seconds += time.perf_counter() - began
        tally.server_seconds += server_cpu_seconds(self._store) - server
        tally.cpu_seconds += _cpu_seconds() - cpu
        tally.burst_seconds += time.perf_counter() - burst
        tally.count += PING_BURST


def _work(job: _Worker, ready: Callable[[], None]) -> _Outcome:
    """Read the view, call ``ready`` (which waits for the others), run ``calls`` schedules."""
    store = open_store_at(job.url, job.config.redis)
    scheduler = Scheduler(job.config, store, expected=job.host_names, long_lived=True)
    request = Request(job.settings.request)
    latencies: list[float] = []
    placed: list[str] = []
    failures = unreplicated = 0
    pings = _PingBursts(store) if job.interleave_pings else None
    try:
        began = time.perf_counter()
        scheduler.prepare()
        view_read = time.perf_counter() - began
        trips_before = store.round_trips
        ready()
        cpu_before = _cpu_seconds()
        for _ in range(job.calls):
            started = time.perf_counter()
            try:
                plan = scheduler.schedule(
                    request, count=job.settings.count, strategy=job.settings.strategy
                )
            except InsufficientResources:
                failures += job.settings.count
                continue
            elapsed = time.perf_counter() - started
            placed.extend(p.id for p in plan.placements)
            unreplicated += sum(p.replicated is False for p in plan.placements)
            latencies.extend([elapsed / job.settings.count] * job.settings.count)
            if pings is not None:
                pings.after(elapsed)
        scheduler.flush()
        tally = pings.tally if pings else None
        cpu = _cpu_seconds() - cpu_before - (tally.cpu_seconds if tally else 0.0)
    finally:
        store.close()
    return _Outcome(
        latencies, placed, failures, scheduler.stats.refusals,
        store.round_trips - trips_before, view_read, unreplicated, cpu, tally,
    )  # fmt: skip


def _cpu_seconds() -> float:
    """CPU time of this process (user + system): where a scheduler's time goes."""
    times = os.times()
    return times.user + times.system


def server_cpu_seconds(store: Store) -> float:
    """CPU time the servers have used (INFO cpu, summed over a cluster's primaries)."""
    total = 0.0
    for node in store.primaries():
        info = node.info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


def _check_replicas(store: Store, wanted: int) -> None:
    """Refuse to wait for replicas that are not there: every placement would time out."""
    if wanted:
        have = min(int(n.info("replication").get("connected_slaves", 0)) for n in store.primaries())
        if have < wanted:
            raise UsageError(
                f"--wait-replicas {wanted}, but a primary has {have} connected replicas",
                hint="each placement would wait redis.timeout / 2 for replicas that never answer",
            )


def _child(job: _Worker, start: Any, results: Any) -> None:
    try:
        results.put(_work(job, lambda: start.wait(START_TIMEOUT)))
    except BaseException as exc:  # reported by the parent as the bench's failure
        start.abort()
        results.put(exc)
        raise


def _mark(store: Store) -> tuple[float, float]:
    """Now, by the wall clock and by the servers' CPU seconds (read first, so that the wall
    clock does not time the INFO round trip)."""
    server = server_cpu_seconds(store)
    return time.perf_counter(), server


def _since(mark: tuple[float, float], store: Store) -> tuple[float, float]:
    """Seconds, and servers' CPU seconds, since ``mark`` (the clock read first, as above)."""
    seconds = time.perf_counter() - mark[0]
    return seconds, server_cpu_seconds(store) - mark[1]


def _run_workers(jobs: Sequence[_Worker], store: Store) -> tuple[list[_Outcome], float, float]:
    """Run the jobs (in processes if more than one) from a common start, once every view is
    read; their outcomes, and the seconds and server CPU seconds from that start to the end."""
    if len(jobs) == 1:
        began: list[tuple[float, float]] = []
        outcome = _work(jobs[0], lambda: began.append(_mark(store)))
        return [outcome], *_since(began[0], store)
    context = multiprocessing.get_context("fork")
    start = context.Barrier(len(jobs) + 1)
    results = context.Queue()
    children = [context.Process(target=_child, args=(j, start, results)) for j in jobs]
    for child in children:
        child.start()
    try:
        start.wait(START_TIMEOUT)
        mark = _mark(store)
        outcomes = [results.get(timeout=3600) for _ in children]
        seconds, server_cpu = _since(mark, store)
    finally:
        for child in children:
            child.join(10)
            if child.is_alive():
                child.kill()
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes, seconds, server_cpu


def _per(seconds: float, placements: int) -> float:
    return round(1e6 * seconds / placements, 1) if placements else 0.0


def _ping_client(store: Store) -> Any:
    """The redis-py client that PINGs: the server's (in a cluster, slot 0's node's)."""
    if store.is_cluster:
        return store.client.nodes_manager.get_node_from_slot(0).redis_connection
    return store.client


def ping_rate(store: Store, seconds: float = 1.0) -> float:
    """PINGs per second from one redis-py client: the yardstick for this machine and server
    (in a cluster, the node of slot 0)."""
    client = _ping_client(store)
    client.ping()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(100):
            client.ping()
        done += 100
    return done / (time.perf_counter() - started)


def host_size(settings: BenchSettings) -> Resources:
    """Hosts that hold all the placements at about two thirds full (at least 64 cores each)."""
    per_host = HEADROOM * settings.placements / settings.hosts
    request = settings.request
    return Resources(
        cpu=max(64_000, int(per_host * request.cpu)),
        memory=max(256 * G, int(per_host * request.memory)),
        disk=max(2048 * G, int(per_host * request.disk)),
        gpu=int(per_host * request.gpu),
    )


def populate(store: Store, names: Sequence[str], size: Resources, ttl: int) -> None:
    """Store idle hosts of ``size`` under ``names``, as collect stores them (``ttl`` seconds):
    bench's fleet, and that of the loops in docs/ that it is compared with."""
    body = encode_actual(
        capacity=size, used=Resources(), overcommit=Overcommit(), labels={}, names=()
    )
    for start in range(0, len(names), 500):
        chunk = names[start : start + 500]
        grants = store.acquire_locks(chunk, ttl=60)
        store.write_actual({n: (grants[n], body, ()) for n in chunk}, resource_ttl=ttl)
        store.release_locks(grants)


@dataclass(frozen=True)
class _Check:
    overcommitted: int
    reservations: int
    lost_or_doubled: int
    sums_mismatched: int
    spread: float
    max_utilisation: float


def check_fleet(scheduler: Scheduler, placed: Sequence[str]) -> _Check:
    """The invariants, from the store: capacity, each placement held once, sums = entries.

    Reservations are counted from the entries themselves, not from the running sums the
    scripts judge by, so a sum that drifted from its entries is caught, not trusted.
    """
    fleet = scheduler.fleet()
    store = scheduler.store
    holders: dict[str, int] = {}
    for host in fleet.hosts:
        for reservation in host.reservations:
            holders[reservation.id] = holders.get(reservation.id, 0) + 1
    trip = store.trip("bench")
    sums: list[Pending[list[bytes | None]]] = [
        trip.command("HMGET", store.keys.reserved(host.name), "cpu", "memory", "disk", "gpu")
        for host in fleet.hosts
    ]
    trip.run()
    mismatched = 0
    for host, stored in zip(fleet.hosts, sums, strict=True):
        values = Resources(*(int(v or 0) for v in stored.get()))
        mismatched += values != host.reserved
    expected = set(placed)
    lost_or_doubled = sum(holders.get(rid, 0) != 1 for rid in expected) + sum(
        1 for rid in holders if rid not in expected
    )
    weights = scheduler.config.weights
    loads = [
        utilisation(Candidate(h.name, h.limit, h.used + h.reserved),
                    (weights.cpu, weights.memory, weights.disk))
        for h in fleet.hosts
    ]  # fmt: skip
    return _Check(
        overcommitted=sum(not (h.used + h.reserved).fits_in(h.limit) for h in fleet.hosts),
        reservations=sum(holders.values()),
        lost_or_doubled=lost_or_doubled,
        sums_mismatched=mismatched,
        spread=max(loads) - min(loads) if loads else 0.0,
        max_utilisation=max(loads, default=0.0),
    )


def run_bench(config: Config, url: str, settings: BenchSettings) -> BenchResult:
    """Measure ``settings.placements`` placements on a fresh synthetic fleet, then remove it."""
    prefix = f"{config.redis.prefix}:bench:{secrets.token_hex(4)}"
    bench_config = replace(
        config,
        hosts=(),
        strategy=settings.strategy,
        reservation_ttl=3600,
        redis=replace(
            config.redis,
            prefix=prefix,
            wait_replicas=(
                config.redis.wait_replicas
                if settings.wait_replicas is None
                else settings.wait_replicas
            ),
        ),
    )
    store = open_store_at(url, bench_config.redis)
    names = tuple(f"bench-{i:05d}" for i in range(settings.hosts))
    with translated("bench"):
        try:
            populate(store, names, host_size(settings), ttl=3600)
            calls = max(1, settings.placements // settings.count)
            shares = [calls // settings.processes + (i < calls % settings.processes)
                      for i in range(settings.processes)]  # fmt: skip
            alone = sum(1 for share in shares if share) == 1
            jobs = [_Worker(url, bench_config, names, share, settings,
                            interleave_pings=alone)
                    for share in shares if share]  # fmt: skip
            _check_replicas(store, bench_config.redis.wait_replicas)
            # Several processes: a second of PINGs before they start; one: PINGs between its
            # placements (a second after them if it made none).
            baseline = None if alone else ping_rate(store)
            outcomes, seconds, server_cpu = _run_workers(jobs, store)
            primaries = len(store.primaries())
            tally = outcomes[0].pings
            if tally and tally.count:
                baseline = tally.count / tally.seconds
                seconds -= tally.burst_seconds
                server_cpu -= tally.server_seconds
            if baseline is None:
                baseline = ping_rate(store)
            latencies = sorted(x for o in outcomes for x in o.latencies)
            placed = [rid for o in outcomes for rid in o.placed]
            check = check_fleet(Scheduler(bench_config, store, expected=names), placed)
        finally:
            try:
                store.delete_all()
            finally:
                store.close()
    per_second = len(placed) / seconds if seconds else 0.0
    trips = sum(o.round_trips for o in outcomes)
    return BenchResult(
        placements=len(placed),
        failures=sum(o.failures for o in outcomes),
        seconds=round(seconds, 4),
        per_second=round(per_second, 1),
        p50_ms=round(1000 * statistics.median(latencies), 3) if latencies else 0.0,
        p99_ms=round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 3) if latencies else 0.0,
        overcommitted_hosts=check.overcommitted,
        reservations=check.reservations,
        baseline_ping_per_second=round(baseline, 1),
        ratio_to_ping=round(per_second / baseline, 3) if baseline else 0.0,
        refusals=sum(o.refusals for o in outcomes),
        round_trips_per_placement=round(trips / len(placed), 3) if placed else 0.0,
        lost_or_doubled=check.lost_or_doubled,
        sums_mismatched_hosts=check.sums_mismatched,
        spread=round(check.spread, 4),
        max_utilisation=round(check.max_utilisation, 4),
        view_read_ms=round(1000 * max(o.view_read for o in outcomes), 3),
        unreplicated=sum(o.unreplicated for o in outcomes),
        client_cpu_us_per_placement=_per(sum(o.cpu_seconds for o in outcomes), len(placed)),
        server_cpu_us_per_placement=_per(server_cpu, len(placed)),
        primaries=primaries,
        wait_replicas=bench_config.redis.wait_replicas,
        hosts=settings.hosts,
        processes=len(jobs),
        count=settings.count,
        strategy=settings.strategy,
    )
