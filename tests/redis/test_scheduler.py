"""The use cases against a real redis-server: schedule, release, cleanup, inspect, collect."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hostsched.collect import collect
from hostsched.config import Config, HostConfig, StaticHost
from hostsched.errors import InsufficientResources, NoHostsError, UnknownHostError, UsageError
from hostsched.model import HostStatus, Request, Resources
from hostsched.scheduler import Scheduler
from hostsched.store import Store
from tests.redis.test_store import commands_run, put_host, round_trips

G = 1 << 30


def static(name: str, cpu: int, used_cpu: int = 0, zone: str = "a", gpu: int = 0) -> HostConfig:
    return HostConfig(
        name=name,
        labels={"zone": zone},
        static=StaticHost(Resources(cpu * 1000, 64 * G, 1000 * G, gpu), Resources(used_cpu * 1000)),
    )


def fleet_config(*hosts: HostConfig, **settings: object) -> Config:
    return replace(Config(hosts=hosts), **settings)  # type: ignore[arg-type]


@pytest.fixture
def two_hosts(store: Store) -> Scheduler:
    config = fleet_config(static("hv-a", 8, zone="a"), static("hv-b", 8, used_cpu=2, zone="b"))
    collect(config, store)
    return Scheduler(config, store)


def cpu(cores: float) -> Request:
    return Request(Resources(int(cores * 1000)))


def reserved(store: Store, host: str) -> set[str]:
    return {k.decode() for k in store.client.hkeys(store.keys.scheduled(host))}


def test_schedule_reserves_on_least_loaded(two_hosts: Scheduler) -> None:
    plan = two_hosts.schedule(cpu(2), ids=["web-1"])
    assert [(p.id, p.host) for p in plan.placements] == [("web-1", "hv-a")]
    assert reserved(two_hosts.store, "hv-a") == {"web-1"}


@pytest.mark.parametrize("hosts", [2, 300])
@pytest.mark.parametrize("in_scripts", [True, False], ids=["one server", "relayed"])
def test_one_shot_placement_costs_two_round_trips_whatever_the_fleet(
    store: Store, hosts: int, in_scripts: bool
) -> None:
    store.publishes_in_scripts = in_scripts  # False: as in a cluster
    config = fleet_config(*(static(f"hv-{i:03d}", 8) for i in range(hosts)))
    collect(config, store)
    with round_trips() as sent:
        Scheduler(config, store).schedule(cpu(1), ids=["web-1"])
    # Read the fleet view, reserve (which publishes the change on one server); in a cluster,
    # publish the change (passed on through view.lua).
    assert sent[0] == (2 if in_scripts else 3)
    other = Scheduler(config, store)
    other.schedule(cpu(1), dry_run=True)
    assert sum(h.load.cpu for h in other.view.hosts.values()) == 1_000


def test_a_one_shot_scheduler_used_again_costs_the_same(store: Store) -> None:
    """Each call's change of the one host is published by its reserve script, the second
    call's too (the first call's flush ended the wait for an exchange)."""
    config = fleet_config(static("hv-only", 8))
    collect(config, store)
    scheduler = Scheduler(config, store)
    for rid in ("web-1", "web-2"):
        with round_trips() as sent:
            scheduler.schedule(cpu(1), ids=[rid])
        assert sent[0] == 2
    assert not scheduler._unpublished


def test_long_lived_scheduler_costs_one_round_trip_per_placement(store: Store) -> None:
    config = fleet_config(*(static(f"hv-{i:03d}", 8) for i in range(50)))
    collect(config, store)
    scheduler = Scheduler(config, store, long_lived=True)
    scheduler.schedule(cpu(1))
    with round_trips() as sent:
        for _ in range(20):
            scheduler.schedule(cpu(1))
    assert sent[0] == 20
    scheduler.flush()  # the last change reaches the fleet view, and others see it
    other = Scheduler(config, store)
    other.schedule(cpu(1), dry_run=True)
    assert sum(h.load.cpu for h in other.view.hosts.values()) == 21_000


def test_a_reservation_is_published_at_once_on_one_server(store: Store) -> None:
    """reserve.lua publishes its host: other schedulers see each placement without waiting
    for an exchange, and a lone scheduler's own changes are not read back."""
    config = fleet_config(*(static(f"hv-{i:03d}", 8) for i in range(50)))
    collect(config, store)
    scheduler = Scheduler(config, store, long_lived=True)
    scheduler.EXCHANGE_EVERY = 3600.0  # no exchange at all after the first read
    scheduler.prepare()
    store.client.config_resetstat()
    with round_trips() as sent:
        for _ in range(6):
            scheduler.schedule(cpu(1))
    assert sent[0] == 6 and commands_run(store.client)["evalsha"] == 6  # reserve.lua alone
    assert not scheduler._unpublished
    stored = store.client.zrevrange(store.keys.fleet_changes, 0, 0, withscores=True)
    assert scheduler.view.sequence == int(stored[0][1])  # its own changes: nothing to read
    other = Scheduler(config, store)
    other.schedule(cpu(1), dry_run=True)
    assert sum(h.load.cpu for h in other.view.hosts.values()) == 6_000


