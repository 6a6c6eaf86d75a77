"""Faults: the store restarted mid-run, a reply lost so the client retries, skewed clocks, and
the embedded server killed under load."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from hostsched.channel import ATTEMPTS, Channel
from hostsched.collect import collect
from hostsched.config import Config, HostConfig, StaticHost
from hostsched.keys import Keys
from hostsched.model import Request, Resources
from hostsched.scheduler import Scheduler
from hostsched.store import Store, script
from tests.conftest import RedisServer, start_redis

ROOT = Path(__file__).parents[2]
EXAMPLE = str(ROOT / "config.example.yaml")
G = 1 << 30


def hostsched(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HOSTSCHED_")}
    return subprocess.run([sys.executable, "-m", "hostsched", "--config", EXAMPLE, *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**clean, **(env or {})})  # fmt: skip


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of this test's own, with append-only persistence, that it may restart."""
    directory = Path(tempfile.mkdtemp(prefix="hs-own-", dir="/tmp"))
    server = start_redis(directory, "--appendonly", "yes")
    yield server
    server.process.kill()
    shutil.rmtree(directory, ignore_errors=True)


def test_store_restarted_mid_run(own_redis: RedisServer) -> None:
    url = own_redis.url
    assert hostsched("--redis-url", url, "collect").returncode == 0
    results: list[subprocess.CompletedProcess[str]] = []
    stop = threading.Event()

    def loop(tag: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            results.append(hostsched("--redis-url", url, "schedule", "--cpu", "250m",
                                     "--mem", "256M", "--id", f"{tag}-{n}"))  # fmt: skip

    threads = [threading.Thread(target=loop, args=(f"t{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    own_redis.client().shutdown()  # graceful: the AOF is complete
    own_redis.process.wait(10)
    time.sleep(1.0)  # commands fail meanwhile
    restarted = start_redis(own_redis.directory, "--appendonly", "yes")
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join(60)
    codes = [r.returncode for r in results]
    assert set(codes) <= {0, 5} and 0 in codes and 5 in codes, codes
    for failed in (r for r in results if r.returncode == 5):
        assert failed.stdout == "" and "Traceback" not in failed.stderr
        assert failed.stderr.startswith("hostsched: error:")
    inspect = hostsched("--redis-url", url, "inspect", "--json")
    hosts = json.loads(inspect.stdout)["hosts"]
    stored = {r["id"] for h in hosts for r in h["reservations"]}
    acked = {r.args[-1] for r in results if r.returncode == 0}
    assert acked <= stored  # everything acknowledged survived the restart
    for host in hosts:
        for dim in ("cpu", "memory", "disk", "gpu"):
            assert host[dim]["free"] >= 0, host["name"]
    restarted.process.kill()
    print("restart:", json.dumps({"commands": len(codes), "exit_5": codes.count(5),
                                  "acknowledged": len(acked)}))  # fmt: skip


class UnixProxy:
    """A TCP proxy to a unix-socket Redis, one command batch at a time; ``forward`` decides
    what the client hears of each reply (False: close the connection)."""

    def __init__(self, upstream: Path) -> None:
        self.upstream = upstream
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        server = socket.socket(socket.AF_UNIX)
        server.connect(str(self.upstream))
        with client, server, contextlib.suppress(OSError):
            while data := client.recv(65536):
                server.sendall(data)
                if not self.forward(data, server.recv(65536), client):
                    return

    def forward(self, data: bytes, reply: bytes, client: socket.socket) -> bool:
        client.sendall(reply)
        return True

    def close(self) -> None:
        self.listener.close()


class DropFirstReply(UnixProxy):
    """Swallows the reply to the first call of one script and closes the connection, as a
    network fault after the server has acted would."""

    def __init__(self, upstream: Path, sha: str) -> None:
        self.sha, self.dropped = sha.encode(), 0
        super().__init__(upstream)

    def forward(self, data: bytes, reply: bytes, client: socket.socket) -> bool:
        if self.sha in data and not self.dropped:
            self.dropped += 1
            return False  # the server has reserved; the client never hears it
        return super().forward(data, reply, client)


def test_lost_reply_retry_counts_once(redis_server: RedisServer, redis_url: str) -> None:
    config = Config(hosts=(HostConfig("hv", static=StaticHost(Resources(4000, 8 * G))),))
    direct = Store.connect(redis_url, keys=Keys())
    collect(config, direct)
    direct.client.script_load(script("reserve").text)
    proxy = DropFirstReply(redis_server.socket, script("reserve").sha)
    try:
        via_proxy = Store.connect(f"redis://127.0.0.1:{proxy.port}", keys=Keys(), timeout=2)
        plan = Scheduler(config, via_proxy).schedule(Request(Resources(3000, G)), ids=["web-1"])
    finally:
        proxy.close()
    assert proxy.dropped == 1  # the retry really happened
    assert plan.placements[0].host == "hv" and plan.placements[0].existing
    entries = direct.client.hgetall(direct.keys.scheduled("hv"))
    assert list(entries) == [b"web-1"]
    assert Scheduler(config, direct).inspect("hv").hosts[0].reserved == Resources(3000, G)


class SilentOn(UnixProxy):
    """Never returns the reply to a command carrying ``marker``, and keeps the connection
    open: a server gone silent."""

    def __init__(self, upstream: Path, marker: bytes) -> None:
        self.marker = marker
        super().__init__(upstream)

    def forward(self, data: bytes, reply: bytes, client: socket.socket) -> bool:
        return self.marker in data or super().forward(data, reply, client)


def test_a_server_gone_silent_is_an_error_after_the_attempts(redis_server: RedisServer) -> None:
    """The channel's sockets time out in the kernel (channel._kernel_timeout), not in Python:
    each attempt still ends, on a new connection, and the call fails instead of waiting."""
    proxy = SilentOn(redis_server.socket, b"go-silent")
    client = redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=0.05)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            Channel(client).exchange([("ECHO", "go-silent")], [None])
        except BaseException as exc:  # (what it raised is the result)
            outcome.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(timeout=60)
    proxy.close()
    assert not caller.is_alive(), "a silent server made the call wait for ever"
    assert len(outcome) == 1 and str(outcome[0]) == f"no answer after {ATTEMPTS} attempts"
    assert proxy.connections == ATTEMPTS


@pytest.mark.parametrize("skew", [-600, 600])
def test_skewed_scheduler_clock_changes_no_age(redis_url: str, skew: int) -> None:
    assert hostsched("--redis-url", redis_url, "collect").returncode == 0
    code = (
        "import sys, time\n"
        f"real = time.time\ntime.time = lambda: real() + {skew}\n"
        "from hostsched.cli import main\n"
        f"main(['--config', {EXAMPLE!r}, '--redis-url', {redis_url!r}, 'schedule', '--cpu', '1',"
        " '--id', 'skewed'])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    hosts = json.loads(hostsched("--redis-url", redis_url, "inspect", "--json").stdout)["hosts"]
    ages = [r["age"] for h in hosts for r in h["reservations"] if r["id"] == "skewed"]
    assert len(ages) == 1 and 0 <= ages[0] < 5
    assert all(h["status"] == "online" and h["age"] < 30 for h in hosts)


def test_embedded_server_killed_under_load() -> None:
    state = Path(tempfile.mkdtemp(prefix="hse", dir="/tmp"))
    env = {"HOSTSCHED_STATE_DIR": str(state)}
    try:
        assert hostsched("collect", env=env).returncode == 0
        results = []
        for n in range(12):
            if n == 5:  # SIGKILL the server between commands and during one
                pid = int((state / "valkey.pid").read_text())
                os.kill(pid, signal.SIGKILL)
            results.append(hostsched("schedule", "--cpu", "250m", "--id", f"e-{n}", env=env))
        codes = [r.returncode for r in results]
        assert set(codes) <= {0, 5} and codes.count(0) >= 11, codes
        hosts = json.loads(hostsched("inspect", "--json", env=env).stdout)["hosts"]
        stored = {r["id"] for h in hosts for r in h["reservations"]}
        assert {f"e-{n}" for n, r in enumerate(results) if r.returncode == 0} <= stored
    finally:
        hostsched("store", "stop", env=env)
        shutil.rmtree(state, ignore_errors=True)
