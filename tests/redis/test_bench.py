"""bench's own checks: its counts come from the store, and it cleans up after itself."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from hostsched import bench
from hostsched.bench import BenchSettings, run_bench
from hostsched.codec import decode_summary
from hostsched.config import Config, RedisConfig
from hostsched.connect import open_store_at
from hostsched.keys import Keys
from hostsched.model import Resources
from hostsched.store import Store


def test_bench_places_counts_and_removes_its_fleet(redis_url: str, store: Store) -> None:
    store.client.set("hostsched:resource:{real}", "untouched")
    config = Config(redis=RedisConfig(url=redis_url))
    settings = BenchSettings(hosts=5, placements=60, processes=2, count=3, strategy="best_fit")
    result = run_bench(config, redis_url, settings)
    assert result.placements == 60 and result.failures == 0
    assert result.reservations == 60 and result.overcommitted_hosts == 0
    assert result.baseline_ping_per_second > 0 and result.p99_ms >= result.p50_ms > 0
    assert store.client.keys("*") == [b"hostsched:resource:{real}"]


def test_bench_counts_overcommitted_hosts(redis_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A reservation written past capacity behind the scripts' back is found and counted."""
    original = bench._work

    def sabotage(job: bench._Worker, ready):  # type: ignore[no-untyped-def]
        outcome = original(job, ready)
        store = open_store_at(job.url, job.config.redis)
        store.client.hset(
            store.keys.scheduled(job.host_names[0]),
            "rogue",
            json.dumps({"cpu": 10**9, "memory": 0, "disk": 0, "gpu": 0, "t": store.ping()}),
        )
        store.close()
        return outcome

    monkeypatch.setattr(bench, "_work", sabotage)
    result = run_bench(
        Config(redis=RedisConfig(url=redis_url)), redis_url, BenchSettings(hosts=3, placements=5)
    )
    assert result.overcommitted_hosts == 1 and result.reservations == 6
    # The entry was written behind the scripts' back: the sums no longer match it, and it is
    # not one of the placements made.
    assert result.sums_mismatched_hosts == 1 and result.lost_or_doubled == 1


def test_a_lone_scheduler_is_measured_against_pings_between_its_placements(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One process: the PING baseline is timed between its placements (the same moments of a
    machine whose speed swings), not in the second before them; several processes: before."""
    monkeypatch.setattr(bench, "ping_rate", lambda store, seconds=1.0: 1.0)  # the second before
    monkeypatch.setattr(bench, "PING_EVERY", 0.0)  # a burst after every placement
    config = Config(redis=RedisConfig(url=redis_url))
    alone = run_bench(config, redis_url, BenchSettings(hosts=3, placements=20))
    assert alone.placements == 20 and alone.baseline_ping_per_second > 1.0
    assert alone.ratio_to_ping == round(alone.per_second / alone.baseline_ping_per_second, 3)
    several = run_bench(config, redis_url, BenchSettings(hosts=3, placements=20, processes=2))
    assert several.placements == 20 and several.baseline_ping_per_second == 1.0


@pytest.mark.parametrize("processes", [1, 2])
def test_server_cpu_is_counted_from_the_start_not_over_the_view_reads(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, processes: int
) -> None:
    """The placements' server CPU starts once every scheduler has read its view (as their
    seconds and client CPU do): on a large fleet the reads would otherwise dominate it."""
    clock = "hostsched:test:server-cpu"  # a server CPU clock that only the view reads advance

    def server_cpu(store: Store) -> float:
        return float(store.client.get(clock) or 0)

    monkeypatch.setattr(bench, "server_cpu_seconds", server_cpu)
    prepare = bench.Scheduler.prepare

    def reading(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not self.view.synced:  # the first call reads the whole view
            self.store.client.incrbyfloat(clock, 1000.0)
        return prepare(self, *args, **kwargs)

    monkeypatch.setattr(bench.Scheduler, "prepare", reading)
    config = Config(redis=RedisConfig(url=redis_url))
    settings = BenchSettings(hosts=3, placements=20, processes=processes)
    result = run_bench(config, redis_url, settings)
    assert result.placements == 20 and result.server_cpu_us_per_placement == 0.0


def test_host_size_leaves_headroom() -> None:
    settings = BenchSettings(hosts=10, placements=10_000, request=Resources(2000, 1 << 30))
    size = bench.host_size(settings)
    assert size.cpu * settings.hosts >= 1.5 * settings.placements * 2000


def test_check_fleet_measures_spread_and_counts_lost_or_doubled(store: Store) -> None:
    """bench's balance and bookkeeping checks see a fleet as it is, not as it should be."""
    from hostsched.bench import check_fleet
    from hostsched.collect import collect
    from hostsched.config import HostConfig, StaticHost
    from hostsched.scheduler import Scheduler

    static = StaticHost(Resources(10_000, 10 * (1 << 30), 100 * (1 << 30)), Resources())
    config = Config(hosts=(HostConfig("a", static=static), HostConfig("b", static=static)))
    collect(config, store)
    g = 1 << 30
    store.reserve({"a": [("x", Resources(5000, 5 * g, 50 * g))], "b": [("y", Resources(1000, g))]},
                  reservation_ttl=60, stale_after=60)  # fmt: skip
    check = check_fleet(Scheduler(config, store), ["x", "y"])
    # a: 0.4 * 0.5 + 0.4 * 0.5 + 0.2 * 0.5 = 0.5; b: 0.4 * 0.1 + 0.4 * 0.1 = 0.08
    assert round(check.spread, 6) == 0.42 and round(check.max_utilisation, 6) == 0.5
    assert (check.overcommitted, check.sums_mismatched, check.lost_or_doubled) == (0, 0, 0)
    assert check_fleet(Scheduler(config, store), ["x", "y", "z"]).lost_or_doubled == 1  # lost
    assert check_fleet(Scheduler(config, store), ["x"]).lost_or_doubled == 1  # never made