def test_a_backlog_of_changed_hosts_is_published_without_waiting(store: Store) -> None:
    """In a cluster (summaries passed on by the scheduler), on a large fleet each placement
    changes another host: once PUBLISH_BACKLOG of them wait, they go out with the next
    reservation, however recent the last exchange was."""
    store.publishes_in_scripts = False
    config = fleet_config(*(static(f"hv-{i:03d}", 8) for i in range(50)))
    collect(config, store)
    scheduler = Scheduler(config, store, long_lived=True)
    scheduler.EXCHANGE_EVERY = 3600.0  # the clock alone would never publish
    scheduler.PUBLISH_BACKLOG = 5
    scheduler.prepare()
    with round_trips() as sent:
        for _ in range(6):  # five changed hosts wait, the sixth placement publishes them
            scheduler.schedule(cpu(1))
    assert sent[0] == 6
    other = Scheduler(config, store)
    other.schedule(cpu(1), dry_run=True)
    assert sum(h.load.cpu for h in other.view.hosts.values()) == 5_000


@pytest.mark.parametrize("strategy", ["least_loaded", "best_fit"])
def test_reading_the_view_sorts_it_for_the_strategy_before_the_first_placement(
    store: Store, strategy: str
) -> None:
    config = fleet_config(*(static(f"hv-{i:03d}", 8) for i in range(5)), strategy=strategy)
    collect(config, store)
    scheduler = Scheduler(config, store, long_lived=True)
    scheduler.prepare()
    assert list(scheduler.view._orders) == [strategy]  # only the one it will use


def test_count_batches_one_script_per_host_in_one_round_trip(two_hosts: Scheduler) -> None:
    with round_trips() as sent:
        plan = two_hosts.schedule(cpu(1), count=10, ids=["job"])
    assert sent[0] == 2  # read the fleet view; reserve on both hosts, which publish
    assert sorted(p.id for p in plan.placements) == sorted(f"job-{i}" for i in range(1, 11))
    on = {h: len(reserved(two_hosts.store, h)) for h in ("hv-a", "hv-b")}
    assert sum(on.values()) == 10 and on["hv-a"] == 6  # least_loaded evens them out


def test_count_is_all_or_nothing(two_hosts: Scheduler) -> None:
    with pytest.raises(InsufficientResources):
        two_hosts.schedule(cpu(4), count=4)  # room for 3 x 4 cores only
    assert reserved(two_hosts.store, "hv-a") == reserved(two_hosts.store, "hv-b") == set()


def test_stale_view_is_refused_by_script_and_next_host_used(two_hosts: Scheduler) -> None:
    mine = Scheduler(two_hosts.config, two_hosts.store, long_lived=True)
    mine.EXCHANGE_EVERY = 3600  # so it does not hear of the filler before it reserves
    mine.schedule(cpu(1), dry_run=True)  # the view is read now ...
    two_hosts.schedule(cpu(7), ids=["filler"])  # ... and hv-a filled behind its back
    plan = mine.schedule(cpu(2), ids=["late"])
    assert plan.placements[0].host == "hv-b" and mine.stats.refusals == 1
    assert reserved(two_hosts.store, "hv-a") == {"filler"}


def test_insufficient_when_nothing_fits(two_hosts: Scheduler) -> None:
    with pytest.raises(InsufficientResources, match="most free: hv-a"):
        two_hosts.schedule(cpu(9))


def test_retry_with_same_id_is_not_counted_twice(two_hosts: Scheduler) -> None:
    first = two_hosts.schedule(cpu(2), ids=["web-1"]).placements[0]
    again = two_hosts.schedule(cpu(2), ids=["web-1"]).placements[0]
    assert again.existing and again.host == first.host
    assert reserved(two_hosts.store, "hv-a") | reserved(two_hosts.store, "hv-b") == {"web-1"}


def test_only_given_ids_are_looked_up_among_the_instances(store: Store) -> None:
    capacity = Resources(8000, 64 * G, 1000 * G)
    put_host(store, "hv-a", capacity=capacity, names=("vm-1",))
    scheduler = Scheduler(fleet_config(static("hv-a", 8)), store)
    store.client.config_resetstat()
    scheduler.schedule(cpu(1), count=2)  # drawn ids: no instance can bear them yet
    assert "sismember" not in commands_run(store.client)
    assert scheduler.schedule(cpu(1), ids=["vm-1"]).placements[0].existing
    assert commands_run(store.client)["sismember"] == 1


def test_retry_from_another_process_finds_the_first_placement(two_hosts: Scheduler) -> None:
    first = two_hosts.schedule(cpu(2), ids=["web-1"]).placements[0]
    for strategy in ("least_loaded", "random", "round_robin", "consistent_hash"):
        again = Scheduler(two_hosts.config, two_hosts.store).schedule(
            cpu(2), ids=["web-1"], strategy=strategy
        )
        assert again.placements[0].existing and again.placements[0].host == first.host
    assert reserved(two_hosts.store, "hv-a") | reserved(two_hosts.store, "hv-b") == {"web-1"}


