"""Every Lua script and store operation against a real redis-server."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import redis

import hostsched.store
from hostsched.codec import BadValue, decode_actual, encode_actual
from hostsched.model import Overcommit, Resources
from hostsched.replies import LockGrant, ReserveOutcome, WriteOutcome
from hostsched.store import Store

G = 1 << 30
HOST = "hv-1"


def put_host(
    store: Store,
    name: str = HOST,
    *,
    capacity: Resources = Resources(4000, 8 * G, 100 * G, 1),
    used: Resources = Resources(),
    overcommit: Overcommit = Overcommit(),
    names: tuple[str, ...] = (),
) -> None:
    body = encode_actual(
        capacity=capacity, used=used, overcommit=overcommit, labels={"zone": "a"}, names=names
    )
    grant = store.acquire_locks([name], ttl=30)[name]
    assert grant.acquired
    outcome = store.write_actual({name: (grant, body, names)}, resource_ttl=3600)[name]
    store.release_locks({name: grant})
    assert outcome.status == "ok"


def reserve(
    store: Store,
    *items: tuple[str, Resources],
    ttl: float = 120,
    stale: float = 300,
    new_ids: bool = False,
) -> ReserveOutcome:
    batches = {HOST: list(items)}
    return store.reserve(batches, reservation_ttl=ttl, stale_after=stale, new_ids=new_ids)[HOST]


def reservations(store: Store, host: str = HOST) -> dict[str, dict[str, float]]:
    raw = store.client.hgetall(store.keys.scheduled(host))
    return {k.decode(): json.loads(v) for k, v in raw.items()}


def commands_run(client: redis.Redis) -> dict[str, int]:
    """Calls of each command since the server's stats were reset (INFO commandstats)."""
    return {
        name.removeprefix("cmdstat_"): stats["calls"]
        for name, stats in client.info("commandstats").items()
    }


