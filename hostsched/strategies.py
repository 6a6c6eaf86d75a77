"""Placement strategies: pure functions from a fleet snapshot and a request to ranked hosts."""

from __future__ import annotations

STRATEGY_NAMES = (
    "least_loaded",
    "best_fit",
    "round_robin",
    "random",
    "least_cpu",
    "consistent_hash",
)
DEFAULT_STRATEGY = "least_loaded"
