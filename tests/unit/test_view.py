"""The batch planner, the scheduler's local fleet view and its summaries: pure, no Redis."""

from __future__ import annotations

import json
import random
from dataclasses import astuple, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostsched.codec import (
    BadValue,
    Summary,
    decode_summary,
    encode_summary,
    summary_from_state,
    summary_generation,
)
from hostsched.model import Resources
from hostsched.strategies import REQUEST_FREE_SCORES, SCORES, Candidate, Context, plan, rank
from hostsched.view import NEWS_PER_CHOICE, NEWS_SHARE_PER_CHOICE, SPARE_CANDIDATES, FleetView

G = 1 << 30

hosts_strategy = st.lists(
    st.builds(
        lambda i, cpu, used: Candidate(f"h{i}", Resources(cpu, 64 * G, 100 * G), Resources(used)),
        st.integers(0, 10**6),
        st.integers(1000, 16_000),
        st.integers(0, 16_000),
    ),
    min_size=1,
    max_size=12,
    unique_by=lambda c: c.name,
)


@settings(max_examples=200, deadline=None)
@given(hosts_strategy, st.integers(1, 40), st.sampled_from(sorted(SCORES)), st.integers(0, 99))
def test_a_batch_plan_is_the_sequence_of_single_best_choices(
    hosts: list[Candidate], count: int, strategy: str, seed: int
) -> None:
    """Each placement of a batch goes where ``rank`` would send it, given those before it;
    no host is given more than it has room for."""
    request = Resources(700)
    ctx = Context(request=request, rng=random.Random(seed))
    chosen = plan(strategy, hosts, [f"r{i}" for i in range(count)], ctx)
    current = {h.name: h for h in hosts}
    if chosen is None:  # then some prefix filled the fleet
        room = sum((h.limit.cpu - h.load.cpu) // 700 for h in hosts if h.load.cpu <= h.limit.cpu)
        assert room < count
        return
    score = SCORES[strategy]
    for _, name in chosen:
        fitting = [h for h in current.values() if h.has_room(request)]
        best = min(score(h, ctx) for h in fitting)
        assert current[name].has_room(request) and score(current[name], ctx) == best
        current[name] = replace(current[name], load=current[name].load + request)


def test_plan_for_unscored_strategies_follows_rank() -> None:
    hosts = [Candidate(f"h{i}", Resources(4000), Resources()) for i in range(3)]
    ctx = Context(request=Resources(1000), cursor="h0")
    assert plan("round_robin", hosts, ["a", "b", "c", "d"], ctx) == [
        ("a", "h1"), ("b", "h2"), ("c", "h0"), ("d", "h1"),
    ]  # fmt: skip
    by_hash = plan("consistent_hash", hosts, ["x"], ctx)
    assert by_hash == [("x", rank("consistent_hash", hosts, replace(ctx, request_id="x"))[0].name)]


def summary(cpu_used: int, *, at: float = 1000.0, zone: str = "a", gen: int = 1) -> Summary:
    return Summary(
        generation=gen, collected_at=at, limit=Resources(8000, 8 * G, 100 * G),
        used=Resources(cpu_used), reserved=Resources(), instances=0, labels={"zone": zone},
    )  # fmt: skip


def view(**hosts: Summary) -> FleetView:
    fleet = FleetView(weights=(0.4, 0.4, 0.2), rng=random.Random(1))
    fleet.clock(1000.0)
    for name, host in hosts.items():
        fleet.apply(name, host)
    return fleet


def names(candidates: list[Candidate]) -> list[str]:
    return [c.name for c in candidates]


def window(fleet: FleetView, cpu: int = 1000, count: int = 1, **labels: str) -> list[str]:
    found = fleet.window(
        "least_loaded", Resources(cpu), labels=labels, stale_after=60, count=count
    )
    return names(found)


def test_window_is_the_best_few_that_fit_and_match() -> None:
    fleet = view(
        a=summary(4000), b=summary(1000), c=summary(7500), d=summary(2000, zone="b"),
        e=summary(0, at=900.0),  # stale
    )  # fmt: skip
    assert window(fleet) == ["b", "d", "a"][: 1 + SPARE_CANDIDATES]
    assert window(fleet, cpu=1000, zone="a") == ["b", "a"]  # c has no room for 1000
    assert window(fleet, cpu=6000) == ["b", "d"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 8000), st.sampled_from("ab"), st.booleans()), max_size=8),
    st.lists(st.tuples(st.integers(0, 7), st.integers(0, 8000), st.booleans()), max_size=20),
    st.sampled_from(sorted(REQUEST_FREE_SCORES)),
    st.integers(1, 3000),
)
def test_one_placement_by_an_exact_order_gets_the_best_eligible_host(
    hosts: list[tuple[int, str, bool]],
    updates: list[tuple[int, int, bool]],
    strategy: str,
    cpu: int,
) -> None:
    """The shortcut for one placement picks a host the strategy itself ranks first, by the
    newest summary offered for it: news not applied yet is applied to the host chosen."""
    fleet = view(**{f"h{i}": summary(used, zone=zone, at=1000.0 if fresh else 900.0)
                    for i, (used, zone, fresh) in enumerate(hosts)})  # fmt: skip
    newest = {name: (host.limit, host.load) for name, host in fleet.hosts.items()}
    for gen, (i, used, offered) in enumerate(updates, start=2):
        if f"h{i}" in fleet.hosts:
            news = summary(used, zone=fleet.hosts[f"h{i}"].labels["zone"], gen=gen)
            newest[f"h{i}"] = (newest[f"h{i}"][0], Resources(used))
            if offered:
                fleet.offer(f"h{i}", encode_summary(news).encode())
            else:
                fleet.apply(f"h{i}", news)
    request = Resources(cpu)
    found = fleet.window(strategy, request, labels={"zone": "a"}, stale_after=60, count=1)
    assert all((c.limit, c.load) == newest[c.name] for c in found)
    eligible = [h for h in fleet.hosts.values() if fleet.eligible(h, {"zone": "a"}, 60)]
    fitting = [h for h in eligible if h.has_room(request)]
    if not fitting:
        assert found == []
        return
    ctx = Context(request=request)
    best = min(SCORES[strategy](c, ctx) for c in fitting)
    assert found and SCORES[strategy](found[0], ctx) == best and found[0] in fitting


