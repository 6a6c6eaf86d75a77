"""The library surface: every advertised name resolves, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import hostsched


def test_every_export_resolves() -> None:
    assert sorted(hostsched.__all__) == sorted(hostsched._EXPORTS)
    for name in hostsched.__all__:
        assert getattr(hostsched, name) is not None, name


def test_import_is_light() -> None:
    code = (
        "import sys, hostsched\n"
        "print(sorted(m for m in ('redis', 'pylxd', 'yaml', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.strip() == "[]"
