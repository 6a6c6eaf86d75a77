"""bench: scheduling speed and correctness on a synthetic fleet, measured against PING.

The fleet lives under its own key prefix (``<prefix>:bench:<random>``), so real hosts and
reservations are never touched, and it is deleted afterwards. Correctness is checked from the
store once the schedulers are done: no host over capacity × overcommit, and exactly one
reservation for every placement that succeeded.
"""

from __future__ import annotations

import multiprocessing
import secrets
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

from hostsched.codec import encode_actual
from hostsched.config import Config
from hostsched.errors import InsufficientResources
from hostsched.keys import Keys
from hostsched.model import Overcommit, Request, Resources
from hostsched.scheduler import Scheduler
from hostsched.store import Store, translated

G = 1 << 30
#: The fleet is sized so that every placement fits with this much room to spare.
HEADROOM = 1.5


@dataclass(frozen=True)
class BenchSettings:
    hosts: int = 20
    placements: int = 1000
    processes: int = 1
    count: int = 1
    strategy: str = "least_loaded"
    request: Resources = Resources(cpu=1000, memory=G)


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
    password: str | None = field(repr=False)
    config: Config
    host_names: tuple[str, ...]
    calls: int
    settings: BenchSettings


def _work(job: _Worker) -> tuple[list[float], int, int]:
    """Run ``calls`` schedule calls; returns per-placement latencies, placements, failures."""
    store = Store.connect(
        job.url, keys=Keys(job.config.redis.prefix), password=job.password,
        timeout=job.config.redis.timeout,
    )  # fmt: skip
    scheduler = Scheduler(job.config, store, expected=job.host_names)
    request = Request(job.settings.request)
    latencies, placed, failures = [], 0, 0
    try:
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
            placed += len(plan.placements)
            latencies.extend([elapsed / job.settings.count] * job.settings.count)
    finally:
        store.close()
    return latencies, placed, failures


def ping_rate(store: Store, seconds: float = 1.0) -> float:
    """PINGs per second from one redis-py client: the yardstick for this machine and server."""
    client = store.client
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


def _populate(store: Store, names: Sequence[str], size: Resources, ttl: int) -> None:
    body = encode_actual(
        capacity=size, used=Resources(), overcommit=Overcommit(), labels={}, names=()
    )
    for start in range(0, len(names), 500):
        chunk = names[start : start + 500]
        grants = store.acquire_locks(chunk, ttl=60)
        store.write_actual({n: (grants[n], body, ()) for n in chunk}, resource_ttl=ttl)
        store.release_locks(grants)


def _remove(store: Store) -> None:
    pattern = f"{store.keys.prefix}:*"
    batch = []
    for key in store.client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            store.client.unlink(*batch)
            batch = []
    if batch:
        store.client.unlink(*batch)


def _overcommitted(scheduler: Scheduler) -> tuple[int, int]:
    """Hosts whose used + reserved exceeds capacity × overcommit, and reservations counted."""
    fleet = scheduler.fleet()
    over = sum(not (h.used + h.reserved).fits_in(h.limit) for h in fleet.hosts)
    return over, sum(len(h.reservations) for h in fleet.hosts)


def run_bench(config: Config, url: str, settings: BenchSettings) -> BenchResult:
    """Measure ``settings.placements`` placements on a fresh synthetic fleet, then remove it."""
    prefix = f"{config.redis.prefix}:bench:{secrets.token_hex(4)}"
    bench_config = replace(
        config,
        hosts=(),
        strategy=settings.strategy,
        reservation_ttl=3600,
        redis=replace(config.redis, prefix=prefix),
    )
    store = Store.connect(
        url, keys=Keys(prefix), password=config.redis.password, timeout=config.redis.timeout
    )
    names = tuple(f"bench-{i:05d}" for i in range(settings.hosts))
    with translated("bench"):
        try:
            _populate(store, names, host_size(settings), ttl=3600)
            baseline = ping_rate(store)
            calls = max(1, settings.placements // settings.count)
            shares = [calls // settings.processes + (i < calls % settings.processes)
                      for i in range(settings.processes)]  # fmt: skip
            jobs = [_Worker(url, config.redis.password, bench_config, names, share, settings)
                    for share in shares if share]  # fmt: skip
            started = time.perf_counter()
            if len(jobs) == 1:
                results = [_work(jobs[0])]
            else:
                with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
                    results = pool.map(_work, jobs)
            seconds = time.perf_counter() - started
            latencies = sorted(x for r in results for x in r[0])
            placed = sum(r[1] for r in results)
            over, reservations = _overcommitted(Scheduler(bench_config, store, expected=names))
        finally:
            try:
                _remove(store)
            finally:
                store.close()
    per_second = placed / seconds if seconds else 0.0
    return BenchResult(
        placements=placed,
        failures=sum(r[2] for r in results),
        seconds=round(seconds, 4),
        per_second=round(per_second, 1),
        p50_ms=round(1000 * statistics.median(latencies), 3) if latencies else 0.0,
        p99_ms=round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 3) if latencies else 0.0,
        overcommitted_hosts=over,
        reservations=reservations,
        baseline_ping_per_second=round(baseline, 1),
        ratio_to_ping=round(per_second / baseline, 3) if baseline else 0.0,
        hosts=settings.hosts,
        processes=len(jobs),
        count=settings.count,
        strategy=settings.strategy,
    )
