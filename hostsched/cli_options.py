"""The command line's global options, defined once, and what every command opens with them.

``--config``, ``--redis-url``, ``--json`` and ``--verbose`` are accepted before the command name
(the app callback stores them) and after it (each command declares the same types). Their
environment variables are read by :func:`hostsched.config.load_config`, not here: an option
declared twice with an ``envvar`` would let the environment beat a flag given before the command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from hostsched.config import Config
    from hostsched.scheduler import Scheduler


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Config file (YAML); env HOSTSCHED_CONFIG.", show_default=False),
]
RedisUrlOption = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        help="redis://, rediss:// or unix:// URL; env HOSTSCHED_REDIS_URL; default: embedded.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks.")]


@dataclass
class Options:
    config: Path | None = None
    redis_url: str | None = None
    json: bool = False
    verbose: bool = False


def merged(
    ctx: typer.Context, config: Path | None, redis_url: str | None, json_: bool, verbose: bool
) -> Options:
    """The command's global options merged with those given before the command name."""
    base = ctx.find_object(Options) or Options()
    return Options(
        config=config or base.config,
        redis_url=redis_url or base.redis_url,
        json=json_ or base.json,
        verbose=verbose or base.verbose,
    )


def load(opts: Options, *, strategy: str | None = None) -> Config:
    from hostsched.config import load_config

    return load_config(opts.config).with_overrides(redis_url=opts.redis_url, strategy=strategy)


def open_scheduler(config: Config) -> Scheduler:
    from hostsched.connect import open_store
    from hostsched.scheduler import Scheduler

    return Scheduler(config, open_store(config))
