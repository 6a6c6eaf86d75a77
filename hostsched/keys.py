"""The one key schema of hostsched in Redis.

``P`` is the configured prefix, ``H`` a host name. Every key of one host carries the hash tag
``{H}``, so in Redis Cluster all of them live in one slot and one Lua script can read and write
them atomically.

=============================  ==========================================================  =========
key                            holds                                                       TTL
=============================  ==========================================================  =========
``P:resource:{H}``             actual resources of H (JSON, ``collected_at`` server time)  24 h
``P:resource:scheduled:{H}``   reservations on H by id (hash: id -> JSON)                  2 min
``P:resource:{H}:lock``        per-host collect lock (random token)                        30 s
``P:resource:{H}:gen``         generation of H, bumped by every write of actual resources  none
``P:hosts``                    set of known host names                                     none
``P:cursor:round_robin``       last host chosen by ``round_robin`` (a hint only)           none
=============================  ==========================================================  =========
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Builds every Redis key hostsched uses, under one prefix."""

    prefix: str = "hostsched"

    def resource(self, host: str) -> str:
        return f"{self.prefix}:resource:{{{host}}}"

    def scheduled(self, host: str) -> str:
        return f"{self.prefix}:resource:scheduled:{{{host}}}"

    def lock(self, host: str) -> str:
        return f"{self.prefix}:resource:{{{host}}}:lock"

    def generation(self, host: str) -> str:
        return f"{self.prefix}:resource:{{{host}}}:gen"

    def host_keys(self, host: str) -> list[str]:
        """All keys of one host, in the order the Lua scripts expect them."""
        return [self.resource(host), self.scheduled(host), self.lock(host), self.generation(host)]

    @property
    def hosts(self) -> str:
        return f"{self.prefix}:hosts"

    @property
    def round_robin_cursor(self) -> str:
        return f"{self.prefix}:cursor:round_robin"
