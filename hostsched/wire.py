"""Talking to Redis: the Lua scripts, error translation, and batched round trips.

A :class:`Trip` packs many commands (scripts by SHA, plain commands) into one write per server
(see :mod:`hostsched.channel`) and reads every reply: one round trip, whatever the number of
commands, and without redis-py's per-command overhead, which costs more than the network on a
local server. Every redis-py error becomes :class:`StoreUnavailable` here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.exceptions import (
    AuthenticationError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from hostsched.channel import Channel
from hostsched.errors import StoreUnavailable

#: Scripts that start with the shared local functions of ``lua/lib.lua``.
_USES_LIBRARY = frozenset({"reserve", "release", "cleanup", "write_actual"})

T = TypeVar("T")


@dataclass(frozen=True)
class Script:
    name: str
    text: str
    sha: str


@cache
def script(name: str) -> Script:
    """The text and SHA1 of ``lua/<name>.lua`` (after ``lua/lib.lua`` where used), read once."""
    folder = resources.files("hostsched").joinpath("lua")
    text = folder.joinpath(f"{name}.lua").read_text("utf-8")
    if name in _USES_LIBRARY:
        text = folder.joinpath("lib.lua").read_text("utf-8") + text
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


def first_line(exc: BaseException) -> str:
    """An error's message, its first line only (its class name if it has none)."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]


#: How Redis says a command was refused to the user, directly or inside a script.
_REFUSED = ("NOPERM", "no permissions", "can't run this command")
_PASSWORD_HINT = "set the password: in the URL, HOSTSCHED_REDIS_PASSWORD or redis.password_file"


class translated:  # (named as the function it was: ``with translated("what"):``)
    """Turn redis-py errors into StoreUnavailable (exit 5) with one clear line.

    A class rather than a generator: it wraps every round trip, and costs 0.3 µs where a
    ``@contextmanager`` generator cost 0.8–0.9 µs.
    """

    __slots__ = ("what",)

    def __init__(self, what: str = "Redis") -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, trace: object) -> None:
        what = self.what
        if isinstance(exc, UnicodeError):  # a host name that IDNA cannot encode (empty, >63)
            raise StoreUnavailable(f"{what} failed: invalid host name in the URL ({exc})") from None
        if isinstance(exc, RedisError | RedisClusterException):
            reason = first_line(exc)
            hint = "check the Redis URL and that the server is running"
            if isinstance(exc, AuthenticationError) or "authenticat" in reason.lower():
                hint = _PASSWORD_HINT
            elif any(sign in reason for sign in _REFUSED):
                hint = "the Redis user lacks a permission: see the README's ACL line"
            raise StoreUnavailable(f"{what} failed: {reason}", hint=hint) from exc


def text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def wrong_type(reply: object) -> bool:
    """A WRONGTYPE reply: a key holds data that is not ours (never a permission or OOM error)."""
    return isinstance(reply, ResponseError) and str(reply).startswith("WRONGTYPE")


class Pending(Generic[T]):
    """The parsed reply of one command of a :class:`Trip`, available once the trip has run."""

    __slots__ = ("_parse", "_value")

    def __init__(self, parse: Callable[[Any], T]) -> None:
        self._parse = parse

    def get(self) -> T:
        return self._value

    def _set(self, reply: Any) -> None:
        self._value = self._parse(reply)


#: Commands whose arguments hold no key; they go to any server (in a cluster, slot 0's).
_KEYLESS = frozenset({"TIME", "PING", "SCRIPT", "INFO", "WAIT"})


def reply_or_raise(reply: Any) -> Any:
    if isinstance(reply, Exception):
        raise reply
    return reply


class Trip:
    """Commands sent together in one round trip; each yields a :class:`Pending` reply.

    A reply that is an error is raised as StoreUnavailable unless its command was added with
    ``errors=True`` (the parser then sees the exception, e.g. to contain a WRONGTYPE).
    """

    def __init__(self, channel: Channel, what: str = "Redis") -> None:
        self._channel = channel
        self._what = what
        self._commands: list[tuple[object, ...]] = []
        self._keys: list[str | None] = []  # each command's first key, which routes it
        self._scripts: list[Script | None] = []
        self._pending: list[Pending[Any]] = []
        self._errors: list[bool] = []

    def command(
        self,
        *args: object,
        parse: Callable[[Any], T] = reply_or_raise,
        errors: bool = False,
        key: str | None = None,
    ) -> Pending[T]:
        """A plain command. Its key, which routes it, is its first argument unless ``key``
        names one (for WAIT: the key whose node it must wait on)."""
        if key is None and args[0] not in _KEYLESS:
            key = str(args[1])
        return self._add(args, key, None, parse, errors)

    def script(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[object],
        parse: Callable[[Any], T] = reply_or_raise,
        errors: bool = False,
    ) -> Pending[T]:
        found = script(name)
        command = ("EVALSHA", found.sha, len(keys), *keys, *args)
        return self._add(command, keys[0] if keys else None, found, parse, errors)

    def _add(
        self,
        command: tuple[object, ...],
        key: str | None,
        found: Script | None,
        parse: Callable[[Any], T],
        errors: bool,
    ) -> Pending[T]:
        pending: Pending[T] = Pending(parse)
        self._commands.append(command)
        self._keys.append(key)
        self._scripts.append(found)
        self._pending.append(pending)
        self._errors.append(errors)
        return pending

    def run(self) -> None:
        """Send every command at once, re-send after a dropped connection, parse the replies."""
        if not self._commands:
            return
        with translated(self._what):
            replies = self._channel.exchange(self._commands, self._keys)
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:
                # A script that was not loaded did nothing, so running just those again is
                # safe. Each is loaded on the server (the cluster node) that lacked it.
                again: list[tuple[object, ...]] = []
                keys: list[str | None] = []
                for i in missing:
                    found = self._scripts[i]
                    assert found is not None
                    again += [("SCRIPT", "LOAD", found.text), self._commands[i]]
                    keys += [self._keys[i], self._keys[i]]
                rerun = self._channel.exchange(again, keys)[1::2]
                for i, reply in zip(missing, rerun, strict=True):
                    replies[i] = reply
            for reply, errors in zip(replies, self._errors, strict=True):
                if isinstance(reply, Exception) and not errors:
                    raise reply
            for pending, reply in zip(self._pending, replies, strict=True):
                pending._set(reply)