def test_window_follows_updates_and_ignores_older_generations() -> None:
    fleet = view(a=summary(1000), b=summary(2000))
    fleet.apply("a", summary(5000, gen=2))
    assert window(fleet)[0] == "b"
    fleet.apply("a", summary(0, gen=1))  # late news: ignored
    assert window(fleet)[0] == "b"
    fleet.discard("b")
    assert window(fleet) == ["a"]
    for gen in range(3, 500):  # many updates: old entries are dropped, not piled up
        fleet.apply("a", summary(gen % 7 * 1000, gen=gen))
    order = fleet._orders["least_loaded"]
    assert len(order._heap) <= 2 * len(fleet.hosts) + 64 + 1


def test_a_host_keeps_its_limit_object_while_the_limit_is_unchanged() -> None:
    """Each update keeps as few new objects as it can (a large view pays for each in garbage
    collection): an unchanged limit is the one the view already holds."""
    fleet = view(a=summary(1000))
    first = fleet.hosts["a"].limit
    fleet.apply("a", summary(2000, gen=2))
    assert fleet.hosts["a"].limit is first and fleet.hosts["a"].load == Resources(2000)
    bigger = replace(summary(2000, gen=3), limit=Resources(16_000, 8 * G, 100 * G))
    fleet.apply("a", bigger)
    assert fleet.hosts["a"].limit == Resources(16_000, 8 * G, 100 * G)


