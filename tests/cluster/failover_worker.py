"""A long-lived scheduler for the failover test: places until its deadline, through errors.

Usage: python -m tests.cluster.failover_worker URL PREFIX NAME DEADLINE WAIT_REPLICAS
Prints "ready" once connected, then one JSON line: ids placed (host, replicated), ids whose
call failed, error messages.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace

from hostsched.config import Config, RedisConfig
from hostsched.errors import HostschedError, StoreUnavailable
from hostsched.keys import Keys
from hostsched.model import Request, Resources
from hostsched.scheduler import Scheduler
from hostsched.store import Store


def main() -> None:
    url, prefix, name, deadline, replicas = sys.argv[1:6]
    redis_config = RedisConfig(url=url, prefix=prefix, cluster=True, timeout=2.0,
                               wait_replicas=int(replicas))  # fmt: skip
    config = replace(Config(redis=redis_config), reservation_ttl=600)
    store = Store.connect(url, keys=Keys(prefix), cluster=True, timeout=2.0)
    scheduler = Scheduler(config, store, long_lived=True)
    print("ready", flush=True)
    placed: dict[str, tuple[str, bool | None]] = {}
    failed: list[str] = []
    errors: list[str] = []
    call = 0
    while time.time() < float(deadline):
        call += 1
        rid = f"{name}-{call}"
        try:
            plan = scheduler.schedule(Request(Resources(10, 1 << 20)), ids=[rid])
        except StoreUnavailable as exc:
            failed.append(rid)
            errors.append(exc.message)
            time.sleep(0.05)
            continue
        except HostschedError as exc:
            errors.append(exc.message)
            continue
        placement = plan.placements[0]
        placed[rid] = (placement.host, placement.replicated)
    try:
        scheduler.flush()
    except StoreUnavailable as exc:
        errors.append(exc.message)
    print(json.dumps({"placed": placed, "failed": failed, "errors": errors}))


if __name__ == "__main__":
    main()
