"""What the benchmarks read about another process of theirs (the collector) from /proc: its memory and CPU time."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path


def memory_mb(pid: int) -> tuple[float, float] | None:
    """(VmRSS, RssAnon) of process `pid` in MB, or None once it is gone."""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "RssAnon"):
                    fields[name] = int(value.split()[0]) * 1024 / 1e6
    except OSError:
        return None
    return (fields["VmRSS"], fields["RssAnon"]) if len(fields) == 2 else None


def sample_memory(
    pid: int,
    stop: threading.Event,
    into: list[tuple[float, float, float]],
    *,
    clock: Callable[[], float],
    every_s: float = 1.0,
) -> None:
    """Append (clock(), VmRSS, RssAnon) every `every_s` until `stop` is set or the process is gone (a thread's
    target). `clock` is the one the caller's other times are on, so the samples can be cut to their window."""
    while not stop.is_set():
        sample = memory_mb(pid)
        if sample is None:
            return
        into.append((clock(), *sample))
        stop.wait(every_s)


def cpu_s(pid: int | None) -> float:
    """User + system seconds process `pid` has used (all its threads), NaN when unknown."""
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14 and 15)
