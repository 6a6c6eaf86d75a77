"""Fuzzing the command line and the config file, in-process through ``hostsched.cli.main``.

The properties are the contract's (SPEC, "Exit codes and errors"): every run ends with one of
the contract's exit codes and never 1 (an internal error); there is no traceback without
``--verbose``; with ``--json``, stdout is exactly one JSON document, an ``{"error": ...}`` object
on failure; and a failed command leaves the store byte for byte as it was (every key's DUMP, and
whether it has a TTL, in every database). Read-only commands leave it unchanged even when they
succeed.

Runs happen in this process, with stdout encoded strictly as UTF-8 and stderr with backslash
escapes, as in a real process; an exception escaping ``main`` counts as what the interpreter
would make of it (a traceback and exit 1). Nothing reads stdin, and the embedded server's state
directory is a temporary one that must stay empty.

The bugs this fuzz found are pinned by the regression tests at the end. Bugs found later go
there as ``xfail(strict=True)`` tests, and their triggers out of the generators (saying so) until
they are fixed, so that the fuzz keeps looking for new ones.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import resource
import subprocess
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
import redis
import yaml
from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st

from hostsched.cli import main
from hostsched.strategies import STRATEGY_NAMES
from tests.conftest import RedisServer

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "config.example.yaml"
CONTRACT_CODES = frozenset({0, 2, 3, 4, 5, 6})
# Commands that may change the store when they succeed (schedule only without --dry-run).
MUTATING = frozenset({"collect", "schedule", "release", "cleanup"})
# main() looks for these anywhere before "--", option values included (`--id --json` shows the
# id's error as JSON), so the fuzz never uses them as values.
SNIFFED = frozenset({"--json", "--verbose", "-v"})
HELP = frozenset({"--help", "-h"})
SECRET = "s3cr3t-pw"
T = TypeVar("T")
# No shrinking: examples cost a store reset each, and shrinking one failure could take minutes.
# For a minimal example, add Phase.shrink here and run the failing test alone.
FUZZ = settings(
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


# -- running the CLI in this process ----------------------------------------------------------


@dataclass(frozen=True)
class Run:
    argv: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"argv={list(self.argv)!r}\nexit={self.code}\n"
            f"stdout={self.stdout[-1500:]!r}\nstderr={self.stderr[-1500:]!r}"
        )

    def error_message(self) -> str:
        """The error's message, from the JSON error or the error line on stderr."""
        if self.stdout.startswith('{"error"'):
            return str(json.loads(self.stdout)["error"]["message"])
        _, _, message = self.stderr.partition("hostsched: error: ")
        return message.split("\nhint: ")[0].strip()


class NoStdin(io.StringIO):
    """A stdin that is not a terminal and must never be read (`trust` would prompt on a TTY)."""

    def isatty(self) -> bool:
        return False

    def read(self, size: int | None = -1) -> str:
        raise AssertionError("hostsched read stdin")

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        raise AssertionError("hostsched read stdin")


def run_cli(argv: Sequence[str]) -> Run:
    """``hostsched ARGV`` in this process, with the exit status a real process would have."""
    out_bytes, err_bytes = io.BytesIO(), io.BytesIO()
    out = io.TextIOWrapper(out_bytes, encoding="utf-8", errors="strict", write_through=True)
    err = io.TextIOWrapper(
        err_bytes, encoding="utf-8", errors="backslashreplace", write_through=True
    )
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(argv))
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:  # the interpreter prints any other value and exits 1
                print(exc.code, file=sys.stderr)
                code = 1
        except Exception:  # what the interpreter does with an exception escaping main()
            traceback.print_exc()
            code = 1
        else:
            code = 0
    return Run(
        tuple(argv),
        code,
        out_bytes.getvalue().decode("utf-8"),
        err_bytes.getvalue().decode("utf-8"),
    )


# -- the store, as bytes ------------------------------------------------------------------------

State = dict[tuple[int, bytes], tuple[bytes | None, bool]]


def store_state(server: RedisServer) -> State:
    """Every key of every database: its DUMP, and whether it has a TTL."""
    admin = server.client()
    try:
        databases = sorted(int(name[2:]) for name in admin.info("keyspace"))
    finally:
        admin.close()
    state: State = {}
    for db in databases:
        client = redis.Redis(unix_socket_path=str(server.socket), db=db)
        try:
            for key in sorted(client.scan_iter(count=1000)):
                state[(db, key)] = (client.dump(key), client.pttl(key) >= 0)
        finally:
            client.close()
    return state


def state_diff(before: State, after: State) -> str:
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return "store: " + ", ".join(f"db{db}:{key!r}" for db, key in changed[:10])


# -- the sandbox: environment, files and the example fleet --------------------------------------

LIVE_CONFIG = """\
hosts:
  - name: s1
    static: {cpu: 4, memory: 8G}
  - name: live-https
    address: https://127.0.0.1:1
    trust_password_env: HOSTSCHED_FUZZ_NO_SUCH_VARIABLE
  - name: live-sock
    address: /nonexistent/lxd/unix.socket
"""
CONFIG_FILES: dict[str, bytes] = {
    "live.yaml": LIVE_CONFIG.encode(),
    "empty.yaml": b"",
    "latin1.yaml": "hosts:\n  - name: café\n".encode("latin-1"),
    "tab.yaml": b"hosts:\n  - name: a\n\tstatic: {cpu: 1, memory: 1G}\n",
    "quantity.yaml": b"hosts:\n  - name: a\n    static: {cpu: 4, memory: 8X}\n",
    "unknown-key.yaml": b"schedulng:\n  strategy: random\n",
    "tls-ca.yaml": b"redis:\n  tls_ca_file: ca.pem\n",
    "ca.pem": b"-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n",
    "alias.yaml": (
        b"hosts:\n  - name: a\n    static: &s {cpu: 2, memory: 2G}\n"
        b"  - name: b\n    static: *s\n  - name: c\n    static: *missing\n"
    ),
}


@dataclass
class Sandbox:
    server: RedisServer
    root: Path
    placeholders: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def resolve(self, argv: Sequence[str]) -> list[str]:
        resolved = []
        for token in argv:
            for placeholder, value in self.placeholders.items():
                token = token.replace(placeholder, value)
            resolved.append(token)
        return resolved

    def state(self) -> State:
        return store_state(self.server)

    def flush(self) -> None:
        client = self.server.client()
        client.flushall()
        client.close()

    def reset(self) -> None:
        """An empty store, then the example fleet collected and one reservation, ``keep``."""
        self.flush()
        base = ["--config", str(EXAMPLE), "--redis-url", self.url]
        for argv in (
            [*base, "collect", "--json"],
            [*base, "schedule", "--cpu", "1", "--mem", "1G", "--id", "keep"],
        ):
            run = run_cli(argv)
            assert run.code == 0, run.describe()


@pytest.fixture
def sandbox(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Sandbox]:
    for name in list(os.environ):
        if name.startswith(("HOSTSCHED_", "SCHEDULING_")):
            monkeypatch.delenv(name)
    state_dir = tmp_path / "state"
    for directory in ("state", "xdg-config", "home", "cwd", "files"):
        (tmp_path / directory).mkdir()
    monkeypatch.setenv("HOSTSCHED_STATE_DIR", str(state_dir))
    # A run without --redis-url uses the test server, never an embedded one.
    monkeypatch.setenv("HOSTSCHED_REDIS_URL", redis_server.url)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.chdir(tmp_path / "cwd")  # no ./hostsched.yaml here
    monkeypatch.setattr(sys, "stdin", NoStdin())
    import hostsched.bench

    if hasattr(hostsched.bench, "ping_rate"):
        # bench measures a PING baseline for a second; a hundredth keeps the fuzz quick.
        ping_rate = hostsched.bench.ping_rate
        monkeypatch.setattr(
            hostsched.bench, "ping_rate", lambda store, seconds=1.0: ping_rate(store, 0.01)
        )

    files = tmp_path / "files"
    for name, data in CONFIG_FILES.items():
        (files / name).write_bytes(data)
    box = Sandbox(redis_server, tmp_path)
    box.flush()
    box.placeholders = {
        "@URL@": redis_server.url,
        "@EXAMPLE@": str(EXAMPLE),
        "@FILES@": str(files),
        "@MISSING@": str(files / "missing.yaml"),
    }
    yield box
    leftovers = sorted(p.name for p in state_dir.iterdir())
    if leftovers:  # stop a server the fuzz should never have started, then fail
        from hostsched.embedded import EmbeddedServer

        EmbeddedServer(state_dir).stop()
    assert not any(name.endswith(".sock") for name in leftovers), leftovers


