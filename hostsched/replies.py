"""The store's replies, typed: what each operation returns, and how a raw reply is read.

Nothing here talks to Redis; :mod:`hostsched.store` queues the commands and hands each reply to
one of these parsers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from hostsched.codec import BadValue, Summary, encode_summary, summary_from_state
from hostsched.model import Resources
from hostsched.strategies import DEFAULT_WEIGHTS, weighted_use
from hostsched.wire import Pending, reply_or_raise, text, wrong_type

T = TypeVar("T")


@dataclass(frozen=True)
class RawHost:
    """One host's keys as read, before decoding; an Exception stands for a failed read."""

    name: str
    actual: bytes | Exception | None
    reservations: Mapping[bytes, bytes] | Exception
    lock: bytes | Exception | None
    generation: bytes | Exception | None = None


@dataclass(frozen=True)
class RawFleet:
    """Everything one fleet read returns, with the server's time of the read."""

    now: float
    members: frozenset[str]
    hosts: tuple[RawHost, ...]
    round_robin_cursor: str | None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Published:
    """A host's summary as a script returned it, to apply to a view and publish."""

    host: str
    summary: Summary

    @property
    def body(self) -> str:
        """The summary as the fleet view holds it (built only when published)."""
        return encode_summary(self.summary)

    @property
    def load(self) -> float:
        """The host's place in the view's load index: utilisation by the default weights."""
        summary = self.summary
        used, reserved = summary.used, summary.reserved
        return weighted_use(
            summary.limit,
            used.cpu + reserved.cpu,
            used.memory + reserved.memory,
            used.disk + reserved.disk,
            DEFAULT_WEIGHTS,
        )


@dataclass(frozen=True)
class ReserveOutcome:
    """The reply of reserve.lua for one host."""

    host: str
    status: str
    placed: tuple[str, ...] = ()
    existing: tuple[str, ...] = ()
    published: Published | None = None
    reason: str | None = None
    #: The fleet view's sequence number for the summary if the script published it (> 0).
    sequence: int = 0

    @property
    def limit(self) -> Resources | None:
        return None if self.published is None else self.published.summary.limit

    @property
    def used(self) -> Resources | None:
        return None if self.published is None else self.published.summary.used

    @property
    def reserved(self) -> Resources | None:
        return None if self.published is None else self.published.summary.reserved


@dataclass(frozen=True)
class LockGrant:
    """A collect lock taken (or not), with the server time and the host's pending ids."""

    acquired: bool
    token: str
    holder: str
    server_time: float
    pending: tuple[str, ...] = ()


@dataclass(frozen=True)
class WriteOutcome:
    status: str
    generation: int
    dropped: tuple[str, ...]
    published: Published | None = None


@dataclass(frozen=True)
class CleanupOutcome:
    removed: int
    remaining: int
    corrupt: int
    has_actual: bool
    published: Published | None = None


@dataclass(frozen=True)
class Changes:
    """What the fleet view reported: the server time, its sequence number, new summaries.

    ``entries`` are (host, summary JSON) pairs, decoded by the reader, which can skip those it
    already has. ``sequence`` is -1 when the view's keys hold foreign data (the view is then
    ignored: it is a hint, never the judge of fit).
    """

    now: float
    sequence: int
    hosts: int  # in the view, whatever was read
    entries: tuple[tuple[str, bytes], ...]


def published_reply(host: str, state: list[Any] | bytes) -> Published | None:
    """A script's summary of ``host``; None for "" (no valid actual resources)."""
    if not state:
        return None
    if not isinstance(state, list):
        raise BadValue("summary is not an array")
    return Published(host, summary_from_state(state))


def published_or_none(host: str, state: list[Any] | bytes) -> Published | None:
    """A script's summary of ``host``; None for "" or for one that does not parse (the view
    is a hint: the host's own keys are what count)."""
    try:
        return published_reply(host, state)
    except BadValue:
        return None


def time_reply(reply: list[bytes]) -> float:
    """TIME's reply in seconds."""
    seconds, micros = reply
    return int(seconds) + int(micros) / 1e6


def changes_reply(reply: list[Any]) -> Changes:
    entries = tuple((text(reply[i]), reply[i + 1]) for i in range(3, len(reply) - 1, 2))
    return Changes(float(reply[0]), int(reply[1]), int(reply[2]), entries)



def kept(reply: Any) -> Any:
    """A reply as it is, a WRONGTYPE kept as the exception (one host's bad data)."""
    if isinstance(reply, Exception) and not wrong_type(reply):
        raise reply
    return reply


def as_mapping(reply: Any) -> Any:
    """HGETALL's reply as a dict (RESP2 sends a flat list), or the WRONGTYPE kept."""
    reply = kept(reply)
    if isinstance(reply, list):
        return dict(zip(reply[::2], reply[1::2], strict=True))
    return reply


class Joined(Pending[T]):
    """A value made from other replies of the same trip, once it has run."""

    def __init__(self, compute: Callable[[], T]) -> None:
        super().__init__(lambda _: compute())
        self._compute = compute

    def get(self) -> T:
        return self._compute()


def unless_wrong_type(reply: Any) -> Any:
    """The reply, or None for a WRONGTYPE: a fleet-wide key that is not ours is left alone."""
    return None if wrong_type(reply) else reply_or_raise(reply)
