"""Bad data in Redis, for each key type: the host is reported and skipped, the rest of the fleet
stays schedulable, and nothing is overwritten that is not hostsched's to overwrite."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from hostsched.collect import collect
from hostsched.config import Config, HostConfig, StaticHost
from hostsched.keys import Keys
from hostsched.model import HostStatus, Request, Resources
from hostsched.scheduler import Scheduler
from hostsched.store import Store

G = 1 << 30
HOSTS = ("bad", "good-1", "good-2")
Corruption = Callable[[redis.Redis, Keys], None]


def fleet() -> Config:
    static = StaticHost(Resources(8000, 16 * G, 100 * G), Resources())
    return Config(hosts=tuple(HostConfig(name, static=static) for name in HOSTS))


def dump(client: redis.Redis, key: str) -> bytes | None:
    return client.dump(key)


# Each corruption damages one key of host "bad" (or a fleet-wide key) the way a bug, an
# operator or another program might.
CORRUPTIONS: dict[str, tuple[Corruption, str]] = {
    "actual: garbage JSON": (lambda c, k: c.set(k.resource("bad"), b"{not json"), "resource"),
    "actual: a list": (lambda c, k: (c.delete(k.resource("bad")),
                                     c.rpush(k.resource("bad"), "x")), "resource"),
    "actual: huge": (lambda c, k: c.set(k.resource("bad"), b"[" * (9 << 20)), "resource"),
    "actual: missing field": (lambda c, k: c.set(k.resource("bad"),
                                                 b'{"v":1,"collected_at":1e12}'), "resource"),
    "actual: unknown version": (lambda c, k: c.set(k.resource("bad"),
                                                   b'{"v":2,"collected_at":1e12}'), "resource"),
    "reservations: garbage entry": (lambda c, k: c.hset(k.scheduled("bad"), "x", "%%"),
                                    "scheduled"),
    "reservations: missing time": (lambda c, k: c.hset(k.scheduled("bad"), "x",
                                                       '{"cpu":1}'), "scheduled"),
    "reservations: a string": (lambda c, k: c.set(k.scheduled("bad"), "zzz"), "scheduled"),
    "lock: a hash": (lambda c, k: c.hset(k.lock("bad"), "x", "y"), "lock"),
    "releases: a string": (lambda c, k: c.set(k.releasing("bad"), "zzz"), "releasing"),
    "generation: not a number": (lambda c, k: c.set(k.generation("bad"), "abc"), "generation"),
    "generation: a set": (lambda c, k: (c.delete(k.generation("bad")),
                                        c.sadd(k.generation("bad"), "x")), "generation"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_one_bad_key_is_contained(store: Store, name: str) -> None:
    corrupt, key_kind = CORRUPTIONS[name]
    config = fleet()
    collect(config, store)
    corrupt(store.client, store.keys)
    keys = store.keys
    builders = {"resource": keys.resource, "scheduled": keys.scheduled, "lock": keys.lock,
                "generation": keys.generation, "releasing": keys.releasing}  # fmt: skip
    key = builders[key_kind]("bad")
    before = dump(store.client, key)
    scheduler = Scheduler(config, store)

    placed = [scheduler.schedule(Request(Resources(1000, G))).placements[0].host for _ in range(6)]
    if key_kind in ("resource", "scheduled"):  # what reserve reads: the host is not used
        assert set(placed) <= {"good-1", "good-2"}
    report = collect(config, store)
    statuses = {h.name: h.status for h in report.hosts}
    assert statuses["good-1"] == statuses["good-2"] == "stored"
    # Collect refuses to write over a key that is not ours; a bad entry inside our own
    # reservations hash is not touched by a collect, which then stores as usual.
    entry_only = name in ("reservations: garbage entry", "reservations: missing time")
    assert statuses["bad"] == ("stored" if entry_only else "skipped")
    assert entry_only or report.hosts[0].error
    fleet_view = {h.name: h for h in scheduler.inspect().hosts}
    if key_kind in ("resource", "scheduled"):
        assert fleet_view["bad"].status is HostStatus.CORRUPT and fleet_view["bad"].problem
    assert fleet_view["good-1"].status is HostStatus.ONLINE
    scheduler.release(["anything"])
    scheduler.cleanup()
    assert dump(store.client, key) == before


def test_foreign_host_set_keeps_configured_hosts_working(store: Store) -> None:
    config = fleet()
    collect(config, store)
    store.client.delete(store.keys.hosts)
    store.client.hset(store.keys.hosts, "not", "a set")
    before = dump(store.client, store.keys.hosts)
    scheduler = Scheduler(config, store)
    fleet_view = scheduler.inspect()
    assert fleet_view.problems and "not a set" in fleet_view.problems[0]
    assert scheduler.schedule(Request(Resources(1000))).placements
    assert collect(config, store).stored == 3
    assert scheduler.cleanup().problems
    assert dump(store.client, store.keys.hosts) == before


def test_foreign_round_robin_cursor_is_ignored(store: Store) -> None:
    config = fleet()
    collect(config, store)
    store.client.rpush(store.keys.round_robin_cursor, "x")
    plan = Scheduler(config, store).schedule(Request(Resources(1000)), strategy="round_robin")
    assert plan.placements[0].host == "bad"  # first by name: the bad cursor counts as none