# -- what every run must satisfy --------------------------------------------------------------


def one_json_document(run: Run) -> object:
    text = run.stdout
    try:
        document, end = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"stdout is not JSON ({exc})\n{run.describe()}") from None
    assert text[end:].strip() == "", f"more than one JSON document\n{run.describe()}"
    return document


def check_error_document(document: object, run: Run) -> None:
    assert isinstance(document, dict) and set(document) == {"error"}, run.describe()
    error = document["error"]
    assert isinstance(error, dict), run.describe()
    assert {"code", "message"} <= set(error) <= {"code", "message", "hint"}, run.describe()
    assert isinstance(error["code"], str), run.describe()
    assert re.fullmatch(r"[a-z][a-z0-9_]*", error["code"]), run.describe()
    assert isinstance(error["message"], str) and error["message"], run.describe()
    assert error.get("hint") is None or isinstance(error["hint"], str), run.describe()


def check_run(
    run: Run, before: State, after: State, *, mutating: bool, partial_ok: bool = False
) -> None:
    """The contract's properties of one run (see the module docstring)."""
    where = run.describe()
    assert run.code in CONTRACT_CODES, f"exit code outside the contract\n{where}"
    tokens = set(run.argv)
    if not tokens & {"--verbose", "-v"}:
        assert "Traceback" not in run.stderr, f"traceback without --verbose\n{where}"
    assert SECRET not in run.stdout + run.stderr, f"a password was printed\n{where}"
    helped = run.code == 0 and bool(tokens & HELP)
    if "--json" in tokens and not helped:
        document = one_json_document(run)
        if run.code in (0, 6):
            assert not (isinstance(document, dict) and "error" in document), where
        else:
            check_error_document(document, run)
    elif run.code not in (0, 6):
        assert run.stdout == "", f"output on stdout from a failed command\n{where}"
        lines = run.stderr.removesuffix("\n").split("\n")
        starts = [i for i, line in enumerate(lines) if line.startswith("hostsched: error: ")]
        assert starts, f"no error line\n{where}"
        if not tokens & {"--verbose", "-v"}:  # notes may come before, a hint after: no more
            after_error = lines[starts[-1] + 1 :]
            one_line = len(after_error) <= 1 and all(x.startswith("hint: ") for x in after_error)
            assert one_line, f"the error is not one line (and a hint)\n{where}"
    if run.code != 0 and not (run.code == 6 and partial_ok):
        assert after == before, f"a failed command changed the {state_diff(before, after)}\n{where}"
    if run.code == 0 and not mutating:
        changed = state_diff(before, after)
        assert after == before, f"a read-only command changed the {changed}\n{where}"


# -- 1. command-line arguments ------------------------------------------------------------------

ARG_TEXT = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12),
    # Bytes that are not UTF-8 arrive in argv as surrogate escapes.
    st.binary(min_size=1, max_size=6).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.sampled_from(["x" * 5000, "9" * 400, "\u202e", "\x1b[31m", "%s%n", "'\"", "\\"]),
    st.sampled_from(["a\nhostsched: error: forged", "\r", "\x85", "\u2028"]),
).filter(lambda text: "\x00" not in text)  # a NUL cannot be in argv


