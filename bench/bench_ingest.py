"""How fast readings go into a big `readings` table through `core.store.readings_store.ingest` (idempotent, no PK).

Setup: 50M readings (500 sources x 100k 15-minute intervals, ~2.9 years) generated in DuckDB, in time order as the
collector writes them. Then:

(a) bulk: 1M readings (500 sources x 2,000 intervals), the older half already stored, through `ingest` inside one
    transaction. Baseline: a plain `INSERT INTO readings SELECT ... FROM <the same Polars frame>` without dedupe.
    Targets: >= 1M readings/s and >= half the baseline's rate. Both run inside a transaction that is rolled back, so
    each repetition sees the same table.
(b) cycle: 200 collector-sized batches of 100 readings (50 sources x 2 intervals: the previous interval, now final,
    replacing its non-final version, and the open one), each inside its own store transaction (lock, connect,
    BEGIN, ingest, COMMIT, close). Target: the cycle batch's write, the `ingest` call, p95 < 10 ms. The whole store
    operation is printed too: it adds DuckDB's fixed cost of opening and closing the file (~13 ms to open even an
    empty file here, plus the checkpoint on close), which the store pays by design (core/store/store.py: no process
    keeps the file open, so the dashboard and analysts can use it); an empty transaction is printed as its baseline.

`BENCH_SCALE` (default 1.0) scales the table and the bulk batch (0.02 gives a run of a few seconds).
"""

from __future__ import annotations

import os
import resource
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl

from bench.timing import percentiles
from core.store.readings_store import INGEST_SCHEMA, ingest
from core.store.schema import migrate
from core.store.store import Store

SOURCES = 500
CYCLE_BATCHES = 200
INTERVAL_S = 900
T0 = datetime(2023, 1, 1, tzinfo=UTC)


def _frame(source_ids: list[int], first_slot: int, slots: int, *, final: bool = True) -> pl.DataFrame:
    """Every source x every slot in [first_slot, first_slot + slots), in time order."""
    grid = pl.DataFrame({"slot": range(first_slot, first_slot + slots)}).join(
        pl.DataFrame({"source_id": source_ids}), how="cross"
    )
    return grid.select(
        pl.col("source_id").cast(pl.Int64),
        (pl.lit(T0, dtype=pl.Datetime("us", "UTC")) + pl.duration(seconds=pl.col("slot") * INTERVAL_S)).alias("ts"),
        pl.lit(INTERVAL_S, dtype=pl.Int32).alias("interval_s"),
        ((pl.col("slot") * 7919 + pl.col("source_id")) % 100_000 / 10.0).alias("value"),
        pl.lit(final).alias("is_final"),
    ).cast(dict(INGEST_SCHEMA))


