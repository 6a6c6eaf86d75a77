"""The cluster fixture itself, through redis-py's cluster client: if these fail, so would every
test built on it, and for reasons that have nothing to do with hostsched."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException, ResponseError

from tests.cluster.redis_cluster import SLOT_COUNT, LocalCluster

RETRY_TIMEOUT = 10.0


def cluster_node(port: int) -> ClusterNode:
    """redis-py's address of a local node (its constructor has no type hints)."""
    return ClusterNode("127.0.0.1", port)  # type: ignore[no-untyped-call]


@pytest.fixture
def client(cluster_url: str) -> Iterator[RedisCluster]:
    opened = RedisCluster.from_url(cluster_url, decode_responses=True)
    yield opened
    opened.close()


def test_cluster_forms_and_covers_every_slot(
    redis_cluster: LocalCluster, client: RedisCluster
) -> None:
    primaries = redis_cluster.primaries()
    assert [node.port for node in primaries] == sorted(node.port for node in redis_cluster.nodes)
    assert redis_cluster.replicas() == []
    assert all(node.role() == "primary" for node in primaries)
    assert redis_cluster.seed_url == primaries[0].url
    assert redis_cluster.urls == [f"redis://127.0.0.1:{node.port}" for node in primaries]
    for node in primaries:
        info = node.cluster_info()
        assert info["cluster_state"] == "ok"
        assert info["cluster_slots_assigned"] == str(SLOT_COUNT)
    ranges = client.cluster_slots()
    assert sum(last - first + 1 for first, last in ranges) == SLOT_COUNT
    assert client.ping()


def test_hash_tags_spread_keys_over_primaries_and_pin_a_tag_to_one(
    redis_cluster: LocalCluster, client: RedisCluster
) -> None:
    owners: set[int] = set()
    for number in range(50):
        key = f"{{host-{number}}}:state"
        client.set(key, str(number))
        owner = redis_cluster.primary_for_key(key)
        served_by = client.get_node_from_key(key)  # type: ignore[no-untyped-call]  # redis-py
        assert served_by.port == owner.port
        assert owner.command("GET", key) == str(number)  # on that node, not via a redirect
        owners.add(owner.port)
    assert len(owners) >= 2

    same_tag = [f"{{host-7}}:{part}" for part in ("state", "lock", "history")]
    assert len({redis_cluster.primary_for_key(key).port for key in same_tag}) == 1
    client.mset({key: "x" for key in same_tag})
    assert client.mget(same_tag) == ["x", "x", "x"]

    # What a single redis-server would let through: one command across two tags.
    node = redis_cluster.primary_for_key("{host-1}")
    with pytest.raises(ResponseError, match=r"^CROSSSLOT|Keys in request"):  # (redis-py 5 or 8)
        node.command("MSET", "{host-1}:a", "1", "{host-2}:a", "2")


def test_evalsha_on_two_keys_with_one_hash_tag(client: RedisCluster) -> None:
    sha = client.script_load(
        "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('INCRBY', KEYS[2], ARGV[2])"
    )
    assert client.evalsha(sha, 2, "{host-3}:owner", "{host-3}:count", "me", 5) == 5
    assert client.evalsha(sha, 2, "{host-3}:owner", "{host-3}:count", "me", 2) == 7
    assert client.get("{host-3}:owner") == "me"
    with pytest.raises((RedisClusterException, redis.ResponseError)):
        client.evalsha(sha, 2, "{host-3}:owner", "{host-4}:count", "me", 1)


@pytest.mark.slow
def test_failover_promotes_the_replica_and_the_key_stays_usable(
    failover_cluster: LocalCluster,
) -> None:
    cluster = failover_cluster
    assert len(cluster.primaries()) == 3
    assert len(cluster.replicas()) == 3
    key = "{host-1}:state"
    victim = cluster.primary_for_key(key)
    [replica] = cluster.replicas_of(victim)
    assert replica.role() == "replica"

    seeds = [cluster_node(node.port) for node in cluster.nodes]
    client = RedisCluster(startup_nodes=seeds, decode_responses=True)
    try:
        client.set(key, "before")
        assert victim.command("WAIT", 1, 5000) == 1  # replicated, so the failover cannot lose it

        cluster.kill(victim)
        promoted = cluster.wait_for_failover(victim)

        assert promoted is replica
        assert promoted.role() == "primary"
        assert promoted in cluster.primaries()
        assert victim not in cluster.primaries()
        assert cluster.primary_for_key(key) is promoted

        deadline = time.monotonic() + RETRY_TIMEOUT
        while True:  # the client learns the new topology on its first errors
            try:
                assert client.get(key) == "before"
                client.set(key, "after")
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert promoted.command("GET", key) == "after"
    finally:
        client.close()
