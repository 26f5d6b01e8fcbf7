"""One collection pass: poll each vendor site once, fan its answer out to the sources it feeds, write everything
in one transaction. The scheduling around it (which groups are due, workers, signals) lives in `jobs.collector`.

Rules, each for a reason:
- One call per vendor site per pass, whatever the number of sources it feeds (quotas are per site and key).
- The window re-reads `RELOOK` before the newest stored final interval, because vendors correct recent data late;
  intervals that end less than `SETTLE` ago are stored as not final and replaced when re-read.
- A source with no bookmark yet starts `FIRST_BACKFILL` back. After downtime the window runs from the bookmark,
  at most `MAX_WINDOW_PER_PASS` a pass, oldest first, so a long outage fills in order and never bursts the quota.
- Holes before the bookmark (`core.gaps`) are re-read one vendor window per pass, oldest first, and only while
  more than `GAP_RESERVE` of the budget remains.
- A pass that cannot be written because an outside program holds the file goes to the spool (`core.spool`) and
  is written, in order, once the file is free.
- Failures are sorted by the provider error tree: auth errors and retired APIs stop the group until its
  configuration changes; rate limits wait until `retry_at`; other failures count towards the circuit breaker.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import duckdb
import polars as pl
from pydantic import SecretStr

from core import catalog as cat
from core import rollups
from core.crypto import SecretBox, SecretsError
from core.gaps import oldest_gaps, record_attempt
from core.models import Category, Source
from core.providers.base import (
    ApiRetired,
    AuthError,
    BadResponse,
    MonitoringProvider,
    ProviderError,
    RateLimited,
    split_windows,
)
from core.providers.channels import channel_for, group_by_provider_site, provider_site_key, readings_for
from core.providers.context import ProviderContext
from core.providers.exchange import Exchange
from core.providers.registry import ConnectionRequest, build_client
from core.readings_store import INGEST_SCHEMA, ingest, to_batch
from core.response_cache import write_exchanges
from core.spool import Spool, SpoolEntry
from core.store import Store, StoreBusy, StoreError

log = logging.getLogger(__name__)

GroupKey = tuple[str, str]  # (provider, vendor site id): see core.providers.channels.provider_site_key

RELOOK = timedelta(hours=2)
SETTLE = timedelta(hours=1)
FIRST_BACKFILL = timedelta(days=1)
MAX_WINDOW_PER_PASS = timedelta(days=7)
GAP_RESERVE = 0.2  # gap fills leave this share of a vendor budget to the regular polls
READ_WAIT_S = 2.0  # how long a collector pass waits to read before going on with the inputs it read last


@dataclass
class GroupResult:
    """One vendor site's poll; everything but `batch` is JSON-safe, so a pass can wait in the spool."""

    source_ids: list[int]
    provider: str
    started_at: datetime
    duration_ms: float = 0.0
    outcome: str = "ok"
    error: str | None = None
    retry_at: datetime | None = None
    stopped_reason: str | None = None
    gap_window: tuple[datetime, datetime] | None = None
    http_status: int | None = None  # of the last vendor call
    quota_used: int | None = None  # in the current period of the tightest day/month budget
    quota_remaining: int | None = None
    exchanges: list[Exchange] = field(default_factory=list)  # raw calls, for `api_data_cache`
    batch: pl.DataFrame | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "source_ids": self.source_ids,
            "provider": self.provider,
            "started_at": self.started_at.isoformat(),
            "duration_ms": self.duration_ms,
            "outcome": self.outcome,
            "error": self.error,
            "retry_at": _iso(self.retry_at),
            "stopped_reason": self.stopped_reason,
            "gap_window": [t.isoformat() for t in self.gap_window] if self.gap_window else None,
            "http_status": self.http_status,
            "quota_used": self.quota_used,
            "quota_remaining": self.quota_remaining,
            "exchanges": [
                {
                    "endpoint": e.endpoint,
                    "fetched_at": e.fetched_at.isoformat(),
                    "http_status": e.http_status,
                    "body": e.body,
                    "duration_ms": e.duration_ms,
                }
                for e in self.exchanges
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], readings: pl.DataFrame) -> GroupResult:
        gap = data.get("gap_window")
        ids = [int(i) for i in data["source_ids"]]
        return cls(
            source_ids=ids,
            provider=data["provider"],
            started_at=datetime.fromisoformat(data["started_at"]),
            duration_ms=float(data["duration_ms"]),
            outcome=data["outcome"],
            error=data["error"],
            retry_at=_from_iso(data["retry_at"]),
            stopped_reason=data["stopped_reason"],
            gap_window=(datetime.fromisoformat(gap[0]), datetime.fromisoformat(gap[1])) if gap else None,
            http_status=data.get("http_status"),
            quota_used=data.get("quota_used"),
            quota_remaining=data.get("quota_remaining"),
            exchanges=[
                Exchange(
                    e["endpoint"],
                    datetime.fromisoformat(e["fetched_at"]),
                    e["http_status"],
                    e["body"],
                    e["duration_ms"],
                )
                for e in data.get("exchanges", [])
            ],
            batch=readings.filter(pl.col("source_id").is_in(ids)),
        )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _from_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass
