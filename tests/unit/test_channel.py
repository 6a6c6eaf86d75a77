"""The channel's own wire work: packing commands and reading replies, without a server."""

from __future__ import annotations

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
