"""Timing shared by the benchmarks: run an action repeatedly and report its median and 95th percentile."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p95) of the samples; p95 is the nearest rank at or below the 95 % point."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))]


def measure(action: Callable[[], object], runs: int) -> tuple[float, float]:
    """(p50, p95) in milliseconds of `runs` calls of `action`, after one untimed call that warms up imports and the
    OS page cache."""
    action()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return percentiles(samples)
