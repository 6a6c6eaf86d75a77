"""The channel's own wire work: packing commands and reading replies, without a server."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.connection import PythonRespSerializer
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    NoScriptError,
    ResponseError,
    TryAgainError,
)

from hostsched import channel
from hostsched.channel import _Replies, pack

arguments = st.one_of(
    st.text(), st.binary(), st.integers(-(2**63), 2**63), st.floats(allow_nan=False)
)


commands = st.tuples(st.sampled_from(["EVALSHA", "GET", "HSET"]), st.lists(arguments, max_size=6))


@given(st.lists(commands, min_size=1, max_size=4))
def test_pack_writes_what_redis_py_writes(batch: list[tuple[str, list[object]]]) -> None:
    serializer = PythonRespSerializer(buffer_cutoff=1 << 30, encode=_encode)
    expected = b"".join(b"".join(serializer.pack(name, *args)) for name, args in batch)
    assert pack([(name, *args) for name, args in batch]) == expected


@pytest.mark.parametrize("value", [None, True, [1], {"a": 1}])
def test_pack_refuses_what_it_cannot_send(value: object) -> None:
    with pytest.raises(TypeError):
        pack([("SET", "key", value)])


def _encode(value: object) -> bytes:
    """redis-py's encoding of an argument (its Encoder, without a connection)."""
    from redis._parsers.encoders import Encoder

    return Encoder("utf-8", "strict", False).encode(value)  # type: ignore[arg-type]


class _Trickle:
    """A socket that hands over its bytes a few at a time, then reports the peer gone."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._step = data, step

    def recv_into(self, buffer: bytearray) -> int:
        chunk, self._data = self._data[: self._step], self._data[self._step :]
        buffer[: len(chunk)] = chunk
        return len(chunk)


REPLIES = (
    b"+OK\r\n:42\r\n$5\r\nhello\r\n*2\r\n*1\r\n:1\r\n$-1\r\n"
    b"-MOVED 3999 127.0.0.1:6381\r\n-ASK 3999 127.0.0.1:6381\r\n-TRYAGAIN later\r\n"
    b"-CLUSTERDOWN The cluster is down\r\n-NOSCRIPT No matching script\r\n"
    b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
)


@pytest.mark.parametrize("step", [1, 7, 1 << 16])
def test_replies_are_read_whole_and_errors_come_back_as_redis_py_exceptions(step: int) -> None:
    replies = _Replies(_Trickle(REPLIES, step)).read(10)
    assert replies[:4] == [b"OK", 42, b"hello", [[1], None]]
    kinds = [MovedError, AskError, TryAgainError, ClusterDownError, NoScriptError, ResponseError]
    assert [type(reply) for reply in replies[4:]] == kinds
    assert str(replies[-1]).startswith("WRONGTYPE")


def test_a_connection_closed_midway_is_a_connection_error() -> None:
    with pytest.raises(ConnectionError):
        _Replies(_Trickle(b":1\r\n$5\r\nhel", 4)).read(2)


@pytest.fixture
def pair(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two connected sockets on a machine taken to have a core to spare for polling, where no
    yield of the core counts as taken (here the sending thread's turns with the GIL would)."""
    monkeypatch.setattr(channel, "_CORES", 2)
    monkeypatch.setattr(channel, "_TAKEN", 3600.0)
    monkeypatch.setattr(channel._Load, "_cores", 2)
    monkeypatch.setattr(channel._Load, "checked", float("-inf"))
    monkeypatch.setattr(channel, "_runnable", lambda: 1)
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