class PassReport:
    results: list[GroupResult] = field(default_factory=list)
    rows_written: int = 0
    skipped: int = 0  # groups stopped or waiting for a rate limit to pass
    spooled: str | None = None  # the spool entry holding this pass, when the database was held

    def summary(self) -> str:
        outcomes: dict[str, int] = {}
        for result in self.results:
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
        parts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items())) or "nothing due"
        skipped = f", {self.skipped} waiting or stopped" if self.skipped else ""
        if self.spooled:
            readings = sum(r.batch.height for r in self.results if r.batch is not None)
            return (
                f"{len(self.results)} vendor site(s): {parts}{skipped}; {readings} reading(s) spooled (database held)"
            )
        return f"{len(self.results)} vendor site(s): {parts}{skipped}; {self.rows_written} reading(s) written"


@dataclass(frozen=True)
class SourceState:
    bookmark: datetime | None
    retry_at: datetime | None
    stopped: bool  # stopped for a reason (rejected key, retired API) that only a configuration change can cure
    failures: int = 0
    next_due_at: datetime | None = None  # backing off after transient failures, or the circuit is open
    circuit: str = "closed"


def _states(con: duckdb.DuckDBPyConnection) -> dict[int, SourceState]:
    """Per source: bookmark, and whether it must sit this pass out. A stop holds until the source's settings or
    credentials change after it (their `updated_at` is newer than the state's)."""
    rows = con.sql(
        "SELECT s.source_id, s.bookmark_ts, s.retry_at,"
        " s.stopped_reason IS NOT NULL AND s.updated_at >= greatest(e.updated_at,"
        " coalesce((SELECT max(updated_at) FROM source_secrets x WHERE x.source_id = s.source_id), e.updated_at)),"
        " s.consecutive_failures, s.next_due_at, s.circuit"
        " FROM source_state s JOIN energy_sources e ON e.id = s.source_id"
    ).fetchall()
    return {int(r[0]): SourceState(r[1], r[2], bool(r[3]), int(r[4]), r[5], str(r[6])) for r in rows}


@dataclass
class PassInputs:
    """What a pass reads before polling, in one read-only connection. The collector keeps the last one, so it can
    go on polling (and spooling) while an outside program holds the file."""

    catalog: cat.Catalog
    states: dict[int, SourceState]
    secrets: dict[int, dict[str, SecretStr]]
    unreadable: dict[int, str]  # source id -> why its stored credentials cannot be decrypted
    gaps: dict[int, datetime]  # source id -> oldest hole before its bookmark (core.gaps)


def read_inputs(
    store: Store,
    box: SecretBox,
    now: datetime,
    *,
    timeout_s: float | None = None,
    only: set[GroupKey] | None = None,
) -> PassInputs:
    """Everything a pass needs; holes are looked for only in the groups in `only` (all when None)."""
    with store.connect(read_only=True, timeout_s=timeout_s) as con:
        catalog = cat.read_catalog(con)
        states = _states(con)
        secrets: dict[int, dict[str, SecretStr]] = {}
        unreadable: dict[int, str] = {}
        for source_id, name, token in con.sql("SELECT source_id, name, ciphertext FROM source_secrets").fetchall():
            try:
                secrets.setdefault(int(source_id), {})[name] = box.decrypt(token)
            except SecretsError as exc:
                unreadable[int(source_id)] = str(exc)
        polled = {
            s.id for key, group in group_by_provider_site(catalog).items() if only is None or key in only for s in group
        }
        uppers = {
            sid: state.bookmark - RELOOK
            for sid, state in states.items()
            if state.bookmark is not None and sid in polled
        }
        gaps = oldest_gaps(con, uppers, now)
    return PassInputs(catalog, states, secrets, unreadable, gaps)


