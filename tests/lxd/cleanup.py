"""Leaving no trace of a test daemon: its processes, mounts and the cgroups liblxc made.

A killed LXD daemon leaves ``[lxc monitor]`` processes, tmpfs mounts under its ``LXD_DIR`` and
cgroups behind; these helpers find and remove exactly those, never anything of another user.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import time
from pathlib import Path
from typing import NamedTuple

CGROUP_ROOT = Path("/sys/fs/cgroup")
_MNT_DETACH = 2


class _Process(NamedTuple):
    ppid: int
    state: str
    cmdline: str
    cgroups: list[str]  # /proc/PID/cgroup lines: "ID:CONTROLLERS:PATH"


def _process_table() -> dict[int, _Process]:
    """Every process still readable, by pid."""
    table: dict[int, _Process] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cgroups = (entry / "cgroup").read_text().splitlines()
        except OSError:
            continue
        # The command name in parentheses may hold spaces: split after its closing paren.
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        table[int(entry.name)] = _Process(int(ppid), state, cmdline, cgroups)
    return table


def kill_leftovers(roots: set[int], marker: str) -> None:
    """SIGKILL ``roots``, every process whose command line names ``marker``, and descendants.

    Those are lxd itself, its ``[lxc monitor] <LXD_DIR>/containers NAME`` processes and the
    containers below them. Their ``lxc.payload.*``/``lxc.monitor.*`` cgroups are removed after.
    """
    table = _process_table()
    me = os.getpid()
    doomed = {pid for pid in roots if pid in table}
    doomed |= {pid for pid, process in table.items() if marker in process.cmdline and pid != me}
    children: dict[int, list[int]] = {}
    for pid, process in table.items():
        children.setdefault(process.ppid, []).append(pid)
    pending = list(doomed)
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in doomed and child != me:
                doomed.add(child)
                pending.append(child)
    cgroups = {
        line.split(":", 2)[2]
        for pid in doomed
        for line in table[pid].cgroups
        if "/lxc.payload." in line or "/lxc.monitor." in line
    }
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while doomed and time.monotonic() < deadline:
        table = _process_table()
        doomed = {pid for pid in doomed if pid in table and table[pid].state != "Z"}
        time.sleep(0.05)
    for path in cgroups:
        remove_cgroup(path)


def remove_cgroup(path: str) -> None:
    """rmdir a cgroup and its children in every hierarchy (fails harmlessly if still in use)."""
    relative = path.strip("/").split("/")
    # Keep only the part from the lxc.* component down: that is what liblxc created.
    start = next(i for i, part in enumerate(relative) if part.startswith("lxc."))
    for hierarchy in [CGROUP_ROOT, *(p for p in CGROUP_ROOT.iterdir() if p.is_dir())]:
        top = hierarchy.joinpath(*relative[: start + 1])
        if not top.is_dir():
            continue
        for directory, _, _ in sorted(os.walk(top), key=lambda item: -len(item[0])):
            with contextlib.suppress(OSError):
                os.rmdir(directory)


def unmount_under(root: Path) -> None:
    """Lazily unmount every mount at or below ``root``, deepest first."""
    libc = ctypes.CDLL(None, use_errno=True)
    prefix = str(root).rstrip("/") + "/"
    for _ in range(3):  # a mount may hide another on the same point
        with open("/proc/self/mountinfo") as mountinfo:
            points = [_unescape(line.split()[4]) for line in mountinfo]
        mine = [p for p in points if p == str(root) or p.startswith(prefix)]
        if not mine:
            return
        for point in sorted(set(mine), key=len, reverse=True):
            libc.umount2(point.encode(), _MNT_DETACH)


def _unescape(field_text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match[1], 8)), field_text)
