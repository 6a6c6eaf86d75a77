"""Configuration: the YAML file, then the environment, then flags, resolved into one frozen Config.

Validation walks the composed YAML nodes rather than the loaded values, so every error can name
the file, the line and the dotted key (``hosts[1].static.memory``) an operator has to fix. A
``null`` value anywhere means "use the default".
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar
from urllib.parse import urlsplit

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from hostsched.errors import ConfigError, QuantityError, UsageError
from hostsched.lxdconfig import (
    FINGERPRINT,
    USAGE_MODES,
    LiveHost,
    LxdConfig,
    address_problem,
)
from hostsched.model import ZERO, Overcommit, Resources
from hostsched.quantity import parse_bytes, parse_count, parse_cpu, parse_duration
from hostsched.strategies import DEFAULT_STRATEGY, STRATEGY_NAMES
from hostsched.yamlnodes import (
    MAX_CONFIG_BYTES,
    TAG,
    NodeReader,
    expand_user,
    is_null,
    kind,
    read_limited,
    text_problem,
)

ENV_CONFIG = "HOSTSCHED_CONFIG"
ENV_REDIS_URL = "HOSTSCHED_REDIS_URL"
ENV_REDIS_PASSWORD = "HOSTSCHED_REDIS_PASSWORD"
ENV_REDIS_CA_FILE = "HOSTSCHED_REDIS_CA_FILE"
ENV_REDIS_CLUSTER = "HOSTSCHED_REDIS_CLUSTER"
ENV_STRATEGY = "SCHEDULING_STRATEGY"
URL_SCHEMES = ("redis", "rediss", "unix")
MAX_NAME = 200

_TOP_KEYS = ("redis", "scheduling", "ttl", "lxd", "hosts")
_REDIS_KEYS = (
    "url", "password_file", "prefix", "timeout", "tls_ca_file", "cluster", "wait_replicas",
    "busy_wait_us",
)  # fmt: skip
#: More replicas to wait for than any deployment has is a typo, not a setting.
MAX_WAIT_REPLICAS = 16
#: A read that polls longer than this (10 ms) for its reply would only burn a core.
MAX_BUSY_WAIT_US = 10_000
_SCHEDULING_KEYS = ("strategy", "weights", "overcommit", "max_attempts")
_TTL_KEYS = ("resource", "reservation", "lock", "host_stale_after")
_HOST_KEYS = ("name", "labels", "overcommit", "static")
# What a host shares with the fleet-wide `lxd:` section, then what only a live host has.
_LXD_SHARED_KEYS = ("client_cert", "client_key", "pool", "usage")
_LXD_KEYS = (*_LXD_SHARED_KEYS, "timeout", "parallel", "defaults")
_LIVE_HOST_KEYS = (
    "address", "server_cert", "trust_password_file", "trust_password_env", "insecure",
    *_LXD_SHARED_KEYS,
)  # fmt: skip
_STATIC_KEYS = ("cpu", "memory", "disk", "gpu", "used", "instances")
_USED_KEYS = ("cpu", "memory", "disk", "gpu")
_RATIO_KEYS = ("cpu", "memory", "disk")

_NO_OVERCOMMIT = Overcommit()
T = TypeVar("T")


@dataclass(frozen=True)
class StaticHost:
    """Declared capacity and usage of a host hostsched cannot reach (and of demo fleets)."""

    capacity: Resources
    used: Resources = ZERO
    instances: int = 0


@dataclass(frozen=True)
class HostConfig:
    """One host of the fleet as configured; ``overcommit`` is already resolved against the fleet."""

    name: str
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    overcommit: Overcommit = field(default_factory=Overcommit)
    static: StaticHost | None = None
    live: LiveHost | None = None


@dataclass(frozen=True)
class Weights:
    """Weights of CPU, memory and disk utilisation in ``least_loaded``."""

    cpu: float = 0.4
    memory: float = 0.4
    disk: float = 0.2


@dataclass(frozen=True)
class RedisConfig:
    """Where the store is; ``url=None`` means the embedded server. Secrets never reach a repr."""

    # The URL stays out of the repr too: it may carry a password of its own.
    url: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    prefix: str = "hostsched"
    timeout: float = 5.0
    # The CA that signs a rediss:// server's certificate, trusted besides the system's store.
    tls_ca_file: Path | None = None
    # The URL is a seed node of a Redis Cluster.
    cluster: bool = False
    # Replicas that must have a reservation before schedule reports it as replicated (WAIT).
    wait_replicas: int = 0
    # How long a read polls for its reply before it sleeps (µs; 0: never), as
    # hostsched.channel.BUSY_WAIT_US, which a store opened without a Config takes.
    busy_wait_us: int = 200


@dataclass(frozen=True)
class Config:
    """Everything hostsched is configured with, validated once; ``Config()`` is the defaults."""

    path: Path | None = None
    redis: RedisConfig = field(default_factory=RedisConfig)
    strategy: str = DEFAULT_STRATEGY
    weights: Weights = field(default_factory=Weights)
    overcommit: Overcommit = field(default_factory=Overcommit)
    max_attempts: int = 8
    resource_ttl: int = 86400
    reservation_ttl: int = 120
    lock_ttl: int = 30
    host_stale_after: int = 300
    lxd: LxdConfig = field(default_factory=LxdConfig)
    hosts: tuple[HostConfig, ...] = ()

    def host(self, name: str) -> HostConfig | None:
        """The configured host called ``name``, if any."""
        return next((host for host in self.hosts if host.name == name), None)

    def with_overrides(
        self, *, redis_url: str | None = None, strategy: str | None = None
    ) -> Config:
        """Apply command-line flags, the highest precedence; ``None`` keeps the current value."""
        config = self
        if redis_url is not None:
            if (problem := url_problem(redis_url)) is not None:
                raise UsageError(f"--redis-url: {problem}")
            config = replace(config, redis=replace(config.redis, url=redis_url))
        if strategy is not None:
            if (problem := _strategy_problem(strategy)) is not None:
                raise UsageError(problem)
            config = replace(config, strategy=strategy)
        return config


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Find, read and validate the config file, then apply the environment over it.

    The file is ``path``, else ``$HOSTSCHED_CONFIG``, else ``./hostsched.yaml``, else
    ``config.yaml`` in the user config directory, else none (built-in defaults). A file that is
    named explicitly must exist; the two fallbacks are used only if they do.
    """
    env = os.environ if env is None else env
    source, text = _find(path, env)
    return _parse(text, source, env)


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot name a Redis server, or None; never quotes it: it may hold a password."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return "not a valid URL"
    scheme = parts.scheme.lower()
    if scheme not in URL_SCHEMES:
        return "a Redis URL starts with redis://, rediss:// or unix://"
    if scheme == "unix":
        return None if parts.path else "a unix:// URL needs a socket path"
    return None if parts.hostname else f"a {scheme}:// URL needs a host"


