"""The latency floor of the 8-process bench case: N bare redis-py loops at once.

Each process times every call: a PING, or (``--call reserve``) the barest reservation any
design needs, one script that reads a host's limits and sums, checks the fit, writes the entry
and adds it to the sums, on 20 hosts in turn (no expiry, staleness, idempotency, validation or
summary, all of which hostsched's reserve.lua does). Prints one JSON line with the aggregate
rate and the p50 and p99 per call, to set beside a bench's p99 per placement from the same
minute.
Usage: python docs/ping_tail.py [--processes 8] [--calls 1000] [--call ping|reserve]
       (HOSTSCHED_REDIS_URL)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import secrets
import time
from typing import Any

import redis

HOSTS = 20
BARE_RESERVE = """
local t = redis.call('TIME')
local v = redis.call('HMGET', KEYS[1], 'cpu_limit', 'memory_limit', 'cpu', 'memory')
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
local cpu, memory = tonumber(ARGV[2]), tonumber(ARGV[3])
if tonumber(v[3]) + cpu > tonumber(v[1]) or tonumber(v[4]) + memory > tonumber(v[2]) then
  return -1
end
redis.call('HSET', KEYS[2], ARGV[1], t[1])
redis.call('HINCRBY', KEYS[1], 'cpu', cpu)
redis.call('HINCRBY', KEYS[1], 'memory', memory)
return 1
"""


def host_keys(prefix: str, host: int) -> tuple[str, str]:
    return f"{prefix}:host:{{{host}}}", f"{prefix}:entries:{{{host}}}"


def loop(url: str, call: str, calls: int, prefix: str, start: Any, results: Any) -> None:
    client = redis.Redis.from_url(url)
    sha = client.script_load(BARE_RESERVE)  # (and the connection opened before the clock starts)
    me = secrets.token_hex(4)
    start.wait(60)
    latencies = []
    for i in range(calls):
        began = time.perf_counter()
        if call == "ping":
            client.ping()
        else:
            client.evalsha(sha, 2, *host_keys(prefix, i % HOSTS), f"{me}-{i}", 1000, 1 << 30)
        latencies.append(time.perf_counter() - began)
    results.put(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--calls", type=int, default=1000, help="calls per process")
    parser.add_argument("--call", choices=("ping", "reserve"), default="ping")
    args = parser.parse_args()
    url = os.environ["HOSTSCHED_REDIS_URL"]
    client = redis.Redis.from_url(url)
    prefix = f"hostsched:floor:{secrets.token_hex(4)}"
    hosts = HOSTS if args.call == "reserve" else 0  # (PINGs need none)
    limits: list[str | int] = ["cpu_limit", 1 << 50, "memory_limit", 1 << 62, "cpu", 0, "memory", 0]
    for host in range(hosts):
        client.hset(host_keys(prefix, host)[0], items=limits)
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(args.processes + 1), context.Queue()
    children = [
        context.Process(target=loop, args=(url, args.call, args.calls, prefix, start, results))
        for _ in range(args.processes)
    ]
    try:
        for child in children:
            child.start()
        start.wait(60)
        began = time.perf_counter()
        latencies = sorted(x for _ in children for x in results.get(timeout=600))
        seconds = time.perf_counter() - began
        for child in children:
            child.join()
    finally:
        if hosts:
            client.delete(*(key for host in range(hosts) for key in host_keys(prefix, host)))
    what = "PING" if args.call == "ping" else "bare reserve"
    result = {
        "case": f"{args.processes} {what} loops",
        "per_second": round(len(latencies) / seconds, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 3),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
