"""The LXD fixtures, proven through the real REST API: HTTPS with requests, the unix socket with
pylxd, and the machine's state after teardown."""

from __future__ import annotations

import datetime
import os
import random
import shutil
import signal
import socket
import ssl
import tempfile
from pathlib import Path

import pylxd
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.lxd.conftest import require_containers, require_lxd, start_fleet
from tests.lxd.lxdfleet import LxdDaemon, LxdFixtureError, LxdFleet

# name -> (status, limits.cpu, limits.memory, root disk size)
LXD0_STOPPED = {
    "cpu-count": ("Stopped", "2", "1GiB", None),
    "cpu-set": ("Stopped", "0-1,3", "512MB", None),
    "mem-percent": ("Stopped", "1", "10%", None),
    "no-limits": ("Stopped", None, None, None),
    "stopped-one": ("Stopped", "4", "2GiB", "1GiB"),
}
LXD0_RUNNING = {"running-1": ("Running", "1", "256MiB", None)}
LXD1_STOPPED = {"mib-1": ("Stopped", "2", "768MiB", "2GiB")}
LXD1_RUNNING = {"running-2": ("Running", "1", "128MiB", None)}


def https(daemon: LxdDaemon) -> requests.Session:
    """A session that trusts only the daemon's own certificate, whatever the environment says."""
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE would override verify=
    session.verify = str(daemon.server_cert_path)
    return session


def unix_client(daemon: LxdDaemon) -> pylxd.Client:
    return pylxd.Client(endpoint=str(daemon.socket))


def summary(client: pylxd.Client) -> dict[str, tuple[str, str | None, str | None, str | None]]:
    return {
        instance.name: (
            instance.status,
            instance.expanded_config.get("limits.cpu"),
            instance.expanded_config.get("limits.memory"),
            instance.expanded_devices["root"].get("size"),
        )
        for instance in client.instances.all()
    }


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("index", [0, 1])
def test_https_serves_the_api_with_the_certificate_on_disk(lxd_fleet: LxdFleet, index: int) -> None:
    daemon = lxd_fleet[index]
    assert daemon.name == f"lxd-{index}"
    assert daemon.https_url == f"https://127.0.0.1:{daemon.port}"

    reply = https(daemon).get(f"{daemon.https_url}/1.0", timeout=10)

    assert reply.status_code == 200
    metadata = reply.json()["metadata"]
    assert metadata["api_version"] == "1.0"
    assert metadata["auth"] == "untrusted"
    served = ssl.get_server_certificate(("127.0.0.1", daemon.port), timeout=10)
    on_disk = daemon.server_cert_path.read_text()
    assert ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(on_disk)


def test_the_daemons_are_independent(lxd_fleet: LxdFleet) -> None:
    first, second = lxd_fleet
    assert [d.name for d in lxd_fleet] == ["lxd-0", "lxd-1"]
    assert lxd_fleet["lxd-1"] is second
    assert first.lxd_dir != second.lxd_dir
    assert first.port != second.port
    assert first.trust_password != second.trust_password
    assert first.server_cert_path.read_bytes() != second.server_cert_path.read_bytes()
    for daemon in lxd_fleet:
        assert daemon.socket == daemon.lxd_dir / "unix.socket"
        assert len(str(daemon.socket).encode()) < 108
        assert daemon.lxc("config", "get", "core.https_address").strip() == (
            f"127.0.0.1:{daemon.port}"
        )
        # No managed network (no lxdbr0 on the host): only the host's own interfaces are listed.
        assert [n for n in unix_client(daemon).networks.all() if n.managed] == []
    assert not set(first.instance_names()) & set(second.instance_names())


def test_no_daemon_reaches_beyond_localhost(lxd_fleet: LxdFleet) -> None:
    # LXD fetches instance types from images.linuxcontainers.org at start-up; the fixture's
    # refusing proxy must catch it before any DNS lookup or connection leaves the machine.
    for daemon in lxd_fleet:
        log = daemon.log_path.read_text()
        assert "lookup " not in log
        for line in log.splitlines():
            if "Failed to update instance types" in line:
                assert "proxyconnect tcp" in line and "127.0.0.1:" in line


@pytest.mark.parametrize("index", [0, 1])
def test_host_resources_over_the_unix_socket(lxd_fleet: LxdFleet, index: int) -> None:
    resources = unix_client(lxd_fleet[index]).resources

    assert resources["cpu"]["total"] == os.cpu_count()
    with open("/proc/meminfo") as meminfo:
        mem_total = int(meminfo.readline().split()[1]) * 1024
    assert mem_total * 0.9 <= resources["memory"]["total"] <= mem_total * 1.5


@pytest.mark.parametrize(
    ("index", "stopped", "running"),
    [(0, LXD0_STOPPED, LXD0_RUNNING), (1, LXD1_STOPPED, LXD1_RUNNING)],
)
def test_instances_with_their_limits_and_status(
    lxd_fleet: LxdFleet,
    index: int,
    stopped: dict[str, tuple[str, str | None, str | None, str | None]],
    running: dict[str, tuple[str, str | None, str | None, str | None]],
) -> None:
    client = unix_client(lxd_fleet[index])
    expected = {**stopped, **(running if lxd_fleet.can_run_containers else {})}

    assert summary(client) == expected
    for instance in client.instances.all():
        assert instance.expanded_devices["root"]["pool"] == "default"


