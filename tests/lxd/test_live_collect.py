"""Live collect and trust against real LXD daemons, through the real entry point.

What hostsched stores is checked against what the daemons report (``lxc query``), and the
instances the fleet fixture created: on ``lxd-0`` only ``running-1`` (1 CPU, 256 MiB) runs, on
``lxd-1`` only ``running-2`` (1 CPU, 128 MiB); every instance counts its root disk (10 GiB by
default when it has no size).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.lxd.conftest import require_containers
from tests.lxd.lxdfleet import LxdDaemon, LxdFleet

ROOT = Path(__file__).parents[2]
G, M = 1 << 30, 1 << 20


@dataclass
class Site:
    """A config file naming live hosts, the environment to run hostsched in, and the store."""

    config: Path
    env: dict[str, str]
    redis_url: str

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hostsched", "--config", str(self.config),
             "--redis-url", self.redis_url, *args],
            capture_output=True, text=True, env={**self.env, **(env or {})}, cwd=ROOT, timeout=120,
        )  # fmt: skip

    def json(self, *args: str) -> dict:  # type: ignore[type-arg]
        result = self.run(*args, "--json")
        return json.loads(result.stdout)

    def stored(self, host: str) -> dict:  # type: ignore[type-arg]
        raw = redis.Redis.from_url(self.redis_url).get(f"hostsched:resource:{{{host}}}")
        assert raw is not None, f"nothing stored for {host}"
        return json.loads(raw)


def password_variable(name: str) -> str:
    return name.upper().replace("-", "") + "_PASSWORD"


def host_entry(name: str, daemon: LxdDaemon, extra: str = "") -> str:
    return (
        f"  - name: {name}\n    address: {daemon.https_url}\n"
        f"    trust_password_env: {password_variable(name)}\n{extra}"
    )


@pytest.fixture
def make_site(tmp_path: Path, redis_url: str) -> Callable[..., Site]:
    """Write a config for the given daemons (extra YAML per host) and trust each one.

    A daemon is named as itself, or given as ``(name, daemon)`` to appear under another name.
    """

    def make(*given: LxdDaemon | tuple[str, LxdDaemon], extra: dict[str, str] | None = None,
             trust: bool = True, settings: str = "") -> Site:  # fmt: skip
        extra = extra or {}
        daemons = [g if isinstance(g, tuple) else (g.name, g) for g in given]
        config = tmp_path / "hostsched.yaml"
        config.write_text(
            f"lxd:\n  client_cert: {tmp_path}/client.crt\n  client_key: {tmp_path}/client.key\n"
            + settings
            + "hosts:\n"
            + "".join(host_entry(name, d, extra.get(name, "")) for name, d in daemons)
        )
        clean = {k: v for k, v in os.environ.items() if not k.startswith("HOSTSCHED_")}
        env = {**clean, "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "COLUMNS": "120"}
        for name, d in daemons:
            env[password_variable(name)] = d.trust_password
        site = Site(config, env, redis_url)
        if trust:
            for name, _daemon in daemons:
                result = site.run("trust", name, "--yes")
                assert result.returncode == 0, result.stderr
        return site

    return make


def reported(daemon: LxdDaemon, path: str) -> dict:  # type: ignore[type-arg]
    return json.loads(daemon.lxc("query", path))


def test_collect_stores_what_the_daemons_report(
    lxd_fleet: LxdFleet, make_site: Callable[..., Site]
) -> None:
    require_containers(lxd_fleet)
    site = make_site(lxd_fleet[0], lxd_fleet[1])
    result = site.run("collect", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["stored"] == 2 and document["failed"] == 0
    expected_used = {
        "lxd-0": {"cpu": 1000, "memory": 256 * M, "disk": 5 * 10 * G + G, "gpu": 0},
        "lxd-1": {"cpu": 1000, "memory": 128 * M, "disk": 2 * G + 10 * G, "gpu": 0},
    }
    for daemon in lxd_fleet:
        stored = site.stored(daemon.name)
        resources = reported(daemon, "/1.0/resources")
        pool = reported(daemon, "/1.0/storage-pools/default/resources")
        assert stored["capacity"] == {
            "cpu": resources["cpu"]["total"] * 1000,
            "memory": resources["memory"]["total"],
            "disk": pool["space"]["total"],
            "gpu": resources.get("gpu", {}).get("total", 0),
        }
        assert stored["used"] == expected_used[daemon.name]
        assert stored["instances"] == 1
        assert sorted(stored["names"]) == sorted(daemon.instance_names())
        assert stored["source"] == "lxd"
    inspect = site.json("inspect", "lxd-0")["hosts"][0]
    assert inspect["status"] == "online" and inspect["cpu"]["used"] == 1


def test_trust_right_and_wrong_password(
    lxd_daemon: LxdDaemon, make_site: Callable[..., Site]
) -> None:
    site = make_site(lxd_daemon, trust=False)
    wrong = site.run("trust", lxd_daemon.name, "--yes",
                     env={"LXD0_PASSWORD": "not-the-password-xyz"})  # fmt: skip
    assert wrong.returncode == 2, wrong.stderr
    assert "refused the trust password" in wrong.stderr and "Traceback" not in wrong.stderr
    assert "not-the-password-xyz" not in wrong.stderr + wrong.stdout
    collect = site.run("collect", "--json")
    assert collect.returncode == 6  # still untrusted
    assert "not trusted" in json.loads(collect.stdout)["hosts"][0]["error"]

    right = site.run("trust", lxd_daemon.name, "--fingerprint", fingerprint_of(lxd_daemon))
    assert right.returncode == 0, right.stderr
    assert "now trusts" in right.stderr and lxd_daemon.trust_password not in right.stderr
    again = site.run("trust", lxd_daemon.name, "--yes")
    assert again.returncode == 0 and "already trusted" in again.stderr
    assert site.run("collect").returncode == 0


def test_trust_refuses_an_unexpected_fingerprint(
    lxd_daemon: LxdDaemon, make_site: Callable[..., Site]
) -> None:
    site = make_site(lxd_daemon, trust=False)
    result = site.run("trust", lxd_daemon.name, "--fingerprint", "ab" * 32)
    assert result.returncode == 2 and "not confirmed" in result.stderr
    unconfirmed = site.run("trust", lxd_daemon.name)  # no terminal to ask on
    assert unconfirmed.returncode == 2 and "--fingerprint" in unconfirmed.stderr


def fingerprint_of(daemon: LxdDaemon) -> str:
    from hostsched.lxd import fingerprint

    return fingerprint(daemon.server_cert_path.read_text())


def test_wrong_pinned_certificate_is_refused_whatever_the_environment(
    lxd_fleet: LxdFleet, make_site: Callable[..., Site], tmp_path: Path
) -> None:
    first, second = lxd_fleet[0], lxd_fleet[1]
    site = make_site(first, second)
    wrong = tmp_path / "xdg" / "hostsched" / "servercerts" / "lxd-0.crt"
    wrong.write_text(second.server_cert_path.read_text())  # lxd-1's certificate pinned for lxd-0
    ca_env = {"REQUESTS_CA_BUNDLE": str(first.server_cert_path),
              "CURL_CA_BUNDLE": str(first.server_cert_path)}  # fmt: skip
    result = site.run("collect", "--json", env=ca_env)
    assert result.returncode == 6, result.stderr
    hosts = {h["name"]: h for h in json.loads(result.stdout)["hosts"]}
    assert hosts["lxd-0"]["status"] == "unreachable"
    assert "does not match the pinned" in hosts["lxd-0"]["error"]
    assert hosts["lxd-1"]["status"] == "stored"
    pinned = make_site(first, extra={"lxd-0": f"    server_cert: '{'00' * 32}'\n"}, trust=False)
    assert "does not match" in pinned.json("collect")["hosts"][0]["error"]


def test_closed_port_is_exit_6_and_old_data_goes_stale(
    lxd_fleet: LxdFleet, lxd_daemon: LxdDaemon, make_site: Callable[..., Site]
) -> None:
    site = make_site(lxd_fleet[0], ("spare", lxd_daemon), settings="ttl: {host_stale_after: 1}\n")
    assert site.run("collect").returncode == 0
    lxd_daemon.stop()
    result = site.run("collect", "--json")
    assert result.returncode == 6
    hosts = {h["name"]: h for h in json.loads(result.stdout)["hosts"]}
    assert hosts["lxd-0"]["status"] == "stored"
    assert hosts["spare"]["status"] == "unreachable"
    assert "cannot connect" in hosts["spare"]["error"]
    time.sleep(1.2)  # host_stale_after is 1 s here: the old data is now too old to trust
    site.run("collect")
    states = {h["name"]: h["status"] for h in site.json("inspect")["hosts"]}
    assert states == {"lxd-0": "online", "spare": "stale"}


def test_unix_socket_host_needs_no_certificates(
    lxd_fleet: LxdFleet, tmp_path: Path, redis_url: str
) -> None:
    daemon = lxd_fleet[1]
    config = tmp_path / "unix.yaml"
    config.write_text(f"hosts:\n  - name: local\n    address: unix://{daemon.socket}\n")
    site = Site(config, {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}, redis_url)
    result = site.run("collect", "--json")
    assert result.returncode == 0, result.stderr
    assert site.stored("local")["capacity"]["cpu"] > 0


def test_insecure_host_warns_every_run(
    lxd_daemon: LxdDaemon, make_site: Callable[..., Site]
) -> None:
    site = make_site(lxd_daemon, extra={lxd_daemon.name: "    insecure: true\n"})
    for _ in range(2):
        result = site.run("collect")
        assert result.returncode == 0, result.stderr
        assert "TLS verification is off" in result.stderr


def test_reconciliation_drops_exactly_the_matching_reservation(
    lxd_fleet: LxdFleet, make_site: Callable[..., Site]
) -> None:
    from hostsched.keys import Keys
    from hostsched.model import Resources
    from hostsched.store import Store

    daemon = lxd_fleet[0]
    site = make_site(daemon)
    assert site.run("collect").returncode == 0
    before = site.stored("lxd-0")["used"]
    store = Store.connect(site.redis_url, keys=Keys())
    outcome = store.reserve(
        {"lxd-0": [("pending-1", Resources(1000, G)), ("ghost", Resources(0, M))]},
        reservation_ttl=120,
        stale_after=300,
    )["lxd-0"]
    assert outcome.placed == ("pending-1", "ghost")
    # The caller creates "pending-1" but has not started it yet: as the instance of a pending
    # reservation it must count in full; "ghost" has no instance and stays reserved.
    daemon.create("pending-1", cpu=1, memory="1GiB", disk="1GiB")
    try:
        report = site.json("collect")
        assert report["hosts"][0]["reconciled"] == ["pending-1"]
        assert store.client.hkeys(store.keys.scheduled("lxd-0")) == [b"ghost"]
        after = site.stored("lxd-0")["used"]
        assert after["cpu"] == before["cpu"] + 1000 and after["memory"] == before["memory"] + G
        assert after["disk"] == before["disk"] + G
    finally:
        daemon.delete("pending-1")
        store.close()


def test_schedule_launch_collect_end_to_end(
    lxd_fleet: LxdFleet, make_site: Callable[..., Site]
) -> None:
    require_containers(lxd_fleet)
    site = make_site(lxd_fleet[0], lxd_fleet[1])
    assert site.run("collect").returncode == 0
    placed = site.run("schedule", "--cpu", "1", "--mem", "128MiB", "--id", "web-1")
    assert placed.returncode == 0, placed.stderr
    host = placed.stdout.strip()
    daemon = lxd_fleet[host]
    used_before = site.stored(host)["used"]
    reserved = site.json("inspect", host)["hosts"][0]["reservations"]
    assert [r["id"] for r in reserved] == ["web-1"]
    daemon.launch("web-1", cpu=1, memory="128MiB")
    try:
        report = site.json("collect")
        assert {h["name"]: h["reconciled"] for h in report["hosts"]}[host] == ["web-1"]
        detail = site.json("inspect", host)["hosts"][0]
        assert detail["reservations"] == []
        used = site.stored(host)["used"]
        assert used["cpu"] == used_before["cpu"] + 1000
        assert used["memory"] == used_before["memory"] + 128 * M
        again = site.run("schedule", "--cpu", "1", "--mem", "128MiB", "--id", "web-1")
        assert again.stdout.strip() == host and "already placed" in again.stderr
    finally:
        daemon.delete("web-1")


def test_two_collectors_at_once_store_the_newest_reading(
    lxd_fleet: LxdFleet, make_site: Callable[..., Site]
) -> None:
    site = make_site(lxd_fleet[0], lxd_fleet[1])
    argv = [sys.executable, "-m", "hostsched", "--config", str(site.config),
            "--redis-url", site.redis_url, "collect", "--json"]  # fmt: skip
    for _ in range(3):
        runs = [subprocess.Popen(argv, stdout=subprocess.PIPE, env=site.env, cwd=ROOT, text=True)
                for _ in range(2)]  # fmt: skip
        reports = [json.loads(p.communicate(timeout=120)[0]) for p in runs]
        for name in ("lxd-0", "lxd-1"):
            states = [h["status"] for r in reports for h in r["hosts"] if h["name"] == name]
            assert "stored" in states and "unreachable" not in states
    client = redis.Redis.from_url(site.redis_url)
    for daemon in lxd_fleet:
        stored = site.stored(daemon.name)
        assert sorted(stored["names"]) == sorted(daemon.instance_names())
        assert int(client.get(f"hostsched:resource:{{{daemon.name}}}:gen")) >= 3
        assert client.get(f"hostsched:resource:{{{daemon.name}}}:lock") is None