def _strategy_problem(name: str) -> str | None:
    if name in STRATEGY_NAMES:
        return None
    return f"unknown strategy {name!r}; valid strategies: {', '.join(STRATEGY_NAMES)}"


def _name_problem(name: str, *, what: str = "a host name") -> str | None:
    """Names go inside Redis hash tags (``{H}``), where braces or whitespace would break them."""
    if 0 < len(name) <= MAX_NAME and name.isprintable() and not re.search(r"[\s{}]", name):
        return None
    return f"{what} has 1 to {MAX_NAME} characters, no whitespace or braces; found {name[:60]!r}"


def _file_problem(path: str) -> str | None:
    try:
        if expand_user(path).is_file():
            return None
    except ValueError as exc:
        return str(exc)
    return f"no such file {path!r}"


_TRUE = ("1", "true", "yes", "on")
_SWITCH = (*_TRUE, "0", "false", "no", "off")


def _switch_problem(value: str) -> str | None:
    return None if value.lower() in _SWITCH else f"expected 1 or 0 (true/false), not {value!r}"


def _from_env(env: Mapping[str, str], name: str, check: Callable[[str], str | None]) -> str | None:
    value = env.get(name) or None
    if value is not None and (problem := check(value)) is not None:
        raise ConfigError(problem, key=name)
    return value


def _find(path: str | Path | None, env: Mapping[str, str]) -> tuple[Path | None, str]:
    """The config file to load and its text; ``(None, "")`` when there is none."""
    try:
        named = str(path) if path is not None and str(path) != "" else env.get(ENV_CONFIG)
        source = expand_user(named) if named else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if source is None:
        import platformdirs  # only this fallback needs it; keeps `import hostsched` light

        user = Path(platformdirs.user_config_dir("hostsched")) / "config.yaml"
        found = next((file for file in (Path("hostsched.yaml"), user) if file.is_file()), None)
        if found is None:
            return None, ""
        source = found
    try:
        return source, read_limited(source, MAX_CONFIG_BYTES).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError("config file is not UTF-8 text", path=str(source)) from None
    except OSError as exc:
        message = "config file not found" if isinstance(exc, FileNotFoundError) else exc.strerror
        raise ConfigError(message or str(exc), path=str(source)) from None


