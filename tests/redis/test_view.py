"""Running sums, the expiry queue and the fleet view, against a real redis-server."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostsched.codec import decode_summary, encode_actual
from hostsched.collect import collect
from hostsched.model import Overcommit, Resources
from hostsched.replies import Published
from hostsched.scheduler import Scheduler
from hostsched.store import Store
from tests.redis.test_scheduler import cpu, fleet_config, static
from tests.redis.test_store import HOST, G, commands_run, put_host, reservations, reserve


def sums(store: Store, host: str = HOST) -> Resources:
    raw = store.client.hmget(store.keys.reserved(host), "cpu", "memory", "disk", "gpu")
    return Resources(*(int(v or 0) for v in raw))


def entries_total(store: Store, host: str = HOST) -> Resources:
    total = Resources()
    for value in store.client.hvals(store.keys.scheduled(host)):
        entry = json.loads(value)
        total = total + Resources(entry["cpu"], entry["memory"], entry["disk"], entry["gpu"])
    return total


def test_sums_follow_reserve_release_expiry_and_reconciliation(store: Store) -> None:
    put_host(store, capacity=Resources(64_000, 64 * G, 1000 * G, 2))
    reserve(store, ("a", Resources(1000, G)), ("b", Resources(2000, 2 * G, 5 * G, 1)))
    assert sums(store) == entries_total(store) == Resources(3000, 3 * G, 5 * G, 1)
    assert store.release({HOST: ["a"]}) == {HOST: ("a",)}
    assert sums(store) == entries_total(store) == Resources(2000, 2 * G, 5 * G, 1)
    reserve(store, ("short", Resources(500)), ttl=0.05)
    time.sleep(0.06)
    outcome = reserve(store, ("c", Resources(1000)), ttl=0.05)  # prunes b and short first
    assert outcome.status == "ok" and outcome.reserved == Resources(1000)
    assert sums(store) == entries_total(store) == Resources(1000)
    put_host(store, capacity=Resources(64_000, 64 * G, 1000 * G, 2), names=("c",))
    assert sums(store) == entries_total(store) == Resources()


def queue(store: Store) -> list[tuple[float, str]]:
    """The expiry queue as (time, id), oldest first."""
    elements = store.client.lrange(store.keys.queue(HOST), 0, -1)
    return [(float(t), rid.decode()) for t, rid in (e.split(b" ", 1) for e in elements)]


def age_queue_head(store: Store, seconds: float) -> None:
    t, rid = queue(store)[0]
    store.client.lset(store.keys.queue(HOST), 0, f"{t - seconds:.6f} {rid}")


def test_the_queue_passes_over_released_ids_and_never_expires_a_newer_entry(
    store: Store,
) -> None:
    put_host(store)
    reserve(store, ("x", Resources(1000)), ("y", Resources(100)), ("keep", Resources(10)))
    assert store.release({HOST: ["x", "y"]}) == {HOST: ("x", "y")}
    reserve(store, ("x", Resources(2000)))  # the same id again, a newer entry
    assert [rid for _, rid in queue(store)] == ["x", "y", "keep", "x"]  # released ones stay
    age_queue_head(store, 600)  # the first x's element is old; the entry x now is not
    outcome = reserve(store, ("z", Resources(1)), ttl=300)
    assert outcome.status == "ok" and outcome.reserved == Resources(2011)
    assert sums(store) == entries_total(store) == Resources(2011)
    assert [rid for _, rid in queue(store)] == ["y", "keep", "x", "z"]  # the head passed over


def test_a_lost_or_foreign_queue_is_rebuilt_or_passed_over(store: Store) -> None:
    put_host(store)
    reserve(store, ("a", Resources(1)))
    reserve(store, ("b", Resources(2)))
    store.client.delete(store.keys.queue(HOST))  # lost: rebuilt from the entries, in order
    assert reserve(store, ("c", Resources(4))).reserved == Resources(7)
    assert [rid for _, rid in queue(store)] == ["a", "b", "c"]
    times = [t for t, _ in queue(store)]
    assert times == sorted(times)
    for junk in ("not ours", "12 x y", "nan"):  # elements that do not parse, at the head
        store.client.lpush(store.keys.queue(HOST), junk)
        assert reserve(store, (junk.split()[0], Resources(8)), ttl=300).status == "ok"
    assert [rid for _, rid in queue(store)] == ["a", "b", "c", "not", "12", "nan"]
    assert sums(store) == entries_total(store) == Resources(31)
    store.client.lset(store.keys.queue(HOST), 0, "junk")  # a's element lost: rebuilt
    assert reserve(store, ("e", Resources(16))).reserved == Resources(47)
    assert [rid for _, rid in queue(store)] == ["a", "b", "c", "not", "12", "nan", "e"]


def test_instances_are_looked_up_in_their_set_not_decoded(store: Store) -> None:
    """A reserve decodes only the record's head and asks the names set about its ids: its cost
    does not grow with the instances on the host."""
    names = tuple(f"ci-runner-{i:04d}" for i in range(3000))
    put_host(store, capacity=Resources(10**6, 10**15, 10**15), names=names)
    assert store.client.scard(store.keys.names(HOST)) == 3000
    store.client.config_resetstat()
    outcome = reserve(store, ("ci-runner-0042", Resources(1000)), ("new", Resources(1000)))
    assert outcome.status == "ok" and outcome.existing == ("ci-runner-0042",)
    assert outcome.placed == ("new",) and outcome.reserved == Resources(1000)
    assert commands_run(store.client)["sismember"] == 2
    # A record written before the set was kept (no set): its own list still counts.
    store.client.delete(store.keys.names(HOST))
    assert reserve(store, ("ci-runner-2999", Resources(1))).existing == ("ci-runner-2999",)
    # A record laid out otherwise (names first) is read whole, and still right.
    raw = json.loads(store.client.get(store.keys.resource(HOST)))
    store.client.set(store.keys.resource(HOST), json.dumps({"names": raw.pop("names"), **raw}))
    assert reserve(store, ("ci-runner-0007", Resources(1))).existing == ("ci-runner-0007",)
    assert reserve(store, ("other", Resources(1))).placed == ("other",)


def test_ids_drawn_by_the_scheduler_are_not_looked_up_among_the_instances(store: Store) -> None:
    """Ids the scheduler drew just now cannot be instances yet: their reserve skips the names
    set, one key fewer for a placement to touch (on a large fleet, a key out of the caches)."""
    put_host(store, capacity=Resources(10**6, 10**15, 10**15), names=("vm-1",))
    store.client.config_resetstat()
    assert reserve(store, ("vm-2", Resources(1)), new_ids=True).placed == ("vm-2",)
    assert "sismember" not in commands_run(store.client)
    assert "type" not in commands_run(store.client)
    # Given ids are looked up, as before.
    assert reserve(store, ("vm-1", Resources(1))).existing == ("vm-1",)
    assert commands_run(store.client)["sismember"] == 1


def test_the_sums_and_queue_have_no_ttl_and_go_with_the_last_entry(store: Store) -> None:
    """Only the entries' hash has a TTL; the first call to find no entry (here a cleanup)
    deletes the sums and the queue."""
    put_host(store)
    reserve(store, ("a", Resources(1000)), ttl=60)
    assert 0 < store.client.pttl(store.keys.scheduled(HOST)) <= 60_000
    assert store.client.pttl(store.keys.reserved(HOST)) == -1
    assert store.client.pttl(store.keys.queue(HOST)) == -1
    store.client.delete(store.keys.scheduled(HOST))  # as its TTL does once every entry is old
    assert store.client.exists(store.keys.reserved(HOST), store.keys.queue(HOST)) == 2
    store.cleanup([HOST], reservation_ttl=60)
    assert not store.client.exists(store.keys.reserved(HOST), store.keys.queue(HOST))
    assert sums(store) == Resources() and reserve(store, ("b", Resources(4000))).status == "ok"


def test_a_record_with_a_long_head_is_read_whole(store: Store) -> None:
    """Labels of more than the first read (4 KiB) put the names out of its reach: the record is
    then read and decoded whole, and reserve still answers right."""
    labels = {f"label-{i:03d}": "x" * 40 for i in range(120)}
    body = encode_actual(
        capacity=Resources(10**6, 10**15, 10**15), used=Resources(), overcommit=Overcommit(),
        labels=labels, names=("vm-1", "vm-2"),
    )  # fmt: skip
    assert body.index('"names"') > 4096
    grant = store.acquire_locks([HOST], ttl=30)[HOST]
    written = store.write_actual({HOST: (grant, body, ("vm-1", "vm-2"))}, resource_ttl=60)
    assert written[HOST].status == "ok"
    outcome = reserve(store, ("vm-2", Resources(1)), ("new", Resources(1)))
    assert outcome.existing == ("vm-2",) and outcome.placed == ("new",)
    assert outcome.published and dict(outcome.published.summary.labels) == labels


def test_a_names_key_that_is_not_a_set_makes_the_host_corrupt(store: Store) -> None:
    put_host(store, names=("vm-1",))
    store.client.delete(store.keys.names(HOST))
    store.client.set(store.keys.names(HOST), "not a set")
    assert reserve(store, ("a", Resources(1))).status == "corrupt"
    with pytest.raises(AssertionError, match="foreign"):
        put_host(store, names=("vm-1",))  # a collect does not write over it either
    assert store.client.get(store.keys.names(HOST)) == b"not a set"


def test_reserve_does_not_read_every_reservation(store: Store) -> None:
    put_host(store, capacity=Resources(10**9, 10**15, 10**15))
    for i in range(200):
        reserve(store, (f"r{i}", Resources(1000, G)))
    store.client.config_resetstat()
    for i in range(20):
        assert reserve(store, (f"more{i}", Resources(1000, G))).status == "ok"
    used = commands_run(store.client)
    assert "hgetall" not in used and "hvals" not in used and "hkeys" not in used
    assert used["evalsha"] == 20


def test_sums_are_rebuilt_when_entries_change_behind_our_back(store: Store) -> None:
    put_host(store)
    reserve(store, ("a", Resources(1000, G)))
    rogue = {"cpu": 3000, "memory": 0, "disk": 0, "gpu": 0, "t": store.ping()}
    store.client.hset(store.keys.scheduled(HOST), "rogue", json.dumps(rogue))
    outcome = reserve(store, ("b", Resources(1000)))  # 4000 = 1000 + 3000: no room
    assert outcome.status == "full" and outcome.reserved == Resources(4000, G)
    assert sums(store) == entries_total(store) == Resources(4000, G)
    store.client.delete(store.keys.reserved(HOST))  # a lost sums key is rebuilt too
    assert reserve(store, ("c", Resources(0, G))).reserved == Resources(4000, 2 * G)


def test_foreign_sums_or_index_make_the_host_corrupt(store: Store) -> None:
    put_host(store)
    store.client.set(store.keys.queue(HOST), "not a list")
    outcome = reserve(store, ("a", Resources(1000)))
    assert outcome.status == "corrupt" and store.client.get(store.keys.queue(HOST))


def test_every_change_bumps_the_generation_and_returns_the_summary(store: Store) -> None:
    put_host(store)
    first = reserve(store, ("a", Resources(1000)))
    second = reserve(store, ("b", Resources(1000)))
    again = reserve(store, ("b", Resources(1000)))  # idempotent: nothing changed
    assert first.published and second.published and again.published
    generations = [o.published.summary.generation for o in (first, second, again)]
    assert generations[0] < generations[1] == generations[2]
    summary = second.published.summary
    assert summary.limit == Resources(4000, 8 * G, 100 * G, 1)
    assert summary.reserved == Resources(2000) and summary.labels == {"zone": "a"}
    assert decode_summary(second.published.body) == summary


def publish(store: Store, *items: Published, read: str = "-") -> object:
    trip = store.trip()
    changes = store.queue_view(trip, read=read, publish=items)
    trip.run()
    return changes.get()


def test_view_keeps_the_newest_generation(store: Store) -> None:
    put_host(store)
    older = reserve(store, ("a", Resources(1000))).published
    newer = reserve(store, ("b", Resources(1000))).published
    assert older and newer
    publish(store, newer)
    publish(store, older)  # arrives late: ignored
    stored = store.client.hget(store.keys.fleet_summary, HOST)
    assert stored is not None and decode_summary(stored) == newer.summary
    store.client.delete(store.keys.generation(HOST))  # a lost counter starts above the old
    renewed = reserve(store, ("c", Resources(1000))).published
    assert renewed and renewed.summary.generation > newer.summary.generation
    publish(store, renewed)
    stored = store.client.hget(store.keys.fleet_summary, HOST)
    assert stored is not None and decode_summary(stored) == renewed.summary


def test_view_reads_changes_since_a_sequence_number_and_the_ends(store: Store) -> None:
    for name in ("h0", "h1", "h2", "h3"):
        put_host(store, name)  # collect publishes each host
    trip = store.trip()
    everything = store.queue_view(trip, read="all")
    trip.run()
    assert {h for h, _ in everything.get().entries} == {"h0", "h1", "h2", "h3"}
    seen = everything.get().sequence
    busy = store.reserve({"h2": [("x", Resources(3000))]}, reservation_ttl=60, stale_after=60)
    summary = busy["h2"].published
    assert summary is not None
    publish(store, summary)
    trip = store.trip()
    since = store.queue_view(trip, read=f"since:{seen}")
    ends = store.queue_view(trip, read="ends:1")
    trip.run()
    assert [h for h, _ in since.get().entries] == ["h2"]
    least, most = [h for h, _ in ends.get().entries]
    assert least in {"h0", "h1", "h3"} and most == "h2"
    assert since.get().hosts == 4


def test_a_publish_reads_first_and_keeps_the_newest_of_each_host(store: Store) -> None:
    store.publishes_in_scripts = False  # the summaries are passed on, as in a cluster
    for name in ("h0", "h1"):
        put_host(store, name)
    seen = publish(store, read="-").sequence  # type: ignore[attr-defined]
    one = store.reserve({"h0": [("a", Resources(1000))]}, reservation_ttl=60, stale_after=60)
    two = store.reserve({"h0": [("b", Resources(1000))]}, reservation_ttl=60, stale_after=60)
    older, newer = one["h0"].published, two["h0"].published
    assert older and newer
    other = store.reserve({"h1": [("c", Resources(1000))]}, reservation_ttl=60, stale_after=60)
    assert other["h1"].published
    publish(store, other["h1"].published)  # another scheduler's news
    changes = publish(store, newer, older, read=f"since:{seen}")  # the newest given wins
    assert [h for h, _ in changes.entries] == ["h1"]  # type: ignore[attr-defined]
    assert changes.sequence == seen + 2  # type: ignore[attr-defined]
    stored = store.client.hget(store.keys.fleet_summary, "h0")
    assert stored is not None and decode_summary(stored) == newer.summary
    # The view is reset behind the back of a scheduler that last read sequence number 3.
    # Another publish takes number 1 and its own three take 2-4: past 3, yet it must read all.
    mine = [newer]
    for name in ("h2", "h3"):
        put_host(store, name)
        done = store.reserve({name: [("d", Resources(1000))]}, reservation_ttl=60, stale_after=60)
        assert done[name].published
        mine.append(done[name].published)
    store.client.delete(*store.keys.fleet_view)
    publish(store, other["h1"].published)
    changes = publish(store, *mine, read="since:3")
    assert [h for h, _ in changes.entries] == ["h1"]  # type: ignore[attr-defined]
    assert changes.sequence == 4  # type: ignore[attr-defined]


@pytest.mark.parametrize("in_scripts", [True, False], ids=["reserve.lua", "view.lua"])
def test_sequence_numbers_go_on_from_the_change_log_when_the_counter_is_lost(
    store: Store, in_scripts: bool
) -> None:
    """A lost counter never gives a number again: a reader past it would miss the change."""
    store.publishes_in_scripts = in_scripts
    for name in ("h0", "h1", "h2"):
        put_host(store, name)  # collect publishes each host: numbers 1-3
    assert store.client.get(store.keys.fleet_sequence) == b"3"
    store.client.delete(store.keys.fleet_sequence)
    outcome = store.reserve({"h1": [("a", Resources(1000))]}, reservation_ttl=60, stale_after=60)
    assert outcome["h1"].published
    if not in_scripts:
        publish(store, outcome["h1"].published)
    assert store.client.zscore(store.keys.fleet_changes, "h1") == 4
    assert store.client.get(store.keys.fleet_sequence) == b"4"
    trip = store.trip()
    since = store.queue_view(trip, read="since:3")
    trip.run()
    assert [h for h, _ in since.get().entries] == ["h1"] and since.get().sequence == 4


@pytest.mark.parametrize("which", [0, 1, 2, 3], ids=["summaries", "changes", "load", "sequence"])
def test_foreign_view_keys_are_ignored_and_left_alone(store: Store, which: int) -> None:
    put_host(store)
    foreign = store.keys.fleet_view[which]
    store.client.delete(foreign)
    store.client.set(foreign, "mine")
    outcome = reserve(store, ("a", Resources(1000)))
    assert outcome.status == "ok" and outcome.published
    assert outcome.sequence == -1  # reserve.lua did not publish, and the reservation stands
    assert reservations(store).keys() == {"a"}
    changes = publish(store, outcome.published, read="all")
    assert changes.sequence == -1 and not changes.entries  # type: ignore[attr-defined]
    assert store.client.get(foreign) == b"mine"


def test_schedule_works_whatever_the_view_says(store: Store) -> None:
    """The view is a hint: lost, foreign or wrong, it never blocks a placement that fits."""
    config = fleet_config(static("hv-a", 8), static("hv-b", 8))
    collect(config, store)
    store.client.delete(store.keys.fleet_summary, store.keys.fleet_load)  # lost
    assert Scheduler(config, store).schedule(cpu(8)).placements[0].host in {"hv-a", "hv-b"}
    Scheduler(config, store).schedule(cpu(8))  # both full now, and the view says so
    stale = store.client.hgetall(store.keys.fleet_summary)
    for host in ("hv-a", "hv-b"):
        store.release({host: ids_on(store, host)})
    store.client.hset(store.keys.fleet_summary, mapping=stale)  # as if the news were lost
    store.client.hset(store.keys.fleet_summary, "hv-b", b"{not ours")
    assert Scheduler(config, store).schedule(cpu(8)).placements  # the truth is read instead
    store.client.delete(store.keys.fleet_changes)
    store.client.set(store.keys.fleet_changes, "foreign")
    assert Scheduler(config, store, long_lived=True).schedule(cpu(1)).placements


def test_one_shot_reads_only_the_ends_of_a_large_fleet(store: Store) -> None:
    config = fleet_config(*(static(f"hv-{i:03d}", 8) for i in range(200)))
    collect(config, store)
    scheduler = Scheduler(config, store)
    scheduler.schedule(cpu(1))
    assert len(scheduler.view.hosts) == 2 * (Scheduler.ENDS + 2) < 200  # least and most loaded
    long_lived = Scheduler(config, store, long_lived=True)
    long_lived.schedule(cpu(1))
    assert len(long_lived.view.hosts) == 200


def ids_on(store: Store, *hosts: str) -> list[str]:
    return [k.decode() for h in hosts for k in store.client.hkeys(store.keys.scheduled(h))]


def test_a_retry_finds_its_host_outside_a_one_shot_view(store: Store) -> None:
    """The host of a retried id may be in the middle of the load order, which a one-shot
    scheduler does not read: the placement index sends the retry there all the same."""
    hosts = [static(f"hv-{i:03d}", 16, used_cpu=i * 15 // 200) for i in range(200)]
    config = fleet_config(*hosts)
    collect(config, store)
    store.reserve({"hv-100": [("x", Resources(1000))]}, reservation_ttl=60, stale_after=60)
    store.client.set(store.keys.placement("x"), "hv-100")  # as schedule --id x left it
    probe = Scheduler(config, store)
    probe.schedule(cpu(1), dry_run=True)
    assert "hv-100" not in probe.view.hosts  # the case this test is about
    again = Scheduler(config, store).schedule(cpu(1), ids=["x"]).placements[0]
    assert again.existing and again.host == "hv-100"
    assert ids_on(store, *(h.name for h in hosts)) == ["x"]


def test_large_reads_and_prunes_are_chunked(store: Store) -> None:
    """Lua's unpack takes a few thousand values: 9,000 hosts or entries at once still work."""
    put_host(store)
    outcome = reserve(store, ("a", Resources(1000)))
    assert outcome.published
    many = [Published(f"h{i:05d}", outcome.published.summary) for i in range(9000)]
    publish(store, *many)
    trip = store.trip()
    since = store.queue_view(trip, read="since:0")
    trip.run()
    assert len(since.get().entries) == 9001  # and HOST's own, published by its collect
    old = json.dumps({"cpu": 1, "memory": 0, "disk": 0, "gpu": 0, "t": store.ping() - 600})
    store.client.hset(store.keys.scheduled(HOST), mapping={f"old-{i}": old for i in range(9000)})
    store.client.hset(store.keys.scheduled(HOST), "bad", "{")  # pruned by reading them all
    cleaned = store.cleanup([HOST], reservation_ttl=60)[HOST]
    assert (cleaned.removed, cleaned.remaining, cleaned.corrupt) == (9000, 2, 1)  # "a", "bad"


