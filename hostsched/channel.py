"""Where a round trip's commands go: one server, or each to the cluster node owning its key.

A channel keeps one connection per server (per node in a cluster) while the store is open,
used by one thread at a time: taking a connection from the pool and giving it back for every
round trip cost more than packing the commands, and collect's threads only take short turns.
In a cluster, the commands for each node are written first and the replies read after, so a
round trip touching three nodes costs the time of one.

Every command hostsched sends is idempotent (reservations by id, writes by lock token, hints
by generation), so a batch is simply sent again after a dropped connection, a failover
(``MOVED``, ``CLUSTERDOWN``, ``TRYAGAIN``) or a timeout, a bounded number of times.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from functools import cache
from typing import Any, cast

import hiredis
import redis
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    InvalidResponse,
    TimeoutError,
    TryAgainError,
)

try:  # redis-py before 6 knows MOVED, ASK, TRYAGAIN and CLUSTERDOWN in its cluster parser only
    from redis.cluster import ClusterParser as _ErrorParser  # type: ignore[attr-defined]
except ImportError:
    from redis._parsers import BaseParser as _ErrorParser

#: Sends of one batch after a dropped connection, a timeout or a cluster redirection.
ATTEMPTS = 6
#: Errors after which a cluster's slot map is read again and the command sent again (MOVED
#: is an AskError too).
_REROUTE = (AskError, ClusterDownError, TryAgainError)

Command = tuple[object, ...]


class _Process:
    """This process's id, kept current across forks: a connection opened before a fork must
    not be used by the child, and asking the kernel on every round trip (getpid is a system
    call) cost 4 % of a placement's client time in a profile of a scheduler's loop."""

    pid = os.getpid()

    @classmethod
    def forked(cls) -> None:
        cls.pid = os.getpid()


os.register_at_fork(after_in_child=_Process.forked)


#: (its stubs name the argument types it takes; any other is a TypeError at run time)
_pack_command = cast(Callable[[tuple[object, ...]], bytes], hiredis.pack_command)


def pack(commands: Sequence[tuple[object, ...]]) -> bytes:
    """Commands in the Redis protocol (RESP), ready to send in one write.

    hiredis's packer, in C: the same bytes as redis-py's for str, bytes, int and float
    arguments (anything else is a TypeError), in a third of the time of the Python packer it
    replaced, which was the largest Python cost of a placement in a profile of bench.
    """
    return b"".join(map(_pack_command, commands))


_MORE = object()  # what hiredis answers until a whole reply has arrived

#: How long a read polls for its reply before it sleeps, by default (microseconds; the
#: ``redis.busy_wait_us`` setting). A process that sleeps until its reply arrives is woken by
#: the kernel, and on a virtual machine that costs more than the rest of a local round trip:
#: a PING took 84 µs with a sleeping read and 30 µs with a polling one on this project's
#: 2-core machines. Polling pays while another core is free to run the server, and costs the
#: polling process's CPU for as long as it waits. It is skipped on a single core and while
#: more processes are ready to run than there are cores (see _Load), and backs off while polls
#: see no reply in time (a remote or busy server) or another process takes the polling one's
#: core (no core is idle: 8 schedulers on 2 cores lost 15 % without this).
BUSY_WAIT_US = 200
#: After n polls in a row that saw no reply in time (n >= 2), the next 2**n reads sleep at
#: once, up to 2**MAX_SKIP_DOUBLINGS; after a poll whose core another process took, from the
#: first. One late reply alone is forgiven: a long script (an exchange on 10,000 hosts) or a
#: moment's contention says nothing of the server. Forgiving it gave 1.00-1.16 x the rate on
#: 10,000 hosts (median 1.025) and 0.98-1.17 x on 10 (median 1.08), in 6 runs of alternating
#: blocks at each size (a slow to middling phase).
MAX_SKIP_DOUBLINGS = 10
#: A yield of the core that lasted longer than this (seconds) ran another process; _poll
#: then returns _CORE_TAKEN.
_TAKEN = 20e-6
_CORE_TAKEN = -1
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
#: How often (seconds) polling asks whether the machine has a core to spare (see _Load).
LOAD_EVERY = 0.01


class _Load:
    """Whether the machine has a core to spare for polling: no more processes running or
    ready to run (this one and the server included) than it has cores, by /proc/loadavg.

    Read at most every LOAD_EVERY seconds (2 µs a read); where it cannot be read a core is
    taken to be free, and the yield check in _poll still applies. With 8 schedulers on 2 cores
    (9 or 10 processes ready to run), sleeping reads gave p99 per placement 3.3-4.0 ms against
    3.7-5.2 ms for polling ones, at the same or a higher rate (four alternated pairs of benches).
    """

    checked = float("-inf")
    spare = True
    _cores = os.cpu_count() or 1  # (machine-wide, as the count is)

    @classmethod
    def core_to_spare(cls, now: float) -> bool:
        if now - cls.checked >= LOAD_EVERY:
            cls.checked = now
            cls.spare = _runnable() <= cls._cores
        return cls.spare


@cache
def _loadavg() -> int:
    """/proc/loadavg, opened once per process tree (-1 where there is none)."""
    try:
        return os.open("/proc/loadavg", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1


def _runnable() -> int:
    """Processes running or ready to run, machine-wide (0 if that cannot be read)."""
    fd = _loadavg()
    if fd < 0:
        return 0
    try:  # "0.52 0.58 0.59 3/873 12345": the fourth field, before its slash
        return int(os.pread(fd, 128, 0).split(b" ")[3].split(b"/")[0])
    except (OSError, IndexError, ValueError):
        return 0


class _Replies:
    """Replies read straight off a connection's socket with hiredis (redis-py's own reading
    costs more per reply than the parsing): error replies come back as redis-py's exceptions,
    in place, never raised."""

    __slots__ = ("_buffer", "_misses", "_poll", "_reader", "_skip", "sock")

    def __init__(self, sock: Any, busy_wait_us: int = 0) -> None:
        self.sock = sock
        # Seconds a read polls before it sleeps (TLS sockets take no flags: they sleep).
        polls = busy_wait_us > 0 and (_CORES or 1) > 1 and type(sock) is socket.socket
        self._poll = busy_wait_us / 1e6 if polls else 0.0
        self._misses = 0  # polls in a row that saw no reply in time
        self._skip = 0  # reads left that sleep at once, after such polls
        self._reader = hiredis.Reader(
            protocolError=InvalidResponse,
            replyError=_ErrorParser.parse_error,
            notEnoughData=_MORE,  # (False is a reply in RESP3)
        )
        self._buffer = bytearray(65536)

    def read(self, count: int) -> list[Any]:
        """The next ``count`` replies; OSError or ConnectionError if the connection fails."""
        reader = self._reader
        buffer = cast(bytes, self._buffer)  # hiredis reads any buffer; its stubs say bytes
        out: list[Any] = []
        while len(out) < count:
            reply = reader.gets()
            if reply is _MORE:
                size = self._receive(buffer)
                if not size:
                    raise ConnectionError("the server closed the connection")
                reader.feed(buffer, 0, size)
            else:
                out.append(reply)
        return out

    def _receive(self, buffer: bytes) -> int:
        """Bytes off the socket into ``buffer``: polled for (see BUSY_WAIT_US), else waited
        for asleep."""
        if self._poll and not self._skip and _Load.core_to_spare(time.perf_counter()):
            size = _poll(self.sock, buffer, self._poll)
            if size is not None and size >= 0:
                self._misses = 0
                return size
            self._misses = min(self._misses + 1, MAX_SKIP_DOUBLINGS)
            if size == _CORE_TAKEN or self._misses > 1:
                self._skip = 1 << self._misses
        elif self._skip:
            self._skip -= 1
        received: int = self.sock.recv_into(buffer)
        return received


def _poll(sock: socket.socket, buffer: bytes, seconds: float) -> int | None:
    """Bytes received within ``seconds`` of polling, or None. Between polls the core is
    offered to any other process ready to run on it (the server, another scheduler); if one
    took it, no core is idle and polling stops (_CORE_TAKEN): it would take time those
    processes need."""
    deadline = time.perf_counter() + seconds
    while True:
        try:
            return sock.recv_into(buffer, 0, socket.MSG_DONTWAIT)
        except BlockingIOError:
            now = time.perf_counter()
            if now > deadline:
                return None
            os.sched_yield()
            if time.perf_counter() - now > _TAKEN:
                return _CORE_TAKEN


def _kernel_timeout(sock: socket.socket, timeout: float | None) -> None:
    """Let the kernel time out the socket's sends and receives (SO_SNDTIMEO, SO_RCVTIMEO)
    instead of Python, which polls before each of them: two system calls fewer per round
    trip, 4-6 % of a bare reserve round trip here. A send or receive that times out raises
    OSError (EAGAIN), which drops the connection like Python's TimeoutError did."""
    if timeout is None:
        return  # (no timeout asked for: the socket stays blocking)
    seconds = max(timeout, 0.001)
    interval = struct.pack("@ll", int(seconds), int(seconds % 1 * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, interval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, interval)
    sock.settimeout(None)


class Channel:
    """Commands to one Redis server, on one kept connection."""

    def __init__(self, client: redis.Redis, *, busy_wait_us: int = BUSY_WAIT_US) -> None:
        self.client = client
        self.busy_wait_us = busy_wait_us
        self._lock = threading.Lock()
        self._connections: dict[object, Any] = {}  # redis-py's connections are untyped
        self._replies: dict[object, _Replies] = {}
        self.round_trips = 0  # sends of a batch to the servers (in a cluster, in parallel)

    def exchange(self, commands: Sequence[Command], keys: Sequence[str | None]) -> list[Any]:
        """Send the commands and read every reply (error replies as exceptions, in place).

        ``keys`` route each command (its first key; None for a command with none).
        """
        replies: list[Any] = [None] * len(commands)
        todo = list(range(len(commands)))
        with self._lock:
            for attempt in range(ATTEMPTS):
                groups: dict[object, list[int]] = {}
                for i in todo:
                    groups.setdefault(self._route(keys[i]), []).append(i)
                failed = self._send_and_read(groups, commands, replies)
                retry = failed + [i for i in todo if isinstance(replies[i], _REROUTE)]
                if not retry:
                    break
                if attempt == ATTEMPTS - 1:
                    if failed:
                        raise ConnectionError(f"no answer after {ATTEMPTS} attempts")
                    break  # the redirection errors stay in place, and are reported
                time.sleep(min(0.5, 0.02 * 2**attempt))
                self._refresh()
                todo = sorted(retry)
        return replies

    def _send_and_read(
        self,
        groups: dict[object, list[int]],
        commands: Sequence[Command],
        replies: list[Any],
    ) -> list[int]:
        """Write each node's commands, then read each node's replies; the indices that failed."""
        self.round_trips += 1
        failed: list[int] = []
        sent = []
        for node, indices in groups.items():
            connection = self._connection(node)
            try:
                connection.send_packed_command([pack([commands[i] for i in indices])])
                sent.append((node, connection, indices))
            except (ConnectionError, TimeoutError, OSError):
                self._drop(node)
                failed += indices
        for node, connection, indices in sent:
            try:
                read = self._reader(node, connection).read(len(indices))
                for i, reply in zip(indices, read, strict=True):
                    replies[i] = reply
            except (ConnectionError, TimeoutError, OSError):
                # The node may or may not have run them: all are idempotent, send them again.
                self._drop(node)
                failed += indices
            except BaseException:
                self._drop(node)  # replies may be left unread: never reuse the connection
                raise
        return failed

    # -- one server ------------------------------------------------------------------------

    def _route(self, key: str | None) -> object:
        return None

    def _refresh(self) -> None:
        """Nothing to learn: a dropped connection reconnects on its next use."""

    def _pool(self, node: object) -> Any:
        return self.client.connection_pool

    def _connection(self, node: object) -> Any:
        connection = self._connections.get(node)
        if connection is None or connection.pid != _Process.pid:
            connection = self._connections[node] = self._pool(node).get_connection()
        return connection

    def _reader(self, node: object, connection: Any) -> _Replies:
        """The reply reader of ``connection``'s current socket (connected by the send); a
        socket seen for the first time is set to time out in the kernel."""
        replies = self._replies.get(node)
        if replies is None or replies.sock is not connection._sock:
            _kernel_timeout(connection._sock, connection.socket_timeout)
            replies = self._replies[node] = _Replies(connection._sock, self.busy_wait_us)
        return replies

    def _drop(self, node: object) -> None:
        self._replies.pop(node, None)
        connection = self._connections.pop(node, None)
        if connection is not None:
            connection.disconnect()
            if connection.pid == _Process.pid:
                with suppress(Exception):  # a failed node's pool may be gone with it
                    self._pool(node).release(connection)

    def close(self) -> None:
        with self._lock:
            for node in list(self._connections):
                self._drop(node)


class ClusterChannel(Channel):
    """Commands to the nodes of a Redis Cluster, each to the primary owning its key's slot.

    Commands without a key (TIME, SCRIPT LOAD) go to the primary of slot 0. After a failover
    the slot map is read again from the nodes that answer.
    """

    def __init__(self, client: Any, *, busy_wait_us: int = BUSY_WAIT_US) -> None:
        super().__init__(client, busy_wait_us=busy_wait_us)
        self.cluster = client  # a redis.cluster.RedisCluster (typed as such, not as a Redis)
        self._clients: dict[str, Any] = {}
        self._owners: dict[int, str] = {}  # slot -> node, until the slot map is read again

    def _route(self, key: str | None) -> object:
        from redis.crc import key_slot

        slot = 0 if key is None else key_slot(key.encode())
        owner = self._owners.get(slot)
        if owner is None:
            node = self.cluster.nodes_manager.get_node_from_slot(slot)
            self._clients[node.name] = node
            owner = self._owners[slot] = str(node.name)
        return owner

    def _refresh(self) -> None:
        for node in list(self._connections):
            self._drop(node)
        self._owners.clear()
        self.cluster.nodes_manager.initialize()

    def _pool(self, node: object) -> Any:
        found = self._clients.get(str(node)) or self.cluster.get_node(node_name=node)
        if found.redis_connection is None:
            self.cluster.nodes_manager.create_redis_connections([found])
        return found.redis_connection.connection_pool
