"""The real entry point in subprocesses: exit codes, stdout/stderr, JSON, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.conftest import RedisServer

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "config.example.yaml"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HOSTSCHED_", "SCHEDULING_"))}
    full_env = {**clean, "COLUMNS": "100", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "hostsched", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=60,
    )


@pytest.fixture
def hs(redis_url: str):  # type: ignore[no-untyped-def]
    """Run hostsched against the test server with the example config."""

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        return run("--config", str(EXAMPLE), "--redis-url", redis_url, *args)

    return call


def snapshot(server: RedisServer) -> dict[bytes, bytes | None]:
    client = server.client()
    state = {key: client.dump(key) for key in sorted(client.keys("*"))}
    client.close()
    return state


def test_loop_collect_schedule_inspect(hs) -> None:  # type: ignore[no-untyped-def]
    collected = hs("collect", "--json")
    assert collected.returncode == 0, collected.stderr
    document = json.loads(collected.stdout)
    assert document["stored"] == 4 and document["failed"] == 0

    placed = hs("schedule", "--cpu", "2", "--mem", "4G", "--id", "web-1")
    assert placed.returncode == 0, placed.stderr
    host = placed.stdout.strip()
    assert host.startswith("hypervisor-") and "\n" not in host
    assert "web-1" in placed.stderr and host in placed.stderr

    detail = json.loads(hs("inspect", host, "--json").stdout)["hosts"][0]
    assert detail["name"] == host
    assert [r["id"] for r in detail["reservations"]] == ["web-1"]
    assert detail["reservations"][0]["memory"] == 4 << 30 and detail["reservations"][0]["cpu"] == 2
    assert detail["cpu"]["reserved"] == 2
    cpu = detail["cpu"]
    limit = cpu["total"] * detail["overcommit"]["cpu"]
    assert cpu["free"] == pytest.approx(limit - cpu["used"] - cpu["reserved"], abs=1e-3)

    table = hs("inspect")
    assert table.returncode == 0 and "hypervisor-04" in table.stdout
    text = hs("inspect", host)
    assert "web-1" in text.stdout and "% used" in text.stdout

    released = json.loads(hs("release", "web-1", "gone", "--json").stdout)
    assert released == {"released": ["web-1"], "missing": ["gone"]}
    assert json.loads(hs("cleanup", "--json").stdout)["hosts"] == 4


def test_schedule_json_and_dry_run(hs) -> None:  # type: ignore[no-untyped-def]
    hs("collect")
    result = hs("--json", "schedule", "--cpu", "500m", "--mem", "1GB", "--count", "3", "--dry-run")
    document = json.loads(result.stdout)
    assert document["dry_run"] is True and len(document["placements"]) == 3
    assert document["placements"][0]["cpu"] == 0.5
    assert document["placements"][0]["memory"] == 10**9
    inspect = json.loads(hs("inspect", "--json").stdout)
    assert all(h["reservations"] == [] for h in inspect["hosts"])


@pytest.mark.parametrize(
    ("args", "code", "slug"),
    [
        (["schedule", "--cpu", "2x"], 2, "invalid_quantity"),
        (["schedule", "--cpu", "2", "--mem", "-1"], 2, "invalid_quantity"),
        (["schedule", "--cpu", "2", "--strategy", "fastest"], 2, "usage_error"),
        (["schedule", "--cpu", "2", "--label", "novalue"], 2, "usage_error"),
        (["schedule", "--bogus"], 2, "usage_error"),
        (["schedule", "--cpu", "2", "--count", "0"], 2, "usage_error"),
        (["schedule", "--cpu", "200"], 4, "insufficient_resources"),
        (["schedule", "--cpu", "1", "--label", "zone=mars"], 3, "no_available_hosts"),
        (["inspect", "nope"], 3, "unknown_host"),
    ],
)
def test_errors_have_codes_and_change_nothing(
    hs, redis_server: RedisServer, args: list[str], code: int, slug: str
) -> None:  # type: ignore[no-untyped-def]
    hs("collect")
    hs("schedule", "--cpu", "1", "--id", "keep")
    before = snapshot(redis_server)
    plain = hs(*args)
    assert plain.returncode == code, plain.stderr
    assert plain.stdout == "" and plain.stderr.startswith("hostsched: error:")
    assert "Traceback" not in plain.stderr
    as_json = hs(*args, "--json")
    assert as_json.returncode == code
    assert json.loads(as_json.stdout)["error"]["code"] == slug
    assert snapshot(redis_server) == before


def test_no_hosts_stored_is_exit_3(redis_url: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    result = run("--config", str(empty), "--redis-url", redis_url, "schedule", "--cpu", "1")
    assert result.returncode == 3, result.stderr
    assert "no hosts known" in result.stderr


def test_config_error_names_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts:\n  - name: a\n    static: {cpu: 4, memory: 8X}\n")
    result = run("--config", str(bad), "inspect")
    assert result.returncode == 2
    assert str(bad) in result.stderr and ":3" in result.stderr and "memory" in result.stderr


def test_unreachable_redis_is_exit_5_without_secrets() -> None:
    result = run(
        "--config", str(EXAMPLE), "--redis-url", "redis://:s3cr3t-pw@127.0.0.1:1", "inspect"
    )
    assert result.returncode == 5, result.stderr
    assert "s3cr3t-pw" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    as_json = run(
        "--config", str(EXAMPLE), "--redis-url", "redis://127.0.0.1:1", "inspect", "--json"
    )
    assert json.loads(as_json.stdout)["error"]["code"] == "store_unavailable"


def test_every_command_has_help_with_an_example() -> None:
    import typer

    from hostsched.cli import app

    group = typer.main.get_command(app)
    assert "Example:" in (group.help or "")

    def walk(command, path):  # type: ignore[no-untyped-def]
        subcommands = getattr(command, "commands", {})
        for name, sub in subcommands.items():
            yield from walk(sub, [*path, name])
        if not subcommands:
            yield path, command

    names = []
    for path, command in walk(group, []):
        names.append(" ".join(path))
        assert "Example: hostsched" in (command.help or ""), path
    assert {
        "collect",
        "schedule",
        "release",
        "cleanup",
        "inspect",
        "bench",
        "store status",
        "store stop",
    } <= set(names)


def loaded_after(*runs: list[str]) -> tuple[list[object], set[str]]:
    """Run ``main`` with each argv in one fresh interpreter: exit codes, and which of the
    heavy modules got imported."""
    heavy = ("pylxd", "requests", "redis", "yaml", "rich.table")
    code = (
        "import json, sys\nfrom hostsched.cli import main\ncodes = []\n"
        f"for argv in {list(runs)!r}:\n"
        "    try:\n        main(argv)\n    except SystemExit as e:\n        codes.append(e.code)\n"
        f"print(json.dumps([codes, [m for m in {heavy!r} if m in sys.modules]]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    codes, modules = json.loads(result.stdout.strip().splitlines()[-1])
    return codes, set(modules)


@pytest.mark.parametrize("args", [["--help"], ["schedule", "--help"]])
def test_help_is_light(args: list[str]) -> None:
    codes, modules = loaded_after(args)
    assert codes == [0] and modules.isdisjoint({"pylxd", "requests", "redis", "yaml", "rich.table"})


def test_static_collect_does_not_import_pylxd(redis_url: str) -> None:
    codes, modules = loaded_after(["--config", str(EXAMPLE), "--redis-url", redis_url, "collect"])
    assert codes == [0] and modules.isdisjoint({"pylxd", "requests"})


def test_schedule_does_not_import_pylxd(redis_url: str) -> None:
    base = ["--config", str(EXAMPLE), "--redis-url", redis_url]
    codes, modules = loaded_after([*base, "collect"], [*base, "schedule", "--cpu", "1"])
    assert codes == [0, 0] and "pylxd" not in modules


def test_completions_are_current() -> None:
    for shell, path in (
        ("bash", "hostsched.bash"),
        ("zsh", "_hostsched"),
        ("fish", "hostsched.fish"),
    ):
        generated = subprocess.run(
            [sys.executable, "-m", "hostsched"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "_HOSTSCHED_COMPLETE": f"source_{shell}"},
        ).stdout
        assert generated.strip(), shell
        assert (ROOT / "completions" / path).read_text() == generated, (
            f"completions/{path} is out of date: see the README to regenerate it"
        )


def test_redis_url_from_environment(redis_url: str) -> None:
    result = run(
        "--config", str(EXAMPLE), "collect", "--json", env={"HOSTSCHED_REDIS_URL": redis_url}
    )
    assert result.returncode == 0, result.stderr
    client = redis.Redis.from_url(redis_url)
    assert client.scard("hostsched:hosts") == 4


@pytest.mark.parametrize("command", ["collect", "cleanup"])
def test_interval_loop_stops_cleanly_on_sigterm(redis_url: str, command: str) -> None:
    import signal
    import time

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hostsched",
            "--config",
            str(EXAMPLE),
            "--redis-url",
            redis_url,
            command,
            "--interval",
            "0.1",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    rounds = [json.loads(process.stdout.readline()) for _ in range(3)]
    assert all("hosts" in document for document in rounds)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    assert "Traceback" not in process.stderr.read()  # type: ignore[union-attr]


def test_flag_before_the_command_beats_the_environment(redis_url: str) -> None:
    """--redis-url and --config given before the command win over HOSTSCHED_* variables."""
    result = run("--config", str(EXAMPLE), "--redis-url", redis_url, "collect", "--json",
                 env={"HOSTSCHED_REDIS_URL": "unix:///nonexistent/redis.sock",
                      "HOSTSCHED_CONFIG": "/nonexistent.yaml"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["stored"] == 4
