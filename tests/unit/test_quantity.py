"""Quantities as the SPEC writes them ("Resources and quantities"), cases and properties."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hostsched.errors import QuantityError
from hostsched.quantity import (
    MAX_BYTES,
    MAX_MILLICORES,
    format_bytes,
    format_cpu,
    parse_bytes,
    parse_count,
    parse_cpu,
)

GIB = 1 << 30


@pytest.mark.parametrize(
    ("text", "millicores"),
    [
        ("2", 2000),
        ("0.5", 500),
        (".5", 500),
        ("500m", 500),
        ("500M", 500),
        (" 1.25 ", 1250),
        ("16", 16000),
        (2, 2000),
        (0.5, 500),
    ],
)
def test_parse_cpu(text: str | int | float, millicores: int) -> None:
    assert parse_cpu(text) == millicores


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4G", 4 * GIB),
        ("4g", 4 * GIB),
        ("4GiB", 4 * GIB),
        ("4gib", 4 * GIB),
        ("4GB", 4 * 10**9),
        ("4gb", 4 * 10**9),
        ("512M", 512 << 20),
        ("512MiB", 512 << 20),
        ("1K", 1024),
        ("1kB", 1000),
        ("1T", 1 << 40),
        ("1TB", 10**12),
        ("1P", 1 << 50),
        ("1.5G", 3 * GIB // 2),
        ("100", 100),
        ("100B", 100),
        ("4 G", 4 * GIB),
        (4096, 4096),
    ],
)
def test_parse_bytes(text: str | int, size: int) -> None:
    assert parse_bytes(text) == size


@pytest.mark.parametrize("text", ["4X", "-1", "abc", "", " ", "4GX", "4iB", "1e3", "G", "--4G"])
def test_parse_bytes_rejects(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_bytes(text)


@pytest.mark.parametrize("value", [-1, True, MAX_BYTES + 1])
def test_parse_bytes_rejects_numbers(value: int) -> None:
    with pytest.raises(QuantityError):
        parse_bytes(value)


@pytest.mark.parametrize("text", ["4X", "-1", "abc", "", "2 cores", "1e3", True, -2, float("nan")])
def test_parse_cpu_rejects(text: str | int | float) -> None:
    with pytest.raises(QuantityError):
        parse_cpu(text)


@pytest.mark.parametrize(("text", "count"), [("0", 0), ("2", 2), (" 3 ", 3), (4, 4)])
def test_parse_count(text: str | int, count: int) -> None:
    assert parse_count(text) == count


@pytest.mark.parametrize("text", ["-1", "1.5", "abc", "", -1, True])
def test_parse_count_rejects(text: str | int) -> None:
    with pytest.raises(QuantityError):
        parse_count(text)


def test_errors_are_usage_errors_with_a_hint() -> None:
    with pytest.raises(QuantityError) as info:
        parse_bytes("4X")
    assert info.value.exit_code == 2
    assert info.value.hint


@pytest.mark.parametrize(
    ("millicores", "text"), [(2000, "2"), (2500, "2.5"), (250, "250m"), (0, "0")]
)
def test_format_cpu(millicores: int, text: str) -> None:
    assert format_cpu(millicores) == text


@pytest.mark.parametrize(
    ("size", "text"), [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (24 * GIB, "24.0 GiB")]
)
def test_format_bytes(size: int, text: str) -> None:
    assert format_bytes(size) == text


@given(st.integers(min_value=0, max_value=MAX_BYTES))
def test_plain_integers_are_bytes(n: int) -> None:
    assert parse_bytes(f"{n}") == n
    assert parse_bytes(n) == n


@given(st.integers(min_value=0, max_value=MAX_BYTES >> 30))
def test_single_letter_units_are_binary(n: int) -> None:
    assert parse_bytes(f"{n}G") == n << 30
    assert parse_bytes(f"{n}gib") == n << 30
    assert parse_bytes(f"{n}GB") == n * 10**9


@given(st.integers(min_value=0, max_value=MAX_MILLICORES))
def test_millicores(m: int) -> None:
    assert parse_cpu(f"{m}m") == m


@given(st.integers(min_value=0, max_value=MAX_MILLICORES // 1000))
def test_whole_cores(n: int) -> None:
    assert parse_cpu(f"{n}") == n * 1000
    assert parse_cpu(n) == n * 1000


# Up to 999 cores: format_cpu's ``:g`` keeps six significant digits (see the module report).
@given(st.integers(min_value=0, max_value=999_999))
def test_format_cpu_round_trips(m: int) -> None:
    assert parse_cpu(format_cpu(m)) == m


@given(st.integers(min_value=-(1 << 63), max_value=1 << 63))
def test_format_bytes_never_raises(n: int) -> None:
    assert format_bytes(n)


@given(st.integers(min_value=0, max_value=MAX_BYTES))
def test_format_bytes_is_close(n: int) -> None:
    # One decimal of the largest unit: within 5 % (and exact below 1 KiB).
    parsed = parse_bytes(format_bytes(n).replace(" ", ""))
    assert abs(parsed - n) <= max(n * 0.05, 0.5)


@given(st.text(max_size=20))
@example("0\x1f")  # blank to str.strip but not to int(): found by this test
@pytest.mark.parametrize("parse", [parse_bytes, parse_cpu, parse_count])
def test_random_text_only_raises_quantity_error(parse: Callable[[str], int], text: str) -> None:
    try:
        value = parse(text)
    except QuantityError:
        return
    assert isinstance(value, int)
    assert value >= 0


_FACTORS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "kb": 10**3, "m": 1 << 20}
_FACTORS |= {"mib": 1 << 20, "mb": 10**6, "g": 1 << 30, "gib": 1 << 30, "gb": 10**9}
_FACTORS |= {"t": 1 << 40, "tib": 1 << 40, "tb": 10**12}


@given(
    st.decimals(min_value=0, max_value=999, places=3),
    st.sampled_from(sorted(_FACTORS)).flatmap(
        lambda unit: st.sampled_from([unit, unit.upper(), unit.capitalize()])
    ),
)
def test_every_unit_parses(number: Decimal, unit: str) -> None:
    text = f"{number:f}{unit}"
    assert parse_bytes(text) == round(Fraction(f"{number:f}") * _FACTORS[unit.lower()])
