"""The stress harness: real scheduler processes, collectors, cleanups and a sampler at once.

After each run the store is checked: no host over capacity × overcommit, every placement that
succeeded and was not released is exactly one reservation or one reconciled instance on its
host, nothing released survives, and nothing exists that no scheduler placed. The sampler checks
the same at instants during the run. Figures go to docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hostsched.collect import collect
from hostsched.scheduler import Scheduler
from tests.stress import harness

ROOT = Path(__file__).parents[2]
RUN_SECONDS = 3.0


def start(role: str, url: str, **settings: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.stress.harness", role, url, json.dumps(settings)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip


def finish(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return dict(json.loads(out))


def final_state(url: str) -> tuple[dict[str, str], dict[str, str]]:
    """Reservations and instance names, id -> host, after a last collect has reconciled."""
    store = harness.open_store(url)
    harness.collect_once(store, harness.fleet_config(url))
    fleet = Scheduler(harness.fleet_config(url), store).fleet()
    reserved = Counter(r.id for h in fleet.hosts for r in h.reservations)
    assert all(n == 1 for n in reserved.values())
    problems, _ = harness.violations(store, 600)
    assert problems == []
    reservations = {r.id: h.name for h in fleet.hosts for r in h.reservations}
    instances = {n: h.name for h in fleet.hosts for n in h.instance_names}
    store.close()
    return reservations, instances


@pytest.mark.slow
@pytest.mark.parametrize("processes", [2, 4, 8])
def test_schedulers_collectors_and_cleanups_at_once(redis_url: str, processes: int) -> None:
    collect(harness.fleet_config(redis_url), harness.open_store(redis_url))
    deadline = time.time() + RUN_SECONDS
    workers = [start("worker", redis_url, name=f"w{i}", seed=i, deadline=deadline)
               for i in range(processes)]  # fmt: skip
    others = [start(role, redis_url, deadline=deadline)
              for role in ("collector", "collector", "cleanup", "sampler")]  # fmt: skip
    results = [finish(w) for w in workers]
    *_, sample = [finish(p) for p in others]
    assert sample["violations"] == [] and sample["samples"] > 10

    reservations, instances = final_state(redis_url)
    placed = {i: h for r in results for i, h in r["placed"].items()}
    released = {i for r in results for i in r["released"]}
    deleted = {i for r in results for i in r["deleted"]}
    created = {i for r in results for i in r["created"]} - deleted
    for rid, host in placed.items():
        where = [place for place in (reservations, instances) if rid in place]
        if rid in released | deleted:
            assert where == [], f"released or deleted {rid} is still counted"
        else:
            assert len(where) == 1, f"{rid} counted {len(where)} times"
            assert where[0][rid] == host
            assert (rid in instances) == (rid in created)
    assert set(reservations) | set(instances) <= set(placed)
    report = {
        "processes": processes, "placements": len(placed), "released": len(released),
        "reconciled": len(created) + len(deleted), "instances_deleted": len(deleted),
        "refused": sum(r["refused"] for r in results),
        "calls": sum(r["calls"] for r in results), "samples": sample["samples"],
        "reservations_checked_in_samples": sample["reservations_seen"],
    }  # fmt: skip
    print("stress:", json.dumps(report))
    assert len(placed) > 50


@pytest.mark.slow
def test_killed_schedulers_leave_nothing_after_expiry(redis_url: str, tmp_path: Path) -> None:
    """SIGKILL at random points: invariants hold throughout, and what the killed processes had
    in flight is gone once the reservation TTL has passed and cleanup has run."""
    ttl = 2
    collect(harness.fleet_config(redis_url, ttl), harness.open_store(redis_url))
    deadline = time.time() + RUN_SECONDS
    logs = [tmp_path / f"w{i}.log" for i in range(4)]
    for log in logs:
        log.touch()
    workers = [start("worker", redis_url, name=f"w{i}", seed=10 + i, deadline=deadline,
                     reservation_ttl=ttl, inflight_log=str(logs[i])) for i in range(4)]  # fmt: skip
    sampler = start("sampler", redis_url, deadline=deadline + ttl + 1, reservation_ttl=ttl)
    # Instances must be seen by a collect within the TTL, as in production.
    collector = start("collector", redis_url, deadline=deadline + ttl + 1)
    rng = random.Random(5)
    for victim in workers[:2]:
        time.sleep(rng.uniform(0.3, 1.0))
        victim.send_signal(signal.SIGKILL)
        victim.wait(5)
    survivors = [finish(w) for w in workers[2:]]
    assert all(r["placed"] for r in survivors)
    killed_ids = {
        i for log in logs[:2] for line in log.read_text().split("\n") for i in line.split()
    }
    time.sleep(ttl + 0.5)
    Scheduler(harness.fleet_config(redis_url, ttl), harness.open_store(redis_url)).cleanup()
    reservations, _ = final_state(redis_url)
    assert not killed_ids & set(reservations), "a killed scheduler's reservation survived its TTL"
    sample = finish(sampler)
    finish(collector)
    assert sample["violations"] == []
    print("kill:", json.dumps({"killed_ids_logged": len(killed_ids), "samples": sample["samples"]}))


@pytest.mark.slow
def test_lock_of_a_killed_collector_expires(redis_url: str) -> None:
    collector = start("collector", redis_url, deadline=time.time() + 5, lock_ttl=1,
                      die_holding_lock=True)  # fmt: skip
    collector.wait(10)
    assert collector.returncode == -signal.SIGKILL
    store = harness.open_store(redis_url)
    config = harness.fleet_config(redis_url, lock_ttl=1)
    first = config.hosts[0].name
    assert store.client.get(store.keys.lock(first)) is not None  # held by the dead collector
    assert harness.collect_once(store, config) == len(config.hosts) - 1
    time.sleep(1.1)
    assert harness.collect_once(store, config) == len(config.hosts)
    assert store.client.get(store.keys.lock(first)) is None  # released by token after the write