class _Reader(NodeReader):
    """The config file's sections, each read into its dataclass."""

    def attempts(self, node: Node, key: str) -> int:
        attempts = self.quantity(node, key, partial(parse_count, what="max_attempts"))
        if attempts < 1:
            self.fail(node, key, "max_attempts must be at least 1")
        return attempts

    def redis(self, node: Node | None, base_dir: Path, env: Mapping[str, str]) -> RedisConfig:
        nodes = self.mapping(node, "redis", _REDIS_KEYS)
        url = self.get(nodes, "redis.url", partial(self.string, check=url_problem), None)
        # The environment wins, so a password file it overrides is not even read.
        password = env.get(ENV_REDIS_PASSWORD) or self.get(
            nodes, "redis.password_file", partial(self.secret, base_dir=base_dir), None
        )
        prefix = partial(self.string, check=partial(_name_problem, what="a key prefix"))
        seconds = partial(self.quantity, parse=parse_duration, fractional=True, what="a duration")
        ca_file = _from_env(env, ENV_REDIS_CA_FILE, _file_problem)
        cluster = _from_env(env, ENV_REDIS_CLUSTER, _switch_problem)
        return RedisConfig(
            url=_from_env(env, ENV_REDIS_URL, url_problem) or url,
            password=password or None,
            prefix=self.get(nodes, "redis.prefix", prefix, RedisConfig.prefix),
            timeout=self.get(nodes, "redis.timeout", seconds, RedisConfig.timeout),
            tls_ca_file=(
                expand_user(ca_file)
                if ca_file
                else self.get(nodes, "redis.tls_ca_file", self.existing_file, None)
            ),
            cluster=(
                cluster.lower() in _TRUE
                if cluster is not None
                else self.get(nodes, "redis.cluster", self.flag, RedisConfig.cluster)
            ),
            wait_replicas=self.get(
                nodes,
                "redis.wait_replicas",
                partial(self.count_at_most, MAX_WAIT_REPLICAS),
                RedisConfig.wait_replicas,
            ),
            busy_wait_us=self.get(
                nodes,
                "redis.busy_wait_us",
                partial(self.count_at_most, MAX_BUSY_WAIT_US),
                RedisConfig.busy_wait_us,
            ),
        )

    def count_at_most(self, most: int, node: Node, key: str) -> int:
        """A whole number from 0 to ``most``."""
        name = key.rpartition(".")[2]
        count = self.quantity(node, key, partial(parse_count, what=name))
        if count > most:
            self.fail(node, key, f"{name} is at most {most}")
        return count

    def weights(self, node: Node | None) -> Weights:
        nodes = self.mapping(node, "scheduling.weights", _RATIO_KEYS)
        weights = {k: self.number(v, f"scheduling.weights.{k}") for k, v in nodes.items()}
        result = replace(Weights(), **weights)
        if result.cpu + result.memory + result.disk <= 0:
            self.fail(node, "scheduling.weights", "at least one weight must be positive")
        return result

    def overcommit(self, node: Node, key: str, base: Overcommit = _NO_OVERCOMMIT) -> Overcommit:
        """One ratio for every dimension, or a mapping whose missing dimensions keep ``base``."""
        if isinstance(node, ScalarNode):
            ratio = self.number(node, key, positive=True)
            return Overcommit(ratio, ratio, ratio)
        nodes = self.mapping(node, key, _RATIO_KEYS)
        ratios = {k: self.number(v, f"{key}.{k}", positive=True) for k, v in nodes.items()}
        return replace(base, **ratios)

    def hosts(self, node: Node | None, fleet: Overcommit, lxd: LxdConfig) -> tuple[HostConfig, ...]:
        if node is None or is_null(node):
            return ()
        if not isinstance(node, SequenceNode) or node.tag != TAG + "seq":
            self.fail(node, "hosts", f"expected a list of hosts, found {kind(node)}")
        hosts: list[HostConfig] = []
        first: dict[str, Node] = {}
        for index, item in enumerate(node.value):
            key = f"hosts[{index}]"
            nodes = self.mapping(item, key, (*_HOST_KEYS, *_LIVE_HOST_KEYS))
            if "name" not in nodes:
                self.fail(item, key, "a host needs a name")
            name = self.string(nodes["name"], f"{key}.name", _name_problem)
            if name in first:
                line = first[name].start_mark.line + 1
                self.fail(nodes["name"], f"{key}.name", f"duplicate host {name!r} (line {line})")
            first[name] = nodes["name"]
            live_keys = [k for k in _LIVE_HOST_KEYS if k in nodes]
            if ("static" in nodes) == ("address" in nodes):
                message = f"host {name!r} needs either address: (a live LXD host) or static:"
                self.fail(item, key, message)
            if "static" in nodes and live_keys:
                live_key = live_keys[0]
                self.fail(nodes[live_key], f"{key}.{live_key}", "a static host has no LXD settings")
            own = partial(self.overcommit, base=fleet)
            overcommit = self.get(nodes, f"{key}.overcommit", own, fleet)
            labels = self.labels(nodes.get("labels"), f"{key}.labels")
            static = self.static(nodes["static"], key) if "static" in nodes else None
            live = self.live_host(nodes, key, lxd) if "address" in nodes else None
            hosts.append(HostConfig(name, labels, overcommit, static, live))
        return tuple(hosts)

    def path(self, node: Node, key: str) -> Path:
        """A file path; relative ones are relative to the config file's folder."""
        return self.base_dir / self.user_path(node, key)

    def existing_file(self, node: Node, key: str) -> Path:
        """A path (as :meth:`path`) that must name a file now, not at the first connection."""
        file = self.path(node, key)
        if (problem := _file_problem(str(file))) is not None:
            self.fail(node, key, problem)
        return file

    def lxd(self, node: Node | None) -> LxdConfig:
        nodes = self.mapping(node, "lxd", _LXD_KEYS)
        base = LxdConfig()
        seconds = partial(self.quantity, parse=parse_duration, fractional=True, what="a duration")
        parallel = partial(self.quantity, parse=partial(parse_count, what="parallel"))
        defaults = self.mapping(nodes.get("defaults"), "lxd.defaults", _USED_KEYS)
        lxd = LxdConfig(
            client_cert=self.get(nodes, "lxd.client_cert", self.path, None),
            client_key=self.get(nodes, "lxd.client_key", self.path, None),
            pool=self.get(nodes, "lxd.pool", self.string, base.pool),
            usage=self.get(nodes, "lxd.usage", self.usage, base.usage),
            timeout=self.get(nodes, "lxd.timeout", seconds, base.timeout),
            parallel=self.get(nodes, "lxd.parallel", parallel, base.parallel),
            defaults=replace(
                base.defaults,
                **{
                    k: v
                    for k, v in self.resources(defaults, "lxd.defaults").as_dict().items()
                    if k in defaults
                },
            ),
        )
        if lxd.parallel < 1:
            self.fail(nodes["parallel"], "lxd.parallel", "parallel must be at least 1")
        return lxd

    def usage(self, node: Node, key: str) -> str:
        def check(mode: str) -> str | None:
            return None if mode in USAGE_MODES else f"usage is one of {', '.join(USAGE_MODES)}"

        return self.string(node, key, check)

    def live_host(self, nodes: Mapping[str, Node], key: str, lxd: LxdConfig) -> LiveHost:
        address = self.string(nodes["address"], f"{key}.address", address_problem)
        if address.startswith("unix://"):
            address = address.removeprefix("unix://")
        env_name = self.get(nodes, f"{key}.trust_password_env", self.string, None)
        server_cert = self.get(nodes, f"{key}.server_cert", self.string, None)
        if server_cert is not None and not FINGERPRINT.fullmatch(server_cert):
            server_cert = str(self.path(nodes["server_cert"], f"{key}.server_cert"))
        return LiveHost(
            address=address,
            server_cert=server_cert,
            trust_password_file=self.get(nodes, f"{key}.trust_password_file", self.path, None),
            trust_password_env=env_name,
            insecure=self.get(nodes, f"{key}.insecure", self.flag, False),
            client_cert=self.get(nodes, f"{key}.client_cert", self.path, lxd.client_cert),
            client_key=self.get(nodes, f"{key}.client_key", self.path, lxd.client_key),
            pool=self.get(nodes, f"{key}.pool", self.string, lxd.pool),
            usage=self.get(nodes, f"{key}.usage", self.usage, lxd.usage),
        )

    def flag(self, node: Node, key: str) -> bool:
        value = self.value(node, key)
        if not isinstance(value, bool):
            self.fail(node, key, f"expected true or false, found {kind(node)}")
        return value

    def labels(self, node: Node | None, key: str) -> Mapping[str, str]:
        labels = {}
        for name, key_node, value_node in self.entries(node, key):
            if not name or "=" in name or any(c.isspace() for c in name):
                self.fail(key_node, f"{key}.{name}", "a label key is non-empty, no '=' or spaces")
            if not isinstance(value_node, ScalarNode) or is_null(value_node):
                message = f"a label value is text or a number, not {kind(value_node)}"
                self.fail(value_node, f"{key}.{name}", message, hint="'' for an empty value")
            if (problem := text_problem(name) or text_problem(value_node.value)) is not None:
                self.fail(value_node, f"{key}.{name}", problem)
            # As written: `zone: 01` stays "01" and `ssd: true` stays "true", as on the CLI.
            labels[name] = value_node.value
        return MappingProxyType(labels)

    def static(self, node: Node, host_key: str) -> StaticHost:
        key = f"{host_key}.static"
        nodes = self.mapping(node, key, _STATIC_KEYS)
        for required in ("cpu", "memory"):
            if required not in nodes:
                self.fail(node, key, f"static capacity needs {required}")
        count = partial(self.quantity, parse=partial(parse_count, what="instance count"))
        used = self.mapping(nodes.get("used"), f"{key}.used", _USED_KEYS)
        return StaticHost(
            capacity=self.resources(nodes, key),
            used=self.resources(used, f"{key}.used"),
            instances=self.get(nodes, f"{key}.instances", count, 0),
        )

    def resources(self, nodes: Mapping[str, Node], key: str) -> Resources:
        def get(name: str, parse: Callable[[str | int], int]) -> int:
            fractional = parse is parse_cpu
            return self.quantity(nodes[name], f"{key}.{name}", parse, fractional=fractional)

        return Resources(
            cpu=get("cpu", parse_cpu) if "cpu" in nodes else 0,
            memory=get("memory", partial(parse_bytes, what="memory")) if "memory" in nodes else 0,
            disk=get("disk", partial(parse_bytes, what="disk")) if "disk" in nodes else 0,
            gpu=get("gpu", parse_count) if "gpu" in nodes else 0,
        )


