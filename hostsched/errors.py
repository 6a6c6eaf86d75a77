"""The one exception tree of hostsched and its exit codes.

Every failure the core can report is a :class:`HostschedError` subclass carrying an
:class:`ExitCode`, a stable snake_case ``code`` for JSON output, and the fields that explain it.
Only ``hostsched.cli.main`` turns these into messages and process exit codes.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of the contract (SPEC, "Exit codes and errors")."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    NO_HOSTS = 3
    INSUFFICIENT = 4
    STORE = 5
    PARTIAL = 6


class HostschedError(Exception):
    """Root of every error hostsched reports to a user."""

    exit_code: ExitCode = ExitCode.INTERNAL
    code: str = "internal_error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(HostschedError):
    """A bad flag, quantity, strategy or value given by the user."""

    exit_code = ExitCode.USAGE
    code = "usage_error"


class QuantityError(UsageError):
    """A CPU, memory or disk quantity that does not parse."""

    code = "invalid_quantity"


class ConfigError(UsageError):
    """A config file that cannot be used; names the file, line and key when known."""

    code = "invalid_config"

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = ""
        if path is not None:
            where = path if line is None else f"{path}:{line}"
        if key is not None:
            where = f"{where}: {key}" if where else key
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.path, self.line, self.key = path, line, key


class NoHostsError(HostschedError):
    """No host is known or online, or a named host is unknown."""

    exit_code = ExitCode.NO_HOSTS
    code = "no_available_hosts"


class UnknownHostError(NoHostsError):
    """A host name that is neither configured nor stored."""

    code = "unknown_host"

    def __init__(self, host: str) -> None:
        super().__init__(f"unknown host {host!r}", hint="`hostsched inspect` lists the known hosts")
        self.host = host


class HostUnreachable(NoHostsError):
    """A live host did not answer, refused us, or presented the wrong certificate."""

    code = "host_unreachable"

    def __init__(self, host: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"{host}: {reason}", hint=hint)
        self.host, self.reason = host, reason


class TrustRefused(UsageError):
    """A host refused hostsched's client certificate with the configured trust password."""

    code = "trust_refused"


class InsufficientResources(HostschedError):
    """Hosts are online, but none has room for the request."""

    exit_code = ExitCode.INSUFFICIENT
    code = "insufficient_resources"


class StoreUnavailable(HostschedError):
    """Redis is unreachable or refused a command."""

    exit_code = ExitCode.STORE
    code = "store_unavailable"


class PartialFailure(HostschedError):
    """Some of the work was done, some was not (e.g. unreachable hosts in collect)."""

    exit_code = ExitCode.PARTIAL
    code = "partial_failure"
