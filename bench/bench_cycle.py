"""One collector cycle over 1,000 simulator sources: `core.collect.collection.collect_once`, one pass over every vendor
site.

Setup: a temporary store (migrated, no demo seed) with 250 sites spread over eight time zones, each with a PROD,
CONS, STOR and INJ meter holding one simulator source (1,000 sources, 250 vendor sites: the sources of a site
share its simulated vendor site, so one call serves all four). Then:

(a) first pass: no source has a bookmark yet, so every vendor site is read `UNMETERED_BACKFILL` (a month) back in one
    pass (the simulator has no vendor quota; a vendor source would start one day back).
(b) steady cycles: `now` advances 5 minutes per cycle; every vendor site re-reads from its bookmark minus `RELOOK`.
    The first of them warms up and is not counted. Target: p95 < 5 s for 1,000 sources.

Baseline: the same steady cycle over a store with a single source (the fixed cost of a cycle: catalog and state
reads, one client, one transaction). The ratio per source compares the 1,000-source cycle divided by 1,000 with it.

`BENCH_SCALE` (default 1.0) scales the number of sources (at least 8) and the target with it; 0.02 runs in seconds.
`BENCH_PROFILE=1` also prints cProfile's top functions of the first pass and of one steady cycle.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import resource
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.catalog import catalog as cat
from core.collect.collection import PassReport, collect_once
from core.config import Settings
from core.models import ApiSettings, Category, MeterIn, Provider, SiteIn, SourceIn
from core.providers.simulator import client as simulator
from core.runtime import Runtime, open_runtime
from core.store.crypto import generate_key

SOURCES = 1_000
STEADY_CYCLES = 7
TARGET_S = 5.0
NOW = datetime(2026, 6, 21, 12, 2, tzinfo=UTC)
STEP = timedelta(minutes=5)
# (latitude, longitude, time zone): both hemispheres, offsets from -8 h to +10 h, one with a half-hour offset.
PLACES = (
    (50.85, 4.35, "Europe/Brussels"),
    (40.71, -74.01, "America/New_York"),
    (-33.87, 151.21, "Australia/Sydney"),
    (35.68, 139.69, "Asia/Tokyo"),
    (-23.55, -46.63, "America/Sao_Paulo"),
    (-26.20, 28.05, "Africa/Johannesburg"),
    (19.08, 72.88, "Asia/Kolkata"),
    (34.05, -118.24, "America/Los_Angeles"),
)
METERS = ((Category.PROD, "solar"), (Category.CONS, "load"), (Category.STOR, "battery"), (Category.INJ, "grid"))


def open_fleet(folder: Path, sources: int) -> Runtime:
    """A fresh store under `folder` with `sources` enabled simulator sources, four per site (one per meter
    category; the last site may have fewer), written in one transaction."""
    settings = Settings(db_path=folder / "bench.duckdb", secret_keys=generate_key(), seed_demo=False)
    runtime = open_runtime(settings)
    api = ApiSettings(use_api=True, api_provider=Provider.SIMULATOR)
    with runtime.store.transaction() as con:
        for n in range(-(-sources // len(METERS))):
            lat, lon, zone = PLACES[n % len(PLACES)]
            shift = (n // len(PLACES)) % 40 / 10  # up to 4 degrees apart, so sites differ a little
            site_id = cat.insert_site(
                con, SiteIn(name=f"Site {n:04d}", latitude=lat + shift, longitude=lon - shift, timezone=zone)
            )
            for category, source_type in METERS[: sources - n * len(METERS)]:
                meter_id = cat.insert_meter(con, site_id, MeterIn(name=f"{category.value} meter", category=category))
                source = SourceIn(
                    name=f"{category.value} {source_type}",
                    source_type=source_type,
                    capacity_kw=20 + n % 7 * 10,
                    carbon_intensity_g_per_kwh=0,
                    cost_per_mwh=0,
                    api=api,
                )
                cat.insert_source(con, meter_id, source)
    return runtime


def run_pass(runtime: Runtime, now: datetime) -> tuple[float, PassReport]:
    """One `collect_once` over every vendor site; (seconds, report). Fails loudly if a vendor site failed."""
    started = time.perf_counter()
    report = collect_once(runtime.store, runtime.box, runtime.providers, now)
    elapsed = time.perf_counter() - started
    failed = [r for r in report.results if r.outcome != "ok"]
    if failed:
        raise RuntimeError(f"{len(failed)} vendor site(s) failed, first: {failed[0].outcome}: {failed[0].error}")
    return elapsed, report


def _percentiles(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return statistics.median(samples), samples[round(0.95 * (len(samples) - 1))]


def profile(label: str, action: Callable[[], object], top: int = 25) -> None:
    """Run `action` under cProfile and print its top functions by cumulative and by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    action()
    profiler.disable()
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(top)
        print(f"--- profile of {label}, by {order} ---")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:6000])


