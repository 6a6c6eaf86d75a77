"""Real LXD daemons for the tests in this directory (see ``lxdfleet.py`` for how and why).

``lxd_fleet`` (session): two populated daemons, ``lxd-0`` and ``lxd-1``. ``lxd_daemon``
(function): one empty daemon of a test's own, for tests that stop or break it.
Without ``lxd`` these skip on a developer machine and fail in CI; a daemon that does not start
fails the test with the tail of its log, in CI or not.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.conftest import IN_CI, require_binary
from tests.lxd.lxdfleet import LxdDaemon, LxdFixtureError, LxdFleet


def require_lxd() -> tuple[str, str]:
    """The ``lxd`` and ``lxc`` binaries; skips (fails in CI) without them or without root."""
    binaries = require_binary("lxd"), require_binary("lxc")
    if os.geteuid() != 0:
        message = "the LXD fixtures start daemons and need root"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return binaries


def start_fleet(count: int, *, populate: bool) -> LxdFleet:
    """``LxdFleet.start`` for a test: a daemon that does not start fails it with its log."""
    require_lxd()
    try:
        return LxdFleet.start(count, populate=populate)
    except LxdFixtureError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def lxd_fleet() -> Iterator[LxdFleet]:
    """Two daemons; ``lxd-0`` holds cpu-count, cpu-set, mem-percent, no-limits, stopped-one and
    (when containers can run here) running-1; ``lxd-1`` holds mib-1 and running-2."""
    fleet = start_fleet(2, populate=True)
    yield fleet
    fleet.close()


@pytest.fixture
def lxd_daemon() -> Iterator[LxdDaemon]:
    """One throwaway daemon with storage, HTTPS and a password, but no instances or image."""
    fleet = start_fleet(1, populate=False)
    yield fleet[0]
    fleet.close()


def require_containers(fleet: LxdFleet) -> None:
    """Skip (fail in CI) a test that needs running containers where they cannot run."""
    if not fleet.can_run_containers:
        message = f"containers cannot run here: {fleet.cannot_run_reason}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