def sits_out(sources: list[Source], states: dict[int, SourceState], now: datetime) -> str | None:
    """Why this group is not polled now, or None. Every source of a vendor site shares the site's fate."""
    known = [states[s.id] for s in sources if s.id in states]
    if known and all(state.stopped for state in known):
        return "stopped until its settings change"
    waits = [state.retry_at for state in known if state.retry_at is not None and state.retry_at > now]
    if waits:
        return f"rate limited until {max(waits):%Y-%m-%d %H:%M} UTC"
    pauses = [state.next_due_at for state in known if state.next_due_at is not None and state.next_due_at > now]
    if pauses:
        open_circuit = any(state.circuit == "open" for state in known)
        return f"{'circuit open' if open_circuit else 'backing off'} until {max(pauses):%Y-%m-%d %H:%M:%S} UTC"
    return None


TRANSIENT = {"connection_error", "bad_response"}
BACKOFF_BASE = timedelta(minutes=1)
BACKOFF_MAX = timedelta(minutes=30)
CIRCUIT_THRESHOLD = 5  # consecutive transient failures that open the circuit
CIRCUIT_OPEN = timedelta(minutes=30)  # then one probe poll (half-open): success closes it, failure re-opens it


def next_health(outcome: str, failures_before: int, now: datetime, jitter: float) -> tuple[int, str, datetime | None]:
    """(consecutive failures, circuit, next due) after a poll. `jitter` in [0.8, 1.2] spreads retries of many
    sites that failed together (a vendor outage) so they do not all come back in the same second."""
    if outcome == "ok":
        return 0, "closed", None
    failures = failures_before + 1
    if outcome not in TRANSIENT:
        return failures, "closed", None  # rate limits and stops have their own waits
    if failures >= CIRCUIT_THRESHOLD:
        return failures, "open", now + CIRCUIT_OPEN * jitter
    backoff = min(BACKOFF_BASE * 2 ** (failures - 1), BACKOFF_MAX)
    return failures, "closed", now + backoff * jitter


def window_for(sources: list[Source], bookmarks: dict[int, datetime], now: datetime) -> tuple[datetime, datetime]:
    """From the oldest bookmark of the group (minus RELOOK) to now, at most MAX_WINDOW_PER_PASS long."""
    starts = [bookmarks[s.id] - RELOOK if s.id in bookmarks else now - FIRST_BACKFILL for s in sources]
    start = min(starts)
    end = min(now, start + MAX_WINDOW_PER_PASS)
    return start, end


def gap_window(
    sources: list[Source], gaps: dict[int, datetime], before: datetime, max_window: timedelta
) -> tuple[datetime, datetime] | None:
    """The one hole this group re-reads this pass: from its sources' oldest gap, one vendor window long, ending
    at the regular window's start at the latest (core.gaps explains the rule)."""
    starts = [gaps[s.id] for s in sources if s.id in gaps and gaps[s.id] < before]
    if not starts:
        return None
    start = min(starts)
    return start, min(before, start + min(max_window, MAX_WINDOW_PER_PASS))


def _spare_budget(client: MonitoringProvider, now: datetime) -> bool:
    """Gap fills use only budget the regular polls leave: none when less than GAP_RESERVE of it remains."""
    snapshot = getattr(client, "quota_snapshot", None)
    if snapshot is None:
        return True
    try:
        used, remaining = snapshot(now)
    except StoreError:
        return False  # cannot tell: gaps can wait
    if used is None or remaining is None:
        return True
    return remaining > GAP_RESERVE * (used + remaining)


def _client_for(inputs: PassInputs, context: ProviderContext, sources: list[Source]) -> MonitoringProvider:
    """The client of the vendor site these sources read (their first source's credentials)."""
    catalog = inputs.catalog
    first = sources[0]
    if first.id in inputs.unreadable:
        raise AuthError(f"The stored credentials {inputs.unreadable[first.id]}")
    site = catalog.site(catalog.meter(first.meter_id).site_id)
    prod_meters = catalog.meters_of(site.id, Category.PROD)
    pv_capacity = sum(s.capacity_kw for m in prod_meters for s in catalog.sources_of(m.id))
    request = ConnectionRequest(
        provider=first.api.api_provider,
        site=site,
        pv_capacity_kw=pv_capacity or 10.0,
        system_id=first.api.system_id,
        client_id=first.api.client_id,
        secrets=inputs.secrets.get(first.id, {}),
        source_id=first.id,
        # Only the endpoints these sources need: the quota planner (core.quota_plan) counts the same calls.
        channels=frozenset(channel_for(catalog.meter(s.meter_id).category, s.source_type) for s in sources),
    )
    return build_client(request, context)