def weighted(*choices: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """One of the strategies, by weight (``one_of`` drops repeated ones, so cannot weigh)."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(table) - 1).flatmap(table.__getitem__)


@dataclass(frozen=True)
class Vocabulary:
    """The values of one option: ``good`` ones only, or ``wild`` (good, bad, any text)."""

    good: st.SearchStrategy[str]
    wild: st.SearchStrategy[str]

    def __call__(self, draw: st.DrawFn, wild: bool) -> str:
        return draw(self.wild if wild else self.good)


def vocabulary(good: Sequence[str], bad: Sequence[str] = (), *, text: bool = True) -> Vocabulary:
    pools = [(3, st.sampled_from(good))]
    if bad:
        pools.append((3, st.sampled_from(bad)))
    if text:
        pools.append((1, ARG_TEXT))
    wild = weighted(*pools).filter(lambda value: value not in SNIFFED | HELP)
    return Vocabulary(st.sampled_from(good), wild)


CPU = vocabulary(
    ["1", "2", "0.5", "500m", "1m", "0.001", "4", "16", "200", " 2 ", "1000000", "5.", ".5"],
    [
        "0", "0m", "0.0", "-1", "-0", "", " ", "1e3", "NaN", "nan", "inf", "Infinity", "0x10",
        "4X", "1.5.2", "1 m", "2M", "1000001", "1_000", "+1", "--", "-", "1" * 40, "\u0661",
        "\uff12",
    ],
)  # fmt: skip
BYTES = vocabulary(
    ["0", "1", "4G", "4GiB", "4GB", "4gb", "4g", "512M", "512m", "1k", "1KB", "1kib", "1b",
     "1.5G", ".5G", "5.", "8P", "8PiB", "1B"],
    ["1Ki", "9P", "1E", "-1", "1e3", "NaN", "0x10", "4X", "4 G", "", "1" * 40, "4GiBB", "B",
     "--", "-", "\u0663G"],
)  # fmt: skip
GPU = vocabulary(["0", "1", "2", "3"], ["-1", "1.0", "999999999", "9999999999", "x", "", " 1 "])
LABEL = vocabulary(
    ["zone=us-west-1a", "zone=us-west-1b", "gpu=nvidia-a10", "tier=ci", "zone=mars"],
    ["novalue", "=x", "zone=", "a=b=c", "ZONE=us-west-1a", " zone=us-west-1a", "zone =a"],
)
IDS = vocabulary(
    ["web-1", "keep", "a", "A.b_c:d@e-f", "x" * 128, "1", "keep-1", "hs-000000000000"],
    ["x" * 129, "-lead", ".lead", "a b", "a{b}", "é", "a/b", ""],
)
COUNT = vocabulary(
    ["1", "2", "3", "5", "1000"],
    # Not far above the limit: should the bound go, a huge count would exhaust this process's
    # memory (test_huge_count_fails_fast checks that one in a memory-limited subprocess).
    ["0", "-1", "abc", "1.5", "", "1e3", "0x2", "10001"],
)
STRATEGY = vocabulary(STRATEGY_NAMES, ["fastest", "", "LEAST_LOADED", "least-loaded", "random "])
HOST = vocabulary(
    ["hypervisor-01", "hypervisor-02", "hypervisor-03", "hypervisor-04", "s1", "live-https",
     "live-sock"],
    ["nope", "", "a{b}", "HYPERVISOR-01"],
)  # fmt: skip
FINGERPRINT = vocabulary(["sha256:" + "00" * 32, ":".join(["ab"] * 32)], ["x", ""], text=False)
SMALL = vocabulary(["1", "2", "3"], ["0", "-1", "x", ""], text=False)
PROCESSES = vocabulary(["1"], ["0", "-1", "x"], text=False)
CONFIG_PATHS = vocabulary(
    ["@EXAMPLE@", "@EXAMPLE@", "@EXAMPLE@", "@FILES@/live.yaml"],
    [
        "@FILES@/empty.yaml", "@FILES@/latin1.yaml", "@FILES@/tab.yaml",
        "@FILES@/quantity.yaml", "@FILES@/unknown-key.yaml", "@FILES@/tls-ca.yaml",
        "@FILES@/alias.yaml", "@FILES@/ca.pem", "@FILES@", "@MISSING@", "/dev/null", "",
        "/dev/zero",
    ],
)  # fmt: skip
# Only URLs that fail (or work) without a name lookup or a network wait.
REDIS_URLS = vocabulary(
    ["@URL@", "@URL@", "@URL@?db=3", "@URL@?socket_timeout=5"],
    [
        "@URL@?db=abc", "@URL@?db=99999", "@URL@?protocol=9", "redis://127.0.0.1:1",
        "redis://localhost:1/0", "redis://[::1]:1", "rediss://127.0.0.1:1",
        f"redis://:{SECRET}@127.0.0.1:1", f"redis://user:{SECRET}@127.0.0.1:1/0",
        "redis://127.0.0.1:1/abc", "unix:///nonexistent/redis.sock", "unix://", "redis://",
        "redis://:1", "redis://127.0.0.1:99999", "redis://127.0.0.1:-1", "redis://[::1",
        "http://127.0.0.1:6379", "localhost:6379", "REDIS://127.0.0.1:1", "",
        "@URL@?socket_timeout=-1", "@URL@?socket_connect_timeout=nan", "@URL@?socket_timeout=inf",
        "@URL@?foo=1", "redis://a..b:1", "redis://" + "a" * 64 + ":1",
    ],
)  # fmt: skip
JUNK = st.sampled_from(
    ["extra", "-x", "--json=1", "--config", "--redis-url", "--cpu", "--dry-run", "--yes", "--",
     "-", "--count", "--Json", "--bogus"]
)  # fmt: skip


@dataclass(frozen=True)
class Case:
    command: str
    argv: tuple[str, ...]


def sometimes(draw: st.DrawFn, one_in: int) -> bool:
    return draw(st.integers(0, one_in - 1)) == 0


def flat(options: Sequence[Sequence[str]]) -> list[str]:
    return [token for option in options for token in option]


def schedule_args(draw: st.DrawFn, wild: bool) -> list[str]:
    options: list[list[str]] = []
    if not (wild and sometimes(draw, 10)):
        options.append(["--cpu", CPU(draw, wild)])
    for flag, vocab in (
        ("--mem", BYTES),
        ("--disk", BYTES),
        ("--gpu", GPU),
        ("--count", COUNT),
        ("--strategy", STRATEGY),
    ):
        if sometimes(draw, 3):
            options.append([flag, vocab(draw, wild)])
    if sometimes(draw, 3):
        options += [["--label", LABEL(draw, wild)] for _ in range(draw(st.integers(1, 2)))]
    if sometimes(draw, 2):
        count = draw(st.integers(1, 3)) if wild else 1
        options += [["--id", IDS(draw, wild)] for _ in range(count)]
    if sometimes(draw, 3):
        options.append(["--dry-run"])
    if wild and options and sometimes(draw, 5):
        options.append(draw(st.sampled_from(options)))  # an option given twice
    return ["schedule", *flat(draw(st.permutations(options)))]


def bench_args(draw: st.DrawFn, wild: bool) -> list[str]:
    # --hosts and --placements always, so no default (1000 placements) runs; one process only.
    options = [["--hosts", SMALL(draw, wild)], ["--placements", SMALL(draw, wild)]]
    for flag, vocab in (
        ("--count", SMALL),
        ("--processes", PROCESSES),
        ("--strategy", STRATEGY),
        ("--cpu", CPU),
        ("--mem", BYTES),
    ):
        if sometimes(draw, 4):
            options.append([flag, vocab(draw, wild)])
    return ["bench", *flat(draw(st.permutations(options)))]


def release_args(draw: st.DrawFn, wild: bool) -> list[str]:
    ids = [IDS(draw, wild) for _ in range(draw(st.integers(0 if wild else 1, 3)))]
    return ["release", *(["--"] if sometimes(draw, 3) else []), *ids]


def trust_args(draw: st.DrawFn, wild: bool) -> list[str]:
    args = ["trust"]
    if not (wild and sometimes(draw, 10)):
        args.append(HOST(draw, wild))
    if sometimes(draw, 2):
        args.append("--yes")
    if sometimes(draw, 2):
        args += ["--fingerprint", FINGERPRINT(draw, wild)]
    return args


def inspect_args(draw: st.DrawFn, wild: bool) -> list[str]:
    return ["inspect", *([HOST(draw, wild)] if sometimes(draw, 2) else [])]


NO_COMMAND = [[], ["store"], ["bogus"], ["store", "bogus"], ["help"], ["--version"]]
COMMANDS = {
    "schedule": (12, schedule_args),
    "collect": (3, lambda draw, wild: ["collect"]),
    "inspect": (4, inspect_args),
    "release": (4, release_args),
    "cleanup": (2, lambda draw, wild: ["cleanup"]),
    "store status": (1, lambda draw, wild: ["store", "status"]),
    "trust": (2, trust_args),
    "bench": (1, bench_args),
    "no command": (1, lambda draw, wild: draw(st.sampled_from(NO_COMMAND))),
}
COMMAND_NAMES = weighted(*[(weight, st.just(name)) for name, (weight, _) in COMMANDS.items()])


@st.composite
def cli_cases(draw: st.DrawFn) -> Case:
    """Half the cases use only good values, so that commands get far; half are wild."""
    wild = draw(st.booleans())
    name = draw(COMMAND_NAMES)
    command = COMMANDS[name][1](draw, wild)
    globals_: list[list[str]] = []
    if not (wild and sometimes(draw, 8)):
        globals_.append(["--config", CONFIG_PATHS(draw, wild)])
    if not (wild and sometimes(draw, 8)):
        globals_.append(["--redis-url", REDIS_URLS(draw, wild)])
    if sometimes(draw, 2):
        globals_.append(["--json"])
    if sometimes(draw, 4):
        globals_.append([draw(st.sampled_from(["--verbose", "-v"]))])
    if wild and globals_ and sometimes(draw, 5):  # a global option repeated, maybe differently
        repeated = draw(st.sampled_from(globals_))
        if repeated[0] == "--config":
            repeated = ["--config", CONFIG_PATHS(draw, wild)]
        elif repeated[0] == "--redis-url":
            repeated = ["--redis-url", REDIS_URLS(draw, wild)]
        globals_.append(repeated)
    before: list[str] = []
    after: list[str] = []
    for option in globals_:
        (before if draw(st.booleans()) else after).extend(option)
    # Options after the command go before any "--", or they would be positional arguments.
    cut = command.index("--") if "--" in command else len(command)
    argv = [*before, *command[:cut], *after, *command[cut:]]
    if wild and sometimes(draw, 8):
        argv.append(draw(JUNK))
    return Case(name, tuple(argv))


def is_mutating(case: Case, argv: Sequence[str]) -> bool:
    return case.command in MUTATING and not (case.command == "schedule" and "--dry-run" in argv)


@settings(FUZZ, max_examples=200)
@given(case=cli_cases())
def test_fuzz_command_line(sandbox: Sandbox, case: Case) -> None:
    argv = sandbox.resolve(case.argv)
    note(f"argv: {argv!r}")
    sandbox.reset()
    before = sandbox.state()
    run = run_cli(argv)
    after = sandbox.state()
    event(f"{case.command}: exit {run.code}")
    check_run(
        run, before, after, mutating=is_mutating(case, argv), partial_ok=case.command == "collect"
    )
    if case.command == "schedule" and run.code == 0:
        check_placements(run, argv)
    if run.code == 0 and after != before:
        check_no_host_overcommitted(sandbox)


def check_placements(run: Run, argv: Sequence[str]) -> None:
    """As many placements as --count asked for (the last one given), each on a host."""
    counts = [argv[i + 1] for i, token in enumerate(argv[:-1]) if token == "--count"]
    wanted = int(counts[-1]) if counts else 1
    if "--json" in argv:
        document = one_json_document(run)
        assert isinstance(document, dict), run.describe()
        assert len(document["placements"]) == wanted, run.describe()
        assert document.get("dry_run", False) is ("--dry-run" in argv), run.describe()
        assert all(p["host"] for p in document["placements"]), run.describe()
    else:
        hosts = run.stdout.splitlines()
        assert len(hosts) == wanted and all(hosts), run.describe()


def check_no_host_overcommitted(sandbox: Sandbox) -> None:
    """SPEC's first promise: whatever ran, no online host has less than nothing free."""
    run = run_cli(["--config", str(EXAMPLE), "--redis-url", sandbox.url, "inspect", "--json"])
    assert run.code == 0, run.describe()
    document = one_json_document(run)
    assert isinstance(document, dict), run.describe()
    for host in document["hosts"]:
        if host["status"] == "online":
            for dimension in ("cpu", "memory", "disk", "gpu"):
                assert host[dimension]["free"] >= 0, f"{host['name']} overcommitted\n{host}"


# -- 2. config files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A scalar written into the document as it is: ``8G``, ``0x10``, ``!!binary ...``, ``*a``."""

    text: str


class YamlMap(tuple):  # type: ignore[type-arg]
    """A mapping as (key, value) pairs, so that keys may repeat."""


class YamlSeq(tuple):  # type: ignore[type-arg]
    pass


@dataclass(frozen=True)
class Anchored:
    name: str
    node: object


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _scalar(value: object) -> str:
    if isinstance(value, Raw):
        return value.text
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        mantissa, _, exponent = text.partition("e")
        # YAML 1.1 reads 1e+100 as text: a float needs a dot.
        return f"{mantissa}.0e{exponent}" if exponent and "." not in mantissa else text
    return _quoted(str(value))


# What YAML's reader refuses, and NEL, which it would fold: all in the BMP, so \uXXXX is exact.
_NOT_IN_YAML = re.compile("[^\t\n\r\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _quoted(text: str) -> str:
    """A double-quoted YAML scalar. Characters beyond the BMP stay as they are: YAML's escapes
    of them (surrogate pairs, as JSON writes them) would load as lone surrogates."""
    quoted = json.dumps(text, ensure_ascii=False)
    return _NOT_IN_YAML.sub(lambda match: f"\\u{ord(match.group()):04x}", quoted)


def _key(key: object) -> str:
    if isinstance(key, str) and _PLAIN_KEY.fullmatch(key):
        return key
    return _scalar(key)


def _flow(node: object) -> str:
    if isinstance(node, Anchored):
        return f"&{node.name} {_flow(node.node)}"
    if isinstance(node, YamlMap):
        return "{" + ", ".join(f"{_key(k)}: {_flow(v)}" for k, v in node) + "}"
    if isinstance(node, YamlSeq):
        return "[" + ", ".join(_flow(v) for v in node) + "]"
    return _scalar(node)


def _block(node: object, indent: int, depth: int, flow_from: int) -> list[str]:
    """Block style down to depth ``flow_from``, flow style below it."""
    pad = " " * indent

    def inline(value: object) -> bool:
        return not isinstance(value, YamlMap | YamlSeq) or not value or depth + 1 >= flow_from

    lines = []
    if isinstance(node, YamlMap):
        for key, value in node:
            if inline(value):
                lines.append(f"{pad}{_key(key)}: {_flow(value)}")
            else:
                lines.append(f"{pad}{_key(key)}:")
                lines += _block(value, indent + 2, depth + 1, flow_from)
    elif isinstance(node, YamlSeq):
        for value in node:
            if inline(value):
                lines.append(f"{pad}- {_flow(value)}")
            else:
                lines.append(f"{pad}-")
                lines += _block(value, indent + 2, depth + 1, flow_from)
    else:
        lines.append(pad + _flow(node))
    return lines


def render_yaml(root: object, flow_from: int) -> str:
    if flow_from == 0 or not isinstance(root, YamlMap | YamlSeq) or not root:
        return _flow(root) + "\n"
    return "\n".join(_block(root, 0, 0, flow_from)) + "\n"


# Lone surrogates and NUL too: _quoted writes them as YAML escapes.
CONFIG_TEXT = st.text(st.characters(exclude_categories=()), max_size=16)
RAW_SCALARS = [
    "8G", "32GiB", "4GB", "500m", "0x10", "0o17", "017", "1_000", "1:20", "~", "yes", "no",
    "on", "Off", ".inf", "-.inf", ".NaN", "1e3", "1.0e+3", "2001-12-14", "2001-13-45 25:61:00",
    "!!binary aGVsbG8=", "!!binary %%%", "!!int 0xZZ", "!!float abc", "!!str 4", "!!null ''",
    "!!timestamp 2001-13-45", "!custom thing", "!!python/object:os.system ls", "!!set {a, b}",
    "!!omap [a: 1]", "!!map {a: 1}", "!!seq [1]", "*undefined", "'single'", '"a\\tb"', "@at",
    "`tick", "a: b", "- dash", "? q", "{", "[", "]", "}", "&anchor_only", "#", "|", ">",
    "hôte", "節点", "'\u00e9'", "\"\\x41\"",
]  # fmt: skip


# The values most likely to break something, weighed above random ones.
NASTY_SCALARS = [
    "a\0b", "\ud800", "\udcff", "a\ud83db", "a\nb", "x" * 5000, "", " ", "\t", "../../etc/passwd",
    "~", "/", ".", "-", "\u202e", "\x1b[31m", "😀", "{a}", "a b", "*", "%", "1e400", "1" * 400,
    10**400, -(10**400), 2**64, -1, 0, 1.7976931348623157e308, -1.7976931348623157e308,
    math.inf, -math.inf, math.nan, 5e-324, -0.0, True, False, None,
]  # fmt: skip
SCALARS = weighted(
    (3, st.sampled_from(NASTY_SCALARS)),
    (2, st.sampled_from(RAW_SCALARS).map(Raw)),
    (1, CONFIG_TEXT),
    (1, st.integers(-(2**70), 2**70)),
    (1, st.integers(0, 400).map(lambda k: 10**k)),
    (1, st.floats()),
)
KEYS = st.one_of(
    st.sampled_from(["cpu", "name", "x", "hosts", "\ud800", "a\0b", "a\nb", ""]), CONFIG_TEXT
)
UNKNOWN_KEY = st.one_of(st.sampled_from(["bogus", "Hosts", "host", "static", "<<"]), KEYS)
# Anything, in any slot: mostly a scalar, sometimes a list or a mapping of anything.
ANY = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(YamlSeq),
        st.lists(st.tuples(KEYS, children), max_size=3).map(YamlMap),
    ),
    max_leaves=6,
)


