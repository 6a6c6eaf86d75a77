"""Security against real redis-servers: the password from every source, the README's ACL user,
verified TLS, no secret in any output, and Lua scripts that never vary with their input."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hostsched.codec import encode_actual
from hostsched.config import ENV_REDIS_CA_FILE, ENV_REDIS_PASSWORD, load_config
from hostsched.connect import open_store
from hostsched.keys import Keys
from hostsched.model import Overcommit, Resources
from hostsched.store import Store, script
from tests.conftest import IN_CI, RedisServer, start_redis

ROOT = Path(__file__).parents[2]
PW = "s3cr3t-Pw-9f2c"  # distinctive, so a leak anywhere is found by a plain search
ACL_USER, ACL_PW = "hostsched", "acl-" + PW
SOURCES = ("url", "env", "file")
MODES = ((), ("--json",), ("--verbose",), ("--json", "--verbose"))
FLEET = "hosts:\n  - {name: hv-a, static: {cpu: 8, memory: 16GiB, disk: 100GiB}}\n"
FLEET += "  - {name: hv-b, static: {cpu: 4, memory: 8GiB, disk: 50GiB}}\n"
# Variables that could make a run pass or fail for a reason other than the one under test.
FOREIGN_ENV = ("HOSTSCHED_", "SCHEDULING_", "SSL_CERT_", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
# Never the user's embedded server (no test here should start one; see state_dir).
STATE_DIR = Path(tempfile.gettempdir()) / f"hs-sec-state-{os.getpid()}"


@pytest.fixture(scope="module", autouse=True)
def state_dir() -> Iterator[None]:
    yield
    shutil.rmtree(STATE_DIR, ignore_errors=True)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real entry point in a subprocess, with nothing inherited that could interfere."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}
    env = {**clean, "COLUMNS": "120", "HOSTSCHED_STATE_DIR": str(STATE_DIR), **(env or {})}
    command = [sys.executable, "-m", "hostsched", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)


def assert_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    """Exit ``code``, one error line on stderr (and a hint), no traceback, nothing on stdout."""
    lines = result.stderr.splitlines()
    assert result.returncode == code, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert lines[0].startswith("hostsched: error: ") and len(lines) <= 2, result.stderr
    assert all(line.startswith("hint: ") for line in lines[1:]), result.stderr
    assert all(f in lines[0] for f in fragments), lines[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def invocation(
    where: str, directory: Path, url: str, password: str, *, user: str = "", redis: str = "",
    extra: str = "",
) -> tuple[list[str], dict[str, str]]:  # fmt: skip
    """Arguments and environment that give ``password`` (and ``user``) to hostsched from ``where``.

    ``redis`` adds lines to the config's ``redis:`` section, ``extra`` adds top-level YAML.
    """
    directory.mkdir(parents=True, exist_ok=True)
    scheme, rest = url.split("://", 1)
    env: dict[str, str] = {}
    if where == "url":
        url = f"{scheme}://{user}:{password}@{rest}"
    else:
        url = f"{scheme}://{user}@{rest}" if user else url
        if where == "env":
            env[ENV_REDIS_PASSWORD] = password
        else:  # relative to the config file, with the trailing newline an editor leaves
            (directory / "redis.pw").write_text(password + "\n")
            redis += "  password_file: redis.pw\n"
    config = directory / "hostsched.yaml"
    config.write_text(f"redis:\n{redis}{FLEET}{extra}")
    return ["--config", str(config), "--redis-url", url], env


@dataclass(frozen=True)
class Server:
    """A redis-server of this module: its loopback port, and an admin client on its socket."""

    server: RedisServer
    port: int

    def url(self, host: str = "127.0.0.1", scheme: str = "redis") -> str:
        return f"{scheme}://{host}:{self.port}"

    def admin(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.server.socket), password=PW)


def readme_acl() -> list[str]:
    """The README's recommended ACL line, as the rules of ACL SETUSER hostsched."""
    readme = (ROOT / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith(f"ACL SETUSER {ACL_USER} "))
    return [">" + ACL_PW if arg == ">YOUR-PASSWORD" else arg for arg in line.split()[3:]]