Op = tuple[str, int]
operations = st.lists(
    st.tuples(st.sampled_from(["reserve", "release", "again", "age", "cleanup", "lose"]),
              st.integers(1, 150)),
    min_size=1, max_size=25,
)  # fmt: skip


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(operations)
def test_sums_and_queue_follow_any_sequence_of_operations(store: Store, ops: list[Op]) -> None:
    """Against a model of the live reservations: reserve, release, reserve a released id again,
    age the oldest (then expire them), clean up, lose the queue; after each step the entries
    are the model's, the sums are the entries', and every live entry is in the queue."""
    store.client.flushall()
    put_host(store, capacity=Resources(10**9, 10**15, 10**15))
    live: dict[str, int] = {}
    released: list[str] = []
    made = 0
    for op, n in ops:
        if op == "reserve" or (op == "again" and not released):
            batch = [(f"r{made + i}", Resources(1 + (made + i) % 7)) for i in range(n)]
            made += n
            assert reserve(store, *batch, ttl=3600).status == "ok"
            live.update((rid, amount.cpu) for rid, amount in batch)
        elif op == "again":
            rid = released.pop(n % len(released))
            assert reserve(store, (rid, Resources(3)), ttl=3600).placed == (rid,)
            live[rid] = 3
        elif op == "release":
            gone = sorted(live)[: n % 5 + 1]
            store.release({HOST: [*gone, "never-made"]})
            for rid in gone:
                del live[rid]
            released += gone
        elif op == "age":  # the n oldest queue elements (and their entries) by 1,000 s
            aged = []
            for i, (t, rid) in enumerate(queue(store)[:n]):
                store.client.lset(store.keys.queue(HOST), i, f"{t - 1000:.6f} {rid}")
                entry = reservations(store).get(rid)
                if entry is not None and abs(entry["t"] - t) < 1e-6:
                    entry["t"] -= 1000
                    store.client.hset(store.keys.scheduled(HOST), rid, json.dumps(entry))
                    aged.append(rid)
            outcome = reserve(store, (f"r{made}", Resources(1)), ttl=500)
            live[f"r{made}"] = 1
            made += 1
            assert outcome.status == "ok", outcome.reason
            for rid in aged:
                live.pop(rid, None)
        elif op == "cleanup":
            store.cleanup([HOST], reservation_ttl=3600)
        elif op == "lose":
            store.client.delete(store.keys.queue(HOST))
            assert reserve(store, (f"r{made}", Resources(1)), ttl=3600).status == "ok"
            live[f"r{made}"] = 1
            made += 1
        entries = {rid: int(e["cpu"]) for rid, e in reservations(store).items()}
        assert entries == live, op
        assert sums(store) == entries_total(store) == Resources(sum(live.values()))
        if live:
            assert int(store.client.hget(store.keys.reserved(HOST), "n") or -1) == len(live)
            assert set(live) <= {rid for _, rid in queue(store)}