def test_dry_run_reserves_nothing(two_hosts: Scheduler) -> None:
    plan = two_hosts.schedule(cpu(1), count=3, dry_run=True)
    assert plan.dry_run and len(plan.placements) == 3
    assert reserved(two_hosts.store, "hv-a") == reserved(two_hosts.store, "hv-b") == set()


def test_labels_restrict_hosts(two_hosts: Scheduler) -> None:
    plan = two_hosts.schedule(Request(Resources(1000), {"zone": "b"}))
    assert plan.placements[0].host == "hv-b"
    with pytest.raises(NoHostsError, match="zone=c"):
        two_hosts.schedule(Request(Resources(1000), {"zone": "c"}))


def test_round_robin_rotates_across_schedulers(two_hosts: Scheduler) -> None:
    hosts = [
        Scheduler(two_hosts.config, two_hosts.store)
        .schedule(cpu(1), strategy="round_robin")
        .placements[0]
        .host
        for _ in range(4)
    ]
    assert hosts == ["hv-a", "hv-b", "hv-a", "hv-b"]


def test_consistent_hash_is_stable(two_hosts: Scheduler) -> None:
    hosts = {
        two_hosts.schedule(cpu(1), ids=["same"], strategy="consistent_hash", dry_run=True)
        .placements[0]
        .host
        for _ in range(5)
    }
    assert len(hosts) == 1


def test_stale_and_corrupt_hosts_are_skipped(store: Store) -> None:
    config = fleet_config(static("hv-a", 8), static("hv-b", 8), static("hv-c", 8))
    collect(config, store)
    store.client.set(store.keys.resource("hv-b"), b"\x00garbage")
    store.client.rpush(store.keys.scheduled("hv-c"), "foreign list")
    scheduler = Scheduler(config, store)
    fleet = scheduler.inspect()
    assert [h.status for h in fleet.hosts] == [
        HostStatus.ONLINE,
        HostStatus.CORRUPT,
        HostStatus.CORRUPT,
    ]
    for _ in range(4):
        assert scheduler.schedule(cpu(2)).placements[0].host == "hv-a"
    assert store.client.get(store.keys.resource("hv-b")) == b"\x00garbage"
    stale = Scheduler(replace(config, host_stale_after=-1), store)
    with pytest.raises(NoHostsError, match="online"):
        stale.schedule(cpu(1))


def test_no_hosts_known(store: Store) -> None:
    with pytest.raises(NoHostsError, match="no hosts known"):
        Scheduler(Config(), store).schedule(cpu(1))


def test_bad_requests_are_usage_errors(two_hosts: Scheduler) -> None:
    for call in (
        lambda: two_hosts.schedule(cpu(0)),
        lambda: two_hosts.schedule(cpu(1), ids=["a b"]),
        lambda: two_hosts.schedule(cpu(1), count=2, ids=["a", "a"]),
        lambda: two_hosts.schedule(cpu(1), count=3, ids=["a", "b"]),
        lambda: two_hosts.schedule(cpu(1), strategy="fastest"),
    ):
        with pytest.raises(UsageError):
            call()
    assert reserved(two_hosts.store, "hv-a") == reserved(two_hosts.store, "hv-b") == set()


def test_release_and_missing(two_hosts: Scheduler) -> None:
    two_hosts.schedule(cpu(1), count=2, ids=["w"])
    report = two_hosts.release(["w-1", "nope"])
    assert report.released == ("w-1",) and report.missing == ("nope",)
    assert reserved(two_hosts.store, "hv-a") | reserved(two_hosts.store, "hv-b") == {"w-2"}


def test_cleanup_forgets_expired_unconfigured_hosts(two_hosts: Scheduler) -> None:
    store = two_hosts.store
    store.client.sadd(store.keys.hosts, "ghost")
    report = two_hosts.cleanup()
    assert report.forgotten == ("ghost",) and report.hosts == 3
    assert store.host_names()[0] == {"hv-a", "hv-b"}


def test_inspect_unknown_host(two_hosts: Scheduler) -> None:
    with pytest.raises(UnknownHostError):
        two_hosts.inspect("nope")
    one = two_hosts.inspect("hv-b").hosts
    assert len(one) == 1 and one[0].used.cpu == 2000 and one[0].age is not None


def test_collect_skips_locked_host(two_hosts: Scheduler) -> None:
    store = two_hosts.store
    store.client.set(store.keys.lock("hv-b"), "other-collector")
    report = collect(two_hosts.config, store)
    assert {h.name: h.status for h in report.hosts} == {"hv-a": "stored", "hv-b": "skipped"}
    assert store.client.get(store.keys.lock("hv-b")) == b"other-collector"
