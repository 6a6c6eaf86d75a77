"""Redis access: connections from URLs, the Lua scripts, and error translation.

Every redis-py error becomes :class:`StoreUnavailable` here; nothing above this module sees a
redis-py exception. Scripts are static ``lua/*.lua`` files, loaded once per process and run by
SHA (re-loaded on NOSCRIPT, e.g. after a server restart), each wrapped in one typed method.
Keys come only from :class:`hostsched.keys.Keys`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import AuthenticationError, NoScriptError, RedisError, ResponseError
from redis.retry import Retry

from hostsched.errors import StoreUnavailable
from hostsched.keys import Keys
from hostsched.model import Resources

SCRIPTS = ("reserve", "release", "cleanup", "write_actual", "lock_acquire", "lock_release")


@dataclass(frozen=True)
class Script:
    name: str
    text: str
    sha: str


@cache
def script(name: str) -> Script:
    """The text and SHA1 of ``lua/<name>.lua``, read once per process."""
    text = resources.files("hostsched").joinpath("lua", f"{name}.lua").read_text("utf-8")
    return Script(name, text, hashlib.sha1(text.encode()).hexdigest())


_SECRET_PARAMETERS = {"password", "ssl_password"}


def redact(url: str) -> str:
    """The URL without its passwords (user info and query parameters), fit to print."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if password is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:***@" if parts.username else ":***@"
        parts = parts._replace(netloc=user + netloc)
    if parts.query:
        query = [
            (name, "***" if name.lower() in _SECRET_PARAMETERS else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="*/"))
    return urlunsplit(parts)


@contextmanager
def translated(what: str = "Redis") -> Iterator[None]:
    """Turn redis-py errors into StoreUnavailable (exit 5) with one clear line."""
    try:
        yield
    except UnicodeError as exc:  # a host name that IDNA cannot encode (an empty label, >63)
        raise StoreUnavailable(f"{what} failed: invalid host name in the URL ({exc})") from None
    except RedisError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = "check the Redis URL and that the server is running"
        if isinstance(exc, AuthenticationError) or "authenticat" in reason.lower():
            hint = "set the password: in the URL, HOSTSCHED_REDIS_PASSWORD or redis.password_file"
        elif reason.startswith("NOPERM"):
            hint = "the Redis user lacks a permission: see the README's ACL line"
        raise StoreUnavailable(f"{what} failed: {reason}", hint=hint) from exc


@dataclass(frozen=True)
class RawHost:
    """One host's keys as read, before decoding; an Exception stands for a failed read."""

    name: str
    actual: bytes | Exception | None
    reservations: Mapping[bytes, bytes] | Exception
    lock: bytes | Exception | None


@dataclass(frozen=True)
class RawFleet:
    """Everything one fleet read returns, with the server's time of the read."""

    now: float
    members: frozenset[str]
    hosts: tuple[RawHost, ...]
    round_robin_cursor: str | None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReserveOutcome:
    """The reply of reserve.lua for one host."""

    host: str
    status: str
    placed: tuple[str, ...] = ()
    existing: tuple[str, ...] = ()
    limit: Resources | None = None
    used: Resources | None = None
    reserved: Resources | None = None
    reason: str | None = None


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


@dataclass(frozen=True)
class CleanupOutcome:
    removed: int
    remaining: int
    corrupt: int
    has_actual: bool


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _wrong_type(reply: object) -> bool:
    """A WRONGTYPE reply: a key holds data that is not ours (never a permission or OOM error)."""
    return isinstance(reply, ResponseError) and str(reply).startswith("WRONGTYPE")


@contextmanager
def _unless_wrong_type() -> Iterator[None]:
    try:
        yield
    except ResponseError as exc:
        if not _wrong_type(exc):
            raise


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _vector(values: object) -> Resources | None:
    if isinstance(values, list) and len(values) == 4:
        return Resources(*(int(v) for v in values))
    return None


