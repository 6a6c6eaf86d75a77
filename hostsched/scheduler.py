"""The use cases: schedule, release, cleanup and inspect, over one store.

Plan, then apply: hosts are ranked from a fleet snapshot by a pure strategy, then each host's
share of the plan is reserved by one reserve.lua call (all hosts in one round trip). The
script re-checks fit against the stored truth, so a stale snapshot costs a retry, never an
overcommit; its reply refreshes the local view for that retry.
"""

from __future__ import annotations

import random
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from hostsched.config import Config
from hostsched.errors import InsufficientResources, NoHostsError, UnknownHostError, UsageError
from hostsched.model import HostSnapshot, HostStatus, Placement, Plan, Request, Resources
from hostsched.quantity import format_bytes, format_cpu
from hostsched.snapshot import Fleet, fleet_snapshot
from hostsched.store import ReserveOutcome, Store
from hostsched.strategies import STRATEGY_NAMES, Candidate, Context, rank

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
#: Placements in one schedule call: one plan, one round trip, all or nothing.
MAX_COUNT = 10_000


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


def describe(amount: Resources) -> str:
    """``cpu 2, memory 4.0 GiB, disk 0 B, gpu 0`` for messages."""
    return (
        f"cpu {format_cpu(amount.cpu)}, memory {format_bytes(amount.memory)}, "
        f"disk {format_bytes(amount.disk)}, gpu {amount.gpu}"
    )


def check_strategy(name: str) -> str:
    if name not in STRATEGY_NAMES:
        raise UsageError(
            f"unknown strategy {name!r}", hint=f"valid strategies: {', '.join(STRATEGY_NAMES)}"
        )
    return name


def reservation_ids(ids: Sequence[str], count: int) -> list[str]:
    """The ids of ``count`` placements: as given, suffixed ``-1``… for one id, else generated."""
    if not 1 <= count <= MAX_COUNT:
        raise UsageError(f"--count must be from 1 to {MAX_COUNT}, not {count}")
    if not ids:
        ids = [f"hs-{secrets.token_hex(6)}" for _ in range(count)]
    elif len(ids) == 1 and count > 1:
        ids = [f"{ids[0]}-{i}" for i in range(1, count + 1)]
    elif len(ids) != count:
        raise UsageError(f"{len(ids)} ids given for --count {count}")
    for rid in ids:
        if not _ID_RE.match(rid):
            raise UsageError(
                f"invalid id {rid!r}",
                hint="up to 128 letters, digits and . _ : @ -, starting with a letter or digit",
            )
    if len(set(ids)) != len(ids):
        raise UsageError("the same id is given twice")
    return list(ids)


