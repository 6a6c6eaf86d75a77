"""Roles of the stress harness, each run as its own process against one real Redis.

    python -m tests.stress.harness ROLE URL SETTINGS_JSON

``worker``    schedules (every strategy, batches), releases, and "creates instances" of its
              placements; prints what it did as JSON. Before each call it appends the ids it is
              about to place to its in-flight log, so a SIGKILL leaves a record.
``collector`` plays collect for the simulated fleet: usage = base + the instances created, the
              instances' names for reconciliation, through the real lock and write scripts.
``cleanup``   runs Scheduler.cleanup in a loop.
``sampler``   takes atomic snapshots (MULTI) of every host and checks the invariants at those
              instants; prints how many it took and what it found.
Every role stops at the deadline it is given (bounded in time, never open-ended).
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from hostsched.codec import BadValue, decode_actual, decode_reservation, encode_actual
from hostsched.config import Config, HostConfig, RedisConfig, StaticHost
from hostsched.errors import InsufficientResources
from hostsched.keys import Keys
from hostsched.model import Overcommit, Request, Resources
from hostsched.scheduler import Scheduler
from hostsched.store import Store
from hostsched.strategies import STRATEGY_NAMES

G = 1 << 30
PREFIX = "stress"
SIZES = (250, 500, 1000, 2000)  # millicores; memory: the same number of MiB
#: name, cores, overcommit of CPU, cores already used
HOSTS = (("h0", 8, 1.0, 1), ("h1", 6, 1.5, 0), ("h2", 4, 1.0, 2), ("h3", 3, 2.0, 0))


def fleet_config(url: str, reservation_ttl: int = 600, lock_ttl: int = 30) -> Config:
    hosts = tuple(
        HostConfig(
            name, overcommit=Overcommit(cpu=ratio),
            static=StaticHost(Resources(cores * 1000, 32 * G, 100 * G), Resources(used * 1000)),
        )
        for name, cores, ratio, used in HOSTS
    )  # fmt: skip
    config = Config(redis=RedisConfig(url=url, prefix=PREFIX), hosts=hosts)
    return replace(config, reservation_ttl=reservation_ttl, lock_ttl=lock_ttl)


def instances_key(host: str) -> str:
    """Harness bookkeeping (not hostsched's keys): the instances 'created' on a host."""
    return f"stress-harness:instances:{{{host}}}"


def open_store(url: str) -> Store:
    return Store.connect(url, keys=Keys(PREFIX))


def worker(url: str, settings: dict[str, Any]) -> dict[str, Any]:
    rng = random.Random(settings["seed"])
    name, deadline = settings["name"], settings["deadline"]
    config = fleet_config(url, settings.get("reservation_ttl", 600))
    store = open_store(url)
    scheduler = Scheduler(config, store, rng=rng)
    # Open for the whole run (closed at exit): a SIGKILL must find every line flushed.
    log = Path(settings["inflight_log"]).open("a") if settings.get("inflight_log") else None  # noqa: SIM115
    placed: dict[str, str] = {}
    amounts: dict[str, Resources] = {}
    placed_at: dict[str, float] = {}
    # Instances are created well within the reservation TTL, as the TTL requires: an instance
    # created after its reservation expired may find its room taken (see RELIABILITY.md).
    fresh = settings.get("reservation_ttl", 600) / 2
    released: list[str] = []
    created: list[str] = []
    deleted: list[str] = []
    refused = calls = 0
    while time.time() < deadline:
        calls += 1
        action = rng.random()
        now = time.monotonic()
        mine = [i for i in placed if i not in released and i not in created]
        young = [i for i in mine if now - placed_at[i] < fresh]
        running = [i for i in created if i not in deleted]
        if action < 0.10 and running:
            # The instance is deleted, perhaps before any collect saw it: as an operator would,
            # release its id too. The next collect frees what the instance used.
            rid = rng.choice(running)
            store.client.hdel(instances_key(placed[rid]), rid)
            scheduler.release([rid])
            deleted.append(rid)
        elif action < 0.25 and mine:
            rid = rng.choice(mine)
            if rid in scheduler.release([rid]).released:
                released.append(rid)
        elif action < 0.40 and young:
            rid = rng.choice(young)
            store.client.hset(instances_key(placed[rid]), rid, json.dumps(amounts[rid].as_dict()))
            created.append(rid)
        else:
            size, count = rng.choice(SIZES), rng.choice((1, 1, 1, 2, 3))
            ids = [f"{name}-{calls}-{i}" for i in range(count)]
            if log:
                log.write(" ".join(ids) + "\n")
                log.flush()
            request = Resources(size, size << 20)
            try:
                plan = scheduler.schedule(
                    Request(request), count=count, ids=ids, strategy=rng.choice(STRATEGY_NAMES)
                )
            except InsufficientResources:
                refused += 1
                continue
            for placement in plan.placements:
                placed[placement.id] = placement.host
                amounts[placement.id] = request
                placed_at[placement.id] = time.monotonic()
    return {"placed": placed, "released": released, "created": created, "deleted": deleted,
            "refused": refused, "calls": calls}  # fmt: skip


def collect_once(store: Store, config: Config, *, die_holding_lock: bool = False) -> int:
    """One simulated collect of every host through the real scripts; returns hosts stored."""
    stored = 0
    bases = {name: Resources(used * 1000) for name, _, _, used in HOSTS}
    for host in config.hosts:
        grant = store.acquire_locks([host.name], ttl=config.lock_ttl)[host.name]
        if not grant.acquired:
            continue
        if die_holding_lock:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        instances = store.client.hgetall(instances_key(host.name))
        used = bases[host.name]
        for raw in instances.values():
            used = used + Resources.from_mapping(json.loads(raw))
        names = sorted(k.decode() for k in instances)
        assert host.static is not None
        body = encode_actual(capacity=host.static.capacity, used=used, overcommit=host.overcommit,
                             labels={}, names=names)  # fmt: skip
        outcome = store.write_actual({host.name: (grant, body, names)}, resource_ttl=3600)
        store.release_locks({host.name: grant})
        stored += outcome[host.name].status == "ok"
    return stored


def collector(url: str, settings: dict[str, Any]) -> dict[str, Any]:
    config = fleet_config(url, lock_ttl=settings.get("lock_ttl", 30))
    store = open_store(url)
    rounds = 0
    while time.time() < settings["deadline"]:
        collect_once(store, config, die_holding_lock=settings.get("die_holding_lock", False))
        rounds += 1
        time.sleep(0.02)
    return {"rounds": rounds}


def cleanup(url: str, settings: dict[str, Any]) -> dict[str, Any]:
    config = fleet_config(url, settings.get("reservation_ttl", 600))
    scheduler = Scheduler(config, open_store(url))
    rounds = removed = 0
    while time.time() < settings["deadline"]:
        removed += scheduler.cleanup().removed
        rounds += 1
        time.sleep(0.05)
    return {"rounds": rounds, "removed": removed}


def violations(store: Store, ttl: float) -> tuple[list[str], int]:
    """Check every host at one instant (MULTI/EXEC): no overcommit, nothing counted twice."""
    names = [name for name, *_ in HOSTS]
    pipe = store.client.pipeline(transaction=True)
    pipe.time()
    for name in names:
        pipe.get(store.keys.resource(name))
        pipe.hgetall(store.keys.scheduled(name))
    replies = pipe.execute()
    now = replies[0][0] + replies[0][1] / 1e6
    found, checked = [], 0
    for i, name in enumerate(names):
        raw, reservations = replies[1 + 2 * i], replies[2 + 2 * i]
        if raw is None:
            continue
        try:
            actual = decode_actual(raw)
        except BadValue as exc:
            found.append(f"{name}: {exc}")
            continue
        reserved = Resources()
        for rid, entry in reservations.items():
            amount, created = decode_reservation(entry)
            if now - created <= ttl:
                reserved = reserved + amount
                checked += 1
            if rid.decode() in actual.names:
                found.append(f"{name}: {rid.decode()} is both an instance and a reservation")
        if not (actual.used + reserved).fits_in(actual.overcommit.apply(actual.capacity)):
            found.append(f"{name}: used {actual.used} + reserved {reserved} over the limit")
    return found, checked


def sampler(url: str, settings: dict[str, Any]) -> dict[str, Any]:
    store = open_store(url)
    samples = reservations = 0
    found: list[str] = []
    while time.time() < settings["deadline"]:
        problems, checked = violations(store, settings.get("reservation_ttl", 600))
        found += problems
        samples += 1
        reservations += checked
        time.sleep(0.01)
    return {"samples": samples, "reservations_seen": reservations, "violations": found[:20]}


ROLES = {"worker": worker, "collector": collector, "cleanup": cleanup, "sampler": sampler}

if __name__ == "__main__":
    role, url, raw_settings = sys.argv[1:4]
    print(json.dumps(ROLES[role](url, json.loads(raw_settings))))
