"""hostsched: place workloads on a fleet of LXD/Incus hosts, with Redis as the shared state.

The library core, for use from Python::

    from hostsched import Request, Resources, Scheduler, load_config, open_store

    config = load_config("hostsched.yaml")
    scheduler = Scheduler(config, open_store(config))
    plan = scheduler.schedule(Request(Resources(cpu=2000, memory=4 << 30)), ids=["web-1"])

Names are imported on first use, so ``import hostsched`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "hostsched.config",
    "HostConfig": "hostsched.config",
    "StaticHost": "hostsched.config",
    "load_config": "hostsched.config",
    "Scheduler": "hostsched.scheduler",
    "collect": "hostsched.collect",
    "open_store": "hostsched.connect",
    "Store": "hostsched.store",
    "Keys": "hostsched.keys",
    "Request": "hostsched.model",
    "Resources": "hostsched.model",
    "Overcommit": "hostsched.model",
    "Placement": "hostsched.model",
    "Plan": "hostsched.model",
    "HostSnapshot": "hostsched.model",
    "HostStatus": "hostsched.model",
    "ExitCode": "hostsched.errors",
    "HostschedError": "hostsched.errors",
    "UsageError": "hostsched.errors",
    "NoHostsError": "hostsched.errors",
    "InsufficientResources": "hostsched.errors",
    "StoreUnavailable": "hostsched.errors",
    "PartialFailure": "hostsched.errors",
    "parse_bytes": "hostsched.quantity",
    "parse_cpu": "hostsched.quantity",
    "STRATEGY_NAMES": "hostsched.strategies",
}

__all__ = [
    "STRATEGY_NAMES",
    "Config",
    "ExitCode",
    "HostConfig",
    "HostSnapshot",
    "HostStatus",
    "HostschedError",
    "InsufficientResources",
    "Keys",
    "NoHostsError",
    "Overcommit",
    "PartialFailure",
    "Placement",
    "Plan",
    "Request",
    "Resources",
    "Scheduler",
    "StaticHost",
    "Store",
    "StoreUnavailable",
    "UsageError",
    "collect",
    "load_config",
    "open_store",
    "parse_bytes",
    "parse_cpu",
]

if TYPE_CHECKING:
    from hostsched.collect import collect
    from hostsched.config import Config, HostConfig, StaticHost, load_config
    from hostsched.connect import open_store
    from hostsched.errors import (
        ExitCode,
        HostschedError,
        InsufficientResources,
        NoHostsError,
        PartialFailure,
        StoreUnavailable,
        UsageError,
    )
    from hostsched.keys import Keys
    from hostsched.model import (
        HostSnapshot,
        HostStatus,
        Overcommit,
        Placement,
        Plan,
        Request,
        Resources,
    )
    from hostsched.quantity import parse_bytes, parse_cpu
    from hostsched.scheduler import Scheduler
    from hostsched.store import Store
    from hostsched.strategies import STRATEGY_NAMES


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hostsched' has no attribute {name!r}")
    return getattr(import_module(module), name)
