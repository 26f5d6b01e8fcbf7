"""Writing accepted push requests: group commit, the spool when the file is held, and the promise behind an answer.

An answer of 200 or 202 tells the sender its readings will never be lost, so a request is answered only once they
are in the database (200, "stored") or durable in the spool (202, "spooled": fsynced, written later by whichever
process drains the spool first, the collector at its next pass or this writer at its next commit). When neither can
take them (the spool's disk is full too), the answer is 503 and the sender keeps them.

Requests arriving together are written in one transaction by one writer thread (`core.collect.group_writer`): the
file is held for one short commit per second however many requests come in. Requests for the same source in one
commit are merged, the later request's value winning for an interval sent twice, so a source's state is written
once per commit. Each commit goes through the collection's own write (`apply_pass_per_source`: idempotent ingest,
rollups, one `collector_runs` row and the state of each source), so a pushed source is seen by History, KPIs, alerts
and API Health like a polled one. While the spool holds entries, new requests queue behind them in it (never
overtaking an older value of the same interval), and each commit first tries to write the spool out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import polars as pl

from core.collect.group_writer import GroupWriter
from core.collect.pass_write import apply_entry, apply_pass_per_source
from core.collect.poll_result import GroupResult, newest_finals
from core.models import Provider
from core.store.change_marks import ChangeMarks
from core.store.held_passes import HeldPasses
from core.store.readings_store import INGEST_SCHEMA
from core.store.spool import Spool
from core.store.store import Store, StoreError, StoreUnavailable
from core.store.store_episodes import StoreEpisodes

log = logging.getLogger(__name__)

# At most one commit per this many seconds. Shorter than the collector's second: a sender waits for the commit before
# its answer, so the gap is its latency, and one that sends a request at a time gets at most 1 / gap requests a
# second; a commit holds the file a few tens of ms, so a quarter second keeps it free most of the time
# (bench/bench_push.py).
PUSH_GAP_S = 0.25
WRITE_WAIT_S = 2.0  # how long a commit waits for a held file before the spool takes the requests
DRAIN_WAIT_S = 0.5  # how long a commit waits to write out the spool first

Written = Literal["stored", "spooled"]


class NotKept(Exception):
    """Neither the database nor the spool could take the readings: the sender must keep them (503)."""


@dataclass(frozen=True)
class PushBatch:
    """One accepted request: its source, its readings (ingest columns without `source_id`), when it arrived."""

    source_id: int
    readings: pl.DataFrame
    received: datetime


class PushWriter:
    """The ingest service's writer. `submit` returns a future whose result says where the readings went, or
    raises `NotKept`."""

    def __init__(self, store: Store, spool: Spool, *, gap_s: float = PUSH_GAP_S) -> None:
        self.store = store
        self.episodes = StoreEpisodes(
            store, spool.directory, going_on="pushed readings are still taken, each answered once it is in the spool"
        )
        self.held = HeldPasses(spool, self.episodes, memory_capacity=0)  # an answer means durable: never memory
        self.marks = ChangeMarks(store.path)
        self.writer: GroupWriter[PushBatch, Written] = GroupWriter(
            self._commit, lambda batch: frozenset(), gap_s=gap_s, name="push-writer"
        )
        self._lock = threading.Lock()

    def submit(self, batch: PushBatch) -> Future[Written]:
        return self.writer.submit(batch)

    def close(self, timeout_s: float | None = None) -> bool:
        """Write what is queued, then stop."""
        return self.writer.close(timeout_s)

    def _commit(self, batches: Sequence[PushBatch]) -> list[Written]:
        now = max(b.received for b in batches)
        results, readings = _merged(batches, now)
        with self._lock:
            self._drain()
            if self.held.waiting():
                return [self._spool(results, readings, now)] * len(batches)
            try:
                with self.store.transaction(timeout_s=WRITE_WAIT_S) as con:
                    apply_pass_per_source(con, results, readings, newest_finals(readings, results), now)
            except StoreUnavailable as exc:
                self.episodes.unavailable(exc)
                return [self._spool(results, readings, now)] * len(batches)
            self.episodes.free()
        self.marks.mark(r.source_ids[0] for r in results)
        return ["stored"] * len(batches)

    def _spool(self, results: list[GroupResult], readings: pl.DataFrame, now: datetime) -> Written:
        meta = {"now": now.isoformat(), "results": [r.to_json() for r in results]}
        try:
            self.held.hold(meta, readings)
        except StoreError as exc:
            raise NotKept(str(exc)) from exc
        return "spooled"

    def _drain(self) -> None:
        if not self.held.waiting():
            return
        try:
            self.held.drain(self.store, apply_entry, timeout_s=DRAIN_WAIT_S)
        except StoreUnavailable as exc:
            self.episodes.unavailable(exc)
            return
        self.episodes.free()


def _merged(batches: Sequence[PushBatch], now: datetime) -> tuple[list[GroupResult], pl.DataFrame]:
    """One result per source and every batch's readings in one frame, the later request winning for an interval
    sent twice. A pushed reading is final once its interval is over when it arrives (the sender says what the
    interval was; ingest then keeps it as it is, like an imported one); a running interval's value is replaced by
    the next one sent."""
    frames = [
        b.readings.with_columns(
            pl.lit(b.source_id, pl.Int64).alias("source_id"),
            (pl.col("ts") + pl.duration(seconds=pl.col("interval_s")) <= b.received).alias("is_final"),
        )
        for b in batches
    ]
    readings = (
        pl.concat(frames, how="diagonal_relaxed")
        .unique(subset=["source_id", "ts"], keep="last", maintain_order=True)
        .select(INGEST_SCHEMA.names())
        .cast(INGEST_SCHEMA)
    )
    results = []
    for source_id in dict.fromkeys(b.source_id for b in batches):
        first = min(b.received for b in batches if b.source_id == source_id)
        result = GroupResult([source_id], Provider.PUSH.value, first)
        result.batch = readings.filter(pl.col("source_id") == source_id)
        results.append(result)
    return results, readings
