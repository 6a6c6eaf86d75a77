"""Typed reading of composed YAML nodes, so every error can name the file, line and key.

Values are read from ``yaml.compose`` nodes rather than loaded Python objects: a node keeps its
position, so a bad value anywhere becomes one :class:`ConfigError` that an operator can act on.
Files the config names (and the config itself) are read with :func:`read_limited`.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import NoReturn, TypeVar

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from hostsched.errors import ConfigError, QuantityError
from hostsched.quantity import format_bytes

TAG = "tag:yaml.org,2002:"
T = TypeVar("T")
#: The most read of a config file, and of a password, key or certificate file: far more than a
#: real one holds, so a file named by mistake (a log, a disk image, /dev/zero) fails at once.
MAX_CONFIG_BYTES = 1 << 20
MAX_SECRET_BYTES = 64 << 10


class NodeReader:
    """Typed access to composed YAML nodes; every failure is a ConfigError with file and line."""

    def __init__(self, source: Path | None) -> None:
        self.source = None if source is None else str(source)
        self.base_dir = Path(".") if source is None else source.parent
        self._constructor = SafeConstructor()

    def fail(self, node: Node | None, key: str, message: str, hint: str | None = None) -> NoReturn:
        line = None if node is None else node.start_mark.line + 1
        raise ConfigError(message, path=self.source, line=line, key=key or None, hint=hint)

    def entries(self, node: Node | None, key: str) -> list[tuple[str, Node, Node]]:
        """(name, key node, value node) of a mapping, in order; a null node is an empty mapping."""
        if node is None or is_null(node):
            return []
        if not isinstance(node, MappingNode) or node.tag != TAG + "map":
            self.fail(node, key, f"expected a mapping, found {kind(node)}")
        seen: dict[str, Node] = {}
        for key_node, _value in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == TAG + "merge":
                self.fail(key_node, key, "keys must be plain text (no merge keys or lists)")
            if key_node.value in seen:
                line = seen[key_node.value].start_mark.line + 1
                self.fail(
                    key_node,
                    f"{key}.{key_node.value}".lstrip("."),
                    f"duplicate key (see line {line})",
                )
            seen[key_node.value] = key_node
        return [(k.value, k, v) for k, v in node.value]

    def mapping(self, node: Node | None, key: str, allowed: Collection[str]) -> dict[str, Node]:
        """The non-null values of a mapping whose keys must all be in ``allowed``."""
        result = {}
        for name, key_node, value_node in self.entries(node, key):
            if name not in allowed:
                valid = ", ".join(allowed)
                self.fail(
                    key_node, f"{key}.{name}".lstrip("."), f"unknown key {name!r}; valid: {valid}"
                )
            if not is_null(value_node):
                result[name] = value_node
        return result

    def get(
        self, nodes: Mapping[str, Node], key: str, parse: Callable[[Node, str], T], default: T
    ) -> T:
        """``parse`` the value at dotted ``key`` if ``nodes`` has it, else ``default``."""
        name = key.rpartition(".")[2]
        return parse(nodes[name], key) if name in nodes else default

    def value(self, node: Node, key: str) -> object:
        if not isinstance(node, ScalarNode):
            self.fail(node, key, f"expected a single value, found {kind(node)}")
        try:
            return self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError):
            self.fail(node, key, f"invalid value {node.value[:60]!r}")

    def string(
        self, node: Node, key: str, check: Callable[[str], str | None] = lambda _: None
    ) -> str:
        value = self.value(node, key)
        if not isinstance(value, str):
            self.fail(node, key, f"expected text, found {kind(node)}", hint="quote it")
        if (problem := text_problem(value) or check(value)) is not None:
            self.fail(node, key, problem)
        return value

    def number(
        self, node: Node, key: str, *, positive: bool = False, maximum: float = 1000.0
    ) -> float:
        """A ratio or weight: finite, not negative (or positive), at most ``maximum``."""
        value = self.value(node, key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(node, key, f"expected a number, found {kind(node)}")
        low = ">" if positive else "≥"
        if not (value > 0 if positive else value >= 0) or not value <= maximum:  # NaN fails too
            self.fail(node, key, f"expected a number {low} 0 and ≤ {maximum:g}, found {node.value}")
        return float(value)

    def quantity(
        self,
        node: Node,
        key: str,
        parse: Callable[[str | int], T],
        *,
        fractional: bool = False,
        what: str = "a quantity",
    ) -> T:
        """Parse a CPU, size, count or duration by the CLI's rules, errors moved to ``key``."""
        value = self.value(node, key)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.fail(node, key, f"expected {what}, found {kind(node)}")
        if isinstance(value, float) and not fractional:
            self.fail(node, key, f"expected a whole number or a quantity, found {value!r}")
        try:
            return parse(repr(value) if isinstance(value, float) else value)
        except QuantityError as exc:
            self.fail(node, key, exc.message, exc.hint)

    def user_path(self, node: Node, key: str) -> Path:
        """The path at ``node`` with ``~`` or ``~user`` expanded."""
        text = self.string(node, key)
        try:
            return expand_user(text)
        except ValueError as exc:
            self.fail(node, key, str(exc))

    def secret(self, node: Node, key: str, *, base_dir: Path) -> str:
        """The contents of the file named at ``node``, without its trailing newline."""
        file = base_dir / self.user_path(node, key)
        try:
            return read_secret(file)
        except OSError as exc:
            self.fail(node, key, f"cannot read {str(file)!r}: {exc.strerror}")


def read_limited(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, or OSError (EFBIG, "too large ...") if it has more than ``limit``.

    At most ``limit + 1`` bytes are read, so an endless or huge file costs no more memory than
    that. Errors are OSErrors like open's, so callers report them as they report those.
    """
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"too large (more than {format_bytes(limit)})", str(path))
    return data


def read_secret(path: Path) -> str:
    """A password file's text without its trailing newline (at most MAX_SECRET_BYTES); an
    OSError whose strerror says why if it cannot be read or is not UTF-8 text."""
    data = read_limited(path, MAX_SECRET_BYTES)
    try:
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise OSError(errno.EILSEQ, "not UTF-8 text", str(path)) from None


def expand_user(text: str) -> Path:
    """``Path(text).expanduser()``; ValueError, not RuntimeError, for an unknown user."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        problem = f"cannot expand {text[:60]!r}: no such user, or no home directory"
        raise ValueError(problem) from None


def text_problem(value: str) -> str | None:
    """Text that cannot go into a path, a Redis value or a terminal: NUL, lone surrogates."""
    if "\0" in value or value.encode("utf-8", "replace").decode() != value:
        return "text with a NUL or an unpaired surrogate (\\0, \\ud800)"
    return None


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == TAG + "null"


def kind(node: Node) -> str:
    if isinstance(node, MappingNode | SequenceNode):
        kind = "a mapping" if isinstance(node, MappingNode) else "a list"
        return kind if node.tag in (TAG + "map", TAG + "seq") else f"{kind} tagged {node.tag}"
    return "nothing" if is_null(node) else repr(node.value[:60])
