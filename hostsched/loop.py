"""Run a job every N seconds until SIGTERM or Ctrl-C, finishing the round under way."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType


def repeat(
    interval: float, job: Callable[[], None], *, stop: threading.Event | None = None
) -> None:
    """Call ``job`` now and then every ``interval`` seconds; return cleanly on SIGTERM/SIGINT.

    A signal sets the stop event, so the current round completes (no half-written host) and
    the wait between rounds ends at once.
    """
    stop = stop or threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.is_set():
            job()
            stop.wait(interval)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
