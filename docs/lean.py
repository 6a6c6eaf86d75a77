"""hostsched's own scripts under the leanest client: what 10,000 hosts cost them.

One process drives hostsched's reserve.lua, and view.lua's exchanges or not, in hostsched's
round trips (``Store.trip``), choosing the least loaded host from a heap of tuples: none of
hostsched's client but its scripts, its key names, its reads and bench's fleet. Publishing
works as a lone long-lived scheduler's does, in one of two ways: every summary passed on by
view.lua's exchanges (as in a Redis Cluster), or a host's first change between two exchanges
published by reserve.lua itself and the rest by the exchanges (as on one server). An exchange
comes once 32 changed hosts wait, or after 64 ms, with summaries in the same JSON. Six loops
(10 and 10,000 hosts; not publishing, or either way) take turns in blocks of placements within
one process, so both blocks of a pair run at the same speed of the machine. Prints one JSON
line per kind: the median 10,000 ÷ 10-host rate of its pairs.

Usage: python docs/lean.py [--blocks 20] [--block 250]   (HOSTSCHED_REDIS_URL)
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
from dataclasses import replace

from hostsched.bench import BenchSettings, host_size, populate
from hostsched.config import Config
from hostsched.connect import open_store_at
from hostsched.model import Resources
from hostsched.strategies import DEFAULT_WEIGHTS, weighted_use

REQUEST = BenchSettings().request
#: A summary as hostsched publishes it, from reserve.lua's reply (see codec.encode_summary).
SUMMARY = (
    b'{"gen":%d,"at":%s,"limit":[%d,%d,%d,%d],"used":[%d,%d,%d,%d],'
    b'"reserved":[%d,%d,%d,%d],"instances":%d,"labels":%s}'
)
BACKLOG, EXCHANGE_AFTER = 32, 0.064


class Loop:
    """One lean scheduler on a fleet of its own (under a random prefix)."""

    def __init__(self, url: str, hosts: int, placements: int, *, publish: str) -> None:
        """``publish``: "" not at all, "exchanges" or "script" (see the module's text)."""
        config = Config()
        redis_config = replace(config.redis, prefix=f"lean:{secrets.token_hex(4)}")
        self.store = open_store_at(url, redis_config)
        names = [f"lean-{i:05d}" for i in range(hosts)]
        size = host_size(BenchSettings(hosts=hosts, placements=placements))
        populate(self.store, names, size, ttl=3600)
        for name in names:  # (built before the run, as the heap is)
            self.store.host_keys(name)
        self.view_keys = self.store.keys.fleet_view
        self.heap = [(0.0, random.random(), h) for h in names]
        heapq.heapify(self.heap)
        self.publish = publish
        self.unpublished: dict[str, tuple[float, bytes]] = {}
        self.published: set[str] = set()  # by reserve.lua since the last exchange
        self.sequence = 0
        self.last_exchange = time.perf_counter()
        self.placed = 0

    def place(self) -> None:
        """One placement on the least loaded host, with an exchange when one is due."""
        _, salt, host = self.heap[0]
        trip = self.store.trip("lean loop")
        keys, name = self.store.host_keys(host), ""
        if self.publish == "script" and host not in self.published:
            keys, name = keys + self.view_keys, host
        reserved = trip.script("reserve", keys, [
            3600, 300, "new", name, f"lean-{self.placed:012x}",
            REQUEST.cpu, REQUEST.memory, REQUEST.disk, REQUEST.gpu,
        ])  # fmt: skip
        due = len(self.unpublished) >= BACKLOG or (
            time.perf_counter() - self.last_exchange > EXCHANGE_AFTER
        )
        exchange = None
        if self.publish and due:
            read = f"since:{self.sequence}"
            exchange = trip.script("view", self.view_keys, self._summaries(read))
            self.unpublished, self.last_exchange = {}, time.perf_counter()
            self.published.clear()
        trip.run()
        status, state = reserved.get()[:2]
        if status != b"ok":
            raise SystemExit(f"{host} refused a placement: the fleet is sized wrong")
        if exchange is not None:
            self.sequence = exchange.get()[1]
        # (as Published.load: the default weights of the summary's used + reserved)
        held = [state[6 + d] + state[10 + d] for d in range(3)]
        load = weighted_use(Resources(*state[2:6]), *held, DEFAULT_WEIGHTS)
        if name:
            self.published.add(host)
        elif self.publish:
            self.unpublished[host] = (round(load, 6), SUMMARY % tuple(state))
        heapq.heapreplace(self.heap, (load, salt, host))
        self.placed += 1

    def _summaries(self, read: str) -> list[object]:
        """view.lua's ARGV: what to read, then the summaries that wait (as Store.queue_view
        sends Published ones)."""
        args: list[object] = [read]
        for name, (load, body) in self.unpublished.items():
            args += [name, load, body]
        return args

    def flush(self) -> None:
        """Publish the summaries that wait for an exchange."""
        if self.unpublished:
            trip = self.store.trip("lean loop")
            trip.script("view", self.view_keys, self._summaries("-"))
            trip.run()
            self.unpublished = {}

    def close(self) -> None:
        """Delete the fleet."""
        try:
            self.store.delete_all()
        finally:
            self.store.close()


def measure(url: str, blocks: int, block: int) -> dict[str, list[float]]:
    """Each kind's paired 10,000 ÷ 10-host rates, one per pair of blocks."""
    kinds = {
        "reserve.lua only": "",
        "reserve.lua and view.lua's exchanges": "exchanges",
        "reserve.lua publishing a host's first change, view.lua's exchanges the rest": "script",
    }
    loops = {
        (kind, hosts): Loop(url, hosts, blocks * block, publish=publish)
        for kind, publish in kinds.items()
        for hosts in (10, 10_000)
    }
    seconds: dict[tuple[str, int], list[float]] = {key: [] for key in loops}
    try:
        order = list(loops)
        for turn in range(blocks):
            shifted = order[turn % len(order) :] + order[: turn % len(order)]
            for key in shifted if turn % 2 == 0 else shifted[::-1]:
                began = time.perf_counter()
                for _ in range(block):
                    loops[key].place()
                seconds[key].append(time.perf_counter() - began)
    finally:
        for loop in loops.values():
            loop.close()
    return {
        kind: [small / big for small, big in zip(seconds[kind, 10], seconds[kind, 10_000],
                                                 strict=True)]
        for kind in kinds
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--block", type=int, default=250)
    args = parser.parse_args()
    url = os.environ.get("HOSTSCHED_REDIS_URL", "redis://127.0.0.1:6379")
    for kind, ratios in measure(url, args.blocks, args.block).items():
        print(json.dumps({
            "case": f"lean loop, 10000 hosts vs 10 hosts, {kind}",
            "ratio": round(statistics.median(ratios), 3),
            "ratios": [round(r, 3) for r in ratios],
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