@contextmanager
def round_trips() -> Iterator[list[int]]:
    """Count requests sent to the server (a pipeline is one)."""
    sent = [0]
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):  # type: ignore[no-untyped-def]
        sent[0] += 1
        return original(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        redis.connection.AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


def test_write_actual_stores_server_time_and_generation(store: Store) -> None:
    before = store.ping()
    put_host(store)
    actual = decode_actual(store.client.get(store.keys.resource(HOST)))
    assert before <= actual.collected_at <= store.ping()
    assert actual.capacity == Resources(4000, 8 * G, 100 * G, 1)
    first = int(store.client.get(store.keys.generation(HOST)) or 0)
    assert first > 1_700_000_000 * 10**6  # starts from the server's clock (µs)
    assert store.host_names()[0] == {HOST}
    assert 3500 < store.client.ttl(store.keys.resource(HOST)) <= 3600
    put_host(store)
    assert int(store.client.get(store.keys.generation(HOST)) or 0) == first + 1


def test_write_actual_is_fenced_by_lock_token(store: Store) -> None:
    grant = store.acquire_locks([HOST], ttl=30)[HOST]
    store.client.set(store.keys.lock(HOST), "someone-else")
    body = encode_actual(
        capacity=Resources(1000), used=Resources(), overcommit=Overcommit(), labels={}, names=()
    )
    outcome = store.write_actual({HOST: (grant, body, ())}, resource_ttl=60)[HOST]
    assert outcome.status == "lock_lost"
    assert store.client.get(store.keys.resource(HOST)) is None
    assert store.host_names()[0] == frozenset()


def test_older_reading_never_overwrites_newer(store: Store) -> None:
    old = store.acquire_locks([HOST], ttl=30)[HOST]  # reading starts now ...
    store.client.delete(store.keys.lock(HOST))  # ... its lock expires meanwhile
    put_host(store, capacity=Resources(8000))  # a newer reading is stored
    store.client.set(store.keys.lock(HOST), old.token)  # even holding the lock again
    body = encode_actual(
        capacity=Resources(1000), used=Resources(), overcommit=Overcommit(), labels={}, names=()
    )
    assert store.write_actual({HOST: (old, body, ())}, resource_ttl=60)[HOST].status == "newer"
    assert decode_actual(store.client.get(store.keys.resource(HOST))).capacity.cpu == 8000


def test_reserve_fits_exactly_then_refuses(store: Store) -> None:
    put_host(store, used=Resources(1000, 2 * G))
    ok = reserve(store, ("a", Resources(2000, 4 * G)), ("b", Resources(1000, 2 * G)))
    assert ok.status == "ok" and set(ok.placed) == {"a", "b"}
    assert ok.reserved == Resources(3000, 6 * G) and ok.limit == Resources(4000, 8 * G, 100 * G, 1)
    full = reserve(store, ("c", Resources(1)))
    assert full.status == "full" and full.placed == ()
    assert set(reservations(store)) == {"a", "b"}


def test_reserve_batch_is_all_or_nothing(store: Store) -> None:
    put_host(store)
    outcome = reserve(store, ("a", Resources(3000)), ("b", Resources(3000)))
    assert outcome.status == "full"
    assert reservations(store) == {}


def test_reserve_is_idempotent_by_id(store: Store) -> None:
    put_host(store)
    first = reserve(store, ("web-1", Resources(3000, G)))
    again = reserve(store, ("web-1", Resources(3000, G)))
    assert first.placed == ("web-1",) and again.existing == ("web-1",) and again.placed == ()
    assert again.reserved == Resources(3000, G)
    assert list(reservations(store)) == ["web-1"]


def test_reserve_uses_server_time_and_ttl(store: Store) -> None:
    put_host(store)
    before = store.ping()
    reserve(store, ("a", Resources(1000)))
    entry = reservations(store)["a"]
    assert before <= entry["t"] <= store.ping()
    assert entry == {"cpu": 1000, "memory": 0, "disk": 0, "gpu": 0, "t": entry["t"]}
    assert 0 < store.client.pttl(store.keys.scheduled(HOST)) <= 120_000


def test_expired_reservations_stop_counting(store: Store) -> None:
    put_host(store)
    assert reserve(store, ("old", Resources(4000)), ttl=0.05).status == "ok"
    time.sleep(0.1)
    outcome = reserve(store, ("new", Resources(4000)), ttl=0.05)
    assert outcome.status == "ok"
    assert list(reservations(store)) == ["new"]


def test_overcommit_applies_but_not_to_gpus(store: Store) -> None:
    put_host(store, capacity=Resources(4000, 8 * G, 0, 1), overcommit=Overcommit(cpu=2.0))
    assert reserve(store, ("a", Resources(8000))).status == "ok"
    assert reserve(store, ("b", Resources(1))).status == "full"
    store.client.delete(store.keys.scheduled(HOST))
    assert reserve(store, ("g1", Resources(0, 0, 0, 1))).status == "ok"
    assert reserve(store, ("g2", Resources(0, 0, 0, 1))).status == "full"


def test_reserve_refuses_stale_missing_and_instances(store: Store) -> None:
    assert reserve(store, ("a", Resources(1))).status == "missing"
    put_host(store, names=("web-1",))
    assert reserve(store, ("a", Resources(1)), stale=-1).status == "stale"
    already = reserve(store, ("web-1", Resources(1000)))
    assert already.existing == ("web-1",) and reservations(store) == {}


@pytest.mark.parametrize(
    "actual",
    [b"garbage{", b"[1,2]", b'{"v":2}', b'{"v":1,"collected_at":1}', b'{"v":1,"capacity":"x"}'],
)
def test_reserve_refuses_corrupt_actual(store: Store, actual: bytes) -> None:
    store.client.set(store.keys.resource(HOST), actual)
    outcome = reserve(store, ("a", Resources(1)))
    assert outcome.status == "corrupt"
    assert reservations(store) == {}


FRESH = b'{"v":1,"collected_at":9e9,"capacity":{"cpu":4000},"used":{},'


@pytest.mark.parametrize(
    "rest",
    [b'"labels":{"a":1}}', b'"labels":["a"]}', b'"labels":"a"}', b'"instances":-1}',
     b'"instances":1.5}', b'"instances":"2"}', b'"labels":{},"capacity":{"cpu":1e999}}'],
)  # fmt: skip
def test_reserve_refuses_actual_its_summary_could_not_carry(store: Store, rest: bytes) -> None:
    """Labels, instance counts or capacities that a scheduler could not read back from the
    host's summary make the host corrupt before anything is written."""
    store.client.set(store.keys.resource(HOST), FRESH + rest)
    assert reserve(store, ("a", Resources(1))).status == "corrupt"
    assert reservations(store) == {}
    store.client.set(store.keys.resource(HOST), FRESH + b'"labels":{"a":"b"},"instances":2}')
    outcome = reserve(store, ("a", Resources(1)))
    assert outcome.status == "ok" and outcome.published is not None
    assert outcome.published.summary.labels == {"a": "b"}


def test_a_summary_that_does_not_parse_leaves_the_placement_made(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_host(store)

    def unreadable(host: str, state: object) -> None:
        raise BadValue("summary counts are not counts")

    monkeypatch.setattr(hostsched.store, "published_reply", unreadable)
    outcome = reserve(store, ("a", Resources(1)))
    assert (outcome.status, outcome.placed, outcome.published) == ("ok", ("a",), None)
    assert list(reservations(store)) == ["a"]


def test_reserve_refuses_corrupt_reservations(store: Store) -> None:
    put_host(store)
    store.client.hset(store.keys.scheduled(HOST), "bad", "not json")
    assert reserve(store, ("a", Resources(1))).status == "corrupt"
    store.client.delete(store.keys.scheduled(HOST))
    store.client.rpush(store.keys.scheduled(HOST), "a list")
    assert reserve(store, ("a", Resources(1))).status == "corrupt"
    assert store.client.lrange(store.keys.scheduled(HOST), 0, -1) == [b"a list"]


def test_collect_reconciles_matching_reservation_only(store: Store) -> None:
    put_host(store)
    reserve(store, ("web-1", Resources(1000)), ("web-2", Resources(1000)))
    grant = store.acquire_locks([HOST], ttl=30)[HOST]
    body = encode_actual(
        capacity=Resources(4000, 8 * G),
        used=Resources(1000),
        overcommit=Overcommit(),
        labels={},
        names=["web-1"],
    )
    outcome = store.write_actual({HOST: (grant, body, ["web-1"])}, resource_ttl=60)[HOST]
    assert outcome.status == "ok" and outcome.dropped == ("web-1",)
    assert list(reservations(store)) == ["web-2"]


def test_release_drops_only_named(store: Store) -> None:
    put_host(store)
    reserve(store, ("a", Resources(1)), ("b", Resources(1)))
    assert store.release({HOST: ["a", "zzz"]}) == {HOST: ("a",)}
    assert list(reservations(store)) == ["b"]


def used_plus_reserved(store: Store, host: str = HOST) -> int:
    """CPU of the stored actual usage plus the live reservations' sums."""
    actual = decode_actual(store.client.get(store.keys.resource(host)))
    return actual.used.cpu + int(store.client.hget(store.keys.reserved(host), "cpu") or 0)


def collect_reading(store: Store, grant: LockGrant, used: int, names: list[str]) -> WriteOutcome:
    """The write of a collect that read ``used`` millicores and ``names`` under ``grant``."""
    body = encode_actual(capacity=Resources(4000, 8 * G, 100 * G, 1), used=Resources(used),
                         overcommit=Overcommit(), labels={}, names=names)  # fmt: skip
    return store.write_actual({HOST: (grant, body, names)}, resource_ttl=60)[HOST]


def release_during_collect(store: Store, *others: tuple[str, Resources]) -> LockGrant:
    """web-1 (3000m) and ``others`` reserved; a collect takes the lock and reads; web-1 is then
    released (reported released). Returns the collect's grant."""
    put_host(store)
    reserve(store, ("web-1", Resources(3000)), *others)
    grant = store.acquire_locks([HOST], ttl=30)[HOST]
    assert store.release({HOST: ["web-1"]}) == {HOST: ("web-1",)}
    return grant


def test_a_release_during_a_collect_holds_the_room_until_its_write(store: Store) -> None:
    """The collect may have seen the instance: its room is not handed out before the write
    that counts it, whatever was deleted and released in between."""
    grant = release_during_collect(store)  # the collect read web-1, which was then deleted
    assert reserve(store, ("web-2", Resources(3000))).status == "full"
    assert reserve(store, ("web-1", Resources(1000))).status == "full"  # not the same id here
    assert collect_reading(store, grant, 3000, ["web-1"]).dropped == ("web-1",)
    assert reservations(store) == {} and used_plus_reserved(store) == 3000
    store.release_locks({HOST: grant})
    assert collect_reading(store, store.acquire_locks([HOST], ttl=30)[HOST], 0, []).dropped == ()
    assert reserve(store, ("web-2", Resources(3000))).status == "ok"
    assert used_plus_reserved(store) == 3000


def test_a_release_deferred_by_a_collect_is_done_by_any_write(store: Store) -> None:
    grant = release_during_collect(store, ("web-2", Resources(500)))  # read before web-1 existed
    assert collect_reading(store, grant, 0, []).dropped == ()  # the release is not reconciling
    assert list(reservations(store)) == ["web-2"] and used_plus_reserved(store) == 500


def test_a_reservation_made_after_its_id_was_released_is_kept(store: Store) -> None:
    grant = release_during_collect(store)
    store.client.hdel(store.keys.scheduled(HOST), "web-1")  # it expired meanwhile
    assert reserve(store, ("web-1", Resources(1000))).status == "ok"  # a new one, after
    assert collect_reading(store, grant, 0, []).status == "ok"
    assert list(reservations(store)) == ["web-1"] and used_plus_reserved(store) == 1000


def test_cleanup_does_a_deferred_release_once_the_lock_is_gone(store: Store) -> None:
    grant = release_during_collect(store)
    assert store.cleanup([HOST], reservation_ttl=120)[HOST].remaining == 1  # still reading
    store.client.delete(store.keys.lock(HOST))  # the collector died and its lock expired
    assert store.cleanup([HOST], reservation_ttl=120)[HOST].remaining == 0
    assert used_plus_reserved(store) == 0
    assert collect_reading(store, grant, 3000, ["web-1"]).status == "lock_lost"


def test_releases_that_are_not_ours_are_left_alone(store: Store) -> None:
    put_host(store)
    reserve(store, ("web-1", Resources(1000)))
    store.client.set(store.keys.releasing(HOST), "not ours")
    grant = store.acquire_locks([HOST], ttl=30)[HOST]
    assert store.release({HOST: ["web-1"]}) == {HOST: ()}  # cannot wait there: reported missing
    assert reserve(store, ("web-1", Resources(1000))).status == "corrupt"
    assert collect_reading(store, grant, 0, []).status == "foreign"
    assert store.cleanup([HOST], reservation_ttl=120)[HOST].corrupt == 1
    assert store.client.get(store.keys.releasing(HOST)) == b"not ours"
    assert list(reservations(store)) == ["web-1"]


def test_cleanup_prunes_expired_and_reports_corrupt(store: Store) -> None:
    put_host(store)
    reserve(store, ("old-1", Resources(1)), ("old-2", Resources(1)), ("new", Resources(1)))
    # Age two of them by a minute (no sleeping: a slow machine would age "new" too).
    for rid in ("old-1", "old-2"):
        entry = reservations(store)[rid]
        entry["t"] -= 60
        store.client.hset(store.keys.scheduled(HOST), rid, json.dumps(entry))
    store.client.delete(store.keys.queue(HOST))  # rebuilt from the entries, as they disagree
    store.client.hset(store.keys.scheduled(HOST), "bad", "{")
    outcome = store.cleanup([HOST, "gone"], reservation_ttl=30)
    assert outcome[HOST].removed == 2 and outcome[HOST].corrupt == 1
    assert outcome[HOST].remaining == 2
    assert outcome[HOST].has_actual and not outcome["gone"].has_actual
    assert set(store.client.hkeys(store.keys.scheduled(HOST))) == {b"bad", b"new"}


def test_lock_is_exclusive_and_released_by_token(store: Store) -> None:
    first = store.acquire_locks([HOST], ttl=30)[HOST]
    second = store.acquire_locks([HOST], ttl=30)[HOST]
    assert first.acquired and not second.acquired and second.holder == first.token
    store.release_locks({HOST: second})  # not acquired: nothing happens
    assert store.client.get(store.keys.lock(HOST)) == first.token.encode()
    store.client.set(store.keys.lock(HOST), "other")
    store.release_locks({HOST: first})  # no longer ours: left alone
    assert store.client.get(store.keys.lock(HOST)) == b"other"


def test_fleet_read_is_one_round_trip(store: Store) -> None:
    names = [f"h{i}" for i in range(50)]
    for name in names:
        put_host(store, name)
    with round_trips() as sent:
        fleet = store.read_fleet(names)
    assert sent[0] == 1 and len(fleet.hosts) == 50
    with round_trips() as sent:
        fleet = store.read_fleet([])
    assert sent[0] == 2 and len(fleet.hosts) == 50


def test_scripts_reload_after_script_flush(store: Store) -> None:
    put_host(store)
    store.client.script_flush()
    assert reserve(store, ("a", Resources(1))).status == "ok"


def in_forked_child(work: Callable[[], bool]) -> bool:
    """Whether ``work`` returned True in a forked child of this process."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, and leave without running the parent's cleanup
        try:
            os.write(write, b"1" if work() else b"0")
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    answer = os.read(read, 1)
    os.close(read)
    return answer == b"1"


def test_a_forked_child_talks_on_a_connection_of_its_own(store: Store) -> None:
    store.ping()  # the parent's connection is open

    def child() -> bool:
        store.ping()
        return bool(store._channel._connections[None].pid == os.getpid())

    assert in_forked_child(child)
    assert store.ping() > 0  # and the parent's is still its own

