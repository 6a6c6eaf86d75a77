"""Rich tables for people and JSON documents for scripts, built from core dataclasses."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from hostsched.model import HostSnapshot, Plan, Resources
from hostsched.quantity import cores, format_bytes, format_cpu

if TYPE_CHECKING:
    from rich.console import RenderableType

    from hostsched.bench import BenchResult
    from hostsched.collect import CollectReport
    from hostsched.embedded import EmbeddedStatus
    from hostsched.scheduler import CleanupReport, ReleaseReport
    from hostsched.snapshot import Fleet


# -- JSON documents (the shapes of SPEC "JSON shapes") -------------------------------------


def _amounts(amount: Resources) -> dict[str, Any]:
    return {
        "cpu": cores(amount.cpu),
        "memory": amount.memory,
        "disk": amount.disk,
        "gpu": amount.gpu,
    }


def plan_json(plan: Plan) -> dict[str, Any]:
    document: dict[str, Any] = {
        "strategy": plan.strategy,
        "placements": [
            {
                "id": p.id, "host": p.host, **_amounts(p.resources), "existing": p.existing,
                **({} if p.replicated is None else {"replicated": p.replicated}),
            }
            for p in plan.placements
        ],
    }
    if plan.dry_run:
        document["dry_run"] = True
    return document


def _dimension(host: HostSnapshot, name: str) -> dict[str, Any]:
    total, used, reserved, free = (
        getattr(v, name) for v in (host.capacity, host.used, host.reserved, host.free)
    )
    if name == "cpu":
        return {
            "total": cores(total),
            "used": cores(used),
            "reserved": cores(reserved),
            "free": cores(free),
        }
    return {"total": total, "used": used, "reserved": reserved, "free": free}


def host_json(host: HostSnapshot) -> dict[str, Any]:
    return {
        "name": host.name,
        "status": host.status.value,
        "labels": dict(host.labels),
        "instances": host.instances,
        "age": None if host.age is None else round(host.age, 3),
        **{name: _dimension(host, name) for name in ("cpu", "memory", "disk", "gpu")},
        "overcommit": {
            "cpu": host.overcommit.cpu,
            "memory": host.overcommit.memory,
            "disk": host.overcommit.disk,
        },
        "reservations": [
            {"id": r.id, **_amounts(r.resources), "age": round(r.age, 3)} for r in host.reservations
        ],
        "lock": host.lock,
        "problem": host.problem,
    }


def fleet_json(fleet: Fleet) -> dict[str, Any]:
    return {"hosts": [host_json(h) for h in fleet.hosts], "problems": list(fleet.problems)}


def collect_json(report: CollectReport) -> dict[str, Any]:
    return {
        "hosts": [
            {"name": h.name, "status": h.status, "error": h.error, "reconciled": list(h.reconciled)}
            for h in report.hosts
        ],
        "stored": report.stored,
        "failed": report.failed,
    }


def release_json(report: ReleaseReport) -> dict[str, Any]:
    return {"released": list(report.released), "missing": list(report.missing)}


def cleanup_json(report: CleanupReport) -> dict[str, Any]:
    return {
        "removed": report.removed,
        "hosts": report.hosts,
        "forgotten": list(report.forgotten),
        "corrupt": list(report.corrupt),
        "problems": list(report.problems),
    }


def store_json(status: EmbeddedStatus) -> dict[str, Any]:
    return {
        "running": status.running,
        "pid": status.pid,
        "socket": str(status.socket),
        "data_dir": str(status.data_dir),
        "url": status.url,
        "version": status.version,
        "used_memory": status.used_memory,
        "keys": status.keys,
    }


def error_json(code: str, message: str, hint: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if hint:
        error["hint"] = hint
    return {"error": error}


# -- Rich renderables for people -----------------------------------------------------------

_STATUS_STYLE = {"online": "green", "stale": "yellow", "offline": "red", "corrupt": "red bold"}


def _share(used: int, total: int) -> str:
    return f"{100 * used / total:.1f}%" if total else "-"


def _usage(host: HostSnapshot, name: str) -> str:
    """``12/16 (75.0% used)`` with reservations counted as used, in human units."""
    formats: dict[str, Callable[[int], str]] = {"cpu": format_cpu, "gpu": str}
    fmt = formats.get(name, format_bytes)
    taken = getattr(host.used, name) + getattr(host.reserved, name)
    total = getattr(host.capacity, name)
    return f"{fmt(taken)}/{fmt(total)} ({_share(taken, total)} used)"


def _age(age: float | None) -> str:
    if age is None:
        return "-"
    if age < 120:
        return f"{age:.1f}s"
    if age < 7200:
        return f"{age / 60:.1f}m"
    return f"{age / 3600:.1f}h"


def _labels(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def _short_bytes(size: int) -> str:
    """``34359738368`` → ``32G``: the fleet table's narrow binary units."""
    value = float(size)
    for unit in ("", "K", "M", "G", "T"):
        if value < 1024:
            return f"{value:.3g}{unit}"
        value /= 1024
    return f"{value:.3g}P"


