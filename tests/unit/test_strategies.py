"""Strategies are pure: properties over random fleets, and the choice each one should make."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostsched.codec import Summary
from hostsched.model import Resources
from hostsched.replies import Published
from hostsched.strategies import (
    DEFAULT_WEIGHTS,
    REQUEST_FREE_SCORES,
    SCORES,
    STRATEGY_NAMES,
    Candidate,
    Context,
    rank,
    utilisation,
)

G = 1 << 30


def host(
    name: str,
    cpu: int,
    used_cpu: int,
    mem: int = 64 * G,
    used_mem: int = 0,
    instances: int = 0,
    gpu: int = 0,
) -> Candidate:
    return Candidate(
        name, Resources(cpu, mem, 1000 * G, gpu), Resources(used_cpu, used_mem), instances
    )


candidates = st.lists(
    st.builds(
        Candidate,
        name=st.text("abcdefgh", min_size=1, max_size=6),
        limit=st.builds(
            Resources,
            st.integers(0, 10**5),
            st.integers(0, 10**12),
            st.integers(0, 10**12),
            st.integers(0, 8),
        ),
        load=st.builds(
            Resources,
            st.integers(0, 10**5),
            st.integers(0, 10**12),
            st.integers(0, 10**12),
            st.integers(0, 8),
        ),
        instances=st.integers(0, 100),
    ),
    max_size=12,
    unique_by=lambda c: c.name,
)
requests = st.builds(
    Resources,
    st.integers(1, 10**5),
    st.integers(0, 10**12),
    st.integers(0, 10**12),
    st.integers(0, 4),
)


@given(
    strategy=st.sampled_from(STRATEGY_NAMES),
    hosts=candidates,
    request=requests,
    seed=st.integers(),
    request_id=st.text(max_size=8),
)
def test_never_ranks_a_host_that_does_not_fit(
    strategy: str, hosts: list[Candidate], request: Resources, seed: int, request_id: str
) -> None:
    ctx = Context(request=request, request_id=request_id, rng=random.Random(seed))
    ranked = rank(strategy, hosts, ctx)
    fitting = {h.name for h in hosts if request.fits_in(h.limit - h.load)}
    assert {h.name for h in ranked} == fitting
    assert len(ranked) == len(fitting)


def test_least_loaded_picks_lowest_weighted_utilisation() -> None:
    hosts = [host("busy", 16000, 12000), host("idle", 16000, 1000), host("mid", 16000, 8000)]
    ranked = rank("least_loaded", hosts, Context(Resources(1000)))
    assert [h.name for h in ranked] == ["idle", "mid", "busy"]


def test_least_loaded_weights_memory() -> None:
    cpu_heavy = host("cpu-heavy", 16000, 15000, used_mem=0)
    mem_heavy = host("mem-heavy", 16000, 0, used_mem=60 * G)
    weights = (0.1, 0.8, 0.1)
    assert utilisation(mem_heavy, weights) > utilisation(cpu_heavy, weights)
    ranked = rank("least_loaded", [mem_heavy, cpu_heavy], Context(Resources(500), weights=weights))
    assert ranked[0].name == "cpu-heavy"


def test_best_fit_packs_the_fullest_host() -> None:
    hosts = [host("roomy", 64000, 0), host("snug", 8000, 6000), host("half", 16000, 8000)]
    assert rank("best_fit", hosts, Context(Resources(2000)))[0].name == "snug"


def test_round_robin_rotates_after_cursor() -> None:
    hosts = [host(n, 8000, 0) for n in ("c", "a", "b")]
    assert [h.name for h in rank("round_robin", hosts, Context(Resources(1)))] == ["a", "b", "c"]
    assert [h.name for h in rank("round_robin", hosts, Context(Resources(1), cursor="b"))] == [
        "c",
        "a",
        "b",
    ]
    assert rank("round_robin", hosts, Context(Resources(1), cursor="zzz"))[0].name == "a"


def test_least_cpu_breaks_ties_by_instances_then_randomly() -> None:
    hosts = [
        host("x", 8000, 4000, instances=5),
        host("y", 8000, 4000, instances=2),
        host("z", 8000, 6000, instances=0),
    ]
    assert [h.name for h in rank("least_cpu", hosts, Context(Resources(1)))] == ["y", "x", "z"]
    twins = [host("p", 8000, 0), host("q", 8000, 0)]
    firsts = {
        rank("least_cpu", twins, Context(Resources(1), rng=random.Random(s)))[0].name
        for s in range(40)
    }
    assert firsts == {"p", "q"}


def test_random_is_uniform_enough() -> None:
    hosts = [host(n, 8000, 0) for n in "abcd"]
    rng = random.Random(7)
    picks = [rank("random", hosts, Context(Resources(1), rng=rng))[0].name for _ in range(4000)]
    for name in "abcd":
        assert 800 < picks.count(name) < 1200


def test_consistent_hash_is_stable_and_moves_only_when_its_host_leaves() -> None:
    hosts = [host(f"h{i}", 8000, 0) for i in range(8)]
    chosen = {
        rid: rank("consistent_hash", hosts, Context(Resources(1), request_id=rid))[0].name
        for rid in (f"web-{i}" for i in range(200))
    }
    assert len(set(chosen.values())) >= 6  # spread over the fleet
    survivors = [h for h in hosts if h.name != "h3"]
    for rid, before in chosen.items():
        after = rank("consistent_hash", survivors, Context(Resources(1), request_id=rid))[0].name
        assert after == before or before == "h3"


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_empty_fleet_ranks_nothing(strategy: str) -> None:
    assert rank(strategy, [], Context(Resources(1))) == []


@given(
    st.sampled_from(sorted(REQUEST_FREE_SCORES)),
    st.integers(1, 64_000), st.integers(0, 64_000), st.integers(0, 50),
    st.integers(0, 64_000), st.integers(0, 64 * G),
)  # fmt: skip
def test_request_free_scores_do_not_depend_on_the_request(
    strategy: str, cpu: int, used: int, instances: int, want_cpu: int, want_mem: int
) -> None:
    candidate = host("h", cpu, used, instances=instances)
    score = SCORES[strategy]
    assert score(candidate, Context(request=Resources())) == score(
        candidate, Context(request=Resources(want_cpu, want_mem))
    )


amounts = st.builds(Resources, *[st.integers(0, 2**50)] * 4)


@given(amounts, amounts, amounts)
def test_a_published_hosts_load_is_its_utilisation_by_the_default_weights(
    limit: Resources, used: Resources, reserved: Resources
) -> None:
    """The view's load index orders hosts as least_loaded does with the default weights."""
    summary = Summary(1, 0.0, limit, used, reserved, 0, {})
    held = Candidate("h", limit, used + reserved)
    assert Published("h", summary).load == utilisation(held, DEFAULT_WEIGHTS)
