"""Real Redis Clusters on 127.0.0.1 for the tests in this directory (see ``redis_cluster.py``).

``redis_cluster`` (session): 3 primaries, no replicas, shared; ``cluster_url`` (function) empties
it first. ``failover_cluster`` (function): 3 primaries with one replica each, for a test of its
own, since tests that kill nodes would break the shared one. Without ``redis-server`` or
``redis-cli`` these skip on a developer machine and fail in CI; a cluster that does not form fails
the test with the tail of a node's log, in CI or not.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.cluster.redis_cluster import ClusterFixtureError, LocalCluster
from tests.conftest import require_binary


@contextmanager
def running_cluster(replicas: int) -> Iterator[LocalCluster]:
    """3 primaries with ``replicas`` each, in a fresh ``/tmp`` directory removed afterwards."""
    server, cli = require_binary("redis-server"), require_binary("redis-cli")
    directory = Path(tempfile.mkdtemp(prefix="hs-cluster-", dir="/tmp"))
    try:
        try:
            cluster = LocalCluster.start(
                directory, 3, replicas, server_binary=server, cli_binary=cli
            )
        except ClusterFixtureError as error:
            pytest.fail(str(error), pytrace=False)
        with cluster:
            yield cluster
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    with running_cluster(replicas=0) as cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster: LocalCluster) -> str:
    """The session cluster's seed URL, every primary flushed for this test."""
    redis_cluster.flushall()
    return redis_cluster.seed_url


@pytest.fixture
def failover_cluster() -> Iterator[LocalCluster]:
    with running_cluster(replicas=1) as cluster:
        yield cluster