def _fan_out(catalog: cat.Catalog, sources: list[Source], answer: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """One vendor answer split into each source's channel, as ingest batches."""
    batches = []
    for source in sources:
        mine = readings_for(answer, catalog.meter(source.meter_id).category, source.source_type)
        batches.append(to_batch(source.id, mine, now, final_before=now - SETTLE))
    return pl.concat(batches)


def _poll_group(inputs: PassInputs, context: ProviderContext, sources: list[Source], now: datetime) -> GroupResult:
    result = GroupResult([s.id for s in sources], sources[0].api.api_provider.value, now)
    bookmarks = {sid: st.bookmark for sid, st in inputs.states.items() if st.bookmark is not None}
    started = time.perf_counter()
    try:
        client = _client_for(inputs, context, sources)
        try:
            start, end = window_for(sources, bookmarks, now)
            answer = client.history(start, end)
            result.gap_window = _fill_gap(client, sources, inputs.gaps, start, now)
            if result.gap_window:
                answer = pl.concat([client.history(*result.gap_window), answer])
        finally:
            _note_calls(client, result, now)
            client.close()
        result.batch = _fan_out(inputs.catalog, sources, answer, now)
    except RateLimited as exc:
        result.outcome, result.error, result.retry_at = "rate_limited", str(exc), exc.retry_at
    except ApiRetired as exc:
        result.outcome, result.error, result.stopped_reason = "retired", str(exc), str(exc)
    except AuthError as exc:
        result.outcome, result.error, result.stopped_reason = "auth_error", str(exc), str(exc)
    except BadResponse as exc:
        result.outcome, result.error = "bad_response", str(exc)
    except ProviderError as exc:
        result.outcome, result.error = "connection_error", str(exc)
    result.duration_ms = (time.perf_counter() - started) * 1000
    return result


def _note_calls(client: MonitoringProvider, result: GroupResult, now: datetime) -> None:
    """The raw calls, the last HTTP status and the budget position, for `api_data_cache` and `collector_runs`.
    (The simulator makes no vendor calls and has none of these.)"""
    exchanges = getattr(client, "exchanges", None)
    if exchanges is not None:
        result.exchanges = exchanges()
        result.http_status = result.exchanges[-1].http_status if result.exchanges else None
    snapshot = getattr(client, "quota_snapshot", None)
    if snapshot is not None:
        with contextlib.suppress(StoreError):  # the position is informative; a held file must not fail the poll
            result.quota_used, result.quota_remaining = snapshot(now)


def _fill_gap(
    client: MonitoringProvider, sources: list[Source], gaps: dict[int, datetime], before: datetime, now: datetime
) -> tuple[datetime, datetime] | None:
    window = gap_window(sources, gaps, before, client.max_window)
    if window is None or not _spare_budget(client, now):
        return None
    log.info("re-reading a gap for %s: %s to %s", [s.id for s in sources], *window)
    return window


class Collection:
    """Collection passes of one process: polls, then one transaction per pass, or the spool when the file is held.

    The last inputs read are kept, so passes go on (against them) while an outside program holds the file; what
    such a pass fetches waits in the spool, in order: while the spool is not empty, new passes queue behind it.
    """

    def __init__(self, store: Store, box: SecretBox, context: ProviderContext, spool: Spool | None = None) -> None:
        self.store, self.box, self.context, self.spool = store, box, context, spool
        self._inputs: PassInputs | None = None
        self._drain_lock = threading.Lock()
        self._write_lock = threading.Lock()

    def inputs(self, now: datetime, only: set[GroupKey] | None = None) -> PassInputs:
        try:
            fresh = read_inputs(self.store, self.box, now, timeout_s=READ_WAIT_S if self.spool else None, only=only)
        except StoreBusy:
            if self.spool is None or self._inputs is None:
                raise
            log.warning("database held by another program: polling with the configuration read last")
            return self._inputs
        self._inputs = fresh
        return fresh

    def run(self, now: datetime, only: set[GroupKey] | None = None) -> PassReport:
        """Poll every enabled vendor site (or those in `only`) once and store what came back, in one transaction."""
        self.drain()
        inputs = self.inputs(now, only)
        report = PassReport()
        for key, sources in group_by_provider_site(inputs.catalog).items():
            if only is not None and key not in only:
                continue
            reason = sits_out(sources, inputs.states, now)
            if reason:
                log.debug("%s/%s sits this pass out: %s", *key, reason)
                report.skipped += 1
                continue
            result = _poll_group(inputs, self.context, sources, now)
            _log_transition(key, result, [inputs.states.get(s.id) for s in sources])
            report.results.append(result)
        self._write(report, inputs, now)
        log.info("collection pass: %s", report.summary())
        return report

    def _write(self, report: PassReport, inputs: PassInputs, now: datetime) -> None:
        readings = _pass_readings(report.results)
        meta = {"now": now.isoformat(), "results": [r.to_json() for r in report.results]}
        with self._write_lock:  # so a pass cannot overtake an older one on its way into the spool
            if self.spool is not None and self.spool.pending():
                report.spooled = self.spool.put(meta, readings)
            else:
                try:
                    with self.store.transaction() as con:
                        report.rows_written = apply_pass(con, report.results, now)
                except StoreBusy:
                    if self.spool is None:
                        raise
                    report.spooled = self.spool.put(meta, readings)
        if report.spooled:
            log.warning("database held by another program: pass kept in the spool (%s)", report.spooled)
            _advance(inputs, report.results, now)

    def drain(self) -> int:
        """Write what the spool holds, if the file is free; returns the readings written."""
        if self.spool is None or not self.spool.pending() or not self._drain_lock.acquire(blocking=False):
            return 0
        try:
            with self._write_lock:
                _, rows = self.spool.drain(self.store, apply_entry, timeout_s=READ_WAIT_S)
            return rows
        except StoreBusy:
            return 0
        finally:
            self._drain_lock.release()


def _pass_readings(results: list[GroupResult]) -> pl.DataFrame:
    batches = [r.batch for r in results if r.batch is not None and r.batch.height]
    return pl.concat(batches) if batches else pl.DataFrame(schema=INGEST_SCHEMA)


def apply_entry(con: duckdb.DuckDBPyConnection, entry: SpoolEntry) -> int:
    now = datetime.fromisoformat(entry.meta["now"])
    results = [GroupResult.from_json(data, entry.readings) for data in entry.meta["results"]]
    return apply_pass(con, results, now)


def _advance(inputs: PassInputs, results: list[GroupResult], now: datetime) -> None:
    """Move the kept inputs on as if the spooled pass had been written: the next pass starts where it ended."""
    for result in results:
        finals = result.batch.filter(pl.col("is_final")) if result.batch is not None else None
        for source_id in result.source_ids:
            before = inputs.states.get(source_id, SourceState(None, None, False))
            mine = finals.filter(pl.col("source_id") == source_id)["ts"].max() if finals is not None else None
            bookmark = max((t for t in (before.bookmark, mine) if t is not None), default=None)
            inputs.states[source_id] = replace(
                before,
                bookmark=bookmark,  # type: ignore[arg-type]
                retry_at=result.retry_at,
                stopped=before.stopped or result.stopped_reason is not None,
            )
        if result.gap_window:
            for source_id in result.source_ids:
                inputs.gaps.pop(source_id, None)


def collect_once(
    store: Store,
    box: SecretBox,
    context: ProviderContext,
    now: datetime,
    only: set[GroupKey] | None = None,
    spool: Spool | None = None,
) -> PassReport:
    """One pass by a short-lived `Collection` (the CLI's `--once`, tests)."""
    return Collection(store, box, context, spool).run(now, only)


def apply_pass(con: duckdb.DuckDBPyConnection, results: list[GroupResult], now: datetime) -> int:
    """Everything a pass writes, inside the caller's transaction: readings, rollups, run rows, source states, gap
    attempts. Used for a pass written at once and for one coming out of the spool. Returns readings written."""
    states = _states(con)
    written_total = 0
    for result in results:
        for source_id in result.source_ids:
            mine = None if result.batch is None else result.batch.filter(pl.col("source_id") == source_id)
            written = ingest(con, mine, now) if mine is not None and mine.height else 0
            written_total += written
            _record(con, source_id, result, mine, written, now, states.get(source_id))
        _refresh_rollups(con, result.batch)
        write_exchanges(con, result.source_ids[0], result.exchanges)
        if result.gap_window:
            record_attempt(con, result.source_ids, *result.gap_window, now)
    return written_total


def _refresh_rollups(con: duckdb.DuckDBPyConnection, batch: pl.DataFrame | None) -> None:
    """Rebuild the rollup buckets this batch touched, in the same transaction as the readings."""
    if batch is None or batch.height == 0:
        return
    span = batch.select(
        pl.col("ts").min().alias("start"),
        (pl.col("ts") + pl.duration(seconds=pl.col("interval_s"))).max().alias("end"),
    ).row(0)
    rollups.refresh(con, batch["source_id"].unique().to_list(), span[0], span[1])


def _log_transition(key: GroupKey, result: GroupResult, states: list[SourceState | None]) -> None:
    """Log changes of health, not every failure: the first failure at WARNING, the recovery at INFO."""
    failures_before = max((state.failures for state in states if state is not None), default=0)
    if result.outcome != "ok" and failures_before == 0:
        log.warning("%s/%s is failing (%s): %s", *key, result.outcome, result.error)
    elif result.outcome == "ok" and failures_before:
        log.info("%s/%s recovered after %d failed poll(s)", *key, failures_before)


def _record(
    con: duckdb.DuckDBPyConnection,
    source_id: int,
    result: GroupResult,
    batch: pl.DataFrame | None,
    written: int,
    now: datetime,
    before: SourceState | None,
) -> None:
    """The source's `collector_runs` row and its state: bookmark, failures, backoff and circuit, why it stopped."""
    con.execute(
        "INSERT INTO collector_runs (source_id, provider, started_at, duration_ms, outcome, http_status, error,"
        " rows_written, quota_used, quota_remaining) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            source_id,
            result.provider,
            result.started_at,
            result.duration_ms,
            result.outcome,
            result.http_status,
            result.error,
            written,
            result.quota_used,
            result.quota_remaining,
        ],
    )
    finals = batch.filter(pl.col("is_final")) if batch is not None else None
    newest_final = finals["ts"].max() if finals is not None and finals.height else None
    failures, circuit, next_due = next_health(
        result.outcome, before.failures if before else 0, now, random.uniform(0.8, 1.2)
    )
    if circuit == "open" and (before is None or before.circuit != "open"):
        log.warning("source %s: circuit opened after %d failures; next probe at %s", source_id, failures, next_due)
    con.execute(
        "INSERT INTO source_state (source_id, bookmark_ts, consecutive_failures, circuit, next_due_at, retry_at,"
        " stopped_reason, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source_id) DO UPDATE SET"
        " bookmark_ts = coalesce(greatest(source_state.bookmark_ts, excluded.bookmark_ts),"
        " source_state.bookmark_ts, excluded.bookmark_ts),"
        " consecutive_failures = excluded.consecutive_failures, circuit = excluded.circuit,"
        " next_due_at = excluded.next_due_at, retry_at = excluded.retry_at,"
        " stopped_reason = excluded.stopped_reason, updated_at = excluded.updated_at",
        [source_id, newest_final, failures, circuit, next_due, result.retry_at, result.stopped_reason, now],
    )