def test_bench_refuses_to_wait_for_replicas_that_are_not_there(redis_url: str) -> None:
    from hostsched.errors import UsageError

    config = Config(redis=RedisConfig(url=redis_url))
    with pytest.raises(UsageError, match="0 connected replicas"):
        run_bench(config, redis_url, BenchSettings(hosts=2, placements=4, wait_replicas=1))
    assert Store.connect(redis_url, keys=Keys("hostsched")).client.keys("*") == []


def _docs_loop(name: str = "barest") -> ModuleType:
    """A loop of docs/ (barest.py, lean.py): the bounds set beside bench's size figures (a
    script, not a module)."""
    path = Path(__file__).parents[2] / "docs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("variant", ["barest", "+ changes", "+ keys"])
def test_the_bare_loop_fits_every_placement_and_removes_its_keys(
    redis_url: str, store: Store, variant: str
) -> None:
    """The bare loop's fleet holds all its placements, as bench's does (a refusal is cheaper
    than a placement, so refusals would flatter the small fleet), and it leaves nothing."""
    barest = _docs_loop()
    store.client.set("hostsched:resource:{real}", "untouched")
    conn = barest.Connection(redis_url)
    try:
        for hosts in (10, 300):
            assert barest.run(conn, variant, hosts, 1000) > 0
    finally:
        conn.close()
    assert store.client.keys("*") == [b"hostsched:resource:{real}"]


@pytest.mark.parametrize("publish", ["", "exchanges", "script"])
def test_the_lean_loop_places_with_hostscheds_scripts_and_publishes_as_it_does(
    redis_url: str, store: Store, publish: str
) -> None:
    """docs/lean.py: every placement fits, the fleet view then holds every host's reservations
    when it publishes (none when it does not), and it leaves nothing behind."""
    lean = _docs_loop("lean")
    store.client.set("hostsched:resource:{real}", "untouched")
    loop = lean.Loop(redis_url, 40, 100, publish=publish)
    try:
        for i in range(100):
            loop.place()
            if i == 50:
                loop.last_exchange -= 1  # an exchange is due: later changes wait for the next
        loop.flush()
        view = loop.store.client.hgetall(loop.store.keys.fleet_summary)
        published = sum(decode_summary(body).reserved.cpu for body in view.values())
        assert len(view) == 40
        assert published == (100 * lean.REQUEST.cpu if publish else 0)
        held = loop.store.read_fleet([f"lean-{i:05d}" for i in range(40)]).hosts
        assert sum(len(host.reservations) for host in held) == 100
    finally:
        loop.close()
    assert store.client.keys("*") == [b"hostsched:resource:{real}"]