# What a setting goes wrong with, by the kind of setting (and anything at all, now and then).
NUM_NASTY = [
    10**400, -(10**400), sys.float_info.max, 1e300, 2**64, 2**53 + 1, -1, 0, math.nan, math.inf,
    -math.inf, 5e-324, -0.0, True, "1e400", "1" * 400, Raw("0x10"), Raw(".inf"), Raw("1_000"),
]  # fmt: skip
TEXT_NASTY = [
    "a\0b", "\ud800", "\udcff", "a\ud83db", "x" * 5000, "", " ", "\t", "\u202e", "\x1b[31m", "a\nb",
    "😀", "{a}", "a b", "a=b", 1, True, 2.5, Raw("~"), Raw("!!binary aGk="), YamlSeq(), YamlMap(),
]  # fmt: skip
PATH_NASTY = [
    *TEXT_NASTY, "/", ".", "..", "/dev/null", "/dev/zero", "hostsched.yaml", "/etc", "~nouser/x",
]  # fmt: skip
# `trust` creates the client certificate and key when neither exists: so only these (new files
# in the config's folder, or what it must refuse to write), never a path anywhere at all.
CERT_NASTY = [*PATH_NASTY, "new-dir/x.crt", "ca.pem", "hostsched.yaml/x.crt"]
QTY_NASTY = [
    *NUM_NASTY, "4X", "", "-1", "1e3", "\u0663G", Raw("8X"), "8 G", Raw("9P"), 2**53, 10**6 + 1,
    1.5, "500m", Raw("0.5m"),
]  # fmt: skip
DURATION_NASTY = [*NUM_NASTY, "1h30", "30x", "0s", "-5s", Raw("1e9"), 2 * 10**9, "1.5ms"]
BOOL_NASTY = ["yes", 1, "true", Raw("yes"), 0, None, "no", YamlSeq()]


def bad_values(nasty: Sequence[object]) -> st.SearchStrategy[object]:
    """Mostly the setting's own nasty values, else anything; but only the listed ones for
    certificate paths (see CERT_NASTY) and data TTLs (see LONG_TTLS)."""
    if nasty is CERT_NASTY or nasty is BAD_TTLS:
        return st.sampled_from(nasty)
    return weighted((4, st.sampled_from(nasty)), (1, ANY))


