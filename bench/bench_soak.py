"""The collector's resident memory over 10,000 cycles: it must stay flat, or a collector running for months dies.

Setup: a temporary store with 10 simulator sources on 3 sites (see `bench_cycle.open_fleet`), then 10,000 passes
over every vendor site, `now` advancing 5 minutes per cycle (~35 simulated days; retention is not run, so the
readings table grows to ~1M rows, as in a month). As in the collector process (`jobs.collector`): one `Collection`
with its spool (`collect_once` builds the same for a single pass), passes run on a pool of the collector's size,
and this process imports what the collector imports. Memory is sampled every 500 cycles (see `memory_mb` for
why the target is judged on private memory). Targets: private peak < 250 MB, and growth after the first 1,000
cycles (the warm-up) < 10 % for both the private part and the whole resident set.

Baseline: memory after the warm-up; growth is reported as the ratio to it. `BENCH_SCALE` (default 1.0)
scales the number of cycles, the sampling step and the warm-up (0.02 gives 200 cycles in about a minute).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.bench_cycle import NOW, STEP, open_fleet
from core.providers.simulator import client as simulator
from jobs.collector import collection_for

SOURCES = 10
CYCLES = 10_000
SAMPLE_EVERY = 500
WARM_UP = 1_000
TARGET_PEAK_MB = 250.0
TARGET_GROWTH = 0.10


def memory_mb() -> tuple[float, float]:
    """(resident set, its private part) now, in MB (10^6 bytes; Linux reports KiB).

    The resident set (VmRSS) also counts the pages of shared libraries mapped from disk (RssFile: polars, DuckDB,
    numpy, scipy... ~100 MB after import, more once their code runs), which are shared with other processes and
    which the kernel can drop and reload. The private part (RssAnon) is what the collector itself allocates: what
    a leak would grow, and what no other process can use. The target is judged on it; both are printed.
    """
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon"):
                fields[name] = int(value.split()[0]) * 1024 / 1e6
    return fields["VmRSS"], fields["RssAnon"]


def main() -> None:
    warnings.filterwarnings("ignore", message="DatetimeIndex.dayofyear is deprecated")  # pvlib under pandas 3
    scale = float(os.environ.get("BENCH_SCALE", "1.0"))
    cycles = max(int(CYCLES * scale), 20)
    every = max(int(SAMPLE_EVERY * scale), 1)
    warm_up = max(int(WARM_UP * scale), every)
    simulator._pv_cache.clear()
    with tempfile.TemporaryDirectory() as tmp:
        runtime = open_fleet(Path(tmp), SOURCES)
        collection = collection_for(runtime)
        pool = ThreadPoolExecutor(max_workers=runtime.settings.collector_workers, thread_name_prefix="poll")
        samples: list[tuple[int, float, float]] = [(0, *memory_mb())]
        durations, rows = [], 0
        now = NOW
        started = time.perf_counter()
        for cycle in range(1, cycles + 1):
            t = time.perf_counter()
            report = pool.submit(collection.run, now).result()
            durations.append(time.perf_counter() - t)
            failed = [r for r in report.results if r.outcome != "ok"]
            if failed or report.spooled:
                raise RuntimeError(f"cycle {cycle}: {failed[0].error if failed else 'spooled'}")
            rows += report.rows_written
            now += STEP
            if cycle % every == 0 or cycle == cycles:
                samples.append((cycle, *memory_mb()))
        total_s = time.perf_counter() - started
        pool.shutdown()
        size_mb = (Path(tmp) / "bench.duckdb").stat().st_size / 2**20
    warm = next(sample for sample in samples if sample[0] >= warm_up)
    after = [sample for sample in samples if sample[0] >= warm[0]]
    peak_total, peak_private = max(t for _, t, _ in samples), max(p for _, _, p in samples)
    growth_total, growth_private = samples[-1][1] / warm[1] - 1, samples[-1][2] / warm[2] - 1
    # Least-squares slope of the private part after the warm-up, in MB per 1,000 cycles: a leak climbs steadily.
    slope = statistics.linear_regression([c for c, _, _ in after], [p for _, _, p in after]).slope * 1000
    durations.sort()
    print(
        f"soak: {cycles:,} cycles of {SOURCES} simulator sources on 3 vendor sites, now +5 min per cycle "
        f"({cycles * STEP.total_seconds() / 86400:.1f} simulated days, {rows:,} readings written, "
        f"file {size_mb:.0f} MiB) "
        f"in {total_s:.0f} s: cycle p50 {statistics.median(durations) * 1000:.0f} ms, "
        f"p95 {durations[round(0.95 * (len(durations) - 1))] * 1000:.0f} ms"
    )
    print(
        "soak: every {} cycles, resident/private MB: {}".format(
            every, ", ".join(f"{c}: {t:.0f}/{p:.0f}" for c, t, p in samples)
        )
    )
    verdict = (
        "meets" if peak_private < TARGET_PEAK_MB and max(growth_private, growth_total) < TARGET_GROWTH else "MISSES"
    )
    print(
        f"soak: private memory (RssAnon) start {samples[0][2]:.0f} MB, after the {warm[0]:,}-cycle warm-up "
        f"(baseline) {warm[2]:.0f} MB, peak {peak_private:.0f} MB, end {samples[-1][2]:.0f} MB, growth after "
        f"warm-up {growth_private:+.1%} ({samples[-1][2] / warm[2]:.2f}x baseline, trend {slope:+.2f} MB per 1,000 "
        f"cycles); resident set incl. shared library pages (VmRSS) start {samples[0][1]:.0f} MB, peak "
        f"{peak_total:.0f} MB, end {samples[-1][1]:.0f} MB, growth {growth_total:+.1%}; target private peak < "
        f"{TARGET_PEAK_MB:g} MB and growth < {TARGET_GROWTH:.0%}: {verdict}"
    )


if __name__ == "__main__":
    main()
