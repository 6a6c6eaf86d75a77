"""The config file, environment and flags (SPEC, "Hosts and configuration"). No Redis."""

from __future__ import annotations

import errno
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostsched.channel import BUSY_WAIT_US
from hostsched.config import (
    Config,
    HostConfig,
    RedisConfig,
    StaticHost,
    Weights,
    load_config,
    parse_duration,
)
from hostsched.errors import ConfigError, QuantityError, UsageError
from hostsched.model import Overcommit, Resources
from hostsched.strategies import STRATEGY_NAMES
from hostsched.yamlnodes import MAX_CONFIG_BYTES, MAX_SECRET_BYTES, read_limited

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"
GIB = 1 << 30


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory, with a user config directory of our own."""
    import platformdirs

    user = tmp_path / "user-config"
    monkeypatch.setattr(platformdirs, "user_config_dir", lambda appname: str(user / appname))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path / "hostsched-test.yaml", text), env=env or {})


def host(name: str = "h1", extra: str = "") -> str:
    """One host entry of the ``hosts:`` list, two lines plus ``extra``."""
    return f"  - name: {name}\n    static: {{cpu: 4, memory: 8GiB{extra}}}\n"


# --- the example file ------------------------------------------------------------------------


def test_example_loads_with_four_hosts() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.path == EXAMPLE
    assert [h.name for h in config.hosts] == [f"hypervisor-0{i}" for i in range(1, 5)]
    assert config.redis.url is None
    assert config.strategy == "least_loaded"
    assert all(h.labels["zone"].startswith("us-west-1") for h in config.hosts)


def test_example_documents_the_defaults() -> None:
    config = load_config(EXAMPLE, env={})
    defaults = Config()
    assert (config.redis, config.weights, config.overcommit) == (
        defaults.redis,
        defaults.weights,
        defaults.overcommit,
    )
    assert (config.max_attempts, config.resource_ttl, config.reservation_ttl) == (8, 86400, 120)
    assert (config.lock_ttl, config.host_stale_after) == (30, 300)
    assert defaults.redis.busy_wait_us == BUSY_WAIT_US  # (a store opened without a Config)


def test_example_hosts_differ_and_all_fit_a_first_request() -> None:
    config = load_config(EXAMPLE, env={})
    request = Resources(cpu=2000, memory=4 * GIB)
    loads = []
    for h in config.hosts:
        assert h.static is not None
        free = h.overcommit.apply(h.static.capacity) - h.static.used
        assert request.fits_in(free), h.name
        loads.append(h.static.used.cpu / h.static.capacity.cpu)
    assert len({h.static.capacity for h in config.hosts if h.static}) == 4
    assert max(loads) >= 0.75
    gpu_hosts = [h for h in config.hosts if h.static and h.static.capacity.gpu]
    assert [h.labels.get("gpu") for h in gpu_hosts] == ["nvidia-a10"]
    assert any(h.overcommit != config.overcommit for h in config.hosts)


def test_example_hypervisor_01() -> None:
    h1 = load_config(EXAMPLE, env={}).host("hypervisor-01")
    assert h1 is not None
    assert dict(h1.labels) == {"zone": "us-west-1a"}
    assert h1.overcommit == Overcommit()
    assert h1.static == StaticHost(
        capacity=Resources(cpu=16000, memory=32 * GIB, disk=500 * GIB),
        used=Resources(cpu=12000, memory=24 * GIB, disk=100 * GIB),
        instances=8,
    )


# --- where the file comes from ---------------------------------------------------------------


def prefixed(path: Path, prefix: str) -> Path:
    return write(path, f"redis: {{prefix: {prefix}}}\n")


def test_no_file_means_defaults() -> None:
    config = load_config(env={})
    assert config == Config()
    assert config.path is None and config.hosts == ()


def test_user_config_dir(isolated: Path) -> None:
    user = prefixed(isolated / "user-config" / "hostsched" / "config.yaml", "user")
    config = load_config(env={})
    assert (config.path, config.redis.prefix) == (user, "user")


def test_local_file_beats_user_config(isolated: Path) -> None:
    prefixed(isolated / "user-config" / "hostsched" / "config.yaml", "user")
    prefixed(Path("hostsched.yaml"), "local")
    config = load_config(env={})
    assert (config.path, config.redis.prefix) == (Path("hostsched.yaml"), "local")


def test_env_beats_local_file(isolated: Path) -> None:
    prefixed(Path("hostsched.yaml"), "local")
    named = prefixed(isolated / "env.yaml", "env")
    config = load_config(env={"HOSTSCHED_CONFIG": str(named)})
    assert (config.path, config.redis.prefix) == (named, "env")


def test_argument_beats_env(isolated: Path) -> None:
    named = prefixed(isolated / "env.yaml", "env")
    argument = prefixed(isolated / "arg.yaml", "arg")
    config = load_config(str(argument), env={"HOSTSCHED_CONFIG": str(named)})
    assert (config.path, config.redis.prefix) == (argument, "arg")


def test_empty_env_config_is_unset() -> None:
    prefixed(Path("hostsched.yaml"), "local")
    assert load_config(env={"HOSTSCHED_CONFIG": ""}).redis.prefix == "local"


def test_env_defaults_to_os_environ(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    named = prefixed(isolated / "env.yaml", "env")
    monkeypatch.setenv("HOSTSCHED_CONFIG", str(named))
    monkeypatch.delenv("SCHEDULING_STRATEGY", raising=False)
    monkeypatch.delenv("HOSTSCHED_REDIS_URL", raising=False)
    assert load_config().redis.prefix == "env"


@pytest.mark.parametrize("how", ["argument", "env"])
def test_named_file_must_exist(isolated: Path, how: str) -> None:
    prefixed(Path("hostsched.yaml"), "local")
    missing = isolated / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        if how == "argument":
            load_config(missing, env={})
        else:
            load_config(env={"HOSTSCHED_CONFIG": str(missing)})
    assert str(missing) in str(info.value)
    assert "not found" in str(info.value)


def test_unreadable_file(isolated: Path) -> None:
    directory = isolated / "is-a-dir"
    directory.mkdir()
    with pytest.raises(ConfigError, match="is-a-dir"):
        load_config(directory, env={})


def test_a_file_of_the_size_limit_loads(isolated: Path) -> None:
    path = isolated / "big.yaml"
    path.write_bytes(b"redis: {prefix: big}\n#" + b"x" * (MAX_CONFIG_BYTES - 23) + b"\n")
    assert path.stat().st_size == MAX_CONFIG_BYTES
    assert load_config(path, env={}).redis.prefix == "big"


@pytest.mark.parametrize("how", ["argument", "env"])
def test_a_file_over_the_size_limit_is_refused(isolated: Path, how: str) -> None:
    path = isolated / "huge.yaml"
    path.write_bytes(b"#" + b"x" * MAX_CONFIG_BYTES + b"\n")
    with pytest.raises(ConfigError) as info:
        if how == "argument":
            load_config(path, env={})
        else:
            load_config(env={"HOSTSCHED_CONFIG": str(path)})
    assert info.value.message == f"{path}: too large (more than 1.0 MiB)"


def test_file_that_is_not_utf8(isolated: Path) -> None:
    path = isolated / "latin1.yaml"
    path.write_bytes(b"redis: {prefix: caf\xe9}\n")
    with pytest.raises(ConfigError, match=r"latin1\.yaml.*UTF-8"):
        load_config(path, env={})


def test_home_is_expanded(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(isolated))
    prefixed(isolated / "home.yaml", "home")
    assert load_config("~/home.yaml", env={}).redis.prefix == "home"


# --- environment and flags -------------------------------------------------------------------


def test_env_overrides_file(tmp_path: Path) -> None:
    text = "redis: {url: 'redis://file:6379'}\nscheduling: {strategy: best_fit}\n"
    env = {"HOSTSCHED_REDIS_URL": "redis://env:6379/1", "SCHEDULING_STRATEGY": "random"}
    config = load_text(tmp_path, text, env)
    assert (config.redis.url, config.strategy) == ("redis://env:6379/1", "random")
    config = load_text(tmp_path, text, {"HOSTSCHED_REDIS_URL": "", "SCHEDULING_STRATEGY": ""})
    assert (config.redis.url, config.strategy) == ("redis://file:6379", "best_fit")


def test_env_applies_without_a_file() -> None:
    config = load_config(env={"SCHEDULING_STRATEGY": "round_robin"})
    assert config.strategy == "round_robin"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"SCHEDULING_STRATEGY": "fastest"}, "SCHEDULING_STRATEGY"),
        ({"HOSTSCHED_REDIS_URL": "http://example.com"}, "HOSTSCHED_REDIS_URL"),
        ({"HOSTSCHED_REDIS_URL": "redis://"}, "HOSTSCHED_REDIS_URL"),
    ],
)
def test_bad_env_values(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_config(env=env)


def test_unknown_env_strategy_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"SCHEDULING_STRATEGY": "fastest"})
    assert all(name in str(info.value) for name in STRATEGY_NAMES)


def test_flags_override_everything(tmp_path: Path) -> None:
    config = load_text(
        tmp_path, "scheduling: {strategy: best_fit}\n", {"SCHEDULING_STRATEGY": "random"}
    )
    flagged = config.with_overrides(redis_url="unix:///run/redis.sock", strategy="least_cpu")
    assert (flagged.redis.url, flagged.strategy) == ("unix:///run/redis.sock", "least_cpu")
    assert config.with_overrides() == config
    assert config.with_overrides(strategy=None).strategy == "random"


def test_bad_flags_are_usage_errors() -> None:
    with pytest.raises(UsageError) as info:
        Config().with_overrides(strategy="fastest")
    assert all(name in str(info.value) for name in STRATEGY_NAMES)
    assert info.value.exit_code == 2
    with pytest.raises(UsageError, match="redis-url"):
        Config().with_overrides(redis_url="localhost:6379")


# --- secrets ---------------------------------------------------------------------------------


def test_password_from_file_relative_to_config(tmp_path: Path) -> None:
    write(tmp_path / "secrets" / "redis.pw", "s3cret-from-file\n")
    config = load_text(tmp_path, "redis:\n  password_file: secrets/redis.pw\n")
    assert config.redis.password == "s3cret-from-file"


def test_env_password_wins_and_the_file_is_not_read(tmp_path: Path) -> None:
    text = "redis:\n  password_file: does-not-exist\n"
    config = load_text(tmp_path, text, {"HOSTSCHED_REDIS_PASSWORD": "s3cret-from-env"})
    assert config.redis.password == "s3cret-from-env"
    with pytest.raises(ConfigError, match=r"hostsched-test.yaml:2: redis.password_file"):
        load_text(tmp_path, text, {"HOSTSCHED_REDIS_PASSWORD": ""})


def test_a_password_file_of_the_size_limit(tmp_path: Path) -> None:
    write(tmp_path / "pw", "p" * (MAX_SECRET_BYTES - 1) + "\n")
    config = load_text(tmp_path, "redis:\n  password_file: pw\n")
    assert config.redis.password == "p" * (MAX_SECRET_BYTES - 1)


@pytest.mark.parametrize("kind", ["too-large", "directory", "in-a-file", "latin-1"])
def test_unusable_password_files_name_the_setting_and_the_file(tmp_path: Path, kind: str) -> None:
    if kind == "too-large":
        (tmp_path / "pw").write_bytes(b"p" * (MAX_SECRET_BYTES + 1))
    elif kind == "latin-1":
        (tmp_path / "pw").write_bytes("mot de passe: été".encode("latin-1"))
    elif kind == "directory":
        (tmp_path / "pw").mkdir()
    else:
        (tmp_path / "file").write_text("x")
    name, reason = {
        "too-large": ("pw", "too large (more than 64.0 KiB)"),
        "directory": ("pw", "Is a directory"),
        "in-a-file": ("file/pw", "Not a directory"),
        "latin-1": ("pw", "not UTF-8 text"),
    }[kind]
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, f"redis:\n  password_file: {name}\n")
    assert info.value.exit_code == 2
    assert info.value.message == (
        f"{tmp_path / 'hostsched-test.yaml'}:2: redis.password_file: "
        f"cannot read {str(tmp_path / name)!r}: {reason}"
    )


def test_read_limited_reads_no_more_than_the_limit_and_one(tmp_path: Path) -> None:
    exact = tmp_path / "exact"
    exact.write_bytes(b"x" * 10)
    assert read_limited(exact, 10) == b"x" * 10
    with pytest.raises(OSError) as info:
        read_limited(exact, 9)
    assert info.value.errno == errno.EFBIG and info.value.filename == str(exact)
    with pytest.raises(OSError, match="too large"):
        read_limited(Path("/dev/zero"), 1 << 20)  # endless: only the limit and one byte read


def test_secrets_never_reach_repr(tmp_path: Path) -> None:
    write(tmp_path / "pw", "s3cret-from-file\n")
    url = "redis://:s3cret-in-url@db:6379/0"
    config = load_text(tmp_path, f"redis: {{url: '{url}', password_file: pw}}\n")
    assert config.redis.password == "s3cret-from-file"
    assert config.redis.url == url
    for text in (repr(config), str(config), repr(config.redis)):
        assert "s3cret" not in text
    assert "s3cret" not in repr(RedisConfig(url=url, password="s3cret"))


# --- values ----------------------------------------------------------------------------------


def test_every_setting(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """\
        redis:
          url: rediss://db.example:6380/2
          prefix: fleet-a
          timeout: 1.5
        scheduling:
          strategy: consistent_hash
          weights: {cpu: 1, memory: 0}
          overcommit: {cpu: 4, memory: 1.2}
          max_attempts: 3
        ttl: {resource: 1d, reservation: 90, lock: 1m, host_stale_after: 1h30m}
        """,
    )
    assert config.redis == RedisConfig(
        url="rediss://db.example:6380/2", prefix="fleet-a", timeout=1.5
    )
    assert config.strategy == "consistent_hash"
    assert config.weights == Weights(cpu=1.0, memory=0.0, disk=0.2)
    assert config.overcommit == Overcommit(cpu=4.0, memory=1.2, disk=1.0)
    assert config.max_attempts == 3
    assert (config.resource_ttl, config.reservation_ttl) == (86400, 90)
    assert (config.lock_ttl, config.host_stale_after) == (60, 5400)


def test_empty_documents_mean_defaults(tmp_path: Path) -> None:
    for text in ("", "# nothing here\n", "---\n", "null\n", "redis:\nscheduling: ~\nttl: {}\n"):
        config = load_text(tmp_path, text)
        assert config == Config(path=tmp_path / "hostsched-test.yaml")


def test_null_values_mean_defaults(tmp_path: Path) -> None:
    text = "redis: {url: null, prefix: ~}\nscheduling: {strategy: null, overcommit: null}\n"
    assert load_text(tmp_path, text).redis == RedisConfig()


def test_host_overcommit_resolution(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        "scheduling:\n  overcommit: {cpu: 2, memory: 1.5}\nhosts:\n"
        + host("fleet")
        + host("partial")
        + "    overcommit: {cpu: 4}\n"
        + host("single")
        + "    overcommit: 3\n",
    )
    assert config.host("fleet") == HostConfig(
        "fleet", {}, Overcommit(2, 1.5, 1), StaticHost(Resources(4000, 8 * GIB))
    )
    partial, single = config.host("partial"), config.host("single")
    assert partial is not None and partial.overcommit == Overcommit(4, 1.5, 1)
    assert single is not None and single.overcommit == Overcommit(3, 3, 3)
    assert config.host("nope") is None


def test_static_quantities(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """\
        hosts:
          - name: q
            static:
              cpu: 500m
              memory: 4294967296
              disk: 4GB
              gpu: "2"
              used: {cpu: 0.25, memory: 1G, disk: 10, gpu: 1}
              instances: "3"
          - name: overbooked
            static: {cpu: 1, memory: 1G, used: {cpu: 8, memory: 2G}}
        """,
    )
    q, overbooked = config.hosts
    assert q.static == StaticHost(
        capacity=Resources(cpu=500, memory=4 * GIB, disk=4 * 10**9, gpu=2),
        used=Resources(cpu=250, memory=GIB, disk=10, gpu=1),
        instances=3,
    )
    assert overbooked.static is not None and overbooked.static.used.cpu == 8000


def test_labels_are_text_as_written_and_read_only(tmp_path: Path) -> None:
    text = "hosts:\n" + host() + "    labels: {zone: 01, ssd: true, ratio: 1.50, 7: seven, e: ''}\n"
    labels = load_text(tmp_path, text).hosts[0].labels
    assert dict(labels) == {"zone": "01", "ssd": "true", "ratio": "1.50", "7": "seven", "e": ""}
    with pytest.raises(TypeError):
        labels["zone"] = "x"  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        *[(30, 30.0), (2.5, 2.5), ("30", 30.0), ("30s", 30.0), ("2m", 120.0), ("24h", 86400.0)],
        *[("1d", 86400.0), ("1h30m", 5400.0), ("1H 30M", 5400.0), ("500ms", 0.5), ("1.5s", 1.5)],
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", [0, -1, "0s", "-5s", "1h30", "abc", "", "5x", True, float("inf")])
def test_parse_duration_rejects(text: str | float) -> None:
    with pytest.raises(QuantityError):
        parse_duration(text)


# --- every validation error names the file, the line and the key -----------------------------

HOSTS = "hosts:\n"  # line 1; the first host's name is on line 2, its static on line 3

ERRORS = [
    # (YAML, line, key, a fragment of the message)
    ("redis: {}\nsched: {}\n", 2, "sched", "valid: redis, scheduling, ttl, lxd, hosts"),
    ("redis:\n  urll: redis://x\n", 2, "redis.urll", "valid: url, password_file"),
    ("redis: {}\nredis: {}\n", 2, "redis", "duplicate key (see line 1)"),
    ("redis:\n  url: http://x\n", 2, "redis.url", "redis://"),
    ("redis:\n  url: 6379\n", 2, "redis.url", "expected text"),
    ("redis:\n  prefix: 'a{b}'\n", 2, "redis.prefix", "braces"),
    ("redis:\n  prefix: ''\n", 2, "redis.prefix", "1 to 200"),
    ("redis:\n  timeout: 0\n", 2, "redis.timeout", "over 0"),
    ("redis:\n  password_file: nope.pw\n", 2, "redis.password_file", "nope.pw"),
    ("redis: [a]\n", 1, "redis", "expected a mapping"),
    ("scheduling: 3\n", 1, "scheduling", "expected a mapping"),
    ("scheduling:\n  strategy: fastest\n", 2, "scheduling.strategy", "least_loaded, best_fit"),
    ("scheduling:\n  strategy: [a]\n", 2, "scheduling.strategy", "expected a single value"),
    ("scheduling:\n  weights: {cpu: -1}\n", 2, "scheduling.weights.cpu", "≥ 0"),
    (
        "scheduling:\n  weights:\n    cpu: 0\n    memory: 0\n    disk: 0\n",
        3,
        "scheduling.weights",
        "positive",
    ),
    ("scheduling:\n  weights: {cpu: yes}\n", 2, "scheduling.weights.cpu", "expected a number"),
    ("scheduling:\n  weights: {gpu: 1}\n", 2, "scheduling.weights.gpu", "unknown key"),
    ("scheduling:\n  overcommit: 0\n", 2, "scheduling.overcommit", "> 0"),
    ("scheduling:\n  overcommit: -2\n", 2, "scheduling.overcommit", "> 0"),
    ("scheduling:\n  overcommit: {cpu: .nan}\n", 2, "scheduling.overcommit.cpu", "number"),
    ("scheduling:\n  overcommit: {gpu: 2}\n", 2, "scheduling.overcommit.gpu", "unknown key"),
    ("scheduling:\n  overcommit: '2'\n", 2, "scheduling.overcommit", "expected a number"),
    ("scheduling:\n  max_attempts: 0\n", 2, "scheduling.max_attempts", "at least 1"),
    ("scheduling:\n  max_attempts: 1.5\n", 2, "scheduling.max_attempts", "whole number"),
    ("scheduling:\n  max_attempts: many\n", 2, "scheduling.max_attempts", "max_attempts"),
    ("ttl:\n  lock: 0\n", 2, "ttl.lock", "over 0"),
    ("ttl:\n  lock: -30s\n", 2, "ttl.lock", "invalid duration"),
    ("ttl:\n  reservation: soon\n", 2, "ttl.reservation", "invalid duration"),
    ("ttl:\n  resource: 1.5s\n", 2, "ttl.resource", "whole seconds"),
    ("ttl:\n  resource: true\n", 2, "ttl.resource", "expected a duration"),
    ("ttl:\n  host_stale_after: 2024-01-01\n", 2, "ttl.host_stale_after", "expected a duration"),
    ("ttl:\n  stale: 5m\n", 2, "ttl.stale", "host_stale_after"),
    ("hosts:\n  name: a\n", 2, "hosts", "expected a list of hosts"),
    ("hosts:\n  - just-a-name\n", 2, "hosts[0]", "expected a mapping"),
    (HOSTS + host() + host(), 4, "hosts[1].name", "duplicate host 'h1' (line 2)"),
    (HOSTS + host("''"), 2, "hosts[0].name", "1 to 200"),
    (HOSTS + host("x" * 201), 2, "hosts[0].name", "1 to 200"),
    (HOSTS + host("'a b'"), 2, "hosts[0].name", "whitespace"),
    (HOSTS + host('"a\\tb"'), 2, "hosts[0].name", "whitespace"),
    (HOSTS + host("'h{1}'"), 2, "hosts[0].name", "braces"),
    (HOSTS + host("42"), 2, "hosts[0].name", "expected text"),
    (HOSTS + "  - static: {cpu: 1, memory: 1G}\n", 2, "hosts[0]", "needs a name"),
    (HOSTS + "  - name: a\n    labels: {}\n", 2, "hosts[0]", "static:"),
    (HOSTS + "  - name: a\n    address: ftp://x\n", 3, "hosts[0].address", "unix socket"),
    (HOSTS + "  - name: a\n    address: https://x\n    insecure: 1\n", 4, "hosts[0].insecure",
     "true or false"),
    (HOSTS + "  - name: a\n    address: /s\n    usage: guess\n", 4, "hosts[0].usage",
     "allocated, measured"),
    (HOSTS + host() + "    address: https://h:8443\n", 2, "hosts[0]", "either address"),
    (HOSTS + host() + "    server_cert: x.crt\n", 4, "hosts[0].server_cert", "no LXD settings"),
    ("lxd: {parallel: 0}\n", 1, "lxd.parallel", "at least 1"),
    ("lxd: {defaults: {memory: 1X}}\n", 1, "lxd.defaults.memory", "invalid memory"),
    (HOSTS + host() + "    zone: a\n", 4, "hosts[0].zone", "valid: name, labels"),
    (HOSTS + host() + "    overcommit: {cpu: 0}\n", 4, "hosts[0].overcommit.cpu", "> 0"),
    (HOSTS + host() + "    labels: [a, b]\n", 4, "hosts[0].labels", "expected a mapping"),
    (
        HOSTS + host() + "    labels:\n      zone: {a: b}\n",
        5,
        "hosts[0].labels.zone",
        "not a mapping",
    ),
    (HOSTS + host() + "    labels:\n      zone: [a]\n", 5, "hosts[0].labels.zone", "not a list"),
    (HOSTS + host() + "    labels:\n      zone:\n", 5, "hosts[0].labels.zone", "text or a number"),
    (HOSTS + host() + "    labels: {'a=b': c}\n", 4, "hosts[0].labels.a=b", "'='"),
    (HOSTS + host("h1", ", disk: 4X"), 3, "hosts[0].static.disk", "4X"),
    (HOSTS + host("h1", ", cpu: -1"), 3, "hosts[0].static.cpu", "duplicate key (see line 3)"),
    (
        HOSTS + "  - name: a\n    static: {cpu: -1, memory: 1G}\n",
        3,
        "hosts[0].static.cpu",
        "invalid CPU",
    ),
    (HOSTS + "  - name: a\n    static: {cpu: abc, memory: 1G}\n", 3, "hosts[0].static.cpu", "abc"),
    (
        HOSTS + "  - name: a\n    static: {cpu: true, memory: 1G}\n",
        3,
        "hosts[0].static.cpu",
        "quantity",
    ),
    (
        HOSTS + "  - name: a\n    static: {cpu: 1, memory: 1.5}\n",
        3,
        "hosts[0].static.memory",
        "whole number",
    ),
    (
        HOSTS + "  - name: a\n    static: {cpu: 1, memory: -1}\n",
        3,
        "hosts[0].static.memory",
        "memory",
    ),
    (
        HOSTS + "  - name: a\n    static: {cpu: 1, memory: 1G, gpu: 0.5}\n",
        3,
        "hosts[0].static.gpu",
        "whole",
    ),
    (
        HOSTS + "  - name: a\n    static: {cpu: 1, memory: 1G, gpu: -1}\n",
        3,
        "hosts[0].static.gpu",
        "GPU",
    ),
    (
        HOSTS + "  - name: a\n    static: {cpu: 1, memory: 1G, instances: -1}\n",
        3,
        "hosts[0].static.instances",
        "instance",
    ),
    (HOSTS + "  - name: a\n    static: {memory: 1G}\n", 3, "hosts[0].static", "needs cpu"),
    (HOSTS + "  - name: a\n    static: {cpu: 1}\n", 3, "hosts[0].static", "needs memory"),
    (HOSTS + "  - name: a\n    static: 16\n", 3, "hosts[0].static", "expected a mapping"),
    (
        HOSTS + host("ok") + "  - name: b\n    static:\n      cpu: 1\n      memory: 32XB\n",
        7,
        "hosts[1].static.memory",
        "32XB",
    ),
    (
        HOSTS + "  - name: a\n    static:\n      cpu: 1\n      memory: 1G\n      used: {cpu: -1}\n",
        6,
        "hosts[0].static.used.cpu",
        "invalid CPU",
    ),
    (HOSTS + host("h1", ", used: {gpu: -2}"), 3, "hosts[0].static.used.gpu", "GPU"),
    (HOSTS + host("h1", ", used: {net: 1}"), 3, "hosts[0].static.used.net", "unknown key"),
    ("base: &b {cpu: 1}\nredis:\n  <<: *b\n", 1, "base", "unknown key"),
    ("redis:\n  <<: {prefix: x}\n", 2, "redis", "merge keys"),
    ("redis:\n  ? [a]\n  : 1\n", 2, "redis", "plain text"),
    ("redis:\n  prefix: !!python/name:os.system x\n", 2, "redis.prefix", "invalid value"),
    ("redis:\n  prefix: !custom x\n", 2, "redis.prefix", "invalid value"),
    ("redis: !!set {a, b}\n", 1, "redis", "expected a mapping"),
]


@pytest.mark.parametrize(("text", "line", "key", "fragment"), ERRORS)
def test_validation_errors_name_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    error = info.value
    assert (error.path, error.line, error.key) == (str(tmp_path / "hostsched-test.yaml"), line, key)
    assert f"hostsched-test.yaml:{line}: {key}: " in str(error)
    assert fragment in str(error)
    assert error.exit_code == 2


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("redis:\n  url: [\n", 3, "invalid YAML"),
        ("redis: {prefix: a\nscheduling: {}\n", 2, "invalid YAML"),
        ("redis:\n\tprefix: a\n", 2, "invalid YAML"),
        ("redis: *nowhere\n", 1, "invalid YAML"),
        ("redis: {}\n---\nttl: {}\n", 2, "invalid YAML"),
        ("- a\n- b\n", 1, "expected a mapping of redis, scheduling, ttl, lxd, hosts"),
        ("just text\n", 1, "expected a mapping of redis, scheduling, ttl, lxd, hosts"),
    ],
)
def test_documents_that_are_not_configs(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    assert info.value.line == line
    assert f"hostsched-test.yaml:{line}: " in str(info.value)
    assert fragment in str(info.value)


def test_line_numbers_deep_in_a_long_file(tmp_path: Path) -> None:
    text = HOSTS + "".join(host(f"h{i}") for i in range(50))
    text += "  - name: bad\n    static: {cpu: 1, memory: 12QB}\n"
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    assert (info.value.line, info.value.key) == (103, "hosts[50].static.memory")


# --- properties ------------------------------------------------------------------------------

KEYS = ["redis", "scheduling", "ttl", "hosts", "url", "prefix", "timeout", "password_file"]
KEYS += ["strategy", "weights", "overcommit", "max_attempts", "resource", "lock", "name"]
KEYS += ["labels", "static", "cpu", "memory", "disk", "gpu", "used", "instances", "address"]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["4G", "500m", "30s", "1h30m", "least_loaded", "redis://h", "a b", "{x}", ""]),
    st.text(max_size=12),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=25,
)
DOCUMENTS = st.dictionaries(st.sampled_from(KEYS[:4]) | st.text(max_size=6), VALUES, max_size=4)
FUZZ = settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])


def load_or_config_error(path: Path) -> None:
    try:
        config = load_config(path, env={})
    except ConfigError as error:
        assert error.path == str(path)
    else:
        assert isinstance(config, Config)


@FUZZ
@given(DOCUMENTS)
def test_random_mappings_load_or_raise_config_error(tmp_path: Path, document: object) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    load_or_config_error(path)


STATIC_KEYS = ["cpu", "memory", "disk", "gpu", "used", "instances"]
HOST_VALUES = st.fixed_dictionaries(
    {"name": st.text(max_size=8)},
    optional={
        "labels": st.dictionaries(st.text(max_size=4), SCALARS | st.lists(SCALARS), max_size=3),
        "overcommit": SCALARS
        | st.dictionaries(st.sampled_from(["cpu", "memory", "disk"]), SCALARS),
        "static": st.dictionaries(st.sampled_from(STATIC_KEYS), SCALARS | VALUES, max_size=6),
    },
)


@FUZZ
@given(st.lists(HOST_VALUES, max_size=4))
def test_random_hosts_load_or_raise_config_error(tmp_path: Path, hosts: list[object]) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump({"hosts": hosts}, allow_unicode=True), encoding="utf-8")
    load_or_config_error(path)


@FUZZ
@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=200))
def test_random_text_loads_or_raises_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    load_or_config_error(path)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_load_or_raise_config_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    load_or_config_error(path)


@FUZZ
@given(
    cpu=st.integers(min_value=0, max_value=10**6),
    memory=st.integers(min_value=0, max_value=1 << 50),
    gib=st.integers(min_value=0, max_value=1 << 20),
    gpu=st.integers(min_value=0, max_value=64),
    used=st.integers(min_value=0, max_value=10**6),
    instances=st.integers(min_value=0, max_value=10**4),
)
def test_valid_static_hosts_load_exactly(
    tmp_path: Path, cpu: int, memory: int, gib: int, gpu: int, used: int, instances: int
) -> None:
    static = {"cpu": cpu, "memory": memory, "disk": f"{gib}GiB", "gpu": gpu}
    static |= {"used": {"cpu": f"{used}m"}, "instances": instances}
    path = tmp_path / "valid.yaml"
    path.write_text(yaml.safe_dump({"hosts": [{"name": "h", "static": static}]}), encoding="utf-8")
    (h,) = load_config(path, env={}).hosts
    assert h.static == StaticHost(
        capacity=Resources(cpu=cpu * 1000, memory=memory, disk=gib << 30, gpu=gpu),
        used=Resources(cpu=used),
        instances=instances,
    )


def test_live_hosts_take_fleet_lxd_settings_and_override_them(tmp_path: Path) -> None:
    fingerprint = "AB:" * 31 + "CD"
    config_file = tmp_path / "hostsched.yaml"
    config_file.write_text(
        "lxd:\n"
        "  client_cert: certs/client.crt\n"
        "  client_key: certs/client.key\n"
        "  pool: fast\n"
        "  timeout: 3s\n"
        "  parallel: 4\n"
        "  defaults: {cpu: 2}\n"
        "hosts:\n"
        "  - name: lxd-01\n"
        "    address: https://10.0.0.11:8443\n"
        "    server_cert: servercerts/lxd-01.crt\n"
        "    trust_password_env: LXD01_PASSWORD\n"
        "  - name: lxd-02\n"
        "    address: unix:///var/lib/incus/unix.socket\n"
        "    usage: measured\n"
        "    pool: default\n"
        f"  - name: lxd-03\n    address: https://[::1]:8443\n    server_cert: '{fingerprint}'\n"
        "    insecure: true\n    trust_password_file: pw.txt\n"
    )
    config = load_config(config_file, env={})
    assert config.lxd.timeout == 3 and config.lxd.parallel == 4
    assert config.lxd.defaults == Resources(2000, 1 << 30, 10 << 30, 0)
    one, two, three = (h.live for h in config.hosts)
    assert one is not None and two is not None and three is not None
    assert one.server_cert == str(tmp_path / "servercerts/lxd-01.crt")
    assert one.client_cert == tmp_path / "certs/client.crt" and one.pool == "fast"
    assert one.trust_password_env == "LXD01_PASSWORD" and not one.is_unix
    assert two.address == "/var/lib/incus/unix.socket" and two.is_unix
    assert two.usage == "measured" and two.pool == "default"
    assert three.pinned_fingerprint == "ab" * 31 + "cd" and three.insecure
    assert three.trust_password_file == tmp_path / "pw.txt"
    assert all(h.static is None for h in config.hosts)


@pytest.mark.parametrize(
    "text",
    [
        "lxd: {client_key: '~no-such-user-here/x'}\n",
        "redis: {password_file: '~no-such-user-here/pw'}\n",
    ],
)
def test_a_home_of_an_unknown_user_is_a_config_error(tmp_path: Path, text: str) -> None:
    """``~user`` of a user that does not exist was a RuntimeError (exit 1); found by the fuzz."""
    with pytest.raises(ConfigError, match="no such user"):
        load_text(tmp_path, text)


def test_redis_cluster_settings(tmp_path: Path) -> None:
    config = load_text(
        tmp_path, "redis: {url: 'redis://10.0.0.1:7000', cluster: true, wait_replicas: 1}\n"
    )
    assert config.redis.cluster and config.redis.wait_replicas == 1
    from_env = load_text(tmp_path, "", env={"HOSTSCHED_REDIS_CLUSTER": "yes"})
    assert from_env.redis.cluster
    for bad in ("redis: {wait_replicas: 99}\n", "redis: {cluster: maybe}\n"):
        with pytest.raises(ConfigError):
            load_text(tmp_path, bad)
    with pytest.raises(ConfigError, match="HOSTSCHED_REDIS_CLUSTER"):
        load_text(tmp_path, "", env={"HOSTSCHED_REDIS_CLUSTER": "sometimes"})


def test_busy_wait_is_microseconds_from_0_to_10_ms(tmp_path: Path) -> None:
    assert load_text(tmp_path, "redis: {busy_wait_us: 0}\n").redis.busy_wait_us == 0
    assert load_text(tmp_path, "redis: {busy_wait_us: 10000}\n").redis.busy_wait_us == 10000
    for bad, why in (("10001", "at most 10000"), ("-1", "busy_wait_us"), ("1.5", "whole")):
        with pytest.raises(ConfigError, match=why):
            load_text(tmp_path, f"redis: {{busy_wait_us: {bad}}}\n")