@pytest.mark.parametrize("index", [0, 1])
def test_storage_pool_default(lxd_fleet: LxdFleet, index: int) -> None:
    daemon = lxd_fleet[index]
    pool = unix_client(daemon).storage_pools.get("default")

    assert pool.driver == "dir"
    assert Path(pool.config["source"]) == daemon.lxd_dir / "storage-pools" / "default"
    space = pool.resources.get().space
    assert 0 < space["used"] <= space["total"]


def test_running_containers_really_run(lxd_fleet: LxdFleet) -> None:
    require_containers(lxd_fleet)
    for daemon, name in [(lxd_fleet[0], "running-1"), (lxd_fleet[1], "running-2")]:
        state = unix_client(daemon).instances.get(name).state()
        assert state.status == "Running"
        assert state.pid > 0
        assert state.processes >= 2  # busybox init and its sleeper
        assert daemon.lxc("exec", name, "--", "/bin/sh", "-c", "echo alive") == "alive\n"


def test_launch_and_delete_on_a_daemon_chosen_at_runtime(lxd_fleet: LxdFleet) -> None:
    require_containers(lxd_fleet)
    daemon = random.choice(list(lxd_fleet))
    other = next(d for d in lxd_fleet if d is not daemon)
    client = unix_client(daemon)

    daemon.launch("web-1", cpu=2, memory="1GiB", disk="3GiB")
    try:
        assert summary(client)["web-1"] == ("Running", "2", "1GiB", "3GiB")
        assert "web-1" not in other.instance_names()
    finally:
        daemon.delete("web-1")
    assert "web-1" not in summary(client)


def test_lxc_helper_raises_with_stderr(lxd_fleet: LxdFleet) -> None:
    with pytest.raises(LxdFixtureError, match="not found"):
        lxd_fleet[0].lxc("config", "show", "no-such-instance")


def test_a_stopped_daemon_refuses_connections(lxd_daemon: LxdDaemon) -> None:
    assert https(lxd_daemon).get(f"{lxd_daemon.https_url}/1.0", timeout=10).status_code == 200
    assert not refuses(lxd_daemon.port)

    lxd_daemon.stop()

    assert not lxd_daemon.running
    assert refuses(lxd_daemon.port)
    with pytest.raises(requests.ConnectionError):
        https(lxd_daemon).get(f"{lxd_daemon.https_url}/1.0", timeout=10)
    lxd_daemon.stop()  # idempotent, as the fixture's teardown will call it again


def test_the_trust_password_admits_a_client(lxd_daemon: LxdDaemon, tmp_path: Path) -> None:
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    write_client_certificate(cert, key)
    session = https(lxd_daemon)
    session.cert = (str(cert), str(key))
    url = f"{lxd_daemon.https_url}/1.0"

    wrong = session.post(
        f"{url}/certificates", json={"type": "client", "password": "no"}, timeout=10
    )
    assert wrong.status_code == 403
    right = session.post(
        f"{url}/certificates",
        json={"type": "client", "password": lxd_daemon.trust_password},
        timeout=10,
    )
    assert right.status_code == 201, right.text
    assert session.get(url, timeout=10).json()["metadata"]["auth"] == "trusted"


def test_a_daemon_that_cannot_start_fails_with_its_log() -> None:
    lxd, lxc = require_lxd()
    root = Path(tempfile.mkdtemp(prefix="hslxd-", dir="/tmp"))
    try:
        # The unix socket path exceeds 108 bytes: lxd cannot bind it and exits.
        with pytest.raises(LxdFixtureError) as failure:
            LxdDaemon.start("lxd-long", root / ("x" * 120), lxd=lxd, lxc=lxc)
        assert not [line for line in mounts() if str(root) in line]
    finally:
        shutil.rmtree(root)
    message = str(failure.value)
    assert "did not start" in message
    assert "--- last lines of" in message
    assert "LXD is starting" in message


def test_close_cleans_up_after_a_crashed_daemon() -> None:
    fleet = start_fleet(1, populate=False)
    try:
        daemon = fleet[0]
        fleet.add_daemon_image(daemon)
        daemon.launch("crash-1", cpu=1, memory="64MiB")
        monitor_pids = pids_mentioning(str(daemon.lxd_dir))
        assert monitor_pids, "the container's lxc monitor should name the LXD_DIR"
        payload = unix_client(daemon).instances.get("crash-1").state().pid
        os.kill(daemon.process.pid, signal.SIGKILL)  # a crash: lxd gets no chance to clean up
        daemon.process.wait(10)
    finally:
        fleet.close()

    assert not fleet.root.exists()
    assert not [line for line in mounts() if str(fleet.root) in line]
    assert pids_mentioning(str(fleet.root)) == set()
    assert not alive(payload)
    assert not list(Path("/sys/fs/cgroup").glob("**/lxc.payload.crash-1*"))
    assert not (Path("/run/lxc/lock") / fleet.root.relative_to("/")).exists()


def write_client_certificate(cert_path: Path, key_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostsched-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA384())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def mounts() -> list[str]:
    with open("/proc/self/mountinfo") as mountinfo:
        return mountinfo.read().splitlines()


def alive(pid: int) -> bool:
    """True for a live process; a zombie waiting for its reaper counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def pids_mentioning(text: str) -> set[int]:
    """Live processes whose command line contains ``text``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and alive(int(entry.name)):
                found.add(int(entry.name))
    return found
