"""Checks of what a caller asks for (strategy names, reservation ids), and amounts in words."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from hostsched.errors import UsageError
from hostsched.model import Resources
from hostsched.quantity import format_bytes, format_cpu
from hostsched.strategies import STRATEGY_NAMES

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
#: Placements in one schedule call: one plan, one round trip, all or nothing.
MAX_COUNT = 10_000


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
    if not ids:  # valid by construction; drawn again if two of them repeat (48 random bits)
        # (random is seeded from the system's entropy, and again in a forked child: a system
        # call per id cost 6 % of a placement's client time in a profile of a scheduler)
        generated = [f"hs-{random.getrandbits(48):012x}" for _ in range(count)]
        if count == 1 or len(set(generated)) == count:
            return generated
        return reservation_ids((), count)
    if len(ids) == 1 and count > 1:
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
