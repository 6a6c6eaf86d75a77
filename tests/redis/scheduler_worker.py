"""A scheduler process for the concurrency tests: schedules until the fleet is full.

Usage: python -m tests.redis.scheduler_worker URL PREFIX NAME STRATEGY COUNT SEED START_FILE
Prints one JSON line: the ids it placed (with hosts) and every refused request (size, count).
It stops once even the smallest single request is refused.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import replace

from hostsched.config import Config, RedisConfig
from hostsched.errors import InsufficientResources
from hostsched.keys import Keys
from hostsched.model import Request, Resources
from hostsched.scheduler import Scheduler
from hostsched.store import Store


def request_of(size: int) -> Resources:
    """A request of ``size`` millicores and as many MiB."""
    return Resources(size, size << 20)


def main() -> None:
    url, prefix, name, strategy, count, seed, start_file = sys.argv[1:8]
    cluster = bool(os.environ.get("HOSTSCHED_TEST_CLUSTER"))
    redis_config = RedisConfig(url=url, prefix=prefix, cluster=cluster)
    config = replace(Config(redis=redis_config), reservation_ttl=600)
    store = Store.connect(url, keys=Keys(prefix), cluster=cluster)
    # Odd seeds run a long-lived scheduler (a kept view, deferred publishing), even ones a
    # one-shot scheduler per call's worth (the CLI's way): both must hold the invariant.
    long_lived = int(seed) % 2 == 1
    scheduler = Scheduler(config, store, rng=random.Random(int(seed)), long_lived=long_lived)
    rng = random.Random(int(seed))
    while not os.path.exists(start_file):
        time.sleep(0.001)
    placed: dict[str, str] = {}
    refused: list[tuple[int, int]] = []
    call = 0
    size, batch = rng.choice(SIZES), int(count)
    while True:
        call += 1
        try:
            plan = scheduler.schedule(
                Request(request_of(size)), count=batch, ids=[f"{name}-{call}"],
                strategy=strategy,
            )  # fmt: skip
        except InsufficientResources:
            refused.append((size, batch))
            if (size, batch) == (SIZES[0], 1):
                break  # not even the smallest fits: the fleet is full for this process
            size, batch = SIZES[0], 1
            continue
        placed.update({p.id: p.host for p in plan.placements})
        size, batch = rng.choice(SIZES), int(count)
    scheduler.flush()
    print(json.dumps({"placed": placed, "refused": refused}))


SIZES = (500, 1000, 2000)  # millicores; memory is the same number of MiB


if __name__ == "__main__":
    main()