@dataclass
class Built:
    """A document being built: valid by construction, or (``wild``) with a bad value or
    structure at any choice, one in six."""

    wild: bool
    may_break_store: bool = False  # a password file: exit 5 is then legitimate
    host_names: list[str] = field(default_factory=list)

    def messy(self, draw: st.DrawFn) -> bool:
        """Whether this choice goes wrong."""
        return self.wild and sometimes(draw, 6)

    def pick(
        self, draw: st.DrawFn, good: Sequence[object], nasty: Sequence[object] = TEXT_NASTY
    ) -> object:
        if self.messy(draw):
            return draw(bad_values(nasty))
        return draw(st.sampled_from(good))

    def section(
        self, draw: st.DrawFn, entries: Sequence[tuple[str, object]], always: str = ""
    ) -> object:
        """Some of ``entries`` (key, value already picked) as a mapping, or anything at all."""
        items = [(k, v) for k, v in entries if k == always or sometimes(draw, 2)]
        if self.messy(draw):
            items.append((draw(UNKNOWN_KEY), draw(ANY)))
        if items and self.messy(draw):
            items.append(draw(st.sampled_from(items)))  # a duplicate key
        if self.messy(draw):
            return draw(ANY)
        return YamlMap(draw(st.permutations(items)))


CPU_GOOD = (1, 2, 4, 16, 64, 0.5, Raw("500m"), "8", Raw("1.5"))
BYTES_GOOD = (Raw("8G"), Raw("32GiB"), Raw("4GB"), 2**30, Raw("8P"), "1T", Raw("512M"))
USED_CPU = (0, 1, Raw("250m"), 0.5)
USED_BYTES = (0, Raw("1G"), 2**20, Raw("100MB"))
COUNTS_GOOD = (0, 1, 2, 8)
DURATIONS_GOOD = (Raw("30s"), Raw("2m"), Raw("24h"), 30, 2.5, Raw("1h30m"))
# Resources and reservations that expired during a run would change the store under the check,
# so their TTLs are long (or invalid), never a few seconds.
LONG_TTLS = (Raw("24h"), Raw("1h"), 86400, 3600)
BAD_TTLS = (Raw("-1"), Raw("0"), 1.5, "abc", Raw("1e9"), Raw("1h30"), Raw("2000000000"))
PATHS = ("missing.txt", "/proc/none/x", ".", "/", "hostsched.yaml", "~/nope", "sub/../x")
ADDRESSES = ("https://127.0.0.1:1", "https://[::1]:1", "/nonexistent/lxd.sock")
BAD_ADDRESSES = (
    "unix:///nonexistent/lxd.sock", "relative.sock", "https://", "https://127.0.0.1:99999",
    "http://127.0.0.1:1", "",
)  # fmt: skip
NAMES = ("a", "b", "c", "hypervisor-01", "hôte-1", "節点", "x" * 200, "web.1", "A", "a:b", "-")
BAD_NAMES = ("x" * 201, "a b", "a{b}", "", "\t")


def host_entry(draw: st.DrawFn, built: Built, name: str) -> YamlMap:
    items: list[tuple[object, object]] = [("name", name)]
    if sometimes(draw, 2):
        keys = draw(st.lists(st.sampled_from(["zone", "gpu", "tier", "x.y/z"]), unique=True))
        values_ = ("us-west-1a", "", "01", True, 1, 2.5, "é")
        items.append(("labels", YamlMap((k, built.pick(draw, values_)) for k in keys)))
    if sometimes(draw, 4):
        ratios = [(k, built.pick(draw, (1, 2, 0.5, 4), NUM_NASTY)) for k in ("cpu", "memory")]
        overcommit = built.pick(draw, (1.0, 2, 0.5, YamlMap(ratios)), NUM_NASTY)
        items.append(("overcommit", overcommit))
    kinds = ["static"] * 6 + ["live", "live"] + (["both", "neither"] if built.wild else [])
    kind = draw(st.sampled_from(kinds))
    if kind in ("static", "both"):
        static: list[tuple[object, object]] = [
            ("cpu", built.pick(draw, CPU_GOOD, QTY_NASTY)),
            ("memory", built.pick(draw, BYTES_GOOD, QTY_NASTY)),
        ]
        if sometimes(draw, 2):
            static.append(("disk", built.pick(draw, BYTES_GOOD, QTY_NASTY)))
        if sometimes(draw, 3):
            static.append(("gpu", built.pick(draw, COUNTS_GOOD, QTY_NASTY)))
        if sometimes(draw, 2):
            used = [
                ("cpu", built.pick(draw, USED_CPU, QTY_NASTY)),
                ("memory", built.pick(draw, USED_BYTES, QTY_NASTY)),
                ("disk", built.pick(draw, USED_BYTES, QTY_NASTY)),
                ("gpu", built.pick(draw, (0,), QTY_NASTY)),
            ]
            static.append(("used", built.section(draw, used)))
        if sometimes(draw, 2):
            static.append(("instances", built.pick(draw, COUNTS_GOOD, QTY_NASTY)))
        if built.messy(draw):
            static = draw(st.lists(st.sampled_from(static)))  # required keys lost, or repeated
        items.append(("static", YamlMap(draw(st.permutations(static)))))
    if kind in ("live", "both"):
        items.append(("address", built.pick(draw, ADDRESSES, [*BAD_ADDRESSES, *TEXT_NASTY])))
        for key, good, nasty in (
            ("server_cert", ("missing.crt", "sha256:" + "ab" * 32), PATH_NASTY),
            ("trust_password_env", ("HOSTSCHED_FUZZ_UNSET",), TEXT_NASTY),
            ("insecure", (True, False), BOOL_NASTY),
            ("client_cert", ("missing.crt",), CERT_NASTY),
            ("client_key", ("missing.key",), CERT_NASTY),
            ("pool", ("default", "ssd"), TEXT_NASTY),
            ("usage", ("allocated", "measured"), TEXT_NASTY),
        ):
            if sometimes(draw, 4):
                items.append((key, built.pick(draw, good, nasty)))
    if built.messy(draw):
        items.append((draw(UNKNOWN_KEY), draw(ANY)))
    return YamlMap(draw(st.permutations(items)))


