"""The ``hostsched`` command line: parse options, call one core function, render.

Core modules are imported inside the commands so ``hostsched --help`` stays light, and
``main()`` is the one place where errors become messages and exit codes.
"""

from __future__ import annotations

import sys
import traceback
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hostsched import terminal
from hostsched.cli_options import (
    ConfigOption,
    JsonOption,
    Options,
    RedisUrlOption,
    VerboseOption,
    load,
    merged,
    open_scheduler,
)
from hostsched.errors import ExitCode, HostschedError, UsageError

if TYPE_CHECKING:
    pass

app = typer.Typer(
    name="hostsched",
    help="Place workloads on a fleet of LXD/Incus hosts, with Redis as the shared state.\n\n"
    "Example: hostsched collect && hostsched schedule --cpu 2 --mem 4G",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold a Redis URL with its password
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
store_app = typer.Typer(
    help="The embedded valkey-server used when no Redis URL is configured.\n\n"
    "Example: hostsched store status",
    no_args_is_help=True,
)
app.add_typer(store_app, name="store")


@app.callback()
def _main(
    ctx: typer.Context,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    json_: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    ctx.obj = Options(config, redis_url, json_, verbose)


# -- commands --------------------------------------------------------------------------


@app.command()
def collect(
    ctx: typer.Context,
    interval: Annotated[
        float | None,
        typer.Option(help="Collect again every N seconds until SIGTERM/Ctrl-C.", min=0.1),
    ] = None,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    json_: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Read every configured host's resources and store them in Redis.

    Example: hostsched collect --interval 30
    """
    from hostsched.collect import collect as collect_fleet
    from hostsched.connect import open_store
    from hostsched.render import collect_json, collect_table

    opts = merged(ctx, config, redis_url, json_, verbose)
    cfg = load(opts)
    store = open_store(cfg)
    outcome = ExitCode.OK

    def once() -> None:
        nonlocal outcome
        with terminal.progress("collecting", len(cfg.hosts), enabled=not opts.json) as advance:
            report = collect_fleet(cfg, store, on_host=lambda _host: advance())
        for warning in report.warnings:
            terminal.note(f"warning: {warning}")
        if opts.json:
            terminal.emit_json(collect_json(report))
        else:
            terminal.show(collect_table(report))
        outcome = ExitCode.PARTIAL if report.failed else ExitCode.OK

    _run(once, interval)
    if outcome:
        raise typer.Exit(outcome)


@app.command()
def trust(
    ctx: typer.Context,
    host: Annotated[str, typer.Argument(help="The configured live host to trust.")],
    fingerprint: Annotated[
        str | None,
        typer.Option(help="Accept the host's certificate only with this SHA-256 fingerprint."),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Accept the certificate shown without asking.")
    ] = False,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    json_: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Register hostsched's client certificate with a host and pin the host's certificate.

    The trust password is read from the host's trust_password_file or trust_password_env,
    never from the command line. Without --fingerprint or --yes, you are asked to confirm the
    certificate's fingerprint, as with `lxc remote add`.

    Example: hostsched trust lxd-01
    """
    from hostsched.trust import trust as trust_host

    opts = merged(ctx, config, redis_url, json_, verbose)

    def confirm(seen: str) -> bool:
        terminal.note(f"{host}: certificate fingerprint {seen}")
        if fingerprint is not None:
            return fingerprint.lower().removeprefix("sha256:").replace(":", "") == seen
        if yes:
            return True
        if not sys.stdin.isatty():
            raise UsageError(
                "cannot confirm the fingerprint without a terminal",
                hint="pass --fingerprint SHA256 (from `lxc info` on the host) or --yes",
            )
        return typer.confirm("Is this the host's certificate?", default=False, err=True)

    result = trust_host(load(opts), host, confirm=confirm)
    if opts.json:
        terminal.emit_json(
            {
                "host": result.host,
                "fingerprint": result.fingerprint,
                "server_cert": result.server_cert,
                "client_cert": result.client_cert,
                "created_client_cert": result.created_client_cert,
                "already_trusted": result.already_trusted,
            }
        )
        return
    if result.created_client_cert:
        terminal.note(f"created client certificate {result.client_cert}")
    if result.server_cert:
        terminal.note(f"pinned {host}'s certificate in {result.server_cert}")
    state = "was already trusted" if result.already_trusted else "now trusts"
    terminal.note(f"{host} {state} this client")


def _run(job: Any, interval: float | None) -> None:
    if interval is None:
        job()
        return
    from hostsched.loop import repeat

    repeat(interval, job)


@app.command()
def schedule(
    ctx: typer.Context,
    cpu: Annotated[str, typer.Option(help="Cores (2, 0.5) or millicores (500m).")],
    mem: Annotated[str, typer.Option(help="Memory: 4G = 4 GiB, 4GB = 4·10⁹ bytes.")] = "0",
    disk: Annotated[str, typer.Option(help="Disk, same units as --mem.")] = "0",
    gpu: Annotated[str, typer.Option(help="Whole GPUs.")] = "0",
    label: Annotated[
        list[str] | None, typer.Option(help="Only hosts with this label (key=value); repeatable.")
    ] = None,
    id_: Annotated[
        list[str] | None,
        typer.Option("--id", help="Reservation id = the instance name to create; repeatable."),
    ] = None,
    count: Annotated[int, typer.Option(help="Place N workloads together.", min=1)] = 1,
    strategy: Annotated[
        str | None,
        typer.Option(
            envvar="SCHEDULING_STRATEGY",
            help="Strategy (default from the config).",
            show_envvar=True,
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan only; reserve nothing.")] = False,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    json_: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Choose a host for a workload, reserve its resources and print the host's name.

    Only the host name goes to stdout, so HOST=$(hostsched schedule ...) works.

    Example: hostsched schedule --cpu 2 --mem 4G --id web-1
    """
    from hostsched.checks import describe
    from hostsched.model import Request, Resources
    from hostsched.quantity import parse_bytes, parse_count, parse_cpu

    opts = merged(ctx, config, redis_url, json_, verbose)
    request = Request(
        Resources(
            parse_cpu(cpu),
            parse_bytes(mem, what="memory"),
            parse_bytes(disk, what="disk"),
            parse_count(gpu),
        ),
        _labels(label or []),
    )
    cfg = load(opts, strategy=strategy)
    plan = open_scheduler(cfg).schedule(
        request, count=count, ids=id_ or [], strategy=strategy, dry_run=dry_run
    )
    if opts.json:
        from hostsched.render import plan_json

        terminal.emit_json(plan_json(plan))
        return
    for placement in plan.placements:
        how = (
            "would place"
            if plan.dry_run
            else ("already placed" if placement.existing else "placed")
        )
        terminal.note(
            f"{how} {placement.id} on {placement.host} ({plan.strategy}): "
            f"{describe(placement.resources)}"
        )
        if placement.replicated is False:
            terminal.note(
                f"warning: {placement.id} is not yet on redis.wait_replicas replicas: "
                "if its primary fails now, the reservation is lost"
            )
        sys.stdout.write(placement.host + "\n")


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"invalid label {pair!r}", hint="use key=value, e.g. zone=us-west-1a")
        labels[key] = value
    return labels


@app.command()
def release(
    ctx: typer.Context,
    ids: Annotated[list[str], typer.Argument(help="Reservation ids to drop.", show_default=False)],
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    json_: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Drop reservations whose instances were never created.

    Example: hostsched release web-1
    """
    from hostsched.render import release_json

    opts = merged(ctx, config, redis_url, json_, verbose)
    report = open_scheduler(load(opts)).release(ids)
    if opts.json:
        terminal.emit_json(release_json(report))
    else:
        for rid in report.released:
            terminal.note(f"released {rid}")
        for rid in report.missing:
            terminal.note(f"no reservation {rid}")


@app.command()
def cleanup(
    ctx: typer.Context,
    interval: Annotated[
        float | None, typer.Option(help="Clean up every N seconds until SIGTERM/Ctrl-C.", min=0.1)
    ] = None,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    json_: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Prune expired reservations and hosts whose data has expired.

    Example: hostsched cleanup --interval 30
    """
    from hostsched.render import cleanup_json

    opts = merged(ctx, config, redis_url, json_, verbose)
    scheduler = open_scheduler(load(opts))

    def once() -> None:
        report = scheduler.cleanup()
        if opts.json:
            terminal.emit_json(cleanup_json(report))
            return
        terminal.note(f"removed {report.removed} expired reservations on {report.hosts} hosts")
        if report.forgotten:
            terminal.note(f"forgot hosts with expired data: {', '.join(report.forgotten)}")
        if report.corrupt:
            terminal.note(f"reservations that do not parse on: {', '.join(report.corrupt)}")
        for problem in report.problems:
            terminal.note(f"warning: {problem}")

    _run(once, interval)


@app.command()
def inspect(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Argument(help="One host; default: the whole fleet.")] = None,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    json_: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Show the fleet, or one host in detail.

    Example: hostsched inspect hypervisor-01
    """
    from hostsched.render import fleet_json, fleet_table, host_detail

    opts = merged(ctx, config, redis_url, json_, verbose)
    fleet = open_scheduler(load(opts)).inspect(host)
    for problem in fleet.problems:
        terminal.note(f"warning: {problem}")
    if opts.json:
        terminal.emit_json(fleet_json(fleet))
    elif host is not None:
        terminal.show(host_detail(fleet.hosts[0]))
    else:
        terminal.show(fleet_table(fleet))


@app.command()
def bench(
    ctx: typer.Context,
    hosts: Annotated[int, typer.Option(help="Hosts in the synthetic fleet.", min=1)] = 20,
    placements: Annotated[int, typer.Option(help="Placements to make in all.", min=1)] = 1000,
    processes: Annotated[int, typer.Option(help="Scheduler processes at once.", min=1)] = 1,
    count: Annotated[int, typer.Option(help="Placements per schedule call.", min=1)] = 1,
    strategy: Annotated[str, typer.Option(help="Strategy to measure.")] = "least_loaded",
    cpu: Annotated[str, typer.Option(help="CPU of each placement.")] = "1",
    mem: Annotated[str, typer.Option(help="Memory of each placement.")] = "1G",
    wait_replicas: Annotated[
        int | None,
        typer.Option(
            help="Wait for N replicas after each reserve (default: redis.wait_replicas).",
            min=0,
            max=16,
        ),
    ] = None,
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    json_: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Measure scheduling speed and check correctness on a synthetic fleet.

    The fleet lives under its own key prefix and is removed afterwards; results are
    compared with a redis-py PING loop against the same server in the same run.

    Example: hostsched bench --hosts 1000 --placements 2000 --processes 4 --json
    """
    from hostsched.bench import BenchSettings, run_bench
    from hostsched.checks import check_strategy
    from hostsched.connect import store_url
    from hostsched.model import Resources
    from hostsched.quantity import parse_bytes, parse_cpu
    from hostsched.render import bench_table

    opts = merged(ctx, config, redis_url, json_, verbose)
    settings = BenchSettings(
        hosts=hosts,
        placements=placements,
        processes=processes,
        count=count,
        strategy=check_strategy(strategy),
        request=Resources(parse_cpu(cpu), parse_bytes(mem, what="memory")),
        wait_replicas=wait_replicas,
    )
    cfg = load(opts)
    if not opts.json and sys.stderr.isatty():
        terminal.note(f"bench: {placements} placements on {hosts} hosts, {processes} processes ...")
    result = run_bench(cfg, store_url(cfg), settings)
    if opts.json:
        terminal.emit_json(result.as_dict())
    else:
        terminal.show(bench_table(result))
    if result.overcommitted_hosts:
        raise HostschedError(f"{result.overcommitted_hosts} hosts overcommitted")


@store_app.command("status")
def store_status(
    ctx: typer.Context, json_: JsonOption = False, verbose: VerboseOption = False
) -> None:
    """Show whether the embedded server runs, where, and how big its data is.

    Example: hostsched store status
    """
    from hostsched.embedded import EmbeddedServer
    from hostsched.render import store_json

    opts = merged(ctx, None, None, json_, verbose)
    status = EmbeddedServer().status()
    if opts.json:
        terminal.emit_json(store_json(status))
        return
    state = f"running (pid {status.pid})" if status.running else "stopped"
    terminal.note(f"embedded server: {state}\nsocket: {status.socket}\ndata: {status.data_dir}")
    if status.running:
        terminal.note(
            f"version: {status.version}, keys: {status.keys}, memory: {status.used_memory} B"
        )


@store_app.command("stop")
def store_stop(
    ctx: typer.Context, json_: JsonOption = False, verbose: VerboseOption = False
) -> None:
    """Stop the embedded server; its data is kept for the next start.

    Example: hostsched store stop
    """
    from hostsched.embedded import EmbeddedServer

    opts = merged(ctx, None, None, json_, verbose)
    stopped = EmbeddedServer().stop()
    if opts.json:
        terminal.emit_json({"stopped": stopped})
    else:
        terminal.note("embedded server stopped" if stopped else "embedded server was not running")


# -- the one place where errors become exit codes ------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``hostsched`` console script."""
    args = sys.argv[1:] if argv is None else argv
    # Errors may come before parsing, so the output flags are looked for here; after "--"
    # an argument is a value, whatever it looks like.
    options = args[: args.index("--")] if "--" in args else args
    as_json = "--json" in options
    verbose = "--verbose" in options or "-v" in options
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="hostsched", standalone_mode=False)
    except HostschedError as exc:
        if verbose:
            traceback.print_exc()
        terminal.fail(exc.exit_code, exc.code, exc.message, exc.hint, as_json)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except (typer.Abort, KeyboardInterrupt):
        terminal.fail(ExitCode.INTERNAL, "interrupted", "interrupted", None, as_json)
    except typer.TyperException as exc:  # a usage error found while parsing the command line
        hint = "see `hostsched --help` or `hostsched COMMAND --help`"
        message = exc.format_message()
        if type(exc).__name__ == "NoArgsIsHelpError":  # a group named without its command
            path = getattr(getattr(exc, "ctx", None), "command_path", "hostsched")
            message, hint = "missing command", f"`{path} --help` lists the commands"
        terminal.fail(ExitCode.USAGE, "usage_error", message, hint, as_json)
    except Exception as exc:
        if verbose:
            traceback.print_exc()
        terminal.fail(
            ExitCode.INTERNAL,
            "internal_error",
            f"{type(exc).__name__}: {exc}",
            "run again with --verbose for the traceback",
            as_json,
        )
    raise SystemExit(code if isinstance(code, int) else 0)
