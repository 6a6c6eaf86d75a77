"""Writing for people and scripts: JSON on stdout, notes on stderr, Rich, progress, failure.

Only the command line uses this module; the core never prints.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

from hostsched.errors import ExitCode

if TYPE_CHECKING:
    from rich.console import RenderableType


def emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def show(renderable: RenderableType, *, stderr: bool = False) -> None:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output is not cut to 80 columns: a wide table greps better than a truncated one.
    width = None if stream.isatty() or "COLUMNS" in os.environ else 160
    Console(file=stream, width=width, highlight=False).print(renderable)


def note(message: str) -> None:
    """Detail for people, on stderr so stdout stays scriptable."""
    sys.stderr.write(message + "\n")


@contextmanager
def progress(what: str, total: int, *, enabled: bool) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr while work runs, only on a terminal; yields ``advance()``."""
    if not (enabled and sys.stderr.isatty()):
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(what, total=total)
        yield lambda: progress.advance(task)


def one_line(text: str) -> str:
    """Control characters escaped, so an echoed value can neither break nor forge a line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def fail(code: ExitCode, slug: str, message: str, hint: str | None, as_json: bool) -> NoReturn:
    """Report an error (one line, and a hint line) and exit with its code."""
    message, hint = one_line(message), None if hint is None else one_line(hint)
    if as_json:
        from hostsched.render import error_json

        emit_json(error_json(slug, message, hint))
    else:
        note(f"hostsched: error: {message}")
        if hint:
            note(f"hint: {hint}")
    raise SystemExit(int(code))
