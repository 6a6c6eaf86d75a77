"""Parse and format the quantities of the command line and the config file.

CPU is carried as integer millicores; memory and disk as integer bytes. Single-letter units and
``KiB``…``PiB`` are binary (``4G`` = 4 GiB, as in Docker and QEMU); ``kB``…``PB`` are decimal (as in
LXD). Units are case-insensitive.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from hostsched.errors import QuantityError

_BINARY = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}
# [0-9], not \d: other scripts' digits are not quantities (LXD would refuse them too).
_NUMBER = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_BYTES_RE = re.compile(rf"^{_NUMBER}\s*(?:([kmgtp])(ib|b)?|(b))?$", re.IGNORECASE)
_CPU_RE = re.compile(rf"^{_NUMBER}\s*(m)?$", re.IGNORECASE)

#: Upper bound on any quantity (8 EiB would overflow Lua's exact integer range long before).
MAX_BYTES = 1 << 53
MAX_MILLICORES = 10**9
MAX_COUNT = 10**6  # GPUs, instances: far beyond any host, far below a double's exact range
#: Longest accepted duration (about 31 years); Redis would refuse absurd expiry times later.
MAX_SECONDS = 10**9
_UNIT_SECONDS = {"": 1, "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?", re.IGNORECASE)
# A bare number of seconds, or numbers that all carry a unit (``1h30m``, not ``1h30``).
_DURATION = re.compile(r"[0-9]+(?:\.[0-9]+)?|(?:[0-9]+(?:\.[0-9]+)?\s*(?:ms|s|m|h|d)\s*)+", re.I)


def parse_bytes(text: str | int, *, what: str = "size") -> int:
    """``'4G'`` → 4294967296, ``'4GB'`` → 4000000000; raises QuantityError on anything else."""
    if isinstance(text, bool):
        raise QuantityError(f"invalid {what} {text!r}")
    if isinstance(text, int):
        if text < 0 or text > MAX_BYTES:
            raise QuantityError(f"invalid {what} {text!r}: out of range")
        return text
    match = _BYTES_RE.match(str(text).strip())
    if not match:
        raise QuantityError(
            f"invalid {what} {text!r}", hint="use bytes with a unit, e.g. 512M, 4G, 4GiB or 4GB"
        )
    number, letter, suffix, _plain_b = match.groups()
    factor = 1
    if letter:
        letter = letter.lower()
        factor = _DECIMAL[letter] if suffix and suffix.lower() == "b" else _BINARY[letter]
    value = Fraction(number) * factor  # exact, even next to MAX_BYTES
    if value > MAX_BYTES:
        raise QuantityError(f"invalid {what} {text!r}: out of range")
    return round(value)


def parse_cpu(text: str | int | float) -> int:
    """``'2'`` → 2000, ``'0.5'`` → 500, ``'500m'`` → 500 millicores."""
    if isinstance(text, bool):
        raise QuantityError(f"invalid CPU {text!r}")
    if isinstance(text, int | float):
        text = repr(text)
    match = _CPU_RE.match(text.strip())
    if not match:
        raise QuantityError(f"invalid CPU {text!r}", hint="use cores (2, 0.5) or millicores (500m)")
    number, milli = match.groups()
    value = float(number) if milli else float(number) * 1000
    if not math.isfinite(value) or value > MAX_MILLICORES:
        raise QuantityError(f"invalid CPU {text!r}: out of range")
    return round(value)


def parse_count(text: str | int | float, *, what: str = "GPU count") -> int:
    """A whole non-negative number such as a GPU count."""
    if isinstance(text, bool):
        raise QuantityError(f"invalid {what} {text!r}")
    if isinstance(text, int | float):
        text = str(int(text)) if text == int(text) and 0 <= text <= MAX_COUNT else repr(text)
    digits = text.strip()  # (str.strip takes more as blank than int() does, \x1f for one)
    if not re.fullmatch(r"[0-9]{1,7}", digits) or int(digits) > MAX_COUNT:
        raise QuantityError(
            f"invalid {what} {text!r}", hint=f"a whole number from 0 to {MAX_COUNT}"
        )
    return int(digits)


def cores(millicores: int) -> float | int:
    """Millicores as cores for JSON: an int when whole, else a float."""
    whole, rest = divmod(millicores, 1000)
    return whole if rest == 0 else millicores / 1000


def format_cpu(millicores: int) -> str:
    """``2000`` → ``'2'``, ``2500`` → ``'2.5'``, ``250`` → ``'250m'``."""
    whole, rest = divmod(millicores, 1000)
    if rest == 0:
        return str(whole)
    if whole == 0:
        return f"{millicores}m"
    return f"{whole}.{rest:03d}".rstrip("0")


def format_bytes(size: int) -> str:
    """Binary units for people: ``25769803776`` → ``'24.0 GiB'``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"


def parse_duration(value: str | int | float) -> float:
    """Seconds from ``30``, ``2.5``, ``'30s'``, ``'2m'``, ``'24h'``, ``'1d'``, ``'1h30m'``.

    Raises QuantityError on anything else, including non-positive durations, so that the
    command line (``--interval``) can reuse it with the same messages.
    """
    text = "" if isinstance(value, bool) else str(value).strip()
    if not _DURATION.fullmatch(text):
        hint = "use seconds or a duration such as 30s, 2m, 1h30m"
        raise QuantityError(f"invalid duration {value!r}", hint=hint)
    parts = _DURATION_PART.findall(text)
    seconds = sum(float(number) * _UNIT_SECONDS[unit.lower()] for number, unit in parts)
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_SECONDS:
        raise QuantityError(f"invalid duration {value!r}: must be over 0 and at most 31 years")
    return seconds
