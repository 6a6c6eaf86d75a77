"""The least that 10,000 hosts cost: the barest placement loop, at 10 and 10,000 hosts.

One process, one placement per round trip, on a raw socket read with hiredis (none of
hostsched's code but its RESP packer and bench's fleet sizing): a reserve script on the host's
own keys, pipelined with the publishing of the host's new load to a fleet index. The client
picks the least loaded host from a heap. No expiry, staleness, idempotency, validation, labels
or summaries, all of which hostsched does. Three variants:

- ``barest``: two keys per host (the record, and one hash with the entries and their sum);
  publishing is a HSET and a ZADD.
- ``+ changes``: and a second index (a ZADD), as schedulers need to read what changed.
- ``+ keys``: and the reservations' sums, expiry queue and generation in keys of their own,
  as hostsched keeps them.

Each variant runs at 10 and at 10,000 hosts in alternated pairs (the order swapped each pair),
on a fleet made for the run under a random prefix and deleted after it. Prints one JSON line
per variant: the median 10,000 ÷ 10-host rate of its pairs, and each pair's.
Usage: python docs/barest.py [--pairs 4] [--placements 5000]   (HOSTSCHED_REDIS_URL)
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import secrets
import statistics
import time
from typing import Any

import hiredis
import redis

from hostsched.bench import BenchSettings, host_size
from hostsched.channel import pack
from hostsched.model import Resources

BAREST = """
local limit = tonumber(redis.call('GET', KEYS[1]))
local sum = tonumber(redis.call('HGET', KEYS[2], '#sum') or '0')
local wanted = tonumber(ARGV[2])
if sum + wanted > limit then return {'full', sum} end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2], '#sum', sum + wanted)
return {'ok', sum + wanted}
"""
KEYED = """
local limit = tonumber(redis.call('GET', KEYS[1]))
local n = redis.call('HLEN', KEYS[2])
local sum = tonumber(redis.call('HGET', KEYS[3], 'cpu') or '0')
redis.call('LINDEX', KEYS[4], 0)
redis.call('GET', KEYS[5])
local wanted = tonumber(ARGV[2])
if sum + wanted > limit then return {'full', sum} end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], 'cpu', sum + wanted, 'n', n + 1)
redis.call('RPUSH', KEYS[4], ARGV[1])
redis.call('INCR', KEYS[5])
return {'ok', sum + wanted}
"""
#: variant -> (script, host keys it takes, fleet indexes written per placement)
VARIANTS = {"barest": (BAREST, 2, 1), "+ changes": (BAREST, 2, 2), "+ keys": (KEYED, 5, 2)}
HOST_KEYS = ("record", "entries", "sums", "queue", "gen")
REQUEST = 1000


class Connection:
    """One redis-py connection's socket, written and read directly."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._connection = self._client.connection_pool.get_connection()
        self._connection.connect()
        self._sock = self._connection._sock
        self._reader = hiredis.Reader()
        self._buffer = bytearray(65536)

    def close(self) -> None:
        self._connection.disconnect()
        self._client.close()

    def trip(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        self._sock.sendall(pack(commands))
        replies: list[Any] = []
        while len(replies) < len(commands):
            reply = self._reader.gets()
            if reply is False:
                self._reader.feed(self._buffer, 0, self._sock.recv_into(self._buffer))
            elif isinstance(reply, hiredis.ReplyError):
                raise reply
            else:
                replies.append(reply)
        return replies


def run(conn: Connection, variant: str, hosts: int, placements: int) -> float:
    """Placements per second of ``variant`` on a fresh fleet of ``hosts``, sized as bench
    sizes its fleet: every placement fits, with half as much room again to spare."""
    script, key_count, indexes = VARIANTS[variant]
    settings = BenchSettings(hosts=hosts, placements=placements, request=Resources(cpu=REQUEST))
    limit = host_size(settings).cpu
    sha = conn.trip([("SCRIPT", "LOAD", script)])[0]
    prefix = f"barest:{secrets.token_hex(4)}"
    names = [f"h{i:05d}" for i in range(hosts)]
    keys = {h: [f"{prefix}:{k}:{{{h}}}" for k in HOST_KEYS[:key_count]] for h in names}
    fleet = [f"{prefix}:{{fleet}}:{k}" for k in ("summary", "load", "changes")]
    for first in range(0, hosts, 500):
        conn.trip([("SET", keys[h][0], limit) for h in names[first : first + 500]])
    heap = [(0, random.random(), h) for h in names]
    heapq.heapify(heap)
    try:
        began = time.perf_counter()
        for i in range(placements):
            load, salt, host = heap[0]
            commands: list[tuple[Any, ...]] = [
                ("EVALSHA", sha, key_count, *keys[host], f"hs-{i:012x}", REQUEST),
                ("HSET", fleet[0], host, load + REQUEST),
                ("ZADD", fleet[1], load + REQUEST, host),
            ]
            if indexes == 2:
                commands.append(("ZADD", fleet[2], i, host))
            status, load = conn.trip(commands)[0]
            if status != b"ok":
                raise SystemExit(f"{host} refused a placement: the fleet is sized wrong")
            heapq.heapreplace(heap, (int(load), salt, host))
        return placements / (time.perf_counter() - began)
    finally:
        every = [k for h in names for k in keys[h]] + fleet
        for first in range(0, len(every), 1000):
            conn.trip([("UNLINK", *every[first : first + 1000])])


def measure(conn: Connection, pairs: int, placements: int) -> None:
    """Each variant's 10,000 ÷ 10-host rate, as one JSON line."""
    for variant in VARIANTS:
        ratios, rates = [], []
        for pair in range(pairs):
            order = (10, 10000) if pair % 2 == 0 else (10000, 10)
            rate = {n: run(conn, variant, n, placements) for n in order}
            ratios.append(rate[10000] / rate[10])
            rates.append([round(rate[10]), round(rate[10000])])
        print(json.dumps({
            "case": f"barest loop, 10000 hosts vs 10 hosts, {variant}",
            "ratio": round(statistics.median(ratios), 3),
            "ratios": [round(r, 3) for r in ratios],
            "per_second_10_and_10000": rates,
        }), flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--placements", type=int, default=5000)
    args = parser.parse_args()
    conn = Connection(os.environ.get("HOSTSCHED_REDIS_URL", "redis://127.0.0.1:6379"))
    try:
        measure(conn, args.pairs, args.placements)
    finally:
        conn.close()


if __name__ == "__main__":
    main()
