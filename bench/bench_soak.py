"""The collector's resident memory over 10,000 cycles: it must stay flat, or a collector running for months dies.

Setup: a temporary store with 10 simulator sources on 3 sites (see `bench_cycle.open_fleet`), then 10,000 passes
over every vendor site, `now` advancing 5 minutes per cycle (~35 simulated days; retention is not run, so the
readings table grows to ~1M rows, as in a month). As in the collector process (`jobs.collector`): one `Collection`
with its spool (`collect_once` builds the same for a single pass), passes run on a pool of the collector's size,
and this process imports what the collector imports. The resident set (VmRSS) is sampled every 500 cycles.
Targets: peak < 250 MB, and growth after the first 1,000 cycles (the warm-up) < 10 %.

Baseline: the resident set after the warm-up; growth is reported as the ratio to it. `BENCH_SCALE` (default 1.0)
scales the number of cycles, the sampling step and the warm-up (0.02 gives 200 cycles in about a minute).
"""

from __future__ import annotations

import os
import resource
import statistics
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.bench_cycle import NOW, STEP, open_fleet
from core.providers import simulator
from jobs.collector import WORKERS, collection_for

SOURCES = 10
CYCLES = 10_000
SAMPLE_EVERY = 500
WARM_UP = 1_000
TARGET_PEAK_MB = 250.0
TARGET_GROWTH = 0.10


def peak_mb() -> float:
    """The largest resident set so far, in MB (10^6 bytes; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def rss_mb() -> float:
    """The resident set now in MB (Linux), else the peak so far."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return peak_mb()


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
        pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="poll")
        start_mb = rss_mb()
        samples: list[tuple[int, float]] = [(0, start_mb)]
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
                samples.append((cycle, rss_mb()))
        total_s = time.perf_counter() - started
        pool.shutdown()
        size_mb = (Path(tmp) / "bench.duckdb").stat().st_size / 2**20
    peak = max(peak_mb(), *(mb for _, mb in samples))
    warm_cycle, warm_mb = next((c, mb) for c, mb in samples if c >= warm_up)
    end_mb = samples[-1][1]
    after = [(c, mb) for c, mb in samples if c >= warm_cycle]
    growth = end_mb / warm_mb - 1
    # Least-squares slope after the warm-up, in MB per 1,000 cycles: a leak shows as a steady climb.
    slope = statistics.linear_regression([c for c, _ in after], [mb for _, mb in after]).slope * 1000
    durations.sort()
    print(
        f"soak: {cycles:,} cycles of {SOURCES} simulator sources on 3 vendor sites, now +5 min per cycle "
        f"({cycles * STEP.total_seconds() / 86400:.1f} simulated days, {rows:,} readings written, "
        f"file {size_mb:.0f} MiB) "
        f"in {total_s:.0f} s: cycle p50 {statistics.median(durations) * 1000:.0f} ms, "
        f"p95 {durations[round(0.95 * (len(durations) - 1))] * 1000:.0f} ms"
    )
    print("soak: RSS every {} cycles (MB): {}".format(every, ", ".join(f"{c}: {mb:.0f}" for c, mb in samples)))
    verdict = "meets" if peak < TARGET_PEAK_MB and growth < TARGET_GROWTH else "MISSES"
    print(
        f"soak: RSS start {start_mb:.0f} MB, after the {warm_cycle:,}-cycle warm-up (baseline) {warm_mb:.0f} MB, "
        f"peak {peak:.0f} MB, end {end_mb:.0f} MB; growth after warm-up {growth:+.1%} "
        f"({end_mb / warm_mb:.2f}x baseline, trend {slope:+.2f} MB per 1,000 cycles); "
        f"target peak < {TARGET_PEAK_MB:g} MB and growth < {TARGET_GROWTH:.0%}: {verdict}"
    )


if __name__ == "__main__":
    main()
