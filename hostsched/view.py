"""The scheduler's local picture of the fleet, kept current from published host summaries.

Choosing a host must not cost a read of the whole fleet. A scheduler reads every summary once,
then only the summaries published since (they ride in the same round trip as its reservations),
and the reserve script's own reply for each host it touches. The view may be a moment behind
other schedulers; that costs at most a refused reservation and a retry, because the reserve
script re-checks fit against the host's own keys.

For the scored strategies the view keeps hosts sorted by a score of the host alone, so the few
best candidates are found without looking at every host. Other schedulers' summaries are kept
as they came and decoded when their host is about to be chosen (and a few more per choice), so
a host that changes many times between two choices costs one decoding.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from heapq import heapify, heappop, heappush, heapreplace
from typing import Any

from hostsched.codec import BadValue, Summary, decode_summary, summary_generation
from hostsched.model import ZERO, HostSnapshot, Resources
from hostsched.strategies import REQUEST_FREE_SCORES, SCORES, Candidate, Context

#: Candidates handed to a strategy beyond the placements of a batch: the best few, for a
#: strategy whose view order is only near its own (best_fit's depends on the request).
SPARE_CANDIDATES = 2
#: Summaries offered by other schedulers that a choice applies first (newest first), besides
#: those of the hosts it would choose, and the share of the rest it applies too: news that
#: makes a host better than the view thinks is seen within a few placements.
NEWS_PER_CHOICE = 2
NEWS_SHARE_PER_CHOICE = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class ViewHost(Candidate):
    """One host as the view knows it: a candidate for the strategies, and what makes it eligible."""

    labels: Mapping[str, str]
    collected_at: float
    generation: int


def view_host(name: str, summary: Summary, known: ViewHost | None = None) -> ViewHost:
    """``summary`` as the view holds it. ``known``, the host's previous entry, lends its limit
    if unchanged, so a change leaves two objects (host and load) for the garbage collector to
    go over: on 10,000 hosts, collections cost a placement half what four objects cost."""
    limit = summary.limit
    if known is not None and known.limit == limit:
        limit = known.limit
    return ViewHost(
        name, limit, summary.used + summary.reserved, summary.instances,
        labels=summary.labels, collected_at=summary.collected_at, generation=summary.generation,
    )  # fmt: skip


OrderKey = Callable[[Candidate], Any]


def _order_key(strategy: str, weights: tuple[float, float, float]) -> OrderKey:
    """A scored strategy's score of a host before any placement: its order of the hosts
    (for best_fit, whose score depends on the request, the fullest hosts first)."""
    score, ctx = SCORES[strategy], Context(request=ZERO, weights=weights)
    return lambda candidate: score(candidate, ctx)


class _Order:
    """Host names by a key, best first, as a heap with lazy deletion.

    A host's update pushes a new entry and leaves the old one to be skipped when it surfaces
    (or, for the host on top, the one just chosen, replaces its entry in one sift), so an update
    costs O(log n) and taking the best few O(few · log n), whatever the fleet.
    """

    def __init__(
        self, key: OrderKey, salt: Callable[[str], float], hosts: Iterable[ViewHost] = ()
    ) -> None:
        self._key = key
        self._salt = salt  # breaks ties differently in each process, so schedulers spread
        self._entry = {h.name: (key(h), salt(h.name), h.name) for h in hosts}
        self._heap = list(self._entry.values())
        heapify(self._heap)

    def update(self, host: ViewHost) -> None:
        entry = (self._key(host), self._salt(host.name), host.name)
        self._entry[host.name] = entry
        heap = self._heap
        if heap and heap[0][2] == host.name:  # (the host just chosen) its entry is replaced
            heapreplace(heap, entry)
            return
        heappush(heap, entry)
        if len(heap) > 2 * len(self._entry) + 64:  # mostly stale: rebuild
            self._heap = list(self._entry.values())
            heapify(self._heap)

    def remove(self, name: str) -> None:
        self._entry.pop(name, None)

    def first(self) -> str | None:
        """The best name, without taking it (stale entries on top are dropped on the way)."""
        heap = self._heap
        while heap:
            entry = heap[0]
            if self._entry.get(entry[2]) is entry:
                return entry[2]
            heappop(heap)
        return None

    def best(self) -> Generator[str, None, None]:
        """Names best first; stop early to pay only for what was taken."""
        taken = []
        try:
            while self._heap:
                entry = heappop(self._heap)
                if self._entry.get(entry[2]) is not entry:
                    continue  # stale
                taken.append(entry)
                yield entry[2]
        finally:
            for entry in taken:
                heappush(self._heap, entry)


class FleetView:
    """Hosts by name, the last sequence number of the fleet view seen, and the server clock."""

    def __init__(
        self, *, weights: tuple[float, float, float], rng: random.Random | None = None
    ) -> None:
        self.hosts: dict[str, ViewHost] = {}
        self.sequence = 0
        self.synced = False
        self._weights = weights
        self._orders: dict[str, _Order] = {}
        self._rng = rng or random.Random()
        self._salts: dict[str, float] = {}
        self._server_time = 0.0
        self._local_time = time.monotonic()
        self.last_full_read = float("-inf")
        self.problems = 0
        # Published summaries not applied yet, by host, with their generations.
        self._news: dict[str, tuple[int | None, bytes]] = {}

    # -- keeping current -------------------------------------------------------------------

    def clock(self, server_time: float) -> None:
        """Note the server's time now, to judge staleness without asking again."""
        self._server_time, self._local_time = server_time, time.monotonic()

    def now(self) -> float:
        """The server's time, estimated from its last reading and the local monotonic clock."""
        return self._server_time + time.monotonic() - self._local_time

    def apply(self, name: str, summary: Summary) -> None:
        """Take a host's summary unless the view already has a newer one."""
        if not self._is_news(name, summary.generation):
            return
        host = view_host(name, summary, self.hosts.get(name))
        self.hosts[name] = host
        for order in self._orders.values():
            order.update(host)

    def apply_body(self, name: str, body: bytes) -> None:
        """Take a summary as published, decoding it only if it is newer than the view's."""
        self._take(name, summary_generation(body), body)

    def offer(self, name: str, body: bytes) -> bool:
        """Keep a host's published summary, to apply when it matters (see :meth:`window`);
        whether it is news: newer than the view's summary of the host.

        Other schedulers' news is most of a busy scheduler's work if applied as it comes: a
        host that changes again before it is looked at is then decoded once, not every time.
        """
        generation = summary_generation(body)
        if not self._is_news(name, generation):
            return False
        self._news[name] = (generation, body)
        return True

    def catch_up(self, most: int | None = None) -> None:
        """Apply up to ``most`` of the summaries offered (all if None), newest first."""
        news = self._news
        for _ in range(len(news) if most is None else min(most, len(news))):
            name, (generation, body) = news.popitem()
            self._take(name, generation, body)

    def _is_news(self, name: str, generation: int | None) -> bool:
        """Whether a summary of ``generation`` (None: known only once decoded) is newer than
        the view's summary of ``name``."""
        known = self.hosts.get(name)
        return known is None or generation is None or generation > known.generation

    def _take(self, name: str, generation: int | None, body: bytes) -> None:
        """Decode and apply a published summary of ``generation`` if it is news."""
        if not self._is_news(name, generation):
            return
        try:
            summary = decode_summary(body)
        except BadValue:
            self.problems += 1  # not ours: ignored, as the view is a hint
            return
        self.apply(name, summary)

    def clear(self) -> None:
        self.hosts.clear()
        self._orders.clear()
        self._news.clear()

    def discard(self, name: str) -> None:
        """Forget a host (its data is gone or not ours) until a summary brings it back."""
        self._news.pop(name, None)
        if self.hosts.pop(name, None) is not None:
            for order in self._orders.values():
                order.remove(name)

    # -- choosing --------------------------------------------------------------------------

    def eligible(self, host: ViewHost, labels: Mapping[str, str], stale_after: float) -> bool:
        """Fresh and carrying every label asked for (fit is the strategy's to judge)."""
        return _eligible(host, labels, self.now() - stale_after)

    def window(
        self,
        strategy: str,
        request: Resources,
        *,
        labels: Mapping[str, str],
        stale_after: float,
        count: int,
    ) -> list[Candidate]:
        """The candidates a strategy should rank for ``count`` placements of ``request``.

        For one placement by a strategy of REQUEST_FREE_SCORES: the best host, if it is eligible and
        has room (the common case, without walking the order). Otherwise, for a scored
        strategy: the best ``count + SPARE_CANDIDATES`` eligible hosts with room, walked from
        the sorted order (for best_fit the fullest hosts, which it re-scores exactly). For the
        others: every eligible host. A host is returned as its newest summary offered says.
        """
        fresh_since = self.now() - stale_after
        if strategy not in SCORES:
            self.catch_up()
            return [h for h in self.hosts.values() if _eligible(h, labels, fresh_since)]
        self.catch_up(NEWS_PER_CHOICE + len(self._news) // NEWS_SHARE_PER_CHOICE)
        order = self._order(strategy)

        def fits(host: ViewHost) -> bool:
            return _eligible(host, labels, fresh_since) and host.has_room(request)

        if count == 1 and strategy in REQUEST_FREE_SCORES:  # the best host is the answer
            best = self._best(order)
            if best is not None and fits(best):
                return [best]
        return self._walk(order, count + SPARE_CANDIDATES, fits)

    def _best(self, order: _Order) -> ViewHost | None:
        """The host on top of ``order``, as its newest news says (which may sink it)."""
        news = self._news
        while (top := order.first()) in news:
            self._take(top, *news.pop(top))
        return None if top is None else self.hosts[top]

    def _walk(self, order: _Order, size: int, fits: Callable[[ViewHost], bool]) -> list[Candidate]:
        """The first ``size`` hosts of ``order`` that ``fits``, each as its newest news says."""
        news = self._news
        while True:
            found: list[Candidate] = []
            behind: list[str] = []
            names = order.best()
            for name in names:
                if name in news:
                    behind.append(name)
                elif fits(host := self.hosts[name]):
                    found.append(host)
                    if len(found) == size:
                        break
            names.close()  # puts back what was taken
            if not behind:
                return found
            for name in behind:  # walk again with what they published
                self._take(name, *news.pop(name))

    def warm(self, strategy: str) -> None:
        """Sort the hosts for a scored strategy now, not in its first choice (a long-lived
        scheduler's first placement on 10,000 hosts took 30 ms more)."""
        if strategy in SCORES:
            self._order(strategy)

    def _order(self, strategy: str) -> _Order:
        order = self._orders.get(strategy)
        if order is None:
            key = _order_key(strategy, self._weights)
            order = self._orders[strategy] = _Order(key, self._salt, self.hosts.values())
        return order

    def _salt(self, name: str) -> float:
        salt = self._salts.get(name)
        if salt is None:
            salt = self._salts[name] = self._rng.random()
        return salt


def _eligible(host: ViewHost, labels: Mapping[str, str], fresh_since: float) -> bool:
    return host.collected_at >= fresh_since and (
        not labels or all(host.labels.get(k) == v for k, v in labels.items())
    )


def summary_of(host: HostSnapshot, now: float) -> Summary:
    """A host snapshot as the fleet view holds it."""
    return Summary(
        generation=host.generation,
        collected_at=now - (host.age or 0.0),
        limit=host.limit,
        used=host.used,
        reserved=host.reserved,
        instances=host.instances,
        labels=host.labels,
    )
