"""How a live host's usage is computed from the LXD API's JSON (pure, no daemon)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostsched.lxd import cpu_limit, memory_limit, usage_from_api
from hostsched.lxdconfig import DEFAULT_INSTANCE
from hostsched.model import Resources

G = 1 << 30
RESOURCES = {"cpu": {"total": 16}, "memory": {"total": 64 * G, "used": 20 * G}, "gpu": {"total": 2}}
POOL = {"space": {"total": 500 * G, "used": 10 * G}}


def instance(
    name: str,
    status: str = "Running",
    *,
    root_size: str | None = None,
    gpus: int = 0,
    **config: str,
) -> dict[str, Any]:
    devices: dict[str, Any] = {"root": {"type": "disk", "path": "/", "pool": "default"}}
    if root_size:
        devices["root"]["size"] = root_size
    for i in range(gpus):
        devices[f"gpu{i}"] = {"type": "gpu"}
    keys = {k.replace("_", "."): v for k, v in config.items()}
    return {"name": name, "status": status, "expanded_config": keys, "expanded_devices": devices}


@pytest.mark.parametrize(
    ("value", "millicores"),
    [("2", 2000), ("0-3,8", 5000), ("0-1,3", 3000), ("5", 5000), ("0,0,1", 2000), ("7-7", 1000)],
)
def test_cpu_limit(value: str, millicores: int) -> None:
    assert cpu_limit(value) == millicores


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("1GiB", G),
        ("512MB", 512 * 10**6),
        ("10%", int(64 * G * 0.1)),
        ("2048", 2048),
        ("256MiB", 256 << 20),
    ],
)
def test_memory_limit(value: str, size: int) -> None:
    assert memory_limit(value, 64 * G) == size


def test_usage_counts_limits_defaults_and_stopped_disk_only() -> None:
    instances = [
        instance("cpu-count", limits_cpu="2", limits_memory="1GiB", root_size="20GiB"),
        instance("cpu-set", limits_cpu="0-1,3", limits_memory="512MB"),
        instance("mem-percent", limits_cpu="1", limits_memory="10%"),
        instance("no-limits", gpus=1),
        instance("stopped-one", "Stopped", limits_cpu="4", limits_memory="2GiB", root_size="1GiB"),
    ]
    reading = usage_from_api(RESOURCES, POOL, instances, defaults=DEFAULT_INSTANCE)
    assert reading.capacity == Resources(16000, 64 * G, 500 * G, 2)
    assert reading.used.cpu == 2000 + 3000 + 1000 + 1000
    assert reading.used.memory == G + 512 * 10**6 + int(64 * G * 0.1) + G
    assert reading.used.disk == 20 * G + 3 * 10 * G + G  # three roots without a size
    assert reading.used.gpu == 1
    assert reading.instances == 4
    assert reading.names == ("cpu-count", "cpu-set", "mem-percent", "no-limits", "stopped-one")


def test_pending_stopped_instance_counts_in_full() -> None:
    instances = [instance("web-1", "Stopped", limits_cpu="2", limits_memory="1GiB")]
    idle = usage_from_api(RESOURCES, POOL, instances, defaults=DEFAULT_INSTANCE)
    starting = usage_from_api(
        RESOURCES, POOL, instances, defaults=DEFAULT_INSTANCE, pending=["web-1"]
    )
    assert idle.used.cpu == 0 and starting.used.cpu == 2000 and starting.used.memory == G


def test_measured_usage_takes_memory_in_use() -> None:
    instances = [instance("a", limits_cpu="2", limits_memory="8GiB")]
    reading = usage_from_api(RESOURCES, POOL, instances, defaults=DEFAULT_INSTANCE, mode="measured")
    assert reading.used.memory == 20 * G and reading.used.cpu == 2000


def test_unknown_limit_forms_count_the_default() -> None:
    instances = [instance("odd", limits_cpu="lots", limits_memory="huge")]
    reading = usage_from_api(RESOURCES, POOL, instances, defaults=DEFAULT_INSTANCE)
    assert reading.used.cpu == DEFAULT_INSTANCE.cpu
    assert reading.used.memory == DEFAULT_INSTANCE.memory


@given(st.lists(st.integers(0, 255), min_size=1, max_size=40))
def test_cpu_set_counts_distinct_cpus(cpus: list[int]) -> None:
    """A list is a set of CPUs; a lone number is a count."""
    expected = cpus[0] if len(cpus) == 1 else len(set(cpus))
    assert cpu_limit(",".join(map(str, cpus))) == 1000 * expected