def serve(directory: Path, *args: str, port: int) -> Generator[Server, None, None]:
    """Start a server (default user's password PW, README's ACL user), stop it afterwards."""
    try:
        server = start_redis(directory, *args)
    except RuntimeError:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    try:
        with server.client() as client:
            client.config_set("requirepass", PW)
        with Server(server, port).admin() as admin:
            admin.execute_command("ACL", "SETUSER", ACL_USER, *readme_acl())
        yield Server(server, port)
    finally:
        server.process.terminate()
        server.process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def plain() -> Iterator[Server]:
    port, directory = free_port(), Path(tempfile.mkdtemp(prefix="hs-sec-", dir="/tmp"))
    yield from serve(directory, "--port", str(port), "--bind", "127.0.0.1", port=port)


@pytest.fixture
def secured(plain: Server) -> Server:
    with plain.admin() as admin:
        admin.flushall()
    return plain


# -- the password from each source, and ACL users ------------------------------------------


@pytest.mark.parametrize("user", ["", ACL_USER], ids=["default-user", "acl-user"])
@pytest.mark.parametrize("where", SOURCES)
def test_password_from_each_source(secured: Server, tmp_path: Path, where: str, user: str) -> None:
    password = ACL_PW if user else PW
    args, env = invocation(where, tmp_path / "good", secured.url(), password, user=user)
    collected = run(*args, "collect", "--json", env=env)
    assert collected.returncode == 0, collected.stderr
    assert json.loads(collected.stdout)["stored"] == 2

    args, env = invocation(where, tmp_path / "bad", secured.url(), password + "-x", user=user)
    assert_error(run(*args, "inspect", env=env), 5, "invalid username-password pair")
    args, _ = invocation("env", tmp_path / "none", secured.url(), password, user=user)
    assert_error(run(*args, "inspect"), 5)  # no password at all


# Always allowed (connecting), or sent by the test itself.
NOT_HOSTSCHEDS = ("cmdstat_hello", "cmdstat_auth", "cmdstat_config|resetstat")


def test_readme_acl_user_runs_everything_and_uses_every_command(
    secured: Server, tmp_path: Path
) -> None:
    args, env = invocation("env", tmp_path, secured.url(), ACL_PW, user=ACL_USER)
    with secured.admin() as admin:
        admin.sadd("hostsched:hosts", "retired")  # stored, not configured, no data: forgotten
        admin.script_flush()  # so the scripts must be loaded as this user
        admin.config_resetstat()
        assert run(*args, "collect", env=env).returncode == 0
        # Instances on the hosts, as an LXD collect would store them: schedule looks them up.
        url = f"unix://{secured.server.socket}"
        with closing(Store.connect(url, keys=Keys("hostsched"), password=PW)) as store:
            for host in ("hv-a", "hv-b"):
                _write(store, host, ["vm-1"])
        for step in (
            ["schedule", "--cpu", "1", "--id", "web-1"],
            ["schedule", "--cpu", "1", "--id", "web-2", "--strategy", "round_robin"],
            ["collect"],  # with reservations pending
            ["inspect"], ["inspect", "hv-a"], ["release", "web-1", "web-2"], ["cleanup"],
            ["bench", "--hosts", "2", "--placements", "4", "--json"],
        ):  # fmt: skip
            result = run(*args, *step, env=env)
            assert result.returncode == 0, (step, result.stderr)
        # A reservation that expires, pruned by the queue (with a one-second TTL).
        assert run(*args, "schedule", "--cpu", "1", "--id", "web-3", env=env).returncode == 0
        time.sleep(1.2)
        short, _ = invocation("env", tmp_path / "short", secured.url(), ACL_PW, user=ACL_USER,
                              extra="ttl:\n  reservation: 1s\n")  # fmt: skip
        pruned = run(*short, "cleanup", "--json", env=env)
        assert json.loads(pruned.stdout)["removed"] == 1, pruned.stderr
        # "retired" was forgotten (SREM): only the two configured hosts are left.
        assert json.loads(run(*args, "cleanup", "--json", env=env).stdout)["hosts"] == 2
        used = {
            name.removeprefix("cmdstat_")
            for name, stats in admin.info("commandstats").items()
            if stats["calls"] and name not in NOT_HOSTSCHEDS
        }
    # Everything hostsched sent, its scripts' commands included, was allowed; nothing allowed
    # went unused.
    assert used == {rule[1:] for rule in readme_acl() if rule.startswith("+")}


