"""The stored value formats (version 1): encode what collect writes, decode what is read.

Decoding validates: a value that is not ours (corrupt, foreign, another version) raises
:class:`BadValue`, so one bad host is reported and skipped instead of breaking the fleet.
The Lua scripts read the same formats; keep both sides in step.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import cast

from hostsched.model import Overcommit, Resources

VERSION = 1
#: Values larger than this are not ours (a host record is a few KiB even with many instances).
MAX_VALUE_BYTES = 8 << 20


class BadValue(ValueError):
    """A stored value that does not parse as hostsched's own."""


@dataclass(frozen=True)
class Actual:
    """A host's actual resources as stored by collect."""

    capacity: Resources
    used: Resources
    overcommit: Overcommit
    labels: Mapping[str, str]
    instances: int
    names: tuple[str, ...]
    collected_at: float
    source: str = "static"


def encode_actual(
    *,
    capacity: Resources,
    used: Resources,
    overcommit: Overcommit,
    labels: Mapping[str, str],
    names: Sequence[str],
    instances: int | None = None,
    source: str = "static",
) -> str:
    """The JSON body for write_actual.lua (which adds ``collected_at`` by the server clock)."""
    return json.dumps(
        {
            "v": VERSION,
            "source": source,
            "capacity": capacity.as_dict(),
            "used": used.as_dict(),
            "overcommit": {
                "cpu": overcommit.cpu,
                "memory": overcommit.memory,
                "disk": overcommit.disk,
            },
            "labels": dict(labels),
            "instances": len(names) if instances is None else instances,
            "names": list(names),
        },
        separators=(",", ":"),
    )


def _load(raw: bytes | str) -> dict[str, object]:
    if len(raw) > MAX_VALUE_BYTES:
        raise BadValue(f"value is too large ({len(raw)} bytes)")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadValue("not JSON") from exc
    if not isinstance(data, dict):
        raise BadValue("not a JSON object")
    return data


def _resources(data: Mapping[str, object], field: str) -> Resources:
    value = data.get(field)
    if not isinstance(value, dict):
        raise BadValue(f"{field} is missing")
    try:
        return Resources.from_mapping(value)
    except ValueError as exc:
        raise BadValue(f"{field}: {exc}") from exc


