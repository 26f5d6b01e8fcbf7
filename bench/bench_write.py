"""Group commit: what writing costs when many vendor sites are polled at once, one transaction per site vs grouped.

Setup, for each fleet size (10, 100, 1,000 simulator vendor sites of four sources each, `bench_cycle.open_fleet`):
a fresh store whose sources already have a bookmark an hour back (the steady state: each poll re-reads `RELOOK`
and the new quarter hours, no month-long first backfill). Then every site is polled once, on 8 threads, as the
collector's poll threads do (`Collection.poll` with shared inputs):

(a) grouped: the passes go to the collection's writer (`core.collect.group_writer`), which writes everything queued
    in one transaction at most once a second;
(b) one per site, as before group commit: each site's pass written in a transaction of its own, the sites polled
    one after the other (so no wait for the file counts as writing), on the first 50 sites, scaled to the fleet.

Printed per fleet size: the commits, the seconds spent writing (the file is held about that long), the write time
per site and per second of polling. Grouped, the write time per site falls as the fleet grows: the fixed cost of a
transaction (opening the file under its lock, the commit) is paid once a second, not once per site.

`BENCH_SCALE` (default 1.0) scales the fleet sizes (at least 2 sites); 0.05 runs in seconds.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.bench_cycle import open_fleet
from core.catalog import catalog as cat
from core.catalog.vendor_sites import group_by_provider_site
from core.collect.collection import Collection
from core.providers.simulator import client as simulator
from core.runtime import Runtime
from core.store.spool import Spool

SITES = (10, 100, 1_000)
SOURCES_PER_SITE = 4
THREADS = 8
BASELINE_SITES = 50
NOW = datetime(2026, 6, 21, 12, 2, tzinfo=UTC)


@dataclass(frozen=True)
class Writes:
    commits: int
    write_s: float  # seconds inside write transactions
    wall_s: float  # from the first poll to the last write


def _steady_fleet(folder: Path, sites: int) -> Runtime:
    runtime = open_fleet(folder, sites * SOURCES_PER_SITE)
    with runtime.store.transaction() as con:
        con.execute(
            "INSERT INTO source_state (source_id, bookmark_ts, updated_at) SELECT id, ?, ? FROM energy_sources",
            [NOW - timedelta(hours=1), NOW],
        )
    return runtime


def _collection(runtime: Runtime) -> Collection:
    return Collection(runtime.store, runtime.box, runtime.providers, Spool.beside(runtime.store.path))


def grouped(runtime: Runtime, now: datetime) -> Writes:
    collection = _collection(runtime)
    keys = list(group_by_provider_site(cat.load_catalog(runtime.store)))
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        polled = list(pool.map(lambda key: collection.poll(now, only={key}, shared_inputs=True), keys))
    for _, written in polled:
        written.result()
    wall_s = time.perf_counter() - started
    collection.close()
    return Writes(collection.writer.commits, collection.writer.commit_s, wall_s)


def one_per_site(runtime: Runtime, now: datetime) -> Writes:
    """As before group commit: each site's pass in a transaction of its own. Polled one after the other, so the
    write time counts no wait for the file; on the first `BASELINE_SITES` sites only (its cost per site does not
    depend on the fleet), and scaled to the whole fleet."""
    collection = Collection(
        runtime.store, runtime.box, runtime.providers, Spool.beside(runtime.store.path), commit_gap_s=0
    )
    keys = list(group_by_provider_site(cat.load_catalog(runtime.store)))
    sample = keys[:BASELINE_SITES]
    started = time.perf_counter()
    for key in sample:
        collection.poll(now, only={key}, shared_inputs=True)[1].result()
    wall_s = time.perf_counter() - started
    collection.close()
    scale = len(keys) / len(sample)
    return Writes(round(collection.writer.commits * scale), collection.writer.commit_s * scale, wall_s * scale)


def _line(label: str, sites: int, writes: Writes) -> str:
    per_site_ms = writes.write_s * 1000 / sites
    held = writes.write_s / writes.wall_s if writes.wall_s else 0.0
    return (
        f"  {label:<12} {writes.commits:>5} commit(s), {writes.write_s:6.2f} s writing in {writes.wall_s:6.2f} s "
        f"({per_site_ms:5.1f} ms per site, the file held {held:4.0%} of the time)"
    )


def main() -> None:
    warnings.filterwarnings("ignore", message="DatetimeIndex.dayofyear is deprecated")  # pvlib under pandas 3
    scale = float(os.environ.get("BENCH_SCALE", "1.0"))
    print("write: every vendor site polled once on 8 threads; writes grouped vs one transaction per site")
    for size in SITES:
        sites = max(int(size * scale), 2)
        simulator._pv_cache.clear()
        with tempfile.TemporaryDirectory() as tmp:
            runtime = _steady_fleet(Path(tmp), sites)
            together = grouped(runtime, NOW)
            alone = one_per_site(runtime, NOW + timedelta(minutes=5))
        print(f"write: {sites:,} vendor sites ({sites * SOURCES_PER_SITE:,} sources)")
        print(_line("grouped", sites, together))
        print(_line("one per site", sites, alone) + (" *" if sites > BASELINE_SITES else ""))
    print(f"write: * measured on {BASELINE_SITES} sites, scaled to the fleet (the cost per site is the same)")


if __name__ == "__main__":
    main()
