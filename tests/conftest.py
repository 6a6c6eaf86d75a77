"""Shared fixtures: a real redis-server per test session, started on a unix socket.

Tests that need a server binary skip on a developer machine without it, but fail in CI
(``CI`` set), where a skip would hide a missing part.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from hostsched.keys import Keys
from hostsched.store import Store

IN_CI = bool(os.environ.get("CI"))


def require_binary(name: str) -> str:
    """The path of ``name``; skips outside CI, fails in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed"
        if IN_CI:
            pytest.fail(f"{message}, and CI must run these tests")
        pytest.skip(message)
    return path


@dataclass(frozen=True)
class RedisServer:
    url: str
    socket: Path
    directory: Path
    process: subprocess.Popen[bytes]

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket))


def start_redis(directory: Path, *extra: str) -> RedisServer:
    """Start redis-server on a unix socket in ``directory`` (no TCP) and wait until it answers."""
    binary = require_binary("redis-server")
    socket = directory / "redis.sock"
    process = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--unixsocket",
            str(socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(directory),
            "--save",
            "",
            "--appendonly",
            "no",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = RedisServer(f"unix://{socket}", socket, directory, process)
    deadline = time.monotonic() + 10
    while True:
        try:
            if server.client().ping():
                return server
        except redis.RedisError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.02)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    directory = Path(tempfile.mkdtemp(prefix="hs-redis-", dir="/tmp"))
    server = start_redis(directory)
    yield server
    server.process.terminate()
    server.process.wait(10)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, flushed for this test."""
    server_client = redis_server.client()
    server_client.flushall()
    server_client.close()
    return redis_server.url


@pytest.fixture
def store(redis_url: str) -> Iterator[Store]:
    opened = Store.connect(redis_url, keys=Keys("test"))
    yield opened
    opened.close()