def _ratio(data: Mapping[str, object], name: str) -> float:
    value = data.get(name, 1.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise BadValue(f"overcommit.{name} is not a positive number")
    return float(value)


def decode_actual(raw: bytes | str) -> Actual:
    """Parse ``P:resource:{H}``; raises BadValue if it is not version-1 hostsched data."""
    data = _load(raw)
    if data.get("v") != VERSION:
        raise BadValue(f"unknown version {data.get('v')!r}")
    collected_at = data.get("collected_at")
    if isinstance(collected_at, bool) or not isinstance(collected_at, int | float):
        raise BadValue("collected_at is missing")
    ratios = data.get("overcommit", {})
    labels = data.get("labels", {})
    names = data.get("names", [])
    instances = data.get("instances", 0)
    if not isinstance(ratios, dict):
        raise BadValue("overcommit is not an object")
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise BadValue("labels are not strings")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadValue("names are not strings")
    if isinstance(instances, bool) or not isinstance(instances, int) or instances < 0:
        raise BadValue("instances is not a count")
    return Actual(
        capacity=_resources(data, "capacity"),
        used=_resources(data, "used"),
        overcommit=Overcommit(
            _ratio(ratios, "cpu"), _ratio(ratios, "memory"), _ratio(ratios, "disk")
        ),
        labels=MappingProxyType(dict(labels)),
        instances=instances,
        names=tuple(names),
        collected_at=float(collected_at),
        source=str(data.get("source", "static")),
    )


def decode_reservation(raw: bytes | str) -> tuple[Resources, float]:
    """Parse one entry of ``P:resource:scheduled:{H}``: its amounts and server time."""
    data = _load(raw)
    created = data.get("t")
    if isinstance(created, bool) or not isinstance(created, int | float):
        raise BadValue("reservation has no time")
    try:
        return Resources.from_mapping(data), float(created)
    except ValueError as exc:
        raise BadValue(f"reservation: {exc}") from exc


@dataclass(frozen=True)
class Summary:
    """A host as the fleet view holds it (written by the per-host scripts, see lua/lib.lua)."""

    generation: int
    collected_at: float
    limit: Resources
    used: Resources
    reserved: Resources
    instances: int
    labels: Mapping[str, str]


def _vector(data: Mapping[str, object], field: str) -> Resources:
    value = data.get(field)
    if type(value) is list and len(value) == 4:
        cpu, memory, disk, gpu = value
        if (type(cpu) is type(memory) is type(disk) is type(gpu) is int) and min(value) >= 0:
            return Resources(cpu, memory, disk, gpu)
    raise BadValue(f"{field} is not four counts")


_GENERATION_PREFIX = b'{"gen":'


def summary_generation(raw: bytes) -> int | None:
    """The generation a summary starts with, read without decoding the rest."""
    if raw.startswith(_GENERATION_PREFIX):
        digits = raw[len(_GENERATION_PREFIX) : raw.find(b",")]
        if digits.isdigit() and len(digits) <= 20:
            return int(digits)
    return None


_NO_LABELS: Mapping[str, str] = MappingProxyType({})


def _labels(data: object) -> Mapping[str, str]:
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise BadValue("summary labels are not strings")
    return MappingProxyType(data) if data else _NO_LABELS


def _summary(generation: int, collected_at: float, counts: Sequence[int], labels: bytes) -> Summary:
    """A summary from its parts, read by either of the two parsers below."""
    try:
        mapping = _NO_LABELS if labels == b"{}" else _labels(json.loads(labels))
    except (ValueError, UnicodeDecodeError) as exc:  # (BadValue is a ValueError)
        raise BadValue(f"summary labels do not parse: {exc}") from exc
    return Summary(
        generation=generation,
        collected_at=collected_at,
        limit=Resources(*counts[0:4]),
        used=Resources(*counts[4:8]),
        reserved=Resources(*counts[8:12]),
        instances=counts[12],
        labels=mapping,
    )


#: What encode_summary writes, exactly: read without a JSON parser (every scheduler reads every
#: other one's news). Anything else that is valid JSON is read as JSON.
_N = rb"(\d{1,20})"  # (longer numbers are not ours, and int() refuses thousands of digits)
_ENCODED = re.compile(
    rb'\{"gen":' + _N + rb',"at":(\d{1,12}\.\d{1,9}),"limit":\[' + rb",".join([_N] * 4)
    + rb'\],"used":\[' + rb",".join([_N] * 4) + rb'\],"reserved":\[' + rb",".join([_N] * 4)
    + rb'\],"instances":' + _N + rb',"labels":(\{.*\})\}\Z',
    re.DOTALL,
)


def decode_summary(raw: bytes | str) -> Summary:
    """Parse one host's summary as published (JSON); raises BadValue if it is not ours."""
    found = _ENCODED.match(raw) if isinstance(raw, bytes) else None
    if found is not None:
        generation, at, *counts, labels = found.groups()
        return _summary(int(generation), float(at), [int(n) for n in counts], labels)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadValue("summary is not JSON") from exc
    if type(data) is not dict:
        raise BadValue("summary is not a JSON object")
    generation, collected_at, instances = data.get("gen"), data.get("at"), data.get("instances")
    if type(generation) is not int or type(instances) is not int:
        raise BadValue("summary lacks its generation or instance count")
    if isinstance(collected_at, bool) or not isinstance(collected_at, int | float):
        raise BadValue("summary lacks its collection time")
    return Summary(
        generation=generation,
        collected_at=float(collected_at),
        limit=_vector(data, "limit"),
        used=_vector(data, "used"),
        reserved=_vector(data, "reserved"),
        instances=instances,
        labels=_labels(data.get("labels")),
    )


def encode_summary(summary: Summary) -> str:
    """A summary as published to the fleet view: JSON starting with its generation (which the
    view script compares without decoding the rest)."""
    labels = json.dumps(dict(summary.labels), separators=(",", ":")) if summary.labels else "{}"
    limit, used, reserved = summary.limit, summary.used, summary.reserved
    return (
        f'{{"gen":{summary.generation},"at":{summary.collected_at:.6f},'
        f'"limit":[{limit.cpu},{limit.memory},{limit.disk},{limit.gpu}],'
        f'"used":[{used.cpu},{used.memory},{used.disk},{used.gpu}],'
        f'"reserved":[{reserved.cpu},{reserved.memory},{reserved.disk},{reserved.gpu}],'
        f'"instances":{summary.instances},"labels":{labels}}}'
    )


#: A script's summary (lua/lib.lua): generation, collected_at, limit, used and reserved (four
#: counts each), instances, labels as JSON.
_STATE_LENGTH = 16
_INT = {int}


def summary_from_state(state: Sequence[object]) -> Summary:
    """Parse a summary as a script returns it (a flat array); raises BadValue if not ours."""
    if len(state) != _STATE_LENGTH:
        raise BadValue("summary has the wrong length")
    generation, at, labels = state[0], state[1], state[15]
    numbers = cast(Sequence[int], state[2:15])  # if the types check out
    if type(generation) is not int or set(map(type, numbers)) != _INT or min(numbers) < 0:
        raise BadValue("summary counts are not counts")
    if not isinstance(at, bytes) or not isinstance(labels, bytes):
        raise BadValue("summary time or labels are not text")
    try:
        collected_at = float(at)
    except ValueError as exc:
        raise BadValue("summary time is not a number") from exc
    return _summary(generation, collected_at, numbers, labels)