def main() -> None:
    scale = float(os.environ.get("BENCH_SCALE", "1.0"))
    slots = max(int(100_000 * scale), 10)
    bulk_slots = max(int(2_000 * scale), 2)
    now = T0 + timedelta(seconds=(slots + bulk_slots) * INTERVAL_S)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb", lock_timeout_s=60)
        migrate(store)

        started = time.perf_counter()
        with store.transaction() as con:
            con.execute(
                f"""INSERT INTO readings (source_id, ts, interval_s, value, is_final, received_at)
                SELECT i % {SOURCES}, TIMESTAMPTZ '{T0.isoformat()}' + to_seconds((i // {SOURCES}) * {INTERVAL_S}),
                       {INTERVAL_S}, ((i // {SOURCES}) * 7919 + i % {SOURCES}) % 100000 / 10.0, true, now()
                FROM range({slots * SOURCES}) t(i)"""
            )
        build_s = time.perf_counter() - started
        size_mb = (Path(tmp) / "bench.duckdb").stat().st_size / 2**20
        print(f"ingest: built {slots * SOURCES:,} readings in {build_s:.1f} s (file {size_mb:.0f} MiB)")

        # (a) bulk: half of the frame is already stored.
        bulk = _frame(list(range(SOURCES)), slots - bulk_slots // 2, bulk_slots)

        def plain(con: duckdb.DuckDBPyConnection) -> int:
            frame = bulk  # a local, found by DuckDB's replacement scan
            rows = con.execute(
                "INSERT INTO readings (source_id, ts, interval_s, value, is_final, received_at) "
                "SELECT *, now() FROM frame"
            ).fetchall()
            assert frame is bulk
            return int(rows[0][0])

        def deduped(con: duckdb.DuckDBPyConnection) -> int:
            return ingest(con, bulk, now)

        results: dict[str, tuple[float, int]] = {}
        for label, action in (("plain", plain), ("ingest", deduped)):
            times = []
            for _ in range(3):
                with store.connect() as con:
                    con.execute("BEGIN TRANSACTION")
                    t = time.perf_counter()
                    inserted = action(con)
                    times.append(time.perf_counter() - t)
                    con.execute("ROLLBACK")
            results[label] = (statistics.median(times), inserted)
        base_s, base_rows = results["plain"]
        dedupe_s, dedupe_rows = results["ingest"]
        base_rate, dedupe_rate = bulk.height / base_s, bulk.height / dedupe_s
        ratio = dedupe_rate / base_rate
        verdict = "meets" if dedupe_rate >= 1e6 and ratio >= 0.5 else "MISSES"
        print(
            f"bulk {bulk.height:,} readings, half already stored: baseline plain INSERT {base_s * 1000:.0f} ms "
            f"({base_rate / 1e6:.2f} M readings/s, {base_rows:,} rows incl. duplicates); "
            f"ingest {dedupe_s * 1000:.0f} ms ({dedupe_rate / 1e6:.2f} M readings/s, {dedupe_rows:,} inserted), "
            f"{ratio:.2f}x baseline; target >= 1 M readings/s and >= 0.5x baseline: {verdict}"
        )

        # (b) cycle batches of 100 readings.
        cycle_sources = list(range(0, SOURCES, SOURCES // 50))[:50]
        batches = [
            pl.concat(
                [_frame(cycle_sources, slots + k - 1, 1, final=True), _frame(cycle_sources, slots + k, 1, final=False)]
            )
            for k in range(CYCLE_BATCHES + 1)
        ]

        def empty_transaction() -> None:
            with store.transaction():
                pass

        fixed = []
        for _ in range(CYCLE_BATCHES + 1):
            t = time.perf_counter()
            empty_transaction()
            fixed.append((time.perf_counter() - t) * 1000)
        cycle, inner, inserted_total = [], [], 0
        for k, batch in enumerate(batches):
            t = time.perf_counter()
            with store.transaction() as con:
                t_ingest = time.perf_counter()
                inserted = ingest(con, batch, now)
                ingest_ms = (time.perf_counter() - t_ingest) * 1000
            elapsed = (time.perf_counter() - t) * 1000
            if k:  # the first batch warms up
                cycle.append(elapsed)
                inner.append(ingest_ms)
                inserted_total += inserted
        fixed_p50, fixed_p95 = percentiles(fixed[1:])
        p50, p95 = percentiles(cycle)
        inner_p50, inner_p95 = percentiles(inner)
        verdict = "meets" if inner_p95 < 10 else "MISSES"
        print(
            f"cycle batch of {batches[0].height} readings, {len(cycle)} batches ({inserted_total:,} rows inserted "
            f"incl. replacements): ingest inside the cycle's transaction p50 {inner_p50:.1f} ms, "
            f"p95 {inner_p95:.1f} ms; target p95 < 10 ms: {verdict}"
        )
        print(
            f"cycle batch as a whole store operation (lock+connect+BEGIN+ingest+COMMIT+close): p50 {p50:.1f} ms, "
            f"p95 {p95:.1f} ms, {p95 / fixed_p95:.1f}x the baseline, an empty store transaction "
            f"(p50 {fixed_p50:.1f} ms, p95 {fixed_p95:.1f} ms)"
        )
        with store.connect(read_only=True) as con:
            dupes = con.sql(
                "SELECT count(*) FROM (SELECT source_id, ts FROM readings GROUP BY ALL HAVING count(*) > 1)"
            ).fetchall()[0][0]
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"ingest: duplicate keys after the run: {dupes}; peak RSS {peak_mb:.0f} MiB")


if __name__ == "__main__":
    main()