def _compact(host: HostSnapshot, name: str) -> str:
    """``24G/32G``: used + reserved over capacity, for the fleet table."""
    taken = getattr(host.used, name) + getattr(host.reserved, name)
    total = getattr(host.capacity, name)
    formats: dict[str, Callable[[int], str]] = {"cpu": format_cpu, "gpu": str}
    fmt = formats.get(name, _short_bytes)
    return f"{fmt(taken)}/{fmt(total)}"


def fleet_table(fleet: Fleet) -> RenderableType:
    from rich import box
    from rich.table import Table

    table = Table(
        title=f"{len(fleet.hosts)} hosts",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for column in ("host", "status", "cpu", "memory", "disk", "gpu", "inst", "resv", "age"):
        table.add_column(column, no_wrap=True)
    table.add_column("labels")
    for host in fleet.hosts:
        status = host.status.value
        known = host.age is not None
        table.add_row(
            host.name,
            f"[{_STATUS_STYLE.get(status, '')}]{status}[/]",
            *((_compact(host, n) if known else "-") for n in ("cpu", "memory", "disk", "gpu")),
            str(host.instances),
            str(len(host.reservations)),
            _age(host.age),
            _labels(host.labels),
        )
    return table


def host_detail(host: HostSnapshot) -> RenderableType:
    from rich.console import Group
    from rich.table import Table

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    status = host.status.value
    facts.add_row("Host", host.name)
    facts.add_row("Status", f"[{_STATUS_STYLE.get(status, '')}]{status}[/]")
    if host.problem:
        facts.add_row("Problem", host.problem)
    for name, title in (("cpu", "CPU"), ("memory", "Memory"), ("disk", "Disk"), ("gpu", "GPU")):
        facts.add_row(title, _usage(host, name))
    facts.add_row(
        "Overcommit",
        f"cpu ×{host.overcommit.cpu:g}, memory ×{host.overcommit.memory:g}, "
        f"disk ×{host.overcommit.disk:g}",
    )
    facts.add_row("Free", _free(host.free))
    facts.add_row("Instances", str(host.instances))
    facts.add_row("Labels", _labels(host.labels))
    facts.add_row("Lock", host.lock or "free")
    facts.add_row("Data age", _age(host.age))
    if not host.reservations:
        return Group(facts, "Pending reservations: none")
    table = Table(title="Pending reservations", title_justify="left")
    for column in ("id", "cpu", "memory", "disk", "gpu", "age"):
        table.add_column(column)
    for r in host.reservations:
        table.add_row(
            r.id,
            format_cpu(r.resources.cpu),
            format_bytes(r.resources.memory),
            format_bytes(r.resources.disk),
            str(r.resources.gpu),
            _age(r.age),
        )
    return Group(facts, table)


def _free(amount: Resources) -> str:
    return (
        f"cpu {format_cpu(amount.cpu)}, memory {format_bytes(amount.memory)}, "
        f"disk {format_bytes(amount.disk)}, gpu {amount.gpu}"
    )


def collect_table(report: CollectReport) -> RenderableType:
    from rich.table import Table

    table = Table(
        title=f"collected {report.stored}/{len(report.hosts)} hosts", title_justify="left"
    )
    for column in ("host", "status", "detail"):
        table.add_column(column)
    for h in report.hosts:
        style = {"stored": "green", "skipped": "yellow"}.get(h.status, "red")
        detail = h.error or (f"reconciled {', '.join(h.reconciled)}" if h.reconciled else "")
        table.add_row(h.name, f"[{style}]{h.status}[/]", detail)
    return table


def bench_table(result: BenchResult) -> RenderableType:
    from rich.table import Table

    table = Table(title="hostsched bench", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.as_dict().items():
        table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else str(value))
    return table
