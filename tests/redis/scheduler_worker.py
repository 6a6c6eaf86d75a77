"""A scheduler process for the concurrency tests: schedules until the fleet is full.

Usage: python -m tests.redis.scheduler_worker URL PREFIX NAME STRATEGY COUNT SEED START_FILE
Prints one JSON line: the ids it placed (with hosts) and how many calls were refused.
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


def main() -> None:
    url, prefix, name, strategy, count, seed, start_file = sys.argv[1:8]
    config = replace(Config(redis=RedisConfig(url=url, prefix=prefix)), reservation_ttl=600)
    store = Store.connect(url, keys=Keys(prefix))
    scheduler = Scheduler(config, store, rng=random.Random(int(seed)))
    rng = random.Random(int(seed))
    while not os.path.exists(start_file):
        time.sleep(0.001)
    placed: dict[str, str] = {}
    refused = misses = 0
    call = 0
    while misses < 3:  # three refusals in a row: this process sees a full fleet
        call += 1
        size = rng.choice([500, 1000, 2000])
        ids = [f"{name}-{call}"]
        try:
            plan = scheduler.schedule(
                Request(Resources(size, size << 20)), count=int(count), ids=ids, strategy=strategy
            )
        except InsufficientResources:
            refused += 1
            misses += 1
            continue
        misses = 0
        placed.update({p.id: p.host for p in plan.placements})
    print(json.dumps({"placed": placed, "refused": refused}))


if __name__ == "__main__":
    main()