def send_later(sock: socket.socket, *pieces: tuple[float, bytes]) -> threading.Thread:
    """Send each piece after its delay (seconds), from a thread."""

    def run() -> None:
        for delay, data in pieces:
            time.sleep(delay)
            sock.sendall(data)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_reply_within_the_busy_wait_is_polled_for_in_pieces(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    replies = _Replies(ours, busy_wait_us=2_000_000)
    send_later(theirs, (0.01, b"*2\r\n:1\r\n$5\r\nhe"), (0.01, b"llo\r\n"))
    assert replies.read(1) == [[1, b"hello"]]
    assert (replies._misses, replies._skip) == (0, 0)  # each piece came while polling


def test_a_reply_after_the_busy_wait_is_slept_for_and_polling_backs_off(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    replies = _Replies(ours, busy_wait_us=1_000)
    send_later(theirs, (0.05, b":1\r\n"))
    assert replies.read(1) == [1]
    assert (replies._misses, replies._skip) == (1, 0)  # one late reply: forgiven
    send_later(theirs, (0.05, b":2\r\n"))
    assert replies.read(1) == [2]
    assert (replies._misses, replies._skip) == (2, 4)  # late twice in a row: four reads sleep
    for value in range(3, 7):
        theirs.sendall(b":%d\r\n" % value)
        assert replies.read(1) == [value]
    assert replies._skip == 0
    send_later(theirs, (0.05, b":7\r\n"))
    assert replies.read(1) == [7]
    assert (replies._misses, replies._skip) == (3, 8)  # (the sleeping reads missed no poll)
    for value in range(8, 16):
        theirs.sendall(b":%d\r\n" % value)
        assert replies.read(1) == [value]
    theirs.sendall(b":16\r\n")
    assert replies.read(1) == [16]
    assert (replies._misses, replies._skip) == (0, 0)  # polled in time: back to polling


def test_polling_stops_when_another_process_takes_the_core(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, theirs = pair
    monkeypatch.setattr(channel, "_TAKEN", 20e-6)
    monkeypatch.setattr(channel.os, "sched_yield", lambda: time.sleep(0.001))  # (taken)
    began = time.perf_counter()
    assert channel._poll(ours, cast(bytes, bytearray(64)), 10.0) == channel._CORE_TAKEN
    assert time.perf_counter() - began < 5.0  # it stopped at the first yield that was taken
    theirs.sendall(b":1\r\n")
    replies = _Replies(ours, busy_wait_us=10_000_000)
    assert replies.read(1) == [1]  # (already there: no yield)
    send_later(theirs, (0.05, b":2\r\n"))
    assert replies.read(1) == [2]
    assert (replies._misses, replies._skip) == (1, 2)  # polling backs off at once


def test_no_polling_when_turned_off_on_one_core_or_over_tls(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, _ = pair
    assert _Replies(ours, busy_wait_us=200)._poll == 0.0002
    assert _Replies(ours, busy_wait_us=0)._poll == 0
    context = ssl.create_default_context()
    with context.wrap_socket(socket.socket(), server_hostname="redis.example") as tls:
        assert _Replies(tls, busy_wait_us=200)._poll == 0  # (it takes no recv flags)
    monkeypatch.setattr(channel, "_CORES", 1)
    assert _Replies(ours, busy_wait_us=200)._poll == 0


def test_reads_sleep_while_more_processes_are_ready_to_run_than_cores(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, theirs = pair
    ready = [3]  # this process, the server and one more, on 2 cores
    monkeypatch.setattr(channel, "_runnable", lambda: ready[0])
    monkeypatch.setattr(channel, "LOAD_EVERY", 0.0)
    replies = _Replies(ours, busy_wait_us=1_000)
    send_later(theirs, (0.05, b":1\r\n"))
    assert replies.read(1) == [1]
    assert (replies._misses, replies._skip) == (0, 0)  # it slept at once: no poll missed
    ready[0] = 2
    send_later(theirs, (0.05, b":2\r\n"))
    assert replies.read(1) == [2]
    assert (replies._misses, replies._skip) == (1, 0)  # a core to spare: it polled (and missed)


def test_the_count_of_processes_ready_to_run_is_read_from_proc_loadavg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def runnable(text: bytes) -> int:
        path = tmp_path / "loadavg"
        path.write_bytes(text)
        fd = os.open(path, os.O_RDONLY)
        monkeypatch.setattr(channel, "_loadavg", lambda: fd)
        try:
            return channel._runnable()
        finally:
            os.close(fd)

    assert runnable(b"0.52 0.58 0.59 3/873 12345\n") == 3
    assert runnable(b"0.52 0.58 0.59 x/873 12345\n") == 0  # unknown: taken to be free
    assert runnable(b"") == 0
    monkeypatch.setattr(channel, "_loadavg", lambda: -1)  # (no /proc/loadavg)
    assert channel._runnable() == 0
    monkeypatch.undo()
    if os.path.exists("/proc/loadavg"):
        assert channel._runnable() >= 1  # (this process is running)
