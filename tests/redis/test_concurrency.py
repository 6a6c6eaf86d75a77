"""Several real scheduler processes fill a small fleet; the store must show no overcommit.

The invariant is checked from the store afterwards: no host holds more than capacity ×
overcommit, every successful placement has exactly one reservation, no reservation exists
that no process was told about, and the fleet really is full for the smallest request.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hostsched.bench import check_fleet
from hostsched.collect import collect
from hostsched.config import Config, HostConfig, RedisConfig, StaticHost
from hostsched.keys import Keys
from hostsched.model import Overcommit, Resources
from hostsched.scheduler import Scheduler
from hostsched.store import Store
from tests.redis.scheduler_worker import SIZES, request_of

G = 1 << 30
STRATEGIES = ["least_loaded", "best_fit", "round_robin", "random", "least_cpu", "consistent_hash"]


def small_fleet() -> tuple[HostConfig, ...]:
    sizes = [(8, 1.0), (6, 1.5), (4, 1.0), (3, 2.0)]
    return tuple(
        HostConfig(
            name=f"hv-{i}",
            overcommit=Overcommit(cpu=ratio),
            static=StaticHost(Resources(cores * 1000, 64 * G, 100 * G), Resources(500)),
        )
        for i, (cores, ratio) in enumerate(sizes)
    )


@pytest.mark.slow
@pytest.mark.parametrize("processes", [4, 8])
def test_processes_fill_fleet_without_overcommit(
    redis_url: str, tmp_path: Path, processes: int
) -> None:
    prefix = "race"
    config = Config(redis=RedisConfig(url=redis_url, prefix=prefix), hosts=small_fleet())
    store = Store.connect(redis_url, keys=Keys(prefix))
    collect(config, store)
    start = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.redis.scheduler_worker",
                redis_url,
                prefix,
                f"p{i}",
                STRATEGIES[i % len(STRATEGIES)],
                str(1 + i % 3),
                str(i),
                str(start),
            ],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).parents[2],
        )
        for i in range(processes)
    ]
    start.touch()
    results = [json.loads(w.communicate(timeout=120)[0]) for w in workers]
    assert all(w.returncode == 0 for w in workers)

    claimed: dict[str, str] = {}
    for result in results:
        for rid, host in result["placed"].items():
            assert rid not in claimed, f"{rid} was placed twice"
            claimed[rid] = host
    fleet = Scheduler(config, store).fleet()
    stored = {r.id: h.name for h in fleet.hosts for r in h.reservations}
    assert stored == claimed  # nothing lost, nothing counted twice, nothing unclaimed
    for host in fleet.hosts:
        assert (host.used + host.reserved).fits_in(host.limit), f"{host.name} overcommitted"
    # The scripts judge fit by each host's running sums: they must equal its entries.
    check = check_fleet(Scheduler(config, store), list(claimed))
    assert (check.sums_mismatched, check.lost_or_doubled, check.overcommitted) == (0, 0, 0)
    # Nothing is released here, so free capacity only shrinks: a request refused at any moment
    # must still be impossible now, or the refusal was wrong.
    for size, batch in (tuple(r) for result in results for r in result["refused"]):
        request = request_of(size)
        room = sum(min(h.free.cpu // size, h.free.memory // request.memory) for h in fleet.hosts)
        assert room < batch, f"refused {batch} x {size}m while the fleet holds {room}"
    # Every process stopped only when the smallest request was refused: the fleet is full.
    assert not any(request_of(SIZES[0]).fits_in(host.free) for host in fleet.hosts)
    store.close()