@pytest.mark.parametrize("strategy", sorted(SCORES))
def test_an_order_sorted_in_advance_chooses_as_one_sorted_on_demand(strategy: str) -> None:
    loads = {f"h{i:02d}": summary(250 * (i * 7 % 30), gen=1) for i in range(30)}
    warmed, lazy = view(**loads), view(**loads)
    warmed.warm(strategy)
    assert strategy in warmed._orders and strategy not in lazy._orders
    for gen, cpu in enumerate([7000, 0, 3000, 7900, 500], start=2):  # updates after sorting
        warmed.apply("h05", summary(cpu, gen=gen))
        lazy.apply("h05", summary(cpu, gen=gen))
        for count in (1, 3):
            args: dict[str, Any] = {"labels": {}, "stale_after": 60, "count": count}
            assert names(warmed.window(strategy, Resources(1000), **args)) == names(
                lazy.window(strategy, Resources(1000), **args)
            )


def test_only_scored_strategies_keep_an_order() -> None:
    fleet = view(a=summary(1000))
    fleet.warm("round_robin")
    assert "round_robin" not in fleet._orders


def body(cpu_used: int, *, gen: int, zone: str = "a") -> bytes:
    return encode_summary(summary(cpu_used, gen=gen, zone=zone)).encode()


def test_news_is_decoded_when_its_host_would_be_chosen() -> None:
    fleet = view(a=summary(1000), b=summary(2000), c=summary(3000))
    fleet.offer("a", body(5000, gen=2))  # a filled up: b is now the best
    fleet.offer("c", body(0, gen=2))  # c emptied: seen by the catch-up
    assert fleet.hosts["a"].load.cpu == 1000  # not decoded when offered
    assert window(fleet)[0] == "c"
    assert fleet.hosts["a"].load.cpu == 5000
    fleet.offer("c", body(7500, gen=3))  # c has no room left for 1000: the walk drops it
    assert window(fleet, count=2) == ["b", "a"]


@pytest.mark.parametrize(("count", "expected"), [(1, ["h02"]), (2, ["h02", "h03", "h04", "h05"])])
def test_the_hosts_chosen_are_decoded_first_whatever_else_is_pending(
    count: int, expected: list[str]
) -> None:
    fleet = view(**{f"h{i:02d}": summary(1000 + 10 * i) for i in range(40)})
    fleet.offer("h00", body(7900, gen=2))  # the best host filled up (and h01 for count=2)
    fleet.offer("h01", body(7900, gen=2))
    for i in range(2, 40):
        fleet.offer(f"h{i:02d}", body(1000 + 10 * i, gen=2))  # the catch-up takes these first
    assert window(fleet, count=count) == expected  # (count + SPARE_CANDIDATES for a batch)


