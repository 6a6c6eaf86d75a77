"""hostsched on a real 3-primary Redis Cluster: the same operations and guarantees as on one
server, with the fleet spread over the nodes and each host's reserve one script on its node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from hostsched.bench import BenchSettings, check_fleet, run_bench
from hostsched.collect import collect
from hostsched.config import Config, HostConfig, RedisConfig, StaticHost
from hostsched.keys import Keys
from hostsched.model import Overcommit, Request, Resources
from hostsched.scheduler import Scheduler
from hostsched.store import Store
from hostsched.strategies import STRATEGY_NAMES
from tests.cluster.redis_cluster import LocalCluster
from tests.redis.scheduler_worker import SIZES, request_of

G = 1 << 30
ROOT = Path(__file__).parents[2]


def fleet(url: str, hosts: int = 12, prefix: str = "hostsched") -> Config:
    static = StaticHost(Resources(8000, 32 * G, 100 * G), Resources(1000))
    configured = tuple(HostConfig(f"hv-{i:02d}", static=static) for i in range(hosts))
    redis_config = RedisConfig(url=url, prefix=prefix, cluster=True)
    return Config(redis=redis_config, hosts=configured)


@pytest.fixture
def store(cluster_url: str) -> Iterator[Store]:
    opened = Store.connect(cluster_url, keys=Keys("hostsched"), cluster=True)
    yield opened
    opened.close()


def owners(cluster: LocalCluster, keys: Keys, hosts: list[str]) -> set[int]:
    return {cluster.primary_for_key(keys.resource(h)).port for h in hosts}


def test_fleet_spreads_over_primaries_and_every_command_works(
    redis_cluster: LocalCluster, store: Store
) -> None:
    config = fleet(redis_cluster.seed_url)
    names = [h.name for h in config.hosts]
    assert len(owners(redis_cluster, store.keys, names)) == 3  # the test means something
    assert collect(config, store).stored == 12
    scheduler = Scheduler(config, store)
    for strategy in STRATEGY_NAMES:
        plan = scheduler.schedule(Request(Resources(500, G)), count=5, strategy=strategy)
        assert len({p.id for p in plan.placements}) == 5
    again = scheduler.schedule(Request(Resources(500)), ids=["web-1"])
    retry = Scheduler(config, store).schedule(Request(Resources(500)), ids=["web-1"])
    assert retry.placements[0].existing and retry.placements[0].host == again.placements[0].host
    fleet_view = scheduler.inspect()
    assert sum(len(h.reservations) for h in fleet_view.hosts) == 31
    assert scheduler.release(["web-1", "nope"]).missing == ("nope",)
    assert scheduler.cleanup().hosts == 12
    held = [r.id for h in scheduler.inspect().hosts for r in h.reservations]
    check = check_fleet(scheduler, held)
    assert (check.overcommitted, check.sums_mismatched, check.lost_or_doubled) == (0, 0, 0)


def test_round_trips_per_placement_are_the_same_as_on_one_server(
    cluster_url: str, store: Store
) -> None:
    """Each trip writes once to every node it touches and then reads them: the count of
    writes per node, and the wall-clock round trips, do not grow with the fleet."""
    config = fleet(cluster_url, hosts=30)
    collect(config, store)
    scheduler = Scheduler(config, store, long_lived=True)
    scheduler.schedule(Request(Resources(100)))
    before = store.round_trips  # counted where batches are sent, re-sends included
    for _ in range(20):
        scheduler.schedule(Request(Resources(100)))
    assert store.round_trips - before == 20


def test_scripts_are_loaded_on_a_node_that_lost_them(
    redis_cluster: LocalCluster, store: Store
) -> None:
    config = fleet(redis_cluster.seed_url)
    collect(config, store)
    for node in redis_cluster.primaries():
        node.command("SCRIPT", "FLUSH")
    plan = Scheduler(config, store).schedule(Request(Resources(500)), count=12)
    assert len(plan.placements) == 12


def test_cli_against_the_cluster(redis_cluster: LocalCluster, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    hosts = "\n".join(
        f"  - {{name: hv-{i}, static: {{cpu: 8, memory: 16GiB, disk: 100GiB}}}}" for i in range(6)
    )
    config.write_text(f"redis:\n  prefix: cli\nhosts:\n{hosts}\n")
    env = {**os.environ, "HOSTSCHED_REDIS_URL": redis_cluster.seed_url,
           "HOSTSCHED_REDIS_CLUSTER": "1", "HOSTSCHED_CONFIG": str(config)}  # fmt: skip
    redis_cluster.flushall()

    def hs(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hostsched", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    assert hs("collect").returncode == 0
    placed = hs("schedule", "--cpu", "2", "--mem", "1G", "--count", "4", "--json")
    assert placed.returncode == 0, placed.stderr
    assert len(json.loads(placed.stdout)["placements"]) == 4
    assert hs("schedule", "--cpu", "100").returncode == 4
    shown = json.loads(hs("inspect", "--json").stdout)
    assert sum(h["cpu"]["reserved"] for h in shown["hosts"]) == 8
    assert hs("cleanup").returncode == 0
    bench = hs("bench", "--hosts", "9", "--placements", "60", "--processes", "2", "--json")
    assert bench.returncode == 0, bench.stderr
    assert json.loads(bench.stdout)["overcommitted_hosts"] == 0


def test_bench_on_the_cluster_counts_and_cleans_up(redis_cluster: LocalCluster) -> None:
    redis_cluster.flushall()
    config = replace(fleet(redis_cluster.seed_url, hosts=0), hosts=())
    result = run_bench(config, redis_cluster.seed_url,
                       BenchSettings(hosts=12, placements=120, processes=2, count=3))  # fmt: skip
    assert (result.placements, result.overcommitted_hosts, result.lost_or_doubled) == (120, 0, 0)
    # One round trip per batch of 3 (40), plus per process its last publish and at most one
    # re-send after loading the scripts on a node that lacked them: counted as sent.
    assert result.sums_mismatched_hosts == 0
    assert result.round_trips_per_placement <= (40 + 2 * 2) / 120
    for node in redis_cluster.primaries():
        assert node.command("DBSIZE") == 0


def worker(
    url: str, prefix: str, i: int, start: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    strategy = STRATEGY_NAMES[i % len(STRATEGY_NAMES)]
    args = [url, prefix, f"p{i}", strategy, str(1 + i % 3), str(i), str(start)]
    return subprocess.Popen([sys.executable, "-m", "tests.redis.scheduler_worker", *args],
                            stdout=subprocess.PIPE, cwd=ROOT, env=env)  # fmt: skip


def small_fleet() -> tuple[HostConfig, ...]:
    sizes = [(8, 1.0), (6, 1.5), (4, 1.0), (3, 2.0), (5, 1.0), (7, 1.0)]
    return tuple(
        HostConfig(
            f"hv-{i}", overcommit=Overcommit(cpu=ratio),
            static=StaticHost(Resources(cores * 1000, 64 * G, 100 * G), Resources(500)),
        )
        for i, (cores, ratio) in enumerate(sizes)
    )  # fmt: skip


@pytest.mark.slow
def test_processes_fill_the_cluster_without_overcommit(
    redis_cluster: LocalCluster, tmp_path: Path
) -> None:
    """As tests/redis/test_concurrency.py, on the cluster: six processes of every strategy."""
    redis_cluster.flushall()
    url, prefix = redis_cluster.seed_url, "race"
    config = Config(redis=RedisConfig(url=url, prefix=prefix, cluster=True), hosts=small_fleet())
    store = Store.connect(url, keys=Keys(prefix), cluster=True)
    collect(config, store)
    start = tmp_path / "go"
    env = {**os.environ, "HOSTSCHED_TEST_CLUSTER": "1"}
    workers = [worker(url, prefix, i, start, env) for i in range(6)]
    start.touch()
    results = [json.loads(w.communicate(timeout=180)[0]) for w in workers]
    assert all(w.returncode == 0 for w in workers)
    claimed = {rid: host for result in results for rid, host in result["placed"].items()}
    assert len(claimed) == sum(len(r["placed"]) for r in results)
    scheduler = Scheduler(config, store)
    fleet = scheduler.fleet()
    assert not any(request_of(SIZES[0]).fits_in(host.free) for host in fleet.hosts)  # full
    stored = {r.id: h.name for h in fleet.hosts for r in h.reservations}
    assert stored == claimed
    check = check_fleet(scheduler, list(claimed))
    assert (check.overcommitted, check.sums_mismatched, check.lost_or_doubled) == (0, 0, 0)
    store.close()


def test_a_cluster_flag_without_a_url_is_a_usage_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTSCHED_")}
    env |= {"HOSTSCHED_REDIS_CLUSTER": "1"}
    result = subprocess.run([sys.executable, "-m", "hostsched", "inspect"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and "seed node" in result.stderr


def test_an_unreachable_seed_is_exit_5() -> None:
    env = {**os.environ, "HOSTSCHED_REDIS_URL": "redis://127.0.0.1:1",
           "HOSTSCHED_REDIS_CLUSTER": "1"}  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "hostsched", "inspect"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 5 and "Traceback" not in result.stderr


def test_a_cluster_store_uses_the_cluster_client_and_its_clock(store: Store) -> None:
    assert isinstance(store.client, redis.cluster.RedisCluster)
    assert store.ping() > 0