@st.composite
def config_tree(draw: st.DrawFn, built: Built) -> object:
    pick = built.pick
    top: list[tuple[str, object]] = []
    redis_entries: list[tuple[str, object]] = [
        ("url", pick(draw, ("redis://127.0.0.1:1", "unix:///x.sock", "rediss://h:1"))),
        ("prefix", pick(draw, ("hostsched", "fuzz", "a:b"), [*BAD_NAMES, *TEXT_NASTY])),
        ("timeout", pick(draw, DURATIONS_GOOD, DURATION_NASTY)),
    ]
    if built.wild and sometimes(draw, 3):
        built.may_break_store = True  # the password is sent to a server that has none
        redis_entries += [
            ("password_file", pick(draw, PATHS, PATH_NASTY)),
            ("tls_ca_file", pick(draw, PATHS, PATH_NASTY)),
        ]
    top.append(("redis", built.section(draw, redis_entries)))
    weights = [
        (k, pick(draw, good, NUM_NASTY))  # at least one weight is positive
        for k, good in (("cpu", (0.4, 1)), ("memory", (0.4, 0)), ("disk", (0.2, 0)))
    ]
    ratios = [(k, pick(draw, (1, 4, 1.5), NUM_NASTY)) for k in ("cpu", "memory", "disk")]
    scheduling = [
        ("strategy", pick(draw, STRATEGY_NAMES, ["fastest", "Random", *TEXT_NASTY])),
        ("weights", YamlMap(weights)),
        ("overcommit", pick(draw, (1.0, 2, YamlMap(ratios)), NUM_NASTY)),
        ("max_attempts", pick(draw, (1, 8, 100), NUM_NASTY)),
    ]
    top.append(("scheduling", built.section(draw, scheduling)))
    ttl = [
        ("resource", pick(draw, LONG_TTLS, BAD_TTLS)),
        ("reservation", pick(draw, LONG_TTLS, BAD_TTLS)),
        ("lock", pick(draw, (Raw("30s"), Raw("2m"), 30, Raw("1h30m")), DURATION_NASTY)),
        ("host_stale_after", pick(draw, (Raw("5m"), 300, Raw("1h")), DURATION_NASTY)),
    ]
    top.append(("ttl", built.section(draw, ttl)))
    defaults = [
        ("cpu", pick(draw, CPU_GOOD, QTY_NASTY)),
        ("memory", pick(draw, BYTES_GOOD, QTY_NASTY)),
        ("disk", pick(draw, BYTES_GOOD, QTY_NASTY)),
    ]
    lxd = [
        ("client_cert", pick(draw, ("missing.crt", "~/x.crt"), CERT_NASTY)),
        ("client_key", pick(draw, ("missing.key",), CERT_NASTY)),
        ("pool", pick(draw, ("default",))),
        ("usage", pick(draw, ("allocated", "measured"))),
        ("timeout", pick(draw, DURATIONS_GOOD, DURATION_NASTY)),
        ("parallel", pick(draw, (1, 4, 16, 10**6), NUM_NASTY)),
        ("defaults", YamlMap(defaults)),
    ]
    top.append(("lxd", built.section(draw, lxd)))
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, min_size=1, max_size=4))
    if names and built.messy(draw):
        names[-1] = draw(st.sampled_from([*BAD_NAMES, names[0]]))  # invalid, or a duplicate
    built.host_names = names
    hosts = [host_entry(draw, built, name) for name in names]
    if len(hosts) >= 2 and sometimes(draw, 4):
        hosts = alias_static(hosts, dangling=built.messy(draw))
    top.append(("hosts", YamlSeq(hosts)))
    return built.section(draw, top, always="" if built.wild else "hosts")


def alias_static(hosts: list[YamlMap], *, dangling: bool) -> list[YamlMap]:
    """The first host's static anchored, the second's an alias to it (or to nothing)."""
    if "static" not in dict(hosts[0]) or "static" not in dict(hosts[1]):
        return hosts
    anchored = YamlMap((k, Anchored("s", v) if k == "static" else v) for k, v in hosts[0])
    alias = Raw("*nothing" if dangling else "*s")
    aliased = YamlMap((k, alias if k == "static" else v) for k, v in hosts[1])
    return [anchored, aliased, *hosts[2:]]


GARBAGE_LINES = [
    "\t", "%YAML 1.1", "---", "...", "? complex", ": bad", "!!", "&a", "*a", "- x",
    "key: [unclosed", "\x01", "\ufeff", "# comment", "{", "]", "hosts:", "  - name: a",
    "\tname: a", "<<: *a", "a: &a [*a]",
]  # fmt: skip


@dataclass(frozen=True)
class ConfigDocument:
    data: bytes
    valid: bool  # built valid: every command must get past the config
    may_break_store: bool
    host_names: tuple[str, ...]


def mangle(draw: st.DrawFn, text: str) -> str:
    """Tabs for indentation, duplicated or foreign lines, a truncation."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(0, 2))):
        mutation = draw(st.sampled_from(["tab", "duplicate", "garbage", "truncate"]))
        at = draw(st.integers(0, max(len(lines) - 1, 0)))
        if mutation == "tab" and lines:
            lines[at] = re.sub(r"^  ", "\t", lines[at])
        elif mutation == "duplicate" and lines:
            lines.insert(at, lines[at])
        elif mutation == "garbage":
            lines.insert(at, draw(st.sampled_from(GARBAGE_LINES)))
        elif mutation == "truncate" and lines:
            lines[at] = lines[at][: draw(st.integers(0, len(lines[at])))]
            lines = lines[: at + 1]
    return "\n".join(lines) + "\n"


TreePath = tuple[int, ...]


def leaves(node: object, path: TreePath = ()) -> Iterator[TreePath]:
    """The path (indexes) of every scalar in a tree."""
    if isinstance(node, YamlMap):
        for i, (_, value) in enumerate(node):
            yield from leaves(value, (*path, i))
    elif isinstance(node, YamlSeq):
        for i, value in enumerate(node):
            yield from leaves(value, (*path, i))
    elif isinstance(node, Anchored):
        yield from leaves(node.node, path)
    else:
        yield path


def keys_to(node: object, path: TreePath) -> list[object]:
    """The keys along a path (None for a list's items)."""
    keys: list[object] = []
    for i in path:
        node = node.node if isinstance(node, Anchored) else node
        if isinstance(node, YamlMap):
            keys.append(node[i][0])
            node = node[i][1]
        else:
            keys.append(None)
            node = node[i]  # type: ignore[index]
    return keys


def replace_leaf(node: object, path: TreePath, value: object) -> object:
    if isinstance(node, Anchored):
        return Anchored(node.name, replace_leaf(node.node, path, value))
    if not path:
        return value
    i, rest = path[0], path[1:]
    if isinstance(node, YamlMap):
        return YamlMap(
            (k, replace_leaf(v, rest, value) if j == i else v) for j, (k, v) in enumerate(node)
        )
    assert isinstance(node, YamlSeq)
    return YamlSeq(replace_leaf(v, rest, value) if j == i else v for j, v in enumerate(node))


def nasty_for(keys: Sequence[object]) -> Sequence[object]:
    """The bad values for the setting these keys lead to."""
    key, parent = (keys[-1] if keys else None), (keys[-2] if len(keys) > 1 else None)
    if parent in ("weights", "overcommit") or key in ("overcommit", "max_attempts", "parallel"):
        return NUM_NASTY
    if key in ("cpu", "memory", "disk", "gpu", "instances"):
        return QTY_NASTY
    if key in ("resource", "reservation"):
        return BAD_TTLS
    if key in ("timeout", "lock", "host_stale_after"):
        return DURATION_NASTY
    if key in ("client_cert", "client_key"):
        return CERT_NASTY
    if isinstance(key, str) and key.endswith(("_cert", "_file")):
        return PATH_NASTY
    if key == "insecure":
        return BOOL_NASTY
    if key == "address":
        return [*BAD_ADDRESSES, *TEXT_NASTY]
    if key == "name" or key == "prefix":
        return [*BAD_NAMES, *TEXT_NASTY]
    return TEXT_NASTY


@st.composite
def config_documents(draw: st.DrawFn) -> ConfigDocument:
    """Valid documents; valid ones with one bad value (so that no other error hides it); and
    wild ones, bad anywhere, mangled, deeply nested, not UTF-8 or not text at all."""
    mode = draw(st.sampled_from(["valid", "one", "one", "wild"]))
    built = Built(wild=mode == "wild")
    shape = "tree" if mode != "wild" else draw(st.sampled_from(["tree"] * 6 + ["deep", "bytes"]))
    if shape == "bytes":
        return ConfigDocument(draw(st.binary(max_size=200)), False, False, ())
    if shape == "deep":
        depth = draw(st.integers(1, 3000))
        opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}"), ("- ", "")]))
        text = "hosts: " + opener * depth + "1" + closer * depth + "\n"
    else:
        tree = draw(config_tree(built))
        spots = [path for path in leaves(tree) if path]
        if mode == "one" and spots:
            path = draw(st.sampled_from(spots))
            nasty = nasty_for(keys_to(tree, path))
            bad = draw(bad_values(nasty))
            note(f"bad value at {keys_to(tree, path)}: {bad!r}")
            tree = replace_leaf(tree, path, bad)
        text = render_yaml(tree, draw(st.integers(0, 4)))
        if mode == "wild" and sometimes(draw, 2):
            text = mangle(draw, text)
    encodings = ["utf-8"] * 5 + ["utf-8-sig"]
    if mode == "wild":
        encodings += ["utf-16", "latin-1", "junk"]
    encoding = draw(st.sampled_from(encodings))
    if encoding == "junk":
        data = text.encode() + draw(st.binary(min_size=1, max_size=8))
    else:
        data = text.encode(encoding, errors="replace")
    names = tuple(name for name in built.host_names if isinstance(name, str))
    return ConfigDocument(data, mode == "valid", built.may_break_store, names)