#: libyaml's loader where PyYAML has it: it parses the example config in a tenth of the time,
#: which counts on every command's start-up.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse(text: str, source: Path | None, env: Mapping[str, str]) -> Config:
    reader = _Reader(source)
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except (yaml.YAMLError, RecursionError) as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
        line = None if mark is None else mark.line + 1
        raise ConfigError(f"invalid YAML: {problem}", path=reader.source, line=line) from None
    if root is not None and not isinstance(root, MappingNode) and not is_null(root):
        reader.fail(root, "", f"expected a mapping of {', '.join(_TOP_KEYS)}, found {kind(root)}")
    top = reader.mapping(root, "", _TOP_KEYS)
    sched = reader.mapping(top.get("scheduling"), "scheduling", _SCHEDULING_KEYS)
    strategy = reader.get(
        sched, "scheduling.strategy", partial(reader.string, check=_strategy_problem), None
    )
    fleet = reader.get(sched, "scheduling.overcommit", reader.overcommit, _NO_OVERCOMMIT)
    lxd = reader.lxd(top.get("lxd"))
    ttl = {
        name: reader.quantity(node, f"ttl.{name}", _whole_seconds, what="a duration")
        for name, node in reader.mapping(top.get("ttl"), "ttl", _TTL_KEYS).items()
    }
    return Config(
        path=source,
        redis=reader.redis(top.get("redis"), Path(".") if source is None else source.parent, env),
        strategy=_from_env(env, ENV_STRATEGY, _strategy_problem) or strategy or Config.strategy,
        weights=reader.weights(sched.get("weights")),
        overcommit=fleet,
        max_attempts=reader.get(
            sched, "scheduling.max_attempts", reader.attempts, Config.max_attempts
        ),
        resource_ttl=ttl.get("resource", Config.resource_ttl),
        reservation_ttl=ttl.get("reservation", Config.reservation_ttl),
        lock_ttl=ttl.get("lock", Config.lock_ttl),
        host_stale_after=ttl.get("host_stale_after", Config.host_stale_after),
        lxd=lxd,
        hosts=reader.hosts(top.get("hosts"), fleet, lxd),
    )


def _whole_seconds(value: str | int) -> int:
    seconds = parse_duration(value)
    if seconds != int(seconds):
        raise QuantityError(f"expected whole seconds, found {seconds:g}s")
    return int(seconds)
