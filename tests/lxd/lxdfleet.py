"""Throwaway LXD daemons for tests: start them, fill them with instances, leave no trace.

Each daemon gets its own ``LXD_DIR`` under ``/tmp/hslxd-XXXX/`` (short, so the unix socket path
stays far below the 108-byte limit), a ``dir`` storage pool named ``default`` with the default
profile's root disk on it, HTTPS on ``127.0.0.1:<free port>`` and a random trust password. No
managed network is created: ``lxd init --preseed`` without a ``networks`` section never makes
``lxdbr0``, and the instances need no NIC.

Environment knobs, found with Debian 12's lxd 5.0.2 running as root (cgroup v1 hybrid, no AppArmor
in the kernel). Two daemons run side by side with nothing more than:

- ``LXD_DIR``: database, sockets, logs (``LXD_DIR/logs``, not ``/var/log/lxd``), cache, images,
  the ``shmounts`` and ``devlxd`` tmpfs mounts, and the storage pool all live under it. Nothing in
  ``/var/lib/lxd``, ``/var/log/lxd`` or ``/run/lxd`` is touched, and no ``--group`` is needed (the
  socket is root's, and the tests run as root).
- ``LXD_CONF``: the ``lxc`` client otherwise writes ``~/.config/lxc/config.yml``.
- ``LXD_SECURITY_APPARMOR=false``: a no-op here (no AppArmor), but on a CI runner with AppArmor it
  keeps the daemons from loading profiles into the kernel, which is global state.
- ``HTTPS_PROXY``/``HTTP_PROXY`` pointing at a local port that refuses connections: at start-up LXD
  fetches ``https://images.linuxcontainers.org/meta/instance-types`` (there is no setting to turn
  that task off), which would mean a DNS query and traffic off the machine. Through the refusing
  proxy it fails at once on 127.0.0.1, and LXD just logs a warning. Any inherited ``NO_PROXY`` is
  dropped so it cannot exempt that host.
- The storage pool has no ``source``: LXD refuses a source inside ``LXD_DIR`` and creates the pool
  in ``LXD_DIR/storage-pools/default`` itself when none is given.

Running containers need nothing special here: unprivileged containers start with the
``root:100000:10000001`` entries Debian's lxd package put in ``/etc/subuid`` and ``/etc/subgid``.
The image is built offline from ``busybox-static``. Both daemons share the kernel's cgroup tree, so
two containers with the same name on two daemons end up in ``lxc.payload.NAME`` and
``lxc.payload.NAME-1``; the fixture uses distinct names anyway.

Outside ``LXD_DIR``, liblxc leaves lock directories in ``/run/lxc/lock/<lxcpath>`` and an empty
``lxc.pivot`` cgroup in each hierarchy; ``close()`` removes those it created.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import socket
import struct
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.lxd.cleanup import CGROUP_ROOT, kill_leftovers, unmount_under

ROOT_PARENT = "/tmp"
ROOT_PREFIX = "hslxd-"
IMAGE_ALIAS = "busybox"
COMMAND_TIMEOUT = 30.0
START_TIMEOUT = 20.0
SHUTDOWN_TIMEOUT = 15
LXC_LOCK_ROOT = Path("/run/lxc/lock")
_PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


class LxdFixtureError(RuntimeError):
    """The fixture could not do what a test asked of it; the message says why."""


class LxdCommandError(LxdFixtureError):
    """An ``lxc`` or ``lxd`` command failed; carries its stderr."""

    def __init__(self, args: list[str], returncode: int, stderr: str) -> None:
        super().__init__(f"{' '.join(args)} failed (exit {returncode}): {stderr.strip()}")
        self.returncode = returncode
        self.stderr = stderr


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(eq=False)
class LxdDaemon:
    """One running ``lxd`` with its own ``LXD_DIR``; ``lxc()`` talks to it over its unix socket."""

    name: str
    lxd_dir: Path
    port: int
    trust_password: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    lxd_binary: str
    lxc_binary: str
    # Bound, never listening: connections to it are refused. LXD's outbound proxy points here.
    _refuser: socket.socket = field(repr=False)

    @property
    def socket(self) -> Path:
        return self.lxd_dir / "unix.socket"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def server_cert_path(self) -> Path:
        return self.lxd_dir / "server.crt"

    @property
    def log_path(self) -> Path:
        return self.lxd_dir / "lxd.log"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @classmethod
    def start(cls, name: str, lxd_dir: Path, *, lxd: str, lxc: str) -> LxdDaemon:
        """Start ``lxd``, wait until it answers, and configure storage, HTTPS and the password."""
        lxd_dir.mkdir(mode=0o711)
        refuser = socket.socket()
        refuser.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{refuser.getsockname()[1]}"
        env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARIABLES}
        env.update(
            LXD_DIR=str(lxd_dir),
            LXD_CONF=str(lxd_dir / "client"),
            LXD_SECURITY_APPARMOR="false",
            HTTPS_PROXY=proxy,
            https_proxy=proxy,
            HTTP_PROXY=proxy,
            http_proxy=proxy,
        )
        try:
            with open(lxd_dir / "lxd.log", "wb") as log:
                # Its own session: Ctrl-C on pytest must reach the teardown, not kill lxd midway.
                process = subprocess.Popen(
                    [lxd, "--verbose"],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as error:
            refuser.close()
            raise LxdFixtureError(f"cannot run {lxd}: {error}") from error
        daemon = cls(name, lxd_dir, 0, secrets.token_urlsafe(18), process, env, lxd, lxc, refuser)
        try:
            daemon._wait_ready()
            daemon._configure()
        except BaseException:
            daemon.stop()
            raise
        return daemon

    def _wait_ready(self) -> None:
        waiter = subprocess.Popen(
            [self.lxd_binary, "waitready", "--timeout", str(int(START_TIMEOUT))],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT + 2
        try:
            while waiter.poll() is None:
                if not self.running:
                    raise self._failure(f"lxd exited with status {self.process.returncode}")
                if time.monotonic() > deadline:
                    raise self._failure(f"not ready after {START_TIMEOUT:.0f} s")
                time.sleep(0.05)
        finally:
            if waiter.poll() is None:
                waiter.kill()
            waiter.wait()
        if waiter.returncode != 0:
            stderr = waiter.stderr.read().decode() if waiter.stderr else ""
            raise self._failure(f"lxd waitready failed: {stderr.strip()}")

    def _configure(self) -> None:
        # The password travels on stdin, never on a command line other processes can read.
        preseed = (
            "config:\n"
            f"  core.trust_password: {self.trust_password}\n"
            "storage_pools:\n"
            "- name: default\n"
            "  driver: dir\n"
            "profiles:\n"
            "- name: default\n"
            "  devices:\n"
            "    root: {type: disk, path: /, pool: default}\n"
        )
        try:
            self.run_lxd("init", "--preseed", input=preseed)
        except LxdCommandError as error:
            raise self._failure(str(error)) from None
        # The free port may be taken between the probe and the bind: try a few.
        for attempt in range(5):
            port = free_port()
            try:
                self.lxc("config", "set", "core.https_address", f"127.0.0.1:{port}")
            except LxdCommandError as error:
                if attempt == 4:
                    raise self._failure(str(error)) from None
            else:
                self.port = port
                return

    def _failure(self, reason: str) -> LxdFixtureError:
        return LxdFixtureError(
            f"LXD daemon {self.name} ({self.lxd_dir}) did not start: {reason}\n"
            f"--- last lines of {self.log_path} ---\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(no log: {error})"
        return "\n".join(text.splitlines()[-lines:])

    def lxc(self, *args: str, input: str | None = None, timeout: float = COMMAND_TIMEOUT) -> str:
        """Run ``lxc ARGS`` against this daemon; its stdout, or LxdCommandError with stderr."""
        return self._run([self.lxc_binary, *args], input, timeout)

    def run_lxd(
        self, *args: str, input: str | None = None, timeout: float = COMMAND_TIMEOUT
    ) -> str:
        """Run ``lxd ARGS`` (a subcommand such as ``init`` or ``shutdown``) against this daemon."""
        return self._run([self.lxd_binary, *args], input, timeout)

    def _run(self, argv: list[str], input: str | None, timeout: float) -> str:
        try:
            done = subprocess.run(
                argv, env=self.env, input=input, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise LxdCommandError(argv, -1, f"timed out after {timeout:.0f} s") from None
        if done.returncode != 0:
            raise LxdCommandError(argv, done.returncode, done.stderr)
        return done.stdout

    def create(
        self,
        name: str,
        *,
        cpu: str | int | None = None,
        memory: str | None = None,
        disk: str | None = None,
        config: dict[str, str] | None = None,
    ) -> None:
        """Create a stopped, empty instance (no image needed) with the given limits."""
        self.lxc("init", "--empty", name, *_instance_flags(cpu, memory, disk, config))

    def launch(
        self,
        name: str,
        *,
        cpu: str | int | None = None,
        memory: str | None = None,
        disk: str | None = None,
        config: dict[str, str] | None = None,
    ) -> None:
        """Create and start a busybox container (the image must have been imported)."""
        self.lxc("launch", "-q", IMAGE_ALIAS, name, *_instance_flags(cpu, memory, disk, config))

    def delete(self, name: str) -> None:
        """Delete an instance, stopping it first if it runs."""
        self.lxc("delete", "--force", name)

    def instance_names(self) -> list[str]:
        return self.lxc("list", "--format", "csv", "--columns", "n").split()

    def import_image(self, tarball: Path) -> None:
        self.lxc("image", "import", "-q", str(tarball), "--alias", IMAGE_ALIAS)

    def stop(self) -> None:
        """Stop the daemon and everything it started; idempotent, and safe on a dead daemon."""
        if self.running:
            with contextlib.suppress(LxdCommandError):
                running = [
                    line.split(",")[0]
                    for line in self.lxc("list", "--format", "csv", "--columns", "ns").split()
                    if line.endswith(",RUNNING")
                ]
                if running:
                    self.lxc("stop", "--force", *running)
            with contextlib.suppress(LxdCommandError):
                self.run_lxd(
                    "shutdown", "--timeout", str(SHUTDOWN_TIMEOUT), timeout=SHUTDOWN_TIMEOUT + 5
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
        roots = {self.process.pid} if self.running else set()
        kill_leftovers(roots, str(self.lxd_dir))
        if self.running:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        unmount_under(self.lxd_dir)
        self._refuser.close()


def _instance_flags(
    cpu: str | int | None, memory: str | None, disk: str | None, config: dict[str, str] | None
) -> list[str]:
    settings = dict(config or {})
    if cpu is not None:
        settings["limits.cpu"] = str(cpu)
    if memory is not None:
        settings["limits.memory"] = memory
    flags = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
    if disk is not None:
        flags += ["-d", f"root,size={disk}"]
    return flags


@dataclass(eq=False)
class LxdFleet:
    """Independent daemons under one ``/tmp/hslxd-XXXX`` root; ``close()`` removes it all."""

    root: Path
    daemons: list[LxdDaemon] = field(default_factory=list)
    image: Path | None = None
    can_run_containers: bool = False
    cannot_run_reason: str = "not probed"
    _created_outside: list[Path] = field(default_factory=list, repr=False)

    def __getitem__(self, key: int | str) -> LxdDaemon:
        if isinstance(key, int):
            return self.daemons[key]
        for daemon in self.daemons:
            if daemon.name == key:
                return daemon
        raise KeyError(key)

    def __iter__(self) -> Iterator[LxdDaemon]:
        return iter(self.daemons)

    def __len__(self) -> int:
        return len(self.daemons)

    @classmethod
    def start(cls, count: int = 2, *, populate: bool = True) -> LxdFleet:
        """Start ``count`` daemons ``lxd-0``, ``lxd-1``, ...; ``populate`` adds the test instances.

        On any failure everything already started is torn down before the error propagates.
        """
        lxd, lxc = _binary("lxd"), _binary("lxc")
        root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX, dir=ROOT_PARENT))
        # Unprivileged container roots (uid 100000) must be able to traverse the path.
        root.chmod(0o711)
        fleet = cls(root, _created_outside=_global_leftovers())
        try:
            for index in range(count):
                fleet.daemons.append(
                    LxdDaemon.start(f"lxd-{index}", root / f"d{index}", lxd=lxd, lxc=lxc)
                )
            if populate:
                fleet._populate()
        except BaseException:
            fleet.close()
            raise
        return fleet

    def _populate(self) -> None:
        first, *others = self.daemons
        first.create("cpu-count", cpu=2, memory="1GiB")
        first.create("cpu-set", cpu="0-1,3", memory="512MB")
        first.create("mem-percent", cpu=1, memory="10%")
        first.create("no-limits")
        first.create("stopped-one", cpu=4, memory="2GiB", disk="1GiB")
        for index, daemon in enumerate(others, start=1):
            daemon.create(f"mib-{index}", cpu=2, memory="768MiB", disk="2GiB")
        self._probe_containers()
        if self.can_run_containers:
            for index, daemon in enumerate(others, start=2):
                self.add_daemon_image(daemon)
                daemon.launch(f"running-{index}", cpu=1, memory="128MiB")

    def _probe_containers(self) -> None:
        """Launch ``running-1`` on the first daemon; record why not if that cannot work here."""
        busybox = shutil.which("busybox")
        if busybox is None:
            self.cannot_run_reason = "busybox is not installed (apt-get install busybox-static)"
            return
        if not _is_static(busybox):
            self.cannot_run_reason = f"{busybox} is dynamically linked; install busybox-static"
            return
        self.image = _build_busybox_image(self.root / "busybox.tar.gz", busybox)
        first = self.daemons[0]
        first.import_image(self.image)
        try:
            first.launch("running-1", cpu=1, memory="256MiB")
        except LxdCommandError as error:
            detail = ""
            with contextlib.suppress(LxdCommandError):
                detail = first.lxc("info", "--show-log", "running-1")[-3000:]
            self.cannot_run_reason = f"{error}\n{detail}"
            with contextlib.suppress(LxdCommandError):
                first.delete("running-1")
            return
        self.can_run_containers = True
        self.cannot_run_reason = ""

    def add_daemon_image(self, daemon: LxdDaemon) -> None:
        """Import the busybox image into ``daemon`` (a populated fleet already did)."""
        if self.image is None:
            self.image = _build_busybox_image(self.root / "busybox.tar.gz", _binary("busybox"))
        daemon.import_image(self.image)

    def close(self) -> None:
        """Stop every daemon, then remove the root and what liblxc left outside it."""
        errors: list[BaseException] = []
        for daemon in self.daemons:
            try:
                daemon.stop()
            except Exception as error:  # keep going: the other daemons must stop too
                errors.append(error)
        kill_leftovers(set(), str(self.root))
        unmount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(LXC_LOCK_ROOT / self.root.relative_to("/"), ignore_errors=True)
        for path in self._created_outside:  # deepest first; only if empty (another user's?)
            with contextlib.suppress(OSError):
                path.rmdir()
        if errors:
            raise errors[0]


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise LxdFixtureError(f"{name} is not installed")
    return path


def _global_leftovers() -> list[Path]:
    """Paths outside ``root`` that liblxc will create if missing; these are ours to remove."""
    lock_dirs = [LXC_LOCK_ROOT / ROOT_PARENT.lstrip("/"), LXC_LOCK_ROOT, LXC_LOCK_ROOT.parent]
    pivots = [CGROUP_ROOT / "lxc.pivot"]
    with contextlib.suppress(OSError):
        pivots += [entry / "lxc.pivot" for entry in CGROUP_ROOT.iterdir() if entry.is_dir()]
    return [path for path in [*pivots, *lock_dirs] if not path.exists()]


def _is_static(path: str) -> bool:
    """True unless the ELF file asks for a dynamic loader (a PT_INTERP program header)."""
    with open(path, "rb") as binary:
        header = binary.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            return True  # not 64-bit little-endian: do not guess, let the launch tell
        (phoff,) = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        binary.seek(phoff)
        table = binary.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def _build_busybox_image(target: Path, busybox: str) -> Path:
    """A unified LXD image tarball: ``metadata.yaml`` and a rootfs holding only busybox."""
    metadata = (
        f"architecture: {os.uname().machine}\n"
        f"creation_date: {int(time.time())}\n"
        "properties:\n"
        "  description: busybox (hostsched tests)\n"
        "  os: busybox\n"
        "  release: static\n"
    ).encode()
    # Without an inittab busybox init would run shells on the console; one sleeper is enough.
    inittab = b"::respawn:/bin/sleep 86400\n"

    def entry(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.size, info.linkname = kind, mode, size, link
        info.mtime = int(time.time())
        return info

    with tarfile.open(target, "w:gz", compresslevel=1) as tar:
        tar.addfile(
            entry("metadata.yaml", tarfile.REGTYPE, 0o644, len(metadata)), io.BytesIO(metadata)
        )
        for name in ("", "bin", "sbin", "dev", "proc", "sys", "etc", "root", "run", "var"):
            tar.addfile(entry(f"rootfs/{name}".rstrip("/"), tarfile.DIRTYPE, 0o755))
        tar.addfile(entry("rootfs/tmp", tarfile.DIRTYPE, 0o1777))
        tar.addfile(
            entry("rootfs/etc/inittab", tarfile.REGTYPE, 0o644, len(inittab)), io.BytesIO(inittab)
        )
        with open(busybox, "rb") as content:
            size = os.fstat(content.fileno()).st_size
            tar.addfile(entry("rootfs/bin/busybox", tarfile.REGTYPE, 0o755, size), content)
        for applet in ("sh", "init", "sleep", "true", "cat", "ls", "ps"):
            tar.addfile(entry(f"rootfs/bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox"))
        tar.addfile(entry("rootfs/sbin/init", tarfile.SYMTYPE, 0o777, link="../bin/busybox"))
    return target
