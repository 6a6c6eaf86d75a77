"""Redis access: connections from URLs, the Lua scripts, and error translation.

Every redis-py error becomes :class:`StoreUnavailable` here; nothing above this module sees a
redis-py exception. Scripts are static ``lua/*.lua`` files, loaded once per process and run by
SHA (re-loaded on NOSCRIPT, e.g. after a server restart), each wrapped in one typed method.
Keys come only from :class:`hostsched.keys.Keys`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from hostsched.channel import BUSY_WAIT_US, Channel, ClusterChannel
from hostsched.codec import BadValue
from hostsched.errors import StoreUnavailable
from hostsched.keys import Keys
from hostsched.model import Resources
from hostsched.replies import (
    Changes,
    CleanupOutcome,
    Joined,
    LockGrant,
    Published,
    RawFleet,
    RawHost,
    ReserveOutcome,
    WriteOutcome,
    as_mapping,
    changes_reply,
    kept,
    published_or_none,
    published_reply,
    time_reply,
    unless_wrong_type,
)
from hostsched.wire import (
    Pending,
    Trip,
    first_line,
    redact,
    script,
    text,
    translated,
    wrong_type,
)

__all__ = ["Store", "redact", "script", "translated"]

T = TypeVar("T")


class Store:
    """hostsched's data in one Redis server, through typed operations.

    The key layout is documented in :mod:`hostsched.keys`; the atomic operations in ``lua/``.
    Each operation has a ``queue_*`` form that adds it to a :class:`Trip`, so callers can send
    several in one round trip, and a plain form that runs it alone.
    """

    def __init__(self, client: Any, keys: Keys, channel: Channel | None = None) -> None:
        self.client = client  # a redis.Redis, or a redis.cluster.RedisCluster
        self.keys = keys
        self._channel = channel or Channel(client)
        self._keys_of: dict[str, tuple[str, ...]] = {}
        # On one server a script may touch any key, so reserve.lua can publish the host's
        # summary itself; in a cluster the fleet view lives on another node than the host.
        # (A setting, so that tests can take the cluster's path on one server.)
        self.publishes_in_scripts = not self.is_cluster

    @property
    def is_cluster(self) -> bool:
        return isinstance(self._channel, ClusterChannel)

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        keys: Keys,
        password: str | None = None,
        timeout: float = 5.0,
        cluster: bool = False,
        busy_wait_us: int = BUSY_WAIT_US,
    ) -> Store:
        """Open a client for a ``redis://``, ``rediss://`` or ``unix://`` URL.

        Lazy for one server (no I/O). With ``cluster``, the URL names a seed node and the
        cluster's slot map is read now. ``busy_wait_us``: how long a read polls for its reply
        before it sleeps (0: never; see :data:`hostsched.channel.BUSY_WAIT_US`).
        """
        if urlsplit(url).scheme not in ("redis", "rediss", "unix") or (
            cluster and urlsplit(url).scheme == "unix"
        ):
            raise StoreUnavailable(
                f"unsupported Redis URL {redact(url)!r}",
                hint="use redis://host:port, rediss://host:port or unix:///path/to.sock"
                + (" (a cluster is reached over TCP)" if cluster else ""),
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
            for name in ("socket_timeout", "socket_connect_timeout"):
                value = options[name]
                if not 0 < float(value) < 1e6:
                    raise ValueError(f"{name} must be a positive number of seconds")
            if cluster:
                from redis.cluster import RedisCluster

                with translated("connecting to the Redis Cluster"):
                    node = RedisCluster.from_url(url, **options)
                return cls(node, keys, ClusterChannel(node, busy_wait_us=busy_wait_us))
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
        except (ValueError, TypeError, RedisError) as exc:  # RedisClusterException: exit 5
            raise StoreUnavailable(
                f"invalid Redis URL {redact(url)!r}: {first_line(exc)}",
                hint="redis://host:port/db, rediss://host:port/db or unix:///path.sock",
            ) from None
        return cls(client, keys, Channel(client, busy_wait_us=busy_wait_us))

    @property
    def round_trips(self) -> int:
        """Batches sent to the server(s) so far, re-sends included."""
        return self._channel.round_trips

    def primaries(self) -> list[redis.Redis]:
        """A plain client per primary: the cluster's, or the one server's."""
        if self.is_cluster:
            return [node.redis_connection for node in self.client.get_primaries()]
        return [self.client]

    def delete_all(self) -> int:
        """Delete every key under the prefix (bench's fleet), on every primary; how many."""
        deleted = 0
        with translated("deleting keys"):
            for node in self.primaries():
                pipe = node.pipeline(transaction=False)
                for key in node.scan_iter(match=f"{self.keys.prefix}:*", count=1000):
                    pipe.unlink(key)  # one key each: in a cluster they live in many slots
                    if len(pipe) >= 1000:
                        deleted += sum(pipe.execute())
                deleted += sum(pipe.execute())
        return deleted

    def close(self) -> None:
        self._channel.close()
        self.client.close()

    def trip(self, what: str = "Redis") -> Trip:
        """A new batch of commands for one round trip."""
        return Trip(self._channel, what)

    def host_keys(self, host: str) -> tuple[str, ...]:
        """KEYS of reserve, release and cleanup, in their order (built once per host; a
        tuple of strings, which the garbage collector stops tracking)."""
        found = self._keys_of.get(host)
        if found is None:
            k = self.keys
            found = self._keys_of[host] = (
                k.resource(host), k.scheduled(host), k.reserved(host), k.queue(host),
                k.generation(host), k.names(host), k.releasing(host), k.lock(host),
            )  # fmt: skip
        return found

    # -- reads -----------------------------------------------------------------------------

    def ping(self) -> float:
        """The server's time (one round trip); raises StoreUnavailable if it does not answer."""
        trip = self.trip()
        clock = self.queue_time(trip)
        trip.run()
        return clock.get()

    def queue_time(self, trip: Trip) -> Pending[float]:
        """The server's clock, in seconds (in a cluster, the clock of slot 0's primary)."""
        return trip.command("TIME", parse=time_reply)

    def host_names(self) -> tuple[frozenset[str], tuple[str, ...]]:
        """The names in the host set, and a problem if the key holds something else."""
        trip = self.trip()
        names = self.queue_host_names(trip)
        trip.run()
        return names.get()

    def queue_host_names(self, trip: Trip) -> Pending[tuple[frozenset[str], tuple[str, ...]]]:
        def parse(reply: Any) -> tuple[frozenset[str], tuple[str, ...]]:
            if wrong_type(reply):
                return frozenset(), (self._foreign_hosts_key(reply),)
            if isinstance(reply, Exception):
                raise reply
            return frozenset(text(m) for m in reply), ()

        return trip.command("SMEMBERS", self.keys.hosts, parse=parse, errors=True)

    def queue_host_count(self, trip: Trip) -> Pending[int | None]:
        """How many hosts the host set holds; None if the key is not ours."""
        return trip.command("SCARD", self.keys.hosts, parse=unless_wrong_type, errors=True)

    def queue_set_round_robin_cursor(self, trip: Trip, host: str) -> None:
        """Remember the last host chosen; a lost or stale update only shifts the rotation."""
        trip.command("SET", self.keys.round_robin_cursor, host)

    def queue_round_robin_cursor(self, trip: Trip) -> Pending[str | None]:
        return trip.command(
            "GET", self.keys.round_robin_cursor,
            parse=lambda r: text(r) if isinstance(r, bytes) else None, errors=True,
        )  # fmt: skip

    def _foreign_hosts_key(self, exc: Exception) -> str:
        return f"{self.keys.hosts} is not a set of host names ({first_line(exc)}): ignored"

    def read_fleet(self, expected: Sequence[str] = ()) -> RawFleet:
        """Read every host's keys, pipelined: one round trip when ``expected`` names them all.

        ``expected`` (the configured hosts, or the hosts of the last read) lets the per-host reads
        ride in the same round trip as the host set; hosts the set adds are read in a second one.
        """
        trip = self.trip("reading the fleet")
        clock = self.queue_time(trip)
        members = self.queue_host_names(trip)
        cursor = self.queue_round_robin_cursor(trip)
        names = list(dict.fromkeys(expected))
        hosts = self._queue_host_reads(trip, names)
        trip.run()
        known, problems = members.get()
        extra = sorted(known.difference(names))
        if extra:
            again = self.trip("reading the fleet")
            hosts += self._queue_host_reads(again, extra)
            again.run()
        return RawFleet(
            now=clock.get(),
            members=known,
            hosts=tuple(RawHost(name, *(p.get() for p in reads)) for name, reads in hosts),
            round_robin_cursor=cursor.get(),
            problems=problems,
        )

    def _queue_host_reads(
        self, trip: Trip, names: Sequence[str]
    ) -> list[tuple[str, tuple[Pending[Any], ...]]]:
        """Each host's keys, in RawHost's order; a WRONGTYPE is kept as that host's bad data."""
        k = self.keys
        return [
            (name, (
                trip.command("GET", k.resource(name), parse=kept, errors=True),
                trip.command("HGETALL", k.scheduled(name), parse=as_mapping, errors=True),
                trip.command("GET", k.lock(name), parse=kept, errors=True),
                trip.command("GET", k.generation(name), parse=kept, errors=True),
            ))
            for name in names
        ]  # fmt: skip

    # -- the fleet view (hints) -----------------------------------------------------------

    def queue_view(
        self,
        trip: Trip,
        *,
        read: str = "-",
        publish: Sequence[Published] = (),
    ) -> Pending[Changes]:
        """Offer summaries to the fleet view (a newer generation there wins) and read from it.

        ``read``: "-" nothing, "all", "since:N" (what was published after sequence number N),
        or "ends:K" (the K least and K most loaded hosts, by the default weights).
        """
        args: list[object] = [read]
        for item in publish:
            args += [item.host, round(item.load, 6), item.body]
        return trip.script("view", self.keys.fleet_view, args, parse=changes_reply)

    def queue_placements(self, trip: Trip, ids: Sequence[str]) -> Pending[dict[str, str]]:
        """Where explicit ids were placed (by the index that ``schedule --id`` keeps)."""

        # One GET per id (not MGET): in a cluster the ids' keys live in different slots.
        hosts: list[Pending[bytes | None]] = [
            trip.command("GET", self.keys.placement(i)) for i in ids
        ]
        def found() -> dict[str, str]:
            replies = {i: h.get() for i, h in zip(ids, hosts, strict=True)}
            return {i: text(host) for i, host in replies.items() if host is not None}

        return Joined(found)

    def queue_remember_placements(
        self, trip: Trip, hosts: Mapping[str, str], *, ttl: float
    ) -> None:
        """Record the host of each explicit id, so a retry from anywhere finds it."""
        for rid, host in hosts.items():
            trip.command("SET", self.keys.placement(rid), host, "PX", int(ttl * 1000))

    # -- atomic operations -----------------------------------------------------------------

    def queue_reserve(
        self,
        trip: Trip,
        host: str,
        items: Sequence[tuple[str, Resources]],
        *,
        reservation_ttl: float,
        stale_after: float,
        new_ids: bool = False,
        publish: bool = True,
    ) -> Pending[ReserveOutcome]:
        """Reserve ``items`` on ``host`` with one reserve.lua call: all fit, or none is made.

        ``new_ids``: the ids were drawn just now, so no instance can bear them: the script does
        not look them up among the host's instance names. ``publish``: the script publishes
        the host's summary to the fleet view (the outcome's ``sequence``), where it can: on
        one server. Otherwise the caller passes the summary on (:meth:`queue_view`).
        """
        keys = self.host_keys(host)
        publish = publish and self.publishes_in_scripts
        if publish:
            keys += self.keys.fleet_view
        args: list[object] = [
            reservation_ttl, stale_after, "new" if new_ids else "given", host if publish else ""
        ]  # fmt: skip
        for reservation_id, amount in items:
            args += [reservation_id, amount.cpu, amount.memory, amount.disk, amount.gpu]

        def parse(reply: list[Any]) -> ReserveOutcome:
            status = text(reply[0])
            try:
                published = published_reply(host, reply[1])
            except BadValue as exc:
                if status != "ok":
                    return ReserveOutcome(host, "corrupt", reason=str(exc))
                published = None  # what was placed stands: only the view's hint is lost
            return ReserveOutcome(
                host=host,
                status=status,
                placed=tuple(map(text, reply[5 : 5 + reply[4]])),
                existing=tuple(map(text, reply[5 + reply[4] :])),
                published=published,
                reason=text(reply[2]) or None,
                sequence=reply[3] if published is not None else 0,
            )

        return trip.script("reserve", keys, args, parse=parse)

    def queue_wait(self, trip: Trip, host: str, replicas: int, timeout: float) -> Pending[int]:
        """WAIT on the connection to ``host``'s node, after its reserve in the same trip: how
        many replicas have everything written so far (at most ``timeout`` seconds)."""
        return trip.command(
            "WAIT", replicas, max(1, int(timeout * 1000)), key=self.keys.resource(host)
        )

    def reserve(
        self,
        batches: Mapping[str, Sequence[tuple[str, Resources]]],
        *,
        reservation_ttl: float,
        stale_after: float,
        new_ids: bool = False,
    ) -> dict[str, ReserveOutcome]:
        """Reserve each host's batch with one reserve.lua call per host, all in one round trip."""
        trip = self.trip("Redis script reserve")
        pending = {
            host: self.queue_reserve(
                trip,
                host,
                items,
                reservation_ttl=reservation_ttl,
                stale_after=stale_after,
                new_ids=new_ids,
            )
            for host, items in batches.items()
        }
        trip.run()
        return {host: p.get() for host, p in pending.items()}

    def queue_release(
        self, trip: Trip, host: str, ids: Sequence[str]
    ) -> Pending[tuple[tuple[str, ...], Published | None]]:
        def parse(reply: list[Any]) -> tuple[tuple[str, ...], Published | None]:
            return tuple(map(text, reply[0])), published_or_none(host, reply[1])

        return trip.script("release", self.host_keys(host), list(ids), parse=parse)

    def release(self, batches: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
        """Drop reservations by id, one release.lua per host; returns what each host dropped.

        The hosts' new summaries are published in a second round trip: they are known only
        from the scripts' replies.
        """
        trip = self.trip("Redis script release")
        pending = {h: self.queue_release(trip, h, ids) for h, ids in batches.items()}
        trip.run()
        outcomes = {h: p.get() for h, p in pending.items()}
        self.publish([pub for _, pub in outcomes.values() if pub is not None])
        return {h: dropped for h, (dropped, _) in outcomes.items()}

    def cleanup(self, hosts: Sequence[str], *, reservation_ttl: float) -> dict[str, CleanupOutcome]:
        """Prune expired reservations of every host, one cleanup.lua per host, one round trip."""
        trip = self.trip("Redis script cleanup")

        def parser(host: str) -> Any:
            def parse(r: list[Any]) -> CleanupOutcome:
                published = published_or_none(host, r[4])
                return CleanupOutcome(int(r[0]), int(r[1]), int(r[2]), bool(r[3]), published)

            return parse

        pending = {
            h: trip.script("cleanup", self.host_keys(h), [reservation_ttl], parse=parser(h))
            for h in hosts
        }
        trip.run()
        return {h: p.get() for h, p in pending.items()}

    def publish(self, summaries: Sequence[Published]) -> None:
        """Publish summaries in a round trip of their own (nothing to do for none)."""
        if summaries:
            trip = self.trip("publishing to the fleet view")
            self.queue_view(trip, publish=summaries)
            trip.run()

    def forget_hosts(self, hosts: Sequence[str]) -> None:
        """Drop hosts from the host set and the fleet view (their keys are gone already)."""
        if hosts:
            trip = self.trip()
            for key, command in ((self.keys.hosts, "SREM"), (self.keys.fleet_summary, "HDEL"),
                                 (self.keys.fleet_changes, "ZREM"),
                                 (self.keys.fleet_load, "ZREM")):  # fmt: skip
                trip.command(command, key, *hosts, parse=unless_wrong_type, errors=True)
            trip.run()

    # -- collect ---------------------------------------------------------------------------

    def acquire_locks(self, hosts: Sequence[str], *, ttl: float) -> dict[str, LockGrant]:
        """Try each host's lock with a fresh random token, in one round trip."""
        trip = self.trip("Redis script lock_acquire")
        pending = {}
        for h in hosts:
            token = secrets.token_hex(16)

            def parse(r: list[Any], token: str = token) -> LockGrant:
                return LockGrant(
                    bool(int(r[0])), token, text(r[2]), float(r[1]), tuple(map(text, r[3:]))
                )

            keys = [self.keys.lock(h), self.keys.scheduled(h)]
            pending[h] = trip.script("lock_acquire", keys, [token, int(ttl * 1000)], parse)
        trip.run()
        return {h: p.get() for h, p in pending.items()}

    def release_locks(self, grants: Mapping[str, LockGrant]) -> None:
        """Release locks by token (a lock that expired and was re-taken is left alone)."""
        trip = self.trip("Redis script lock_release")
        for h, grant in grants.items():
            if grant.acquired:
                trip.script("lock_release", [self.keys.lock(h)], [grant.token])
        trip.run()

    def write_actual(
        self,
        writes: Mapping[str, tuple[LockGrant, str, Sequence[str]]],
        *,
        resource_ttl: float,
    ) -> dict[str, WriteOutcome]:
        """Store each host's reading (body JSON, instance names) fenced by its lock grant.

        The hosts written join the host set and the fleet view in a second round trip: those
        keys live in other cluster slots, and a host missing from them for that moment is only
        not yet schedulable.
        """
        trip = self.trip("Redis script write_actual")
        pending = {}
        for h, (grant, body, names) in writes.items():
            k = self.keys

            def parse(r: list[Any], h: str = h) -> WriteOutcome:
                published = published_or_none(h, r[2])
                return WriteOutcome(text(r[0]), int(r[1]), tuple(map(text, r[3:])), published)

            keys = [k.resource(h), k.scheduled(h), k.lock(h), k.generation(h), k.reserved(h),
                    k.queue(h), k.names(h), k.releasing(h)]  # fmt: skip
            args = [grant.token, f"{grant.server_time:.6f}", int(resource_ttl), body, *names]
            pending[h] = trip.script("write_actual", keys, args, parse)
        trip.run()
        outcomes = {h: p.get() for h, p in pending.items()}
        stored = [h for h, outcome in outcomes.items() if outcome.status == "ok"]
        if stored:
            after = self.trip()
            after.command("SADD", self.keys.hosts, *stored, parse=unless_wrong_type, errors=True)
            fresh = [o.published for o in outcomes.values() if o.published is not None]
            if fresh:
                self.queue_view(after, publish=fresh)
            after.run()
        return outcomes
