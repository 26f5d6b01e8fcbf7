"""One collection pass: poll each vendor site once, fan its answer out to the sources it feeds, write everything
in one transaction. The scheduling around it (which groups are due, workers, signals) lives in `jobs.collector`.

Rules, each for a reason:
- One call per vendor site per pass, whatever the number of sources it feeds (quotas are per site and key).
- The window re-reads `RELOOK` before the newest stored final interval, because vendors correct recent data late;
  intervals that end less than `SETTLE` ago are stored as not final and replaced when re-read.
- A source with no bookmark yet starts `FIRST_BACKFILL` back; longer gaps are the backfill job's (bounded per pass
  by `MAX_WINDOW_PER_PASS`, oldest first, so a long outage fills in order and never bursts the quota).
- Failures are sorted by the provider error tree: auth errors and retired APIs stop the group until its
  configuration changes; rate limits wait until `retry_at`; other failures count towards the circuit breaker.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb
import polars as pl
from pydantic import SecretStr

from core import catalog as cat
from core import rollups
from core.crypto import SecretBox
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
from core.providers.channels import group_by_provider_site, provider_site_key, readings_for
from core.providers.context import ProviderContext
from core.providers.registry import ConnectionRequest, build_client
from core.readings_store import ingest, to_batch
from core.secret_store import read_secrets
from core.store import Store

log = logging.getLogger(__name__)

GroupKey = tuple[str, str]  # (provider, vendor site id): see core.providers.channels.provider_site_key

RELOOK = timedelta(hours=2)
SETTLE = timedelta(hours=1)
FIRST_BACKFILL = timedelta(days=1)
MAX_WINDOW_PER_PASS = timedelta(days=7)


@dataclass
class GroupResult:
    sources: list[Source]
    provider: str
    started_at: datetime
    duration_ms: float = 0.0
    outcome: str = "ok"
    error: str | None = None
    retry_at: datetime | None = None
    stopped_reason: str | None = None
    batch: pl.DataFrame | None = None


@dataclass
class PassReport:
    results: list[GroupResult] = field(default_factory=list)
    rows_written: int = 0
    skipped: int = 0  # groups stopped or waiting for a rate limit to pass

    def summary(self) -> str:
        outcomes: dict[str, int] = {}
        for result in self.results:
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
        parts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items())) or "nothing due"
        skipped = f", {self.skipped} waiting or stopped" if self.skipped else ""
        return f"{len(self.results)} vendor site(s): {parts}{skipped}; {self.rows_written} reading(s) written"


@dataclass(frozen=True)
class SourceState:
    bookmark: datetime | None
    retry_at: datetime | None
    stopped: bool  # stopped for a reason (rejected key, retired API) that only a configuration change can cure
    failures: int = 0
    next_due_at: datetime | None = None  # backing off after transient failures, or the circuit is open
    circuit: str = "closed"


def _states(store: Store) -> dict[int, SourceState]:
    """Per source: bookmark, and whether it must sit this pass out. A stop holds until the source's settings or
    credentials change after it (their `updated_at` is newer than the state's)."""
    with store.connect(read_only=True) as con:
        rows = con.sql(
            "SELECT s.source_id, s.bookmark_ts, s.retry_at,"
            " s.stopped_reason IS NOT NULL AND s.updated_at >= greatest(e.updated_at,"
            " coalesce((SELECT max(updated_at) FROM source_secrets x WHERE x.source_id = s.source_id), e.updated_at)),"
            " s.consecutive_failures, s.next_due_at, s.circuit"
            " FROM source_state s JOIN energy_sources e ON e.id = s.source_id"
        ).fetchall()
    return {int(r[0]): SourceState(r[1], r[2], bool(r[3]), int(r[4]), r[5], str(r[6])) for r in rows}


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


def _client_for(
    store: Store, box: SecretBox, catalog: cat.Catalog, context: ProviderContext, sources: list[Source]
) -> MonitoringProvider:
    """The client of the vendor site these sources read (their first source's credentials)."""
    first = sources[0]
    site = catalog.site(catalog.meter(first.meter_id).site_id)
    with store.connect(read_only=True) as con:
        secrets: dict[str, SecretStr] = read_secrets(con, box, first.id)
    prod_meters = catalog.meters_of(site.id, Category.PROD)
    pv_capacity = sum(s.capacity_kw for m in prod_meters for s in catalog.sources_of(m.id))
    request = ConnectionRequest(
        provider=first.api.api_provider,
        site=site,
        pv_capacity_kw=pv_capacity or 10.0,
        system_id=first.api.system_id,
        client_id=first.api.client_id,
        secrets=secrets,
        source_id=first.id,
    )
    return build_client(request, context)


def _fan_out(catalog: cat.Catalog, sources: list[Source], answer: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """One vendor answer split into each source's channel, as ingest batches."""
    batches = []
    for source in sources:
        mine = readings_for(answer, catalog.meter(source.meter_id).category, source.source_type)
        batches.append(to_batch(source.id, mine, now, final_before=now - SETTLE))
    return pl.concat(batches)


def _poll_group(
    store: Store,
    box: SecretBox,
    catalog: cat.Catalog,
    context: ProviderContext,
    sources: list[Source],
    bookmarks: dict[int, datetime],
    now: datetime,
) -> GroupResult:
    result = GroupResult(sources, sources[0].api.api_provider.value, now)
    started = time.perf_counter()
    try:
        client = _client_for(store, box, catalog, context, sources)
        try:
            start, end = window_for(sources, bookmarks, now)
            answer = client.history(start, end)
        finally:
            client.close()
        result.batch = _fan_out(catalog, sources, answer, now)
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


def collect_once(
    store: Store, box: SecretBox, context: ProviderContext, now: datetime, only: set[GroupKey] | None = None
) -> PassReport:
    """Poll every enabled vendor site (or those in `only`) once and store what came back, in one transaction."""
    catalog = cat.load_catalog(store)
    states = _states(store)
    bookmarks = {source_id: st.bookmark for source_id, st in states.items() if st.bookmark is not None}
    report = PassReport()
    for key, sources in group_by_provider_site(catalog).items():
        if only is not None and key not in only:
            continue
        reason = sits_out(sources, states, now)
        if reason:
            log.debug("%s/%s sits this pass out: %s", *key, reason)
            report.skipped += 1
            continue
        result = _poll_group(store, box, catalog, context, sources, bookmarks, now)
        _log_transition(key, result, [states.get(s.id) for s in sources])
        report.results.append(result)
    with store.transaction() as con:
        for result in report.results:
            for source in result.sources:
                mine = None if result.batch is None else result.batch.filter(pl.col("source_id") == source.id)
                written = ingest(con, mine, now) if mine is not None and mine.height else 0
                report.rows_written += written
                _record(con, source, result, mine, written, now, states.get(source.id))
            _refresh_rollups(con, result.batch)
    log.info("collection pass: %s", report.summary())
    return report


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
    source: Source,
    result: GroupResult,
    batch: pl.DataFrame | None,
    written: int,
    now: datetime,
    before: SourceState | None,
) -> None:
    """The source's `collector_runs` row and its state: bookmark, failures, backoff and circuit, why it stopped."""
    con.execute(
        "INSERT INTO collector_runs (source_id, provider, started_at, duration_ms, outcome, error, rows_written)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [source.id, result.provider, result.started_at, result.duration_ms, result.outcome, result.error, written],
    )
    finals = batch.filter(pl.col("is_final")) if batch is not None else None
    newest_final = finals["ts"].max() if finals is not None and finals.height else None
    failures, circuit, next_due = next_health(
        result.outcome, before.failures if before else 0, now, random.uniform(0.8, 1.2)
    )
    if circuit == "open" and (before is None or before.circuit != "open"):
        log.warning("source %s: circuit opened after %d failures; next probe at %s", source.id, failures, next_due)
    con.execute(
        "INSERT INTO source_state (source_id, bookmark_ts, consecutive_failures, circuit, next_due_at, retry_at,"
        " stopped_reason, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source_id) DO UPDATE SET"
        " bookmark_ts = coalesce(greatest(source_state.bookmark_ts, excluded.bookmark_ts),"
        " source_state.bookmark_ts, excluded.bookmark_ts),"
        " consecutive_failures = excluded.consecutive_failures, circuit = excluded.circuit,"
        " next_due_at = excluded.next_due_at, retry_at = excluded.retry_at,"
        " stopped_reason = excluded.stopped_reason, updated_at = excluded.updated_at",
        [source.id, newest_final, failures, circuit, next_due, result.retry_at, result.stopped_reason, now],
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
    catalog = cat.load_catalog(store)
    source = catalog.source(source_id)
    site_id = catalog.meter(source.meter_id).site_id
    sources = next(g for k, g in group_by_provider_site(catalog).items() if k == provider_site_key(source, site_id))
    client = _client_for(store, box, catalog, context, sources)
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
