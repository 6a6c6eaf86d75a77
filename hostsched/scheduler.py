"""The use cases: schedule, release, cleanup and inspect, over one store.

Plan, then apply: hosts are chosen from the scheduler's fleet view (see :mod:`hostsched.view`)
by a pure strategy, then each host's share of the plan is reserved by one reserve.lua call, all
hosts in one round trip that also brings the view up to date. The script re-checks fit against
the stored truth, so a stale view costs a retry, never an overcommit; its reply refreshes the
view for that retry.

Round trips: one per placement (or per batch) in a long-lived scheduler; a one-shot process adds
one to read the view (and in a cluster one to publish what it changed: on one server the
reserve script publishes it). Only when the view has no room does the scheduler read every
host, to be sure before it refuses.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace

from hostsched.checks import check_strategy, describe, reservation_ids
from hostsched.config import Config
from hostsched.errors import (
    HostschedError,
    InsufficientResources,
    NoHostsError,
    StoreUnavailable,
    UnknownHostError,
    UsageError,
)
from hostsched.model import HostStatus, Placement, Plan, Request, Resources
from hostsched.replies import Changes, Published, ReserveOutcome
from hostsched.snapshot import Fleet, fleet_snapshot
from hostsched.store import Store
from hostsched.strategies import SCORES, Context, plan
from hostsched.view import FleetView, summary_of
from hostsched.wire import Pending, Trip


@dataclass(frozen=True)
class ReleaseReport:
    released: tuple[str, ...]
    missing: tuple[str, ...]


@dataclass(frozen=True)
class CleanupReport:
    removed: int
    hosts: int
    forgotten: tuple[str, ...] = ()
    corrupt: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


@dataclass
class SchedulerStats:
    """What a scheduler did, for bench: reservations refused by the script, round trips."""

    placements: int = 0
    refusals: int = 0
    full_reads: int = 0


@dataclass
class _Attempt:
    """One schedule call in progress."""

    request: Request
    strategy: str
    pending: list[str]
    # Ids given by the caller, who may retry them: kept in the placement index, and looked up
    # among the instances (drawn ids are new).
    explicit: bool
    known: dict[str, str]  # id -> host from the placement index, tried first
    done: dict[str, Placement] = field(default_factory=dict)
    placed_now: list[Placement] = field(default_factory=list)
    refused: bool = False


class Scheduler:
    """hostsched's operations on one store, configured by one Config.

    Publishing: the reserve script publishes a host's first change since the last exchange
    (on one server). Other summaries (a host's later changes, those of a cluster) wait for the
    next exchange, which carries each host's newest once.

    ``long_lived``: for a scheduler that places many times (bench, a service). It reads the
    whole fleet view once and keeps the summaries it changed until its next round trip (or
    :meth:`flush`), saving a round trip per placement. A one-shot scheduler (the CLI) reads
    only the part of the view its strategy needs, and publishes what waits before it returns.
    """

    #: A long-lived scheduler reads the whole fleet view again this often (seconds), to drop
    #: hosts that were forgotten.
    FULL_READ_EVERY = 60.0
    #: ... and exchanges news with the fleet view at most this often (seconds), in the round
    #: trip of a reservation: placements faster than that share one exchange. After a refusal
    #: it exchanges at once.
    EXCHANGE_EVERY = 0.002
    #: The wait doubles, up to this many times (64 ms), while exchanges bring no news or more
    #: than NEWS_PER_PLACEMENT summaries per placement made since the last (see
    #: _pace_exchanges): a lone scheduler seldom pays for exchanges, busy ones not for each
    #: other's every change.
    EXCHANGE_DOUBLINGS = 5
    #: Summaries of news per own placement that an exchange is worth (see _pace_exchanges).
    #: 8 schedulers on 20 hosts, 12 pairs of runs alternated: p99 2.50 ms with 0.25, 2.75 ms
    #: with 0.5 (medians; lower in 8 pairs), 11 % less CPU per placement; refusals (best_fit
    #: too) and final spread alike. Earlier, five runs: 2.45 ms with 0.5, 2.74 ms with 1.
    NEWS_PER_PLACEMENT = 0.25
    #: Hosts whose summaries may wait to be published before an exchange, whatever the wait (a
    #: large fleet in a cluster, where each placement changes another host and no script
    #: publishes it): other schedulers' views stay that close to this one's changes, and the
    #: summaries do not live long enough to cost the garbage collector (10,000 hosts, one
    #: scheduler: 4.3-5.6 µs of collections per placement without it, 1.0-1.4 with 32).
    PUBLISH_BACKLOG = 32
    #: A one-shot scheduler reads this many of the least and of the most loaded hosts (plus two
    #: per placement).
    ENDS = 32

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        rng: random.Random | None = None,
        expected: Sequence[str] = (),
        long_lived: bool = False,
    ) -> None:
        self.config = config
        self.store = store
        self.rng = rng or random.Random()
        self.long_lived = long_lived
        self.stats = SchedulerStats()
        weights = config.weights
        self._weights = (weights.cpu, weights.memory, weights.disk)
        self.view = FleetView(weights=self._weights, rng=self.rng)
        self._unpublished: dict[str, Published] = {}  # for the next exchange
        self._published: set[str] = set()  # by reserve.lua, since the last exchange
        self._cursor: str | None = None
        self._cursor_dirty = False
        self._last_exchange = float("-inf")
        self._exchange_doublings = 0  # up to EXCHANGE_DOUBLINGS, see _pace_exchanges
        self._placed_at_exchange = 0
        # Hosts to read in the same round trip as the host set; grows with what is stored.
        self._expected: list[str] = [*expected, *(h.name for h in config.hosts)]

    # -- reading ---------------------------------------------------------------------------

    def fleet(self) -> Fleet:
        """Every stored or configured host, in one pipelined read when the host set is known."""
        raw = self.store.read_fleet(self._expected)
        self._expected = sorted(raw.members.union(h.name for h in self.config.hosts))
        return fleet_snapshot(
            raw,
            stale_after=self.config.host_stale_after,
            reservation_ttl=self.config.reservation_ttl,
            configured_labels={h.name: h.labels for h in self.config.hosts},
        )

    def inspect(self, host: str | None = None) -> Fleet:
        """The fleet, or the one host named, as snapshots."""
        fleet = self.fleet()
        if host is None:
            return fleet
        found = fleet.get(host)
        if found is None:
            raise UnknownHostError(host)
        return replace(fleet, hosts=(found,))

    # -- schedule --------------------------------------------------------------------------

    def schedule(
        self,
        request: Request,
        *,
        count: int = 1,
        ids: Sequence[str] = (),
        strategy: str | None = None,
        dry_run: bool = False,
    ) -> Plan:
        """Place ``count`` workloads of ``request``'s size; all are placed or none is."""
        strategy = check_strategy(strategy or self.config.strategy)
        if request.resources.cpu <= 0:
            raise UsageError("--cpu must be more than 0")
        wanted = reservation_ids(ids, count)
        # Only explicit ids can be retried by another process, so only they are looked up.
        known = self.prepare(wanted if ids else (), request, strategy, count)
        attempt = _Attempt(request, strategy, list(wanted), bool(ids), known)
        try:
            self._place(attempt, dry_run)
        except BaseException:
            self._undo(attempt.placed_now)
            raise
        if not self.long_lived:
            # The placements are made: news for the view is a hint, and a store that fails
            # now must not turn them into an error (cleanup republishes every host).
            with suppress(StoreUnavailable):
                self.flush()
        return Plan(strategy, tuple(attempt.done[rid] for rid in wanted), dry_run)

    def _place(self, attempt: _Attempt, dry_run: bool) -> None:
        truth_read = False
        for _ in range(self.config.max_attempts):
            if not attempt.pending:
                return
            chosen = self._plan(attempt)
            if chosen is None:
                if truth_read:
                    break
                # The view may be behind (released, expired, collected): ask every host.
                self.refresh()
                truth_read = True
                continue
            if dry_run:
                attempt.done.update(
                    (rid, Placement(rid, host, attempt.request.resources)) for rid, host in chosen
                )
                attempt.pending = []
                return
            self._reserve(attempt, chosen)
        if attempt.pending:
            raise self._insufficient(attempt)

    def _plan(self, attempt: _Attempt) -> list[tuple[str, str]] | None:
        """Hosts for the pending ids: known ones first, the rest chosen by the strategy.

        An id the placement index knows goes back to its host, whether or not the view holds
        that host (a one-shot view holds only the ends of the fleet): its reserve returns the
        existing reservation, or refuses, and the id is then placed afresh.
        """
        amount = attempt.request.resources
        chosen = [(rid, attempt.known[rid]) for rid in attempt.pending if rid in attempt.known]
        rest = [rid for rid in attempt.pending if rid not in attempt.known]
        if not rest:
            return chosen
        candidates = self.view.window(
            attempt.strategy,
            amount,
            labels=attempt.request.labels,
            stale_after=self.config.host_stale_after,
            count=len(rest),
        )
        ctx = Context(request=amount, weights=self._weights, cursor=self._cursor, rng=self.rng)
        planned = plan(attempt.strategy, candidates, rest, ctx)
        return None if planned is None else chosen + planned

    def _reserve(self, attempt: _Attempt, chosen: Sequence[tuple[str, str]]) -> None:
        """Reserve the plan, one script per host, in the round trip that refreshes the view."""
        amount = attempt.request.resources
        batches: dict[str, list[tuple[str, Resources]]] = {}
        for rid, host in chosen:
            batches.setdefault(host, []).append((rid, amount))
        trip = self.store.trip("reserving")
        replies = {
            host: self.store.queue_reserve(
                trip,
                host,
                items,
                reservation_ttl=self.config.reservation_ttl,
                stale_after=self.config.host_stale_after,
                new_ids=not attempt.explicit,
                publish=host not in self._published,
            )
            for host, items in batches.items()
        }
        if attempt.explicit:
            # Written before the outcome is known: the last attempt's host wins, and a wrong
            # entry only sends a later retry to a host that says it does not hold the id.
            self.store.queue_remember_placements(
                trip, dict(chosen), ttl=self.config.resource_ttl
            )
        replicas = self.config.redis.wait_replicas
        waits = {
            host: self.store.queue_wait(trip, host, replicas, self.config.redis.timeout / 2)
            for host in replies
        } if replicas else {}  # fmt: skip
        changes = self._queue_view_update(trip) if self._exchange_due(attempt.refused) else None
        trip.run()
        for host, reply in replies.items():
            acked = waits[host].get() >= replicas if host in waits else None
            self._apply_outcome(attempt, reply.get(), acked)
        if changes is not None:
            self._pace_exchanges(self._apply_changes(changes.get()), attempt.refused)
        attempt.pending = [rid for rid in attempt.pending if rid not in attempt.done]
        if attempt.strategy == "round_robin" and chosen:
            self._cursor, self._cursor_dirty = chosen[-1][1], True

    def _exchange_due(self, refused: bool) -> bool:
        """Whether this reservation's round trip also exchanges news: after a refusal, once the
        wait set by _pace_exchanges is over, or once PUBLISH_BACKLOG hosts wait to be published."""
        wait = self.EXCHANGE_EVERY * (1 << self._exchange_doublings)
        return (
            refused
            or time.monotonic() - self._last_exchange >= wait
            or len(self._unpublished) >= self.PUBLISH_BACKLOG
        )

    def _pace_exchanges(self, news: int, refused: bool) -> None:
        """Set the wait before the next exchange from what this one brought.

        A refusal says the view was wrong: the wait goes back to EXCHANGE_EVERY. Otherwise it
        doubles while exchanges bring no news, or more than NEWS_PER_PLACEMENT summaries per
        placement this scheduler made since the last one, and halves when they bring at most
        half that: news costs its readers CPU, and each scheduler reads every other one's.
        """
        placed = self.stats.placements - self._placed_at_exchange
        self._placed_at_exchange = self.stats.placements
        doublings = self._exchange_doublings
        if refused:
            doublings = 0
        elif not news or news > placed * self.NEWS_PER_PLACEMENT:
            doublings = min(doublings + 1, self.EXCHANGE_DOUBLINGS)
        elif 2 * news <= placed * self.NEWS_PER_PLACEMENT:
            doublings = max(doublings - 1, 0)
        self._exchange_doublings = doublings

    def _apply_outcome(
        self, attempt: _Attempt, outcome: ReserveOutcome, replicated: bool | None
    ) -> None:
        if outcome.published is not None:
            self.view.apply(outcome.host, outcome.published.summary)
            if outcome.sequence <= 0:
                self._unpublished[outcome.host] = outcome.published
            else:
                self._published.add(outcome.host)
                if outcome.sequence == self.view.sequence + 1:
                    self.view.sequence = outcome.sequence  # nothing else published since the
                    # view's last read: the next read starts after this one
        if outcome.status == "ok":
            amount = attempt.request.resources
            for rid in outcome.existing:
                attempt.done[rid] = Placement(rid, outcome.host, amount, True, replicated)
            for rid in outcome.placed:
                placement = Placement(rid, outcome.host, amount, False, replicated)
                attempt.done[rid] = placement
                attempt.placed_now.append(placement)
            self.stats.placements += len(outcome.placed)
            return
        self.stats.refusals += 1
        attempt.refused = True
        for rid, host in list(attempt.known.items()):
            if host == outcome.host:
                del attempt.known[rid]  # not held there: choose afresh
        if outcome.status != "full":  # stale, missing or corrupt: not a candidate
            self.view.discard(outcome.host)

    def _undo(self, placements: Sequence[Placement]) -> None:
        """Release what this call reserved, so a failed schedule leaves the store as it was."""
        batches: dict[str, list[str]] = {}
        for placement in placements:
            batches.setdefault(placement.host, []).append(placement.id)
        if batches:
            self.store.release(batches)

    def _insufficient(self, attempt: _Attempt) -> HostschedError:
        """NoHostsError if no host could take anything, else InsufficientResources."""
        request = attempt.request
        self.view.catch_up()
        now = self.view.now()
        stale_after = self.config.host_stale_after
        known = set(self.view.hosts) | set(self._expected)
        if not known:
            return NoHostsError(
                "no hosts known", hint="list hosts in the config and run `hostsched collect`"
            )
        if all(now - h.collected_at > stale_after for h in self.view.hosts.values()):
            return NoHostsError(
                f"none of the {len(known)} known hosts is online",
                hint="run `hostsched collect`; `hostsched inspect` shows each host's status",
            )
        hosts = self.view.hosts.values()
        matching = [h for h in hosts if self.view.eligible(h, request.labels, stale_after)]
        if not matching:
            wanted = ", ".join(f"{k}={v}" for k, v in sorted(request.labels.items()))
            return NoHostsError(f"no online host has the labels {wanted}")
        roomiest = max(matching, key=lambda c: (c.limit - c.load).cpu, default=None)
        best = (
            f"; most free: {roomiest.name} with {describe(roomiest.limit - roomiest.load)}"
            if roomiest
            else ""
        )
        missing = len(attempt.pending)
        what = "workload" if missing == 1 else f"{missing} workloads"
        return InsufficientResources(
            f"no online host has room for {what} of {describe(request.resources)}{best}",
            hint="`hostsched inspect` shows free capacity per host",
        )

    # -- the fleet view --------------------------------------------------------------------

    def prepare(self, ids: Sequence[str] = (), request: Request | None = None,
                strategy: str | None = None, count: int = 1) -> dict[str, str]:  # fmt: skip
        """Read the fleet view if it is new (or due for a full read); where explicit ids are.

        A long-lived scheduler reads every host's summary once, and sorts the hosts for its
        strategy before its first placement. A one-shot scheduler choosing by a scored
        strategy without labels reads only the least and most loaded few: the ones such a
        strategy picks from, so its cost does not grow with the fleet. If none of them has
        room, :meth:`refresh` reads every host before the request is refused.
        """
        full = (
            not self.view.synced
            or not self.long_lived  # each call of a one-shot scheduler reads afresh
            or time.monotonic() - self.view.last_full_read > self.FULL_READ_EVERY
        )
        if not full and not ids:
            return {}
        trip = self.store.trip("reading the fleet view")
        known = self.store.queue_placements(trip, ids) if ids else None
        if full:
            partial = (
                not self.long_lived
                and strategy in SCORES
                and (request is None or not request.labels)
            )
            read = f"ends:{self.ENDS + 2 * count}" if partial else "all"
            changes = self.store.queue_view(trip, read=read)
            count_stored = self.store.queue_host_count(trip)
            cursor = self.store.queue_round_robin_cursor(trip)
        trip.run()
        if full:
            self._last_exchange = time.monotonic()  # the view was just read: news enough
            self.view.clear()
            read_changes = changes.get()
            self._apply_changes(read_changes)
            self.view.catch_up()  # every host in the order at once
            self.view.warm(strategy or self.config.strategy)
            self.view.synced = True
            self.view.last_full_read = time.monotonic()
            self._cursor = cursor.get()
            stored = count_stored.get()
            if stored is not None and stored > read_changes.hosts:
                self.refresh()  # hosts without a summary (an older writer, a lost publish)
        return {} if known is None else known.get()

    def _queue_view_update(self, trip: Trip) -> Pending[Changes]:
        """Publish what this scheduler changed, and read what others published, in ``trip``."""
        if self._cursor_dirty and self._cursor is not None:
            self.store.queue_set_round_robin_cursor(trip, self._cursor)
            self._cursor_dirty = False
        publish, self._unpublished = list(self._unpublished.values()), {}
        self._published.clear()
        self._last_exchange = time.monotonic()
        read = f"since:{self.view.sequence}" if self.long_lived else "-"
        return self.store.queue_view(trip, read=read, publish=publish)

    def _apply_changes(self, changes: Changes) -> int:
        """Take what the fleet view reported; how many summaries were news to the view."""
        self.view.clock(changes.now)
        if changes.sequence < 0:
            return 0  # the view's keys are not ours: hints are ignored, the truth is read
        self.view.sequence = changes.sequence
        return sum(self.view.offer(host, body) for host, body in changes.entries)

    def refresh(self) -> None:
        """Bring the view to the stored truth: every known host's own keys, read only.

        One pipelined read of the whole fleet: the rare path, taken before refusing a request
        and when hosts have no summary. It changes nothing in the store (a failed command
        leaves it as it was); ``cleanup`` republishes the summaries.
        """
        fleet = self.fleet()
        self.view.clock(fleet.now)
        self.stats.full_reads += 1
        for host in fleet.hosts:
            if host.status in (HostStatus.ONLINE, HostStatus.STALE) and host.age is not None:
                self.view.apply(host.name, summary_of(host, fleet.now))
            else:
                self.view.discard(host.name)

    def flush(self) -> None:
        """Publish the summaries this scheduler changed (deferred until now): after it, the
        reserve script publishes each host's next change again."""
        self._published.clear()
        if self._unpublished or self._cursor_dirty:
            trip = self.store.trip("publishing to the fleet view")
            changes = self._queue_view_update(trip)
            trip.run()
            self._apply_changes(changes.get())

    # -- release and cleanup ---------------------------------------------------------------

    def release(self, ids: Sequence[str]) -> ReleaseReport:
        """Drop reservations by id, wherever they are; ids held nowhere are reported missing."""
        if not ids:
            raise UsageError("name at least one reservation id to release")
        fleet = self.fleet()
        batches: dict[str, list[str]] = {}
        for rid in dict.fromkeys(ids):
            for host in fleet.hosts:
                if any(r.id == rid for r in host.reservations):
                    batches.setdefault(host.name, []).append(rid)
        dropped = self.store.release(batches)
        released = {rid for got in dropped.values() for rid in got}
        return ReleaseReport(
            released=tuple(rid for rid in dict.fromkeys(ids) if rid in released),
            missing=tuple(rid for rid in dict.fromkeys(ids) if rid not in released),
        )

    def cleanup(self) -> CleanupReport:
        """Prune expired reservations everywhere; forget hosts whose data has expired.

        Also republishes every host's summary, which repairs the fleet view after a scheduler
        died with changes unpublished.
        """
        stored, problems = self.store.host_names()
        names = sorted(stored.union(h.name for h in self.config.hosts))
        outcomes = self.store.cleanup(names, reservation_ttl=self.config.reservation_ttl)
        self.store.publish([o.published for o in outcomes.values() if o.published is not None])
        configured = {h.name for h in self.config.hosts}
        gone = [
            name
            for name, outcome in outcomes.items()
            if not outcome.has_actual and outcome.remaining == 0 and name not in configured
        ]
        if not problems:
            self.store.forget_hosts(gone)
        return CleanupReport(
            removed=sum(o.removed for o in outcomes.values()),
            hosts=len(outcomes),
            forgotten=tuple(gone),
            corrupt=tuple(name for name, o in outcomes.items() if o.corrupt),
            problems=problems,
        )