def located(data: bytes) -> bool | None:
    """Whether an error in this file can be given a line: None if it is not even UTF-8."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    try:
        yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        return exc.problem_mark is not None or exc.context_mark is not None
    except (yaml.YAMLError, RecursionError):
        return False
    return True


def check_config_error(run: Run, path: Path, data: bytes) -> None:
    message = run.error_message()
    if "tls_ca_file" in message and "rediss://" in message:
        return  # the file's CA with the command line's plain URL: a conflict, not a bad file
    assert str(path) in message, f"the error does not name the file\n{run.describe()}"
    whereabouts = located(data)
    if whereabouts is None:
        assert "UTF-8" in message, run.describe()
    elif whereabouts:
        assert re.search(re.escape(str(path)) + r":\d+", message), (
            f"the error has no line number\n{run.describe()}"
        )


@settings(FUZZ, max_examples=100)
@given(document=config_documents())
def test_fuzz_config_file(sandbox: Sandbox, document: ConfigDocument) -> None:
    path = sandbox.root / "files" / "hostsched.yaml"
    path.write_bytes(document.data)
    note(f"config file:\n{document.data.decode('utf-8', 'backslashreplace')}")
    sandbox.flush()
    base = ["--config", str(path), "--redis-url", sandbox.url]
    first = document.host_names[:1]
    plan = [
        (["collect", "--json"], True),
        (["inspect"], False),
        (["inspect", "--json"], False),
        *[(["inspect", name], False) for name in first],
        (["schedule", "--cpu", "1"], True),
        (["schedule", "--cpu", "1", "--json", "--strategy", "round_robin"], True),
        *[(["trust", name, "--yes"], False) for name in first],  # no live host answers
    ]
    runs = []
    for args, mutating in plan:
        before = sandbox.state()
        run = run_cli([*base, *args])
        after = sandbox.state()
        runs.append(run)
        event(f"{args[0]}: exit {run.code}")
        check_run(run, before, after, mutating=mutating, partial_ok=args[0] == "collect")
        if run.code == 5:
            assert document.may_break_store, f"the store is up\n{run.describe()}"
        if run.code == 2 and args[0] != "trust":  # trust refuses static and local hosts
            assert not document.valid, f"a valid config was refused\n{run.describe()}"
            check_config_error(run, path, document.data)
    # Only `trust` writes files, and never over one (its client files are in CERT_NASTY).
    assert path.read_bytes() == document.data, "a command wrote over the config file"
    for name, data in CONFIG_FILES.items():
        assert (path.parent / name).read_bytes() == data, f"a command wrote over {name}"
    # The file is read the same way by every command: bad for all of them, or for none.
    usage = [run for run in runs if run.code == 2]
    if any(run.argv[len(base)] != "trust" for run in usage):
        assert len(usage) == len(runs), "\n\n".join(run.describe() for run in runs)
        messages = {run.error_message().encode("utf-8", "backslashreplace") for run in usage}
        assert len(messages) == 1, "\n\n".join(run.describe() for run in usage)


# -- 3. explicit cases ----------------------------------------------------------------------------


def test_harness_sees_internal_errors_and_store_changes(sandbox: Sandbox) -> None:
    """The fuzz's checks can fail: an internal error, a traceback, a changed store."""
    sandbox.reset()
    before = sandbox.state()
    for run, complaint in (
        (Run(("inspect",), 1, "", "hostsched: error: KeyError\n"), "outside the contract"),
        (Run(("inspect",), 2, "", "Traceback (most recent call last):\n"), "traceback"),
        (Run(("inspect",), 2, "", "hostsched: error: a\nb\n"), "not one line"),
        (Run(("inspect", "--json"), 2, "{}\n{}\n", ""), "more than one JSON document"),
        (Run(("inspect", "--json"), 2, '{"error": "x"}\n', ""), "error"),
    ):
        with pytest.raises(AssertionError, match=complaint):
            check_run(run, before, before, mutating=False)
    released = run_cli(["--config", str(EXAMPLE), "--redis-url", sandbox.url, "release", "keep"])
    assert released.code == 0, released.describe()
    with pytest.raises(AssertionError, match="read-only command changed the store"):
        check_run(replace_argv(released, ("inspect",)), before, sandbox.state(), mutating=False)
    with pytest.raises(AssertionError, match="read stdin"):
        sys.stdin.read()


def replace_argv(run: Run, argv: tuple[str, ...]) -> Run:
    return Run(argv, run.code, run.stdout, run.stderr)


@pytest.mark.parametrize(
    ("name", "located_at"),
    [("latin1.yaml", False), ("tab.yaml", True), ("quantity.yaml", True), ("alias.yaml", True)],
)
def test_bad_config_files_name_file_and_line(sandbox: Sandbox, name: str, located_at: bool) -> None:
    path = sandbox.root / "files" / name
    for args in (["inspect"], ["schedule", "--cpu", "1", "--json"]):
        run = run_cli(["--config", str(path), "--redis-url", sandbox.url, *args])
        assert run.code == 2, run.describe()
        message = run.error_message()
        assert str(path) in message, run.describe()
        assert bool(re.search(re.escape(str(path)) + r":\d+", message)) is located_at, message


def test_bench_leaves_the_store_as_it_was(sandbox: Sandbox) -> None:
    sandbox.reset()
    before = sandbox.state()
    argv = ["--redis-url", sandbox.url, "bench", "--hosts", "2", "--placements", "5", "--json"]
    run = run_cli(argv)
    assert run.code == 0, run.describe()
    assert one_json_document(run)["overcommitted_hosts"] == 0  # type: ignore[index]
    assert sandbox.state() == before


def test_store_status_does_not_start_a_server(sandbox: Sandbox) -> None:
    run = run_cli(["store", "status", "--json"])
    assert run.code == 0, run.describe()
    assert one_json_document(run)["running"] is False  # type: ignore[index]


# -- 4. regressions: bugs this fuzz found (fixed in 1b3817c, 076f918 and since) -------------------


def _limited_memory() -> None:
    limit = 1 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_huge_count_fails_fast(redis_url: str) -> None:
    """--count was unbounded: the ids of all N placements were built before planning, so
    ``--count 1000000000000`` ran out of memory (MemoryError, exit 1) or hung the machine."""
    argv = ["--config", str(EXAMPLE), "--redis-url", redis_url]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOSTSCHED_", "SCHEDULING_"))}
    subprocess.run([sys.executable, "-m", "hostsched", *argv, "collect"], env=env, check=True)
    result = subprocess.run(
        [sys.executable, "-m", "hostsched", *argv, "schedule", "--cpu", "1", "--id", "web",
         "--count", "1000000000000"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        preexec_fn=_limited_memory,  # should it regress, this process only runs out of memory
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("hostsched: error: --count"), result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "{url}?socket_timeout=-1",
        "{url}?socket_connect_timeout=nan",
        "{url}?socket_timeout=inf",
        "{url}?foo=1",
        "redis://a..b:6379",
        "redis://" + "a" * 64 + ":6379",
    ],
    ids=["negative-timeout", "nan-timeout", "infinite-timeout", "unknown-option", "empty-label",
         "long-label"],
)  # fmt: skip
def test_bad_redis_urls_are_store_errors(sandbox: Sandbox, url: str) -> None:
    """Query options redis-py does not check (ValueError, OverflowError, TypeError) and host
    names IDNA cannot encode (UnicodeError) escaped the store's error translation: exit 1."""
    argv = ["--config", str(EXAMPLE), "--redis-url", url.format(url=sandbox.url), "inspect"]
    for run in (run_cli(argv), run_cli([*argv, "--json"])):
        assert run.code == 5, run.describe()
        assert "Traceback" not in run.stderr, run.describe()
    assert one_json_document(run)["error"]["code"] == "store_unavailable"  # type: ignore[index]


