"""The one key schema of hostsched in Redis.

``P`` is the configured prefix, ``H`` a host name. Every key of one host carries the hash tag
``{H}``, so in Redis Cluster all of them live in one slot and one Lua script can read and write
them atomically.

=============================  ==========================================================  =========
key                            holds                                                       TTL
=============================  ==========================================================  =========
``P:resource:{H}``             actual resources of H (JSON, ``collected_at`` server time)  24 h
``P:resource:scheduled:{H}``   reservations on H by id (hash: id -> JSON)                  2 min
``P:resource:{H}:reserved``    running sums of H's live reservations (hash)                none (*)
``P:resource:{H}:queue``       H's reservations in the order made (list of "time id")      none (*)
``P:resource:{H}:names``       names of H's instances (set), for reserve to look up        24 h
``P:resource:{H}:releasing``   reservations released during a collect: id -> release time  2 min
``P:resource:{H}:lock``        per-host collect lock (random token)                        30 s
``P:resource:{H}:gen``         generation of H, bumped by every change of its state        none
``P:hosts``                    set of known host names                                     none
``P:cursor:round_robin``       last host chosen by ``round_robin`` (a hint only)           none
``P:{fleet}:summary``          fleet view: host -> summary JSON (a hint only)              none
``P:{fleet}:changes``          fleet view: host -> sequence number of its last change      none
``P:{fleet}:load``             fleet view: host -> utilisation, to find the ends quickly    none
``P:{fleet}:sequence``         fleet view: the last sequence number given (counter)        none
``P:placement:ID``             host of an explicit reservation id (``--id``; a hint only)  24 h
=============================  ==========================================================  =========

(*) Deleted by the first script to find H without reservations (a cleanup at the latest).

Keys marked "a hint only" live outside the hosts' hash tags, so in a cluster no script can change
them with a host's keys (on one server reserve.lua publishes to the fleet view in the script that
changes the host). Nothing depends on them for correctness: the reserve script re-checks fit
against the host's own keys, so a stale or lost hint costs a retry or a less even spread, never
an overcommit.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property


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

    def reserved(self, host: str) -> str:
        return f"{self.prefix}:resource:{{{host}}}:reserved"

    def queue(self, host: str) -> str:
        return f"{self.prefix}:resource:{{{host}}}:queue"

    def names(self, host: str) -> str:
        return f"{self.prefix}:resource:{{{host}}}:names"

    def releasing(self, host: str) -> str:
        return f"{self.prefix}:resource:{{{host}}}:releasing"

    def placement(self, reservation_id: str) -> str:
        return f"{self.prefix}:placement:{reservation_id}"

    @property
    def fleet_summary(self) -> str:
        return f"{self.prefix}:{{fleet}}:summary"

    @property
    def fleet_changes(self) -> str:
        return f"{self.prefix}:{{fleet}}:changes"

    @property
    def fleet_load(self) -> str:
        return f"{self.prefix}:{{fleet}}:load"

    @property
    def fleet_sequence(self) -> str:
        return f"{self.prefix}:{{fleet}}:sequence"

    @cached_property
    def fleet_view(self) -> tuple[str, str, str, str]:
        """The fleet view's keys, in view.lua's order: summaries, changes, load, sequence."""
        return (self.fleet_summary, self.fleet_changes, self.fleet_load, self.fleet_sequence)

    @property
    def hosts(self) -> str:
        return f"{self.prefix}:hosts"

    @property
    def round_robin_cursor(self) -> str:
        return f"{self.prefix}:cursor:round_robin"
