"""The latency floor of the 8-process bench case: N redis-py PING loops at once.

Each process times every PING round trip; prints one JSON line with the aggregate rate and
the p50 and p99 per PING, to set beside a bench's p99 per placement from the same minute.
Usage: python docs/ping_tail.py [--processes 8] [--pings 1000]   (HOSTSCHED_REDIS_URL)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from typing import Any

import redis


def loop(url: str, pings: int, start: Any, results: Any) -> None:
    client = redis.Redis.from_url(url)
    client.ping()
    start.wait(60)
    latencies = []
    for _ in range(pings):
        began = time.perf_counter()
        client.ping()
        latencies.append(time.perf_counter() - began)
    results.put(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--pings", type=int, default=1000)
    args = parser.parse_args()
    url = os.environ["HOSTSCHED_REDIS_URL"]
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(args.processes + 1), context.Queue()
    children = [
        context.Process(target=loop, args=(url, args.pings, start, results))
        for _ in range(args.processes)
    ]
    for child in children:
        child.start()
    start.wait(60)
    began = time.perf_counter()
    latencies = sorted(x for _ in children for x in results.get(timeout=600))
    seconds = time.perf_counter() - began
    for child in children:
        child.join()
    result = {
        "case": f"{args.processes} PING loops",
        "per_second": round(len(latencies) / seconds, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 3),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