@pytest.mark.parametrize(
    "config",
    [
        "scheduling: {overcommit: 1" + "0" * 400 + "}\n",
        "scheduling: {weights: {cpu: 1" + "0" * 400 + "}}\n",
        "hosts:\n  - name: a\n    overcommit: 1.0e+300\n    static: {cpu: 4, memory: 8G}\n",
        "hosts:\n  - name: a\n    static: {cpu: 4, memory: 8G, gpu: 1" + "0" * 400 + "}\n",
    ],
    ids=["fleet-overcommit-int", "weight-int", "host-overcommit-float", "gpu-count"],
)
def test_huge_numbers_in_config(sandbox: Sandbox, config: str) -> None:
    """Unbounded numbers: an integer ratio beyond a float (OverflowError in validation), a
    ratio whose product with a capacity overflows (OverflowError in Overcommit.apply) were
    exit 1; a GPU count beyond a double was stored, and reserve.lua then failed (exit 5)."""
    path = sandbox.root / "files" / "huge.yaml"
    path.write_text(config)
    for args in (["collect"], ["inspect", "--json"], ["schedule", "--cpu", "1"]):
        run = run_cli(["--config", str(path), "--redis-url", sandbox.url, *args])
        assert run.code == 2, run.describe()
        assert re.search(re.escape(str(path)) + r":\d+", run.error_message()), run.describe()


@pytest.mark.parametrize(
    "config",
    [
        'redis: {password_file: "a\\0b"}\n',
        'redis: {password_file: "\\ud800"}\n',
        'hosts:\n  - name: a\n    address: "/\\ud800"\n',
        'lxd: {client_cert: "a\\0b"}\nhosts:\n  - name: a\n    address: https://127.0.0.1:1\n',
        'hosts:\n  - name: a\n    labels: {zone: "\\ud800"}\n    static: {cpu: 4, memory: 8G}\n',
    ],
    ids=["password-file-nul", "password-file-surrogate", "address-surrogate", "client-cert-nul",
         "label-surrogate"],
)  # fmt: skip
def test_config_text_with_nul_or_surrogates(sandbox: Sandbox, config: str) -> None:
    """YAML escapes put NUL and lone surrogates in config text: paths then raised ValueError or
    UnicodeEncodeError (exit 1); such a label was stored, broke plain `inspect` (exit 1 writing
    stdout), and made reserve.lua's cjson call the host corrupt, so `schedule` said no host had
    room (exit 4) while `inspect --json` showed it free."""
    path = sandbox.root / "files" / "strings.yaml"
    path.write_text(config)
    for args in (["collect"], ["inspect"], ["trust", "a", "--yes"]):
        run = run_cli(["--config", str(path), "--redis-url", sandbox.url, *args])
        assert run.code == 2, run.describe()
        assert re.search(re.escape(str(path)) + r":\d+", run.error_message()), run.describe()


@pytest.mark.parametrize(
    "option",
    [["--cpu", "\u0661"], ["--cpu", "\uff12"], ["--cpu", "1", "--mem", "\u0663G"],
     ["--cpu", "1", "--gpu", "\u0663"]],
)  # fmt: skip
def test_non_ascii_digits_are_usage_errors(sandbox: Sandbox, option: list[str]) -> None:
    """Quantities took other scripts' digits (``--mem ٣G`` was 3 GiB), which SPEC's grammar
    does not have and LXD refuses."""
    sandbox.reset()
    before = sandbox.state()
    run = run_cli(["--config", str(EXAMPLE), "--redis-url", sandbox.url, "schedule", *option])
    assert run.code == 2, run.describe()
    assert sandbox.state() == before


@pytest.mark.parametrize("argument", ["--json", "-v"])
def test_arguments_after_double_dash_are_not_flags(sandbox: Sandbox, argument: str) -> None:
    """main() looked for --json and -v anywhere in argv: ``inspect -- --json`` (a host named
    ``--json``) printed its error as JSON on stdout, ``inspect -- -v`` a traceback."""
    sandbox.reset()
    run = run_cli(["--config", str(EXAMPLE), "--redis-url", sandbox.url, "inspect", "--", argument])
    assert run.code == 3, run.describe()
    assert run.stdout == "" and "Traceback" not in run.stderr, run.describe()
    assert run.stderr.startswith("hostsched: error: unknown host"), run.describe()


@pytest.mark.parametrize(
    ("args", "config"),
    [
        (["store"], None),
        (["schedule", "--cpu", "1", "--label", "zone=a\nhostsched: error: forged"], None),
        (["--config", "/nonexistent/a\nb.yaml", "inspect"], None),
        (["inspect"], 'hosts:\n  - name: a\n    "x\\ny": 1\n'),
    ],
    ids=["store-alone", "label", "config-path", "config-key"],
)
def test_errors_are_one_line(sandbox: Sandbox, args: list[str], config: str | None) -> None:
    """`hostsched store` reported its whole help as the error; a --label, a --config path or a
    config key with a newline was echoed as it was, so the error ran over several lines and
    could forge one (fixed in 076f918)."""
    sandbox.reset()
    base = ["--redis-url", sandbox.url]
    if config is not None:
        path = sandbox.root / "files" / "newline.yaml"
        path.write_text(config)
        base += ["--config", str(path)]
    elif "--config" not in args:
        base += ["--config", str(EXAMPLE)]
    run = run_cli([*base, *args])
    assert run.code in (2, 3), run.describe()
    lines = run.stderr.removesuffix("\n").split("\n")
    assert lines[0].startswith("hostsched: error: "), run.describe()
    assert len(lines) <= 2 and all(line.startswith("hint: ") for line in lines[1:]), run.describe()


@pytest.mark.parametrize("setting", ["--config", "redis.password_file"])
def test_endless_files_are_usage_errors(redis_url: str, tmp_path: Path, setting: str) -> None:
    """Files hostsched reads (the config, redis.password_file) were read whole, with no size
    limit: an endless one (/dev/zero, or a huge file named by mistake) exhausted memory,
    MemoryError, exit 1, instead of a usage error naming the file."""
    config = "/dev/zero"
    if setting != "--config":
        config = str(tmp_path / "hostsched.yaml")
        Path(config).write_text("redis: {password_file: /dev/zero}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOSTSCHED_", "SCHEDULING_"))}
    result = subprocess.run(
        [sys.executable, "-m", "hostsched", "--config", config, "--redis-url", redis_url,
         "inspect"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        preexec_fn=_limited_memory,  # should it regress, this process only runs out of memory
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("hostsched: error: " + config), result.stderr
    assert "/dev/zero" in result.stderr and "too large" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("cert", "key", "refused"),
    [("x.crt", "trust.yaml", "trust.yaml"), ("a-directory", "x.key", "a-directory"),
     ("x.crt", "x" * 5000, "x" * 5000), ("trust.yaml/x.crt", "x.key", "trust.yaml/x.crt"),
     ("x.crt", "x.crt", "x.crt")],
    ids=["client_key-is-the-config", "client_cert-is-a-directory", "client_key-too-long",
         "client_cert-in-a-file", "one-file-for-both"],
)  # fmt: skip
def test_trust_writes_only_its_own_files(
    sandbox: Sandbox, cert: str, key: str, refused: str
) -> None:
    """`trust` made a new client key pair when either file was missing and wrote it over
    whatever the paths named: an existing file (an operator's key whose certificate was lost,
    or any file named by mistake, even the config itself) was silently replaced; a directory,
    or a path that could not be written, was an internal error (exit 1)."""
    folder = sandbox.root / "files"
    (folder / "a-directory").mkdir()
    path = folder / "trust.yaml"
    config = (
        f"lxd: {{client_cert: {cert}, client_key: {key}}}\n"
        "hosts:\n  - name: a\n    address: https://127.0.0.1:1\n"
    )
    path.write_text(config)
    before = sorted(folder.rglob("*"))
    for argv in (["trust", "a", "--yes"], ["trust", "a", "--yes", "--json"]):
        run = run_cli(["--config", str(path), "--redis-url", sandbox.url, *argv])
        assert run.code == 2, run.describe()  # refused before the host is even asked
        assert str(folder / refused) in run.error_message(), run.describe()
    assert path.read_text() == config, "trust overwrote the config file"
    assert sorted(folder.rglob("*")) == before, "trust left files behind"


# -- 5. bugs still open (xfail until fixed) ------------------------------------------------------

# None at the moment.