@dataclass(frozen=True)
class Figures:
    build_s: float  # building the store
    first_s: float  # the first pass (a month back)
    first_rows: int
    groups: int  # vendor sites polled
    p50: float  # steady cycle, seconds
    p95: float
    rows: float  # readings written per steady cycle (median)
    size_mb: float


def measure(sources: int, cycles: int, *, profiled: bool = False) -> Figures:
    """First pass and `cycles` steady cycles over a fresh fleet of `sources`."""
    simulator._pv_cache.clear()  # as in a freshly started collector
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        runtime = open_fleet(Path(tmp), sources)
        build_s = time.perf_counter() - started
        now = NOW
        if profiled:
            profile(f"the first pass over {sources} sources", lambda: run_pass(runtime, now))
            first_s, first = float("nan"), PassReport()
        else:
            first_s, first = run_pass(runtime, now)
        steady, rows = [], []
        for _ in range(cycles):
            now += STEP
            elapsed, report = run_pass(runtime, now)
            steady.append(elapsed)
            rows.append(report.rows_written)
        if profiled:
            now += STEP
            profile(f"one steady cycle over {sources} sources", lambda: run_pass(runtime, now))
        size_mb = (Path(tmp) / "bench.duckdb").stat().st_size / 2**20
    p50, p95 = _percentiles(steady[1:] if len(steady) > 2 else steady)  # the first steady cycle warms up
    return Figures(build_s, first_s, first.rows_written, len(first.results), p50, p95, statistics.median(rows), size_mb)


def main() -> None:
    warnings.filterwarnings("ignore", message="DatetimeIndex.dayofyear is deprecated")  # pvlib under pandas 3
    scale = float(os.environ.get("BENCH_SCALE", "1.0"))
    sources = max(int(SOURCES * scale), 8)
    target_s = TARGET_S * sources / SOURCES
    base = measure(1, STEADY_CYCLES)
    fleet = measure(sources, STEADY_CYCLES)
    print(
        f"cycle: {sources:,} simulator sources on {fleet.groups} vendor sites, store built in "
        f"{fleet.build_s:.1f} s (file after the run {fleet.size_mb:.0f} MiB)"
    )
    print(
        f"first pass (a month back for every source): {fleet.first_s:.2f} s, {fleet.first_rows:,} readings "
        f"({fleet.first_s / base.first_s:.0f}x the 1-source first pass, {base.first_s * 1000:.0f} ms)"
    )
    print(
        f"baseline: steady cycle over 1 source: p50 {base.p50 * 1000:.0f} ms, p95 {base.p95 * 1000:.0f} ms "
        f"({base.rows:.0f} readings per cycle)"
    )
    ratio = fleet.p95 / base.p95
    per_source_ms = fleet.p95 * 1000 / sources
    verdict = "meets" if fleet.p95 < target_s else "MISSES"
    scaled = "" if sources == SOURCES else f" (scaled from {TARGET_S:g} s for {SOURCES:,})"
    print(
        f"steady cycle over {sources:,} sources, now +5 min per cycle, {STEADY_CYCLES - 1} measured: "
        f"p50 {fleet.p50:.2f} s, p95 {fleet.p95:.2f} s ({fleet.rows:,.0f} readings per cycle); "
        f"{ratio:.0f}x baseline, per source {per_source_ms:.1f} ms = {per_source_ms / (base.p95 * 1000):.3f}x "
        f"baseline; target p95 < {target_s:g} s{scaled}: {verdict}"
    )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"cycle: peak RSS {peak_mb:.0f} MiB")
    if os.environ.get("BENCH_PROFILE"):
        measure(sources, 1, profiled=True)


if __name__ == "__main__":
    main()