def test_a_command_refused_inside_a_script_is_a_store_error_not_bad_data(
    secured: Server, tmp_path: Path
) -> None:
    """A permission missing inside a script (here LLEN) is exit 5 with the ACL hint: it says
    nothing of the host's data, which must not be reported corrupt."""
    args, env = invocation("env", tmp_path, secured.url(), ACL_PW, user=ACL_USER)
    assert run(*args, "collect", env=env).returncode == 0
    with secured.admin() as admin:
        admin.execute_command("ACL", "SETUSER", ACL_USER, "-llen")
        try:
            result = run(*args, "schedule", "--cpu", "1", env=env)
        finally:
            admin.execute_command("ACL", "SETUSER", ACL_USER, "+llen")
    assert_error(result, 5, "can't run this command")
    assert "README's ACL line" in result.stderr


@pytest.mark.parametrize("command", [
    ["collect"], ["cleanup"], ["inspect"], ["schedule", "--cpu", "1"], ["release", "web-1"],
])  # fmt: skip
def test_acl_user_is_refused_other_keys(
    secured: Server, tmp_path: Path, command: list[str]
) -> None:
    """The ACL's key pattern holds: under another prefix, every command fails with exit 5."""
    args, env = invocation("env", tmp_path, secured.url(), ACL_PW, user=ACL_USER,
                           redis="  prefix: other\n")  # fmt: skip
    assert_error(run(*args, *command, env=env), 5, "no permissions")