class Scheduler:
    """hostsched's operations on one store, configured by one Config."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        rng: random.Random | None = None,
        expected: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.store = store
        self.rng = rng or random.Random()
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
        fleet = self.fleet()
        done: dict[str, Placement] = {}
        for rid in wanted:
            holder = fleet.holder(rid)
            if holder is not None:  # a retry of a placement that already happened
                done[rid] = Placement(rid, holder.name, request.resources, existing=True)
        pending = [rid for rid in wanted if rid not in done]
        view = self._candidates(fleet, request)
        cursor = fleet.round_robin_cursor
        placed_now: list[Placement] = []
        refreshed = False
        try:
            for _attempt in range(self.config.max_attempts):
                if not pending:
                    break
                plan = self._plan(pending, view, request, strategy, cursor)
                if plan is None and not refreshed:
                    # Our view may be pessimistic (released or expired reservations): look again.
                    refreshed = True
                    view = self._candidates(self.fleet(), request)
                    continue
                if plan is None:
                    break
                if dry_run:
                    done.update({p.id: p for p in plan})
                    pending = []
                    break
                for outcome in self._reserve(plan, request.resources).values():
                    if outcome.status == "ok":
                        for rid in (*outcome.placed, *outcome.existing):
                            placement = Placement(
                                rid, outcome.host, request.resources, rid in outcome.existing
                            )
                            done[rid] = placement
                            if not placement.existing:
                                placed_now.append(placement)
                        view[outcome.host] = _refreshed(view[outcome.host], outcome)
                    elif outcome.status == "full" and outcome.limit is not None:
                        view[outcome.host] = _refreshed(view[outcome.host], outcome)
                    else:  # stale, missing or corrupt since the snapshot: not a candidate
                        view.pop(outcome.host, None)
                pending = [rid for rid in pending if rid not in done]
                cursor = plan[-1].host
            if pending:
                raise self._insufficient(view, request, len(pending))
        except BaseException:
            self._undo(placed_now)
            raise
        if strategy == "round_robin" and not dry_run and placed_now:
            self.store.set_round_robin_cursor(placed_now[-1].host)
        return Plan(strategy, tuple(done[rid] for rid in wanted), dry_run)

    def _candidates(self, fleet: Fleet, request: Request) -> dict[str, Candidate]:
        """Online hosts matching the request's labels; NoHostsError when there are none."""
        if not fleet.hosts:
            raise NoHostsError(
                "no hosts known", hint="list hosts in the config and run `hostsched collect`"
            )
        online = [h for h in fleet.hosts if h.status is HostStatus.ONLINE]
        if not online:
            raise NoHostsError(
                f"none of the {len(fleet.hosts)} known hosts is online",
                hint="run `hostsched collect`; `hostsched inspect` shows each host's status",
            )
        matching = [h for h in online if _labels_match(h, request.labels)]
        if not matching:
            wanted = ", ".join(f"{k}={v}" for k, v in sorted(request.labels.items()))
            raise NoHostsError(f"no online host has the labels {wanted}")
        return {
            h.name: Candidate(h.name, h.limit, h.used + h.reserved, h.instances) for h in matching
        }

    def _plan(
        self,
        ids: Sequence[str],
        view: Mapping[str, Candidate],
        request: Request,
        strategy: str,
        cursor: str | None,
    ) -> list[Placement] | None:
        """Choose a host for each id on a copy of the view; None if one of them fits nowhere."""
        local = dict(view)
        weights = self.config.weights
        plan = []
        for rid in ids:
            ctx = Context(
                request=request.resources,
                request_id=rid,
                weights=(weights.cpu, weights.memory, weights.disk),
                cursor=cursor,
                rng=self.rng,
            )
            ranked = rank(strategy, list(local.values()), ctx)
            if not ranked:
                return None
            chosen = ranked[0]
            local[chosen.name] = replace(chosen, load=chosen.load + request.resources)
            plan.append(Placement(rid, chosen.name, request.resources))
            cursor = chosen.name
        return plan

    def _reserve(self, plan: Sequence[Placement], amount: Resources) -> dict[str, ReserveOutcome]:
        batches: dict[str, list[tuple[str, Resources]]] = {}
        for placement in plan:
            batches.setdefault(placement.host, []).append((placement.id, amount))
        return self.store.reserve(
            batches,
            reservation_ttl=self.config.reservation_ttl,
            stale_after=self.config.host_stale_after,
        )

    def _undo(self, placements: Sequence[Placement]) -> None:
        """Release what this call reserved, so a failed schedule leaves the store as it was."""
        batches: dict[str, list[str]] = {}
        for placement in placements:
            batches.setdefault(placement.host, []).append(placement.id)
        if batches:
            self.store.release(batches)

    def _insufficient(
        self, view: Mapping[str, Candidate], request: Request, missing: int
    ) -> InsufficientResources:
        roomiest = max(view.values(), key=lambda c: (c.limit - c.load).cpu, default=None)
        best = (
            f"; most free: {roomiest.name} with {describe(roomiest.limit - roomiest.load)}"
            if roomiest
            else ""
        )
        what = "workload" if missing == 1 else f"{missing} workloads"
        return InsufficientResources(
            f"no online host has room for {what} of {describe(request.resources)}{best}",
            hint="`hostsched inspect` shows free capacity per host",
        )

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
        """Prune expired reservations everywhere; forget hosts whose data has expired."""
        stored, problems = self.store.host_names()
        names = sorted(stored.union(h.name for h in self.config.hosts))
        outcomes = self.store.cleanup(names, reservation_ttl=self.config.reservation_ttl)
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


def _labels_match(host: HostSnapshot, wanted: Mapping[str, str]) -> bool:
    return all(host.labels.get(key) == value for key, value in wanted.items())


def _refreshed(candidate: Candidate, outcome: ReserveOutcome) -> Candidate:
    """The candidate with the load the reserve script just reported."""
    if outcome.limit is None or outcome.used is None or outcome.reserved is None:
        return candidate
    return replace(candidate, limit=outcome.limit, load=outcome.used + outcome.reserved)