def test_news_of_a_host_gone_better_is_seen_within_a_few_choices() -> None:
    """Offered news that does not concern the best hosts is applied a few per choice (the
    newest first), so even the oldest of many is seen within a handful of choices."""
    fleet = view(**{f"h{i:02d}": summary(1000 + 10 * i) for i in range(40)})
    fleet.offer("h39", body(0, gen=2))  # the oldest news: the last to be caught up
    for i in range(1, 39):
        fleet.offer(f"h{i:02d}", body(1000 + 10 * i, gen=2))  # no change in the order
    pending, choices = 39, 0
    while pending:
        pending -= min(pending, NEWS_PER_CHOICE + pending // NEWS_SHARE_PER_CHOICE)
        choices += 1
    seen = [window(fleet)[0] for _ in range(choices)]
    assert seen == ["h00"] * (choices - 1) + ["h39"] and choices <= 12


def test_every_strategy_sees_the_news_of_what_it_returns() -> None:
    for strategy in ("best_fit", "random", "round_robin", "consistent_hash", "least_cpu"):
        fleet = view(a=summary(1000), b=summary(2000))
        fleet.offer("a", body(6000, gen=2))
        fleet.offer("b", body(7500, gen=2))
        found = fleet.window(strategy, Resources(1000), labels={}, stale_after=60, count=2)
        assert found and all(c.load.cpu == {"a": 6000, "b": 7500}[c.name] for c in found)


def test_only_summaries_newer_than_the_views_are_news() -> None:
    fleet = view(a=summary(1000, gen=5))
    assert not fleet.offer("a", body(2000, gen=5))  # known already (the scheduler's own)
    assert fleet.offer("a", body(3000, gen=6)) and fleet.offer("b", body(0, gen=1))
    assert fleet.offer("a", b"not ours")  # (counted as a problem when decoded)
    fleet.catch_up()
    assert fleet.hosts["a"].load.cpu == 1000 and fleet.problems == 1


def test_news_of_a_discarded_or_cleared_host_is_dropped() -> None:
    fleet = view(a=summary(1000), b=summary(2000))
    fleet.offer("a", body(0, gen=2))
    fleet.discard("a")
    assert window(fleet) == ["b"]
    fleet.offer("b", body(0, gen=3))
    fleet.clear()
    fleet.catch_up()
    assert fleet.hosts == {}


def test_a_published_summary_with_endless_numbers_is_a_bad_value_not_a_crash() -> None:
    """int() refuses thousands of digits with a plain ValueError: foreign news in the view must
    still be only ignored."""
    good = encode_summary(summary(1000)).encode()
    for huge in (good.replace(b'"used":[1000', b'"used":[' + b"9" * 5000),
                 good.replace(b'"gen":1', b'"gen":' + b"9" * 5000)):  # fmt: skip
        with pytest.raises(BadValue):
            decode_summary(huge)
        fleet = view()
        fleet.apply_body("a", huge)
        assert fleet.problems == 1 and "a" not in fleet.hosts
    assert summary_generation(b'{"gen":' + b"9" * 5000 + b',"at":1}') is None


def test_body_with_a_known_generation_is_not_decoded() -> None:
    fleet = view(a=summary(1000, gen=5))
    fleet.apply_body("a", b'{"gen":5,"but":"not json at all')
    fleet.apply_body("a", b'{"gen":6, broken')
    assert fleet.problems == 1 and fleet.hosts["a"].generation == 5


summaries = st.builds(
    Summary,
    generation=st.integers(0, 2**53),
    collected_at=st.integers(0, 4 * 10**15).map(lambda us: us / 1e6),
    limit=st.builds(Resources, *[st.integers(0, 2**53)] * 4),
    used=st.builds(Resources, *[st.integers(0, 2**53)] * 4),
    reserved=st.builds(Resources, *[st.integers(0, 2**53)] * 4),
    instances=st.integers(0, 10**6),
    labels=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
)


def state_of(s: Summary) -> list[object]:
    """A summary as the scripts return it (lua/lib.lua)."""
    labels = json.dumps(s.labels, separators=(",", ":")).encode() if s.labels else b"{}"
    return [s.generation, b"%.6f" % s.collected_at, *astuple(s.limit), *astuple(s.used),
            *astuple(s.reserved), s.instances, labels]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(summaries)
def test_a_summary_reads_back_as_written_in_both_forms(s: Summary) -> None:
    """A script's array and the JSON published from it both read back as the same summary."""
    from_script = summary_from_state(state_of(s))
    assert from_script == s
    published = encode_summary(from_script)
    assert decode_summary(published) == s
    assert summary_generation(published.encode()) == s.generation


@pytest.mark.parametrize(
    "change",
    [
        lambda st: st[:-1],  # too short
        lambda st: [*st[:3], -1, *st[4:]],  # a negative count
        lambda st: [*st[:3], b"7", *st[4:]],  # a count as text
        lambda st: [st[0], b"soon", *st[2:]],  # a time that is not a number
        lambda st: [*st[:-1], b"{"],  # labels that do not parse
        lambda st: [*st[:-1], b'{"zone":1}'],  # a label that is not text
        lambda st: [*st[:-1], 7],  # labels that are not text at all
    ],
)
def test_a_script_summary_that_is_not_ours_is_a_bad_value(change: Any) -> None:
    good = state_of(summary(1000))
    assert summary_from_state(good) == summary(1000)
    with pytest.raises(BadValue):
        summary_from_state(change(good))