class Store:
    """hostsched's data in one Redis server, through typed operations.

    The key layout is documented in :mod:`hostsched.keys`; the atomic operations in ``lua/``.
    """

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    @classmethod
    def connect(
        cls, url: str, *, keys: Keys, password: str | None = None, timeout: float = 5.0
    ) -> Store:
        """Open a client for a ``redis://``, ``rediss://`` or ``unix://`` URL (lazy: no I/O)."""
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise StoreUnavailable(
                f"unsupported Redis URL {redact(url)!r}",
                hint="use redis://host:port, rediss://host:port or unix:///path/to.sock",
            )
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            # Every operation is idempotent (reservations by id, writes by lock token), so a
            # command re-sent after a timeout or a dropped connection cannot count twice.
            "retry": Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.25), retries=3),
        }
        if password is not None:
            options["password"] = password
        try:
            client = redis.Redis.from_url(url, **options)
            # Build (not open) one connection now: an option redis-py does not check until
            # then (an unknown name, a negative or NaN timeout) fails here, as a bad URL.
            settings = client.connection_pool.connection_kwargs
            for name in ("socket_timeout", "socket_connect_timeout"):
                value = settings.get(name)
                if value is not None and not 0 < float(value) < 1e6:
                    raise ValueError(f"{name} must be a positive number of seconds")
            pool = client.connection_pool
            pool.release(pool.make_connection())  # type: ignore[arg-type]  # unopened; reused
        except (ValueError, TypeError, RedisError) as exc:
            raise StoreUnavailable(
                f"invalid Redis URL {redact(url)!r}: {_first_line(exc)}",
                hint="redis://host:port/db, rediss://host:port/db or unix:///path.sock",
            ) from None
        return cls(client, keys)

    def close(self) -> None:
        self.client.close()

    # -- running scripts -------------------------------------------------------------------

    def _run_many(
        self, name: str, calls: Sequence[tuple[Sequence[str], Sequence[object]]]
    ) -> list[Any]:
        """Run one script per call in one pipelined round trip (two if it must be loaded)."""
        found = script(name)
        with translated(f"Redis script {name}"):
            pipe = self.client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(found.sha, len(keys), *keys, *args)  # type: ignore[arg-type]
            replies = pipe.execute(raise_on_error=False)
            if any(isinstance(reply, NoScriptError) for reply in replies):
                # A script that was not loaded did nothing, so re-running just those is safe.
                self.client.script_load(found.text)
                again = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                pipe = self.client.pipeline(transaction=False)
                for i in again:
                    keys, args = calls[i]
                    pipe.evalsha(found.sha, len(keys), *keys, *args)  # type: ignore[arg-type]
                for i, reply in zip(again, pipe.execute(raise_on_error=False), strict=True):
                    replies[i] = reply
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return list(replies)

    # -- reads -----------------------------------------------------------------------------

    def ping(self) -> float:
        """The server's time (one round trip); raises StoreUnavailable if it does not answer."""
        with translated():
            seconds, micros = self.client.time()
        return seconds + micros / 1e6

    def host_names(self) -> tuple[frozenset[str], tuple[str, ...]]:
        """The names in the host set, and a problem if the key holds something else."""
        with translated():
            try:
                return frozenset(_text(m) for m in self.client.smembers(self.keys.hosts)), ()
            except ResponseError as exc:
                if not _wrong_type(exc):
                    raise
                return frozenset(), (self._foreign_hosts_key(exc),)

    def _foreign_hosts_key(self, exc: Exception) -> str:
        return f"{self.keys.hosts} is not a set of host names ({_first_line(exc)}): ignored"

    def read_fleet(self, expected: Sequence[str] = ()) -> RawFleet:
        """Read every host's keys, pipelined: one round trip when ``expected`` names them all.

        ``expected`` (the configured hosts, or the hosts of the last read) lets the per-host reads
        ride in the same round trip as the host set; hosts the set adds are read in a second one.
        """
        with translated("reading the fleet"):
            pipe = self.client.pipeline(transaction=False)
            pipe.time()
            pipe.smembers(self.keys.hosts)
            pipe.get(self.keys.round_robin_cursor)
            names = list(dict.fromkeys(expected))
            self._queue_host_reads(pipe, names)
            replies = pipe.execute(raise_on_error=False)
            clock, members_raw, cursor = replies[:3]
            if isinstance(clock, Exception):
                raise clock
            problems: tuple[str, ...] = ()
            if _wrong_type(members_raw):  # foreign data: the configured hosts remain
                problems = (self._foreign_hosts_key(members_raw),)
                members_raw = set()
            elif isinstance(members_raw, Exception):
                raise members_raw
            members = frozenset(_text(m) for m in members_raw)
            hosts = self._raw_hosts(names, replies[3:])
            extra = sorted(members.difference(names))
            if extra:
                pipe = self.client.pipeline(transaction=False)
                self._queue_host_reads(pipe, extra)
                hosts += self._raw_hosts(extra, pipe.execute(raise_on_error=False))
        seconds, micros = clock
        return RawFleet(
            now=seconds + micros / 1e6,
            members=members,
            hosts=tuple(hosts),
            round_robin_cursor=None if not isinstance(cursor, bytes) else _text(cursor),
            problems=problems,
        )

    def _queue_host_reads(self, pipe: Any, names: Sequence[str]) -> None:
        for name in names:
            pipe.get(self.keys.resource(name))
            pipe.hgetall(self.keys.scheduled(name))
            pipe.get(self.keys.lock(name))

    @staticmethod
    def _raw_hosts(names: Sequence[str], replies: Sequence[Any]) -> list[RawHost]:
        for reply in replies:
            if isinstance(reply, RedisError) and not _wrong_type(reply):
                raise reply  # the store failed or refused; WRONGTYPE is one host's bad data
        return [
            RawHost(name, replies[3 * i], replies[3 * i + 1], replies[3 * i + 2])
            for i, name in enumerate(names)
        ]

    # -- atomic operations -----------------------------------------------------------------

    def reserve(
        self,
        batches: Mapping[str, Sequence[tuple[str, Resources]]],
        *,
        reservation_ttl: float,
        stale_after: float,
    ) -> dict[str, ReserveOutcome]:
        """Reserve each host's batch with one reserve.lua call per host, all in one round trip."""
        hosts = list(batches)
        calls: list[tuple[Sequence[str], Sequence[object]]] = []
        for host in hosts:
            args: list[object] = [reservation_ttl, stale_after]
            for reservation_id, amount in batches[host]:
                args += [reservation_id, amount.cpu, amount.memory, amount.disk, amount.gpu]
            calls.append(([self.keys.resource(host), self.keys.scheduled(host)], args))
        replies = self._run_many("reserve", calls) if calls else []
        return {h: self._reserve_outcome(h, r) for h, r in zip(hosts, replies, strict=True)}

    @staticmethod
    def _reserve_outcome(host: str, reply: Sequence[bytes]) -> ReserveOutcome:
        status, detail = _text(reply[0]), json.loads(reply[1])
        state = detail.get("state") or {}
        return ReserveOutcome(
            host=host,
            status=status,
            placed=tuple(detail.get("placed") or ()),
            existing=tuple(detail.get("existing") or ()),
            limit=_vector(state.get("limit")),
            used=_vector(state.get("used")),
            reserved=_vector(state.get("reserved")),
            reason=detail.get("reason"),
        )

    def release(self, batches: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
        """Drop reservations by id, one release.lua per host; returns what each host dropped."""
        hosts = list(batches)
        calls = [([self.keys.scheduled(h)], list(batches[h])) for h in hosts]
        replies = self._run_many("release", calls) if calls else []
        return {h: tuple(_text(i) for i in r) for h, r in zip(hosts, replies, strict=True)}

    def cleanup(self, hosts: Sequence[str], *, reservation_ttl: float) -> dict[str, CleanupOutcome]:
        """Prune expired reservations of every host, one cleanup.lua per host, one round trip."""
        calls = [
            ([self.keys.scheduled(h), self.keys.resource(h)], [reservation_ttl]) for h in hosts
        ]
        replies = self._run_many("cleanup", calls) if calls else []
        return {
            h: CleanupOutcome(int(r[0]), int(r[1]), int(r[2]), bool(r[3]))
            for h, r in zip(hosts, replies, strict=True)
        }

    def forget_hosts(self, hosts: Sequence[str]) -> None:
        """Drop hosts from the host set (their keys are gone already)."""
        if hosts:
            with translated(), _unless_wrong_type():  # a foreign host set is left alone
                self.client.srem(self.keys.hosts, *hosts)

    def set_round_robin_cursor(self, host: str) -> None:
        """Remember the last host chosen; a lost or stale update only shifts the rotation."""
        with translated():
            self.client.set(self.keys.round_robin_cursor, host)

    # -- collect ---------------------------------------------------------------------------

    def acquire_locks(self, hosts: Sequence[str], *, ttl: float) -> dict[str, LockGrant]:
        """Try each host's lock with a fresh random token, in one round trip."""
        tokens = {h: secrets.token_hex(16) for h in hosts}
        calls = [
            ([self.keys.lock(h), self.keys.scheduled(h)], [tokens[h], int(ttl * 1000)])
            for h in hosts
        ]
        replies = self._run_many("lock_acquire", calls) if calls else []
        return {
            h: LockGrant(
                bool(int(r[0])), tokens[h], _text(r[2]), float(r[1]), tuple(map(_text, r[3:]))
            )
            for h, r in zip(hosts, replies, strict=True)
        }

    def release_locks(self, grants: Mapping[str, LockGrant]) -> None:
        """Release locks by token (a lock that expired and was re-taken is left alone)."""
        calls = [([self.keys.lock(h)], [g.token]) for h, g in grants.items() if g.acquired]
        if calls:
            self._run_many("lock_release", calls)

    def write_actual(
        self,
        writes: Mapping[str, tuple[LockGrant, str, Sequence[str]]],
        *,
        resource_ttl: float,
    ) -> dict[str, WriteOutcome]:
        """Store each host's reading (body JSON, instance names) fenced by its lock grant."""
        hosts = list(writes)
        calls = []
        for h in hosts:
            grant, body, names = writes[h]
            calls.append(
                (
                    self.keys.host_keys(h),
                    [grant.token, f"{grant.server_time:.6f}", int(resource_ttl), body, *names],
                )
            )
        replies = self._run_many("write_actual", calls) if calls else []
        outcomes = {
            h: WriteOutcome(_text(r[0]), int(r[1]), tuple(_text(i) for i in r[2:]))
            for h, r in zip(hosts, replies, strict=True)
        }
        stored = [h for h, outcome in outcomes.items() if outcome.status == "ok"]
        if stored:
            # The host set lives in another cluster slot, so it is added after the write; a
            # host missing from it for that moment is only not yet schedulable.
            with translated(), _unless_wrong_type():  # a foreign host set is left alone
                self.client.sadd(self.keys.hosts, *stored)
        return outcomes
