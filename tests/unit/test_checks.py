"""Reservation ids as a caller gives them or as hostsched draws them."""

from __future__ import annotations

import os

import pytest

from hostsched.checks import reservation_ids
from hostsched.errors import UsageError


def test_ids_are_given_suffixed_or_drawn() -> None:
    assert reservation_ids(["web"], 3) == ["web-1", "web-2", "web-3"]
    drawn = reservation_ids((), 100)
    assert len(set(drawn)) == 100 and all(len(i) == 15 and i[:3] == "hs-" for i in drawn)
    with pytest.raises(UsageError, match="twice"):
        reservation_ids(["a", "a"], 2)


def test_children_forked_from_one_process_draw_different_ids() -> None:
    """The ids come from a generator seeded from the system's entropy, and seeded again in
    a forked child; otherwise two children would draw the same ids."""
    reservation_ids((), 1)
    read, write = os.pipe()
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:  # the child: report, and leave without running the parent's cleanup
            try:
                os.write(write, reservation_ids((), 1)[0].encode() + b"\n")
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    os.close(write)
    ids = os.read(read, 1024).split()
    os.close(read)
    assert len(ids) == 2 and ids[0] != ids[1]