# -- TLS -------------------------------------------------------------------------------------


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
) -> bytes:  # fmt: skip
    """A self-signed CA certificate, or (with ``issuer``) a server's for 127.0.0.1/localhost."""
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    signer = key if issuer is None else issuer[1]
    builder = (
        x509.CertificateBuilder().subject_name(name).public_key(key.public_key())
        .issuer_name(name if issuer is None else issuer[0].subject)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )  # fmt: skip
    if issuer is None:
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        builder = builder.add_extension(ski, critical=False)
    else:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key())
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = builder.add_extension(aki, critical=False)
    return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def tls() -> Iterator[Server]:
    """A TLS-only redis-server (no plain TCP port) on 127.0.0.1 and 127.0.0.2, whose certificate
    a test CA (``ca.pem``) signed for 127.0.0.1 and localhost; ``other.pem`` signed nothing."""
    directory = Path(tempfile.mkdtemp(prefix="hs-tls-", dir="/tmp"))
    ca_key, other_key, key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _certificate("hostsched test CA", ca_key)
    (directory / "ca.pem").write_bytes(ca)
    (directory / "other.pem").write_bytes(_certificate("another CA", other_key))
    issuer = (x509.load_pem_x509_certificate(ca), ca_key)
    (directory / "server.pem").write_bytes(_certificate("localhost", key, issuer))
    (directory / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    port = free_port()
    servers = serve(
        directory, "--tls-port", str(port), "--bind", "127.0.0.1 127.0.0.2",
        "--tls-cert-file", str(directory / "server.pem"),
        "--tls-key-file", str(directory / "server.key"),
        "--tls-ca-cert-file", str(directory / "ca.pem"), "--tls-auth-clients", "no", port=port,
    )  # fmt: skip
    try:
        server = next(servers)
    except RuntimeError:
        message = "redis-server does not start with --tls-port: is it built with TLS?"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    yield server
    servers.close()


def certs(tls: Server, directory: Path) -> dict[str, str]:
    """Copies of the test CAs in ``directory``/certs, so a config there can name them relatively."""
    (directory / "certs").mkdir(parents=True, exist_ok=True)
    for name in ("ca.pem", "other.pem"):
        shutil.copy(tls.server.directory / name, directory / "certs" / name)
    return {"ca": str(directory / "certs/ca.pem"), "other": str(directory / "certs/other.pem")}


RS, CA = "rediss://127.0.0.1:{port}", "  tls_ca_file: certs/ca.pem\n"
TLS_CASES = {  # redis: lines, environment, URL ("": none), exit code, what the error says
    "config": (CA, {}, RS, 0, ""),
    "env": ("", {ENV_REDIS_CA_FILE: "{ca}"}, RS, 0, ""),
    "url-query": ("", {}, RS + "/?ssl_ca_certs={ca}", 0, ""),
    # The configured CA is what is trusted; OpenSSL's variables pointing elsewhere do not matter.
    "despite-openssl-env": (CA, {"SSL_CERT_FILE": "{other}", "SSL_CERT_DIR": "/no"}, RS, 0, ""),
    # Verification is on by default: the system's store does not know the test CA.
    "default-trust-store": ("", {}, RS, 5, "certificate verify failed"),
    "another-ca": ("  tls_ca_file: certs/other.pem\n", {}, RS, 5, "verify failed"),
    "name-mismatch": (CA, {}, "rediss://127.0.0.2:{port}", 5, "mismatch"),
    # The variables of requests and curl are not how a Redis CA is given.
    "requests-variables": ("", {"REQUESTS_CA_BUNDLE": "{ca}", "CURL_CA_BUNDLE": "{ca}"}, RS, 5,
                           "verify failed"),
    # A CA without TLS is a mistake to report, not a plain connection to make.
    "ca-with-redis-url": (CA, {}, "redis://127.0.0.1:{port}", 2, "not rediss://"),
    "ca-with-embedded": (CA, {}, "", 2, "not rediss://"),
    "missing-ca-file": ("  tls_ca_file: nope.pem\n", {}, RS, 2, "redis.tls_ca_file: no such"),
    "missing-ca-env": ("", {ENV_REDIS_CA_FILE: "/no/ca.pem"}, RS, 2, ENV_REDIS_CA_FILE),
}  # fmt: skip


@pytest.mark.parametrize("case", TLS_CASES)
def test_tls_verifies_the_server(tls: Server, tmp_path: Path, case: str) -> None:
    lines, variables, url, code, says = TLS_CASES[case]
    files = certs(tls, tmp_path) | {"port": str(tls.port)}
    args, env = invocation("env", tmp_path, url.format(**files) or RS, PW, redis=lines)
    env |= {name: value.format(**files) for name, value in variables.items()}
    with tls.admin() as admin:
        admin.flushall()
        result = run(*args[: 4 if url else 2], "collect", env=env)
        stored = admin.exists("hostsched:resource:{hv-a}", "hostsched:resource:{hv-b}")
    if code:
        assert_error(result, code, says)
    else:
        assert result.returncode == 0 and stored == 2, result.stderr


# -- secrets ---------------------------------------------------------------------------------

Outcome = tuple[int, subprocess.CompletedProcess[str]]  # the expected exit code, and the run


@pytest.mark.parametrize("where", SOURCES)
def test_no_secret_in_any_output(secured: Server, tls: Server, tmp_path: Path, where: str) -> None:
    """Every command, succeeding and failing, plain, --json and --verbose: PW is never shown."""
    certs(tls, tmp_path)

    def runs(index: int, mode: tuple[str, ...]) -> list[Outcome]:
        base = tmp_path / f"mode-{index}"  # and a prefix of its own: modes run at once
        args, env = invocation(where, base / "ok", secured.url(), PW, redis=f"  prefix: m{index}\n")
        steps = [["collect"], ["schedule", "--cpu", "1", "--id", "web-1"], ["inspect"],
                 ["inspect", "hv-a"], ["release", "web-1"], ["cleanup"],
                 ["store", "status"]]  # fmt: skip
        if index in (0, len(MODES) - 1):  # bench takes a second: plain, and --json --verbose
            steps.append(["bench", "--hosts", "2", "--placements", "4"])
        calls = [(0, args + step, env) for step in steps]
        for code, directory, url, password, lines, extra in (
            (5, "wrong-password", secured.url(), PW + "-wrong", "", ""),
            (5, "unreachable", f"redis://127.0.0.1:{free_port()}", PW, "", ""),
            (2, "bad-config", secured.url(), PW, "", "scheduling: {strategy: fastest}\n"),
            (2, "bad-url", "redis://127.0.0.1:port", PW, "", ""),
            (5, "tls-unverified", tls.url(scheme="rediss"), PW, "", ""),
            (0, "tls", tls.url(scheme="rediss"), PW, "  tls_ca_file: ../../certs/ca.pem\n", ""),
        ):  # fmt: skip
            args, env = invocation(where, base / directory, url, password, redis=lines, extra=extra)
            calls.append((code, [*args, "inspect"], env))
        return [(code, run(*argv, *mode, env=env)) for code, argv, env in calls]

    with ThreadPoolExecutor(len(MODES)) as pool:
        results = dict(zip(MODES, pool.map(runs, range(len(MODES)), MODES), strict=True))
    for mode, outcomes in results.items():
        for code, result in outcomes:
            assert PW not in result.stdout + result.stderr, (mode, result.args)
            # --verbose adds a traceback on stderr, never another exit code.
            assert result.returncode == code, (mode, result.args, result.stderr)
            if "--json" in mode:
                document = json.loads(result.stdout)  # one document, an error's if it failed
                assert code == 0 or set(document) == {"error"}
            elif code and "--verbose" not in mode:
                assert_error(result, code)


def test_no_secret_from_a_password_in_the_url_query() -> None:
    result = run("--redis-url", f"redis://127.0.0.1:1/?password={PW}&db=x", "inspect")
    assert result.returncode == 5 and PW not in result.stdout + result.stderr


@pytest.mark.parametrize("where", SOURCES)
def test_config_and_client_never_show_the_password(
    secured: Server, tmp_path: Path, where: str
) -> None:
    args, env = invocation(where, tmp_path, secured.url(), PW)
    config = load_config(args[1], env=env).with_overrides(redis_url=args[3])
    assert config.redis.password == PW or PW in str(config.redis.url)  # there to be hidden
    store = open_store(config)
    try:
        assert store.ping() > 0
        shown = (repr(config), str(config), repr(config.redis), repr(store.client),
                 repr(store.client.connection_pool), repr(store))  # fmt: skip
        assert [text for text in shown if PW in text] == []
    finally:
        store.close()


# -- Lua scripts are static text; input is only ever data -------------------------------------

HOSTILE_IDS = [
    '"', "'", "]]", "]]..redis.call('FLUSHALL')..[[", 'x"); redis.call("FLUSHALL") --',
    "a\nb\r\n\t", "\x00nul", "%s %d %%", "KEYS[1]", "\\", "é😀", "i" * 65536,
]  # fmt: skip
HOSTILE_HOSTS = ["h]]..redis.call('FLUSHALL')..[[", "h\"'\\--[==["]
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b"}


def _unescape(match: re.Match[bytes]) -> bytes:
    code = match.group(1)
    return bytes([int(code[1:], 16)]) if len(code) == 3 else _ESCAPES.get(code, code)


def monitor_args(line: bytes) -> list[bytes]:
    """The arguments of a MONITOR line, ``+<time> [<db> <client>] "arg" ...``, unescaped."""
    quoted = re.findall(rb'"((?:[^"\\]|\\.)*)"', line.split(b"] ", 1)[1])
    return [re.sub(rb"\\(x[0-9a-f]{2}|.)", _unescape, arg) for arg in quoted]


def _write(store: Store, host: str, names: Sequence[str]) -> tuple[str, ...]:
    """A collect's write of ``host`` with these instance names; returns the ids it dropped."""
    body = encode_actual(
        capacity=Resources(10**6, 1 << 40, 1 << 40), used=Resources(), overcommit=Overcommit(),
        labels={HOSTILE_IDS[3]: HOSTILE_IDS[4]}, names=names,
    )  # fmt: skip
    grant = store.acquire_locks([host], ttl=30)[host]
    outcome = store.write_actual({host: (grant, body, names)}, resource_ttl=3600)[host]
    store.release_locks({host: grant})
    assert grant.acquired and outcome.status == "ok"
    return outcome.dropped


def test_scripts_are_static_whatever_the_input(redis_server: RedisServer, redis_url: str) -> None:
    files = {path.stem: path.read_bytes() for path in (ROOT / "hostsched" / "lua").glob("*.lua")}
    # Each script is its file, after the shared library's file where it uses it: static text.
    static = {script(name).text.encode() for name in files if name != "lib"}
    assert all(script(name).text.encode() in (files[name], files["lib"] + files[name])
               for name in files if name != "lib")  # fmt: skip
    admin = redis_server.client()
    admin.set("sentinel", "kept")
    admin.script_flush()  # so every script must be sent to the server, where MONITOR sees it
    store = Store.connect(redis_url, keys=Keys("hostile"))
    first, second = HOSTILE_HOSTS
    with socket.socket(socket.AF_UNIX) as monitor, admin:
        monitor.settimeout(10)
        monitor.connect(str(redis_server.socket))
        monitor.sendall(b"MONITOR\r\n")
        lines = monitor.makefile("rb")
        assert lines.readline() == b"+OK\r\n"
        assert _write(store, first, ()) == _write(store, second, ()) == ()
        batches = {host: [(rid, Resources(cpu=1)) for rid in HOSTILE_IDS] for host in HOSTILE_HOSTS}
        for outcome in store.reserve(batches, reservation_ttl=120, stale_after=300).values():
            assert outcome.status == "ok" and sorted(outcome.placed) == sorted(HOSTILE_IDS)
        assert set(admin.hkeys(store.keys.scheduled(first))) == {i.encode() for i in HOSTILE_IDS}
        pending = store.acquire_locks([first], ttl=30)[first]
        store.release_locks({first: pending})
        assert sorted(pending.pending) == sorted(HOSTILE_IDS)
        assert sorted(_write(store, first, HOSTILE_IDS[:6])) == sorted(HOSTILE_IDS[:6])
        stored = json.loads(admin.get(store.keys.resource(first)) or b"")
        assert stored["names"] == HOSTILE_IDS[:6]
        assert stored["labels"] == {HOSTILE_IDS[3]: HOSTILE_IDS[4]}
        released = store.release({host: HOSTILE_IDS for host in HOSTILE_HOSTS})
        assert sorted(released[first]) == sorted(HOSTILE_IDS[6:])
        assert sorted(released[second]) == sorted(HOSTILE_IDS)
        cleaned = store.cleanup(HOSTILE_HOSTS, reservation_ttl=120)
        assert all(o.remaining == 0 and o.has_actual for o in cleaned.values())
        admin.echo("end of hostile input")
        seen: list[list[bytes]] = []
        while (args := monitor_args(lines.readline())) != [b"ECHO", b"end of hostile input"]:
            seen.append(args)
        assert admin.get("sentinel") == b"kept"
        cached = admin.info("memory")["number_of_cached_scripts"]
        store.close()
    commands = {args[0].upper() for args in seen}
    assert not commands & {b"EVAL", b"EVAL_RO", b"FUNCTION", b"FCALL", b"FCALL_RO"}
    loaded = {args[2] for args in seen if [a.upper() for a in args[:2]] == [b"SCRIPT", b"LOAD"]}
    called = [args for args in seen if args[0].upper() == b"EVALSHA"]
    # The server was sent the scripts byte for byte, ran only them, and holds nothing else.
    assert loaded and loaded <= static and cached == len(loaded)
    assert {args[1].decode() for args in called} <= {hashlib.sha1(t).hexdigest() for t in loaded}
    assert any(HOSTILE_IDS[3].encode() in args[3:] for args in called)  # one whole argument