def backfill(
    store: Store,
    box: SecretBox,
    context: ProviderContext,
    source_id: int,
    start: datetime,
    end: datetime,
    now: datetime,
    progress: Callable[[int, int, int], None] | None = None,
) -> int:
    """Fill [start, end) for a source, window by window (the vendor's longest), oldest first.

    Every source reading the same vendor site is filled too: the calls are the same. Each window is written in
    its own transaction, so an interrupted backfill keeps what it fetched; re-running it duplicates nothing.
    `progress(done, total, rows)` is called after each window. Returns the readings written.
    """
    inputs = read_inputs(store, box, now)
    catalog = inputs.catalog
    source = catalog.source(source_id)
    site_id = catalog.meter(source.meter_id).site_id
    sources = next(g for k, g in group_by_provider_site(catalog).items() if k == provider_site_key(source, site_id))
    client = _client_for(inputs, context, sources)
    written = 0
    try:
        windows = split_windows(start, min(end, now), client.max_window)
        for done, (lower, upper) in enumerate(windows, start=1):
            batch = _fan_out(catalog, sources, client.history(lower, upper), now)
            with store.transaction() as con:
                written += ingest(con, batch, now) if batch.height else 0
                _refresh_rollups(con, batch)
            if progress:
                progress(done, len(windows), written)
    finally:
        client.close()
    return written