amounts = st.integers(0, 10**15)
label_text = st.text(min_size=1, max_size=8)  # quotes, slashes and non-ASCII included


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(capacity=st.tuples(st.integers(1, 10**9), amounts, amounts, st.integers(0, 64)),
       used=st.tuples(st.integers(0, 10**9), amounts, amounts),
       labels=st.dictionaries(label_text, label_text, max_size=3))  # fmt: skip
def test_reserve_publishes_what_the_scheduler_would_pass_on(
    store: Store,
    capacity: tuple[int, int, int, int],
    used: tuple[int, int, int],
    labels: dict[str, str],
) -> None:
    """On one server reserve.lua publishes the host itself: the same summary, load and order
    of changes as view.lua would from the scheduler (the path a cluster takes)."""
    store.client.flushall()
    body = encode_actual(
        capacity=Resources(*capacity), used=Resources(*used), overcommit=Overcommit(),
        labels=labels, names=(),
    )  # fmt: skip
    grant = store.acquire_locks([HOST], ttl=30)[HOST]
    assert store.write_actual({HOST: (grant, body, ())}, resource_ttl=3600)[HOST].status == "ok"
    before = store.client.get(store.keys.fleet_sequence)
    outcome = reserve(store, ("a", Resources(0)), ("b", Resources(1)))
    assert before is not None
    assert outcome.published is not None and outcome.sequence == int(before) + 1
    stored = store.client.hget(store.keys.fleet_summary, HOST)
    assert stored is not None
    assert stored.startswith(b'{"gen":%d,' % outcome.published.summary.generation)
    assert decode_summary(stored) == outcome.published.summary
    assert store.client.zscore(store.keys.fleet_changes, HOST) == outcome.sequence
    load = store.client.zscore(store.keys.fleet_load, HOST)
    assert load == pytest.approx(outcome.published.load, rel=1e-9, abs=1e-6)
