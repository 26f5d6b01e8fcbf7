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
- A pass that cannot be written because an outside program holds the file, or the file system refuses it (disk
  full, read-only), goes to the spool (`core.spool`) and is written, in order, once the file is free. When the
  spool cannot be written either (it sits on the same full disk), the pass waits in memory, up to
  `MAX_PASSES_IN_MEMORY`; past that polling pauses (the bookmarks did not move, so nothing is skipped).
- Failures are sorted by the provider error tree (`core.source_health`): auth errors and retired APIs stop the
  group until its configuration changes; rate limits wait until `retry_at`; others count towards the circuit.
  Credentials our own keys cannot decrypt stop nothing: the key, once restored, is the cure (`core.crypto`).

What a pass writes is in `core.pass_write`; what one poll produced in `core.poll_result`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
from pydantic import SecretStr

from core import catalog as cat
from core.crypto import SecretBox
from core.gaps import oldest_gaps
from core.models import Category, Source
from core.pass_write import apply_entry, apply_pass, pass_readings, refresh_rollups
from core.poll_result import GroupResult, PassReport, newest_finals
from core.providers.base import (
    ApiRetired,
    AuthError,
    BadResponse,
    MonitoringProvider,
    ProviderError,
    RateLimited,
    split_windows,
)
from core.providers.channels import channel_for, group_by_provider_site, provider_site_key
from core.providers.context import ProviderContext
from core.providers.registry import ConnectionRequest, build_client
from core.readings_store import ingest, to_batches
from core.secret_store import read_all_secrets
from core.source_health import GroupKey, SourceState, log_transition, read_states, sits_out
from core.spool import Spool, SpoolEntry
from core.store import Store, StoreError, StoreFault, StoreUnavailable, fault_cause

log = logging.getLogger(__name__)

RELOOK = timedelta(hours=2)
SETTLE = timedelta(hours=1)
FIRST_BACKFILL = timedelta(days=1)
MAX_WINDOW_PER_PASS = timedelta(days=7)
# A provider without a vendor quota (the simulator) costs nothing to read, so it starts a month back in one pass:
# a newcomer's demo site has a month of history within a minute of `make run`.
UNMETERED_BACKFILL = timedelta(days=31)
GAP_RESERVE = 0.2  # gap fills leave this share of a vendor budget to the regular polls
READ_WAIT_S = 2.0  # how long a collector pass waits to read before going on with the inputs it read last
# Passes neither the database nor the spool could take wait in memory; a 15-minute pass of a large fleet is a few
# MB, so this bounds the memory at a day of passes at the slowest schedule. Past it, polling pauses.
MAX_PASSES_IN_MEMORY = 100
IN_MEMORY = "memory-"  # the name prefix of a pass waiting in memory


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
        states = read_states(con)
        secrets, unreadable = read_all_secrets(con, box)
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


def window_for(
    sources: list[Source], bookmarks: dict[int, datetime], now: datetime, *, unmetered: bool = False
) -> tuple[datetime, datetime]:
    """From the oldest bookmark of the group (minus RELOOK) to now, at most MAX_WINDOW_PER_PASS long; a source
    without a bookmark starts FIRST_BACKFILL back (UNMETERED_BACKFILL, in one pass, for a provider without a
    vendor quota)."""
    new = [s for s in sources if s.id not in bookmarks]
    first = UNMETERED_BACKFILL if unmetered else FIRST_BACKFILL
    starts = [bookmarks[s.id] - RELOOK for s in sources if s.id in bookmarks] + [now - first for _ in new[:1]]
    start = min(starts)
    # Only a first backfill of an unmetered group reads its month in one pass; catching up after downtime stays at
    # MAX_WINDOW_PER_PASS a pass, so no pass holds the file for a month of a whole fleet's readings.
    longest = UNMETERED_BACKFILL if unmetered and new else MAX_WINDOW_PER_PASS
    end = min(now, start + longest)
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


class CredentialsUnreadable(ProviderError):
    """Our keys cannot decrypt the stored credentials (a key file lost or damaged): not the vendor's refusal, so
    the source is not stopped; it fails each turn without a vendor call and resumes once the key is back."""


def _client_for(inputs: PassInputs, context: ProviderContext, sources: list[Source]) -> MonitoringProvider:
    """The client of the vendor site these sources read (their first source's credentials)."""
    catalog = inputs.catalog
    first = sources[0]
    if first.id in inputs.unreadable:
        raise CredentialsUnreadable(inputs.unreadable[first.id])
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
    """One vendor answer split into each source's channel (one join, however many sources), as ingest batches."""
    targets = pl.DataFrame(
        {
            "channel": [channel_for(catalog.meter(s.meter_id).category, s.source_type) for s in sources],
            "source_id": [s.id for s in sources],
        },
        schema={"channel": answer.schema["channel"], "source_id": pl.Int64},
    )
    return to_batches(answer.join(targets, on="channel"), now, final_before=now - SETTLE)


def _poll_group(inputs: PassInputs, context: ProviderContext, sources: list[Source], now: datetime) -> GroupResult:
    result = GroupResult([s.id for s in sources], sources[0].api.api_provider.value, now)
    bookmarks = {sid: st.bookmark for sid, st in inputs.states.items() if st.bookmark is not None}
    started = time.perf_counter()
    try:
        client = _client_for(inputs, context, sources)
        try:
            start, end = window_for(sources, bookmarks, now, unmetered=not client.quota_rules)
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
    except CredentialsUnreadable as exc:
        result.outcome, result.error = "auth_error", str(exc)  # no stop: restoring the key is the cure
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
        self._held_since: datetime | None = None  # logging a hold once when it starts and once when it ends
        self._fault: str | None = None  # the file-system fault of the current episode, logged once when it starts
        self._in_memory: list[SpoolEntry] = []  # passes the spool could not take either, oldest first
        self._keys_notice: str | None = None  # the keys' one line (core.crypto), logged when it changes
        self._keys_lock = threading.Lock()

    def note_held(self) -> None:
        if self._held_since is None:
            self._held_since = datetime.now(UTC)
            log.warning(
                "another program holds the database: polling goes on with the configuration read last, and what"
                " cannot be written waits in the spool (%s)",
                self.spool.directory if self.spool else "no spool: passes fail",
            )

    def note_fault(self, fault: StoreFault) -> None:
        """One ERROR per episode (a new cause starts a new one); the traceback only at DEBUG."""
        if self._fault != fault.cause:
            self._fault = fault.cause
            log.error(
                "cannot write %s: %s; polling goes on, what is fetched waits in the spool (in memory when the spool"
                " cannot be written either) and is written within a minute of the fault going away",
                fault.path,
                fault.cause,
            )

    def note_unavailable(self, exc: StoreUnavailable) -> None:
        if isinstance(exc, StoreFault):
            self.note_fault(exc)
        else:
            self.note_held()

    def note_free(self) -> None:
        """A write went through: a hold or a fault, if one was going on, is over (logged once)."""
        if self._held_since is not None:
            held_for = datetime.now(UTC) - self._held_since
            self._held_since = None
            log.info("the database is free again after %d s", held_for.total_seconds())
        if self._fault is not None:
            log.info("the database can be written again (after: %s)", self._fault)
            self._fault = None

    def _note_keys(self, inputs: PassInputs) -> None:
        """Stored credentials that cannot be decrypted (or no usable key): one WARNING when this starts or its line
        changes, one INFO when it is over; never once per pass."""
        notice = self.box.notice(len(inputs.unreadable))
        with self._keys_lock:
            if notice == self._keys_notice:
                return
            before, self._keys_notice = self._keys_notice, notice
        if notice is not None:
            log.warning("%s Sources without stored credentials go on being collected.", notice)
        elif before is not None:
            log.info("the stored credentials can be decrypted again: their sources are polled at their next turn")

    def inputs(self, now: datetime, only: set[GroupKey] | None = None) -> PassInputs:
        self.box.refresh()  # a key file restored (or, with no credential stored, created) since the last pass
        try:
            fresh = read_inputs(self.store, self.box, now, timeout_s=READ_WAIT_S if self.spool else None, only=only)
        except StoreUnavailable as exc:
            if self.spool is None or self._inputs is None:
                raise
            self.note_unavailable(exc)
            return self._inputs
        self._inputs = fresh
        return fresh

    def run(self, now: datetime, only: set[GroupKey] | None = None) -> PassReport:
        """Poll every enabled vendor site (or those in `only`) once and store what came back, in one transaction."""
        self.drain()
        inputs = self.inputs(now, only)
        self._note_keys(inputs)
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
            if sources[0].id not in inputs.unreadable:  # those are said once by `_note_keys`, not once per site
                log_transition(key, result, [inputs.states.get(s.id) for s in sources])
            report.results.append(result)
        self._write(report, inputs, now)
        log.info("collection pass: %s", report.summary())
        return report

    def _write(self, report: PassReport, inputs: PassInputs, now: datetime) -> None:
        readings = pass_readings(report.results)
        newest = newest_finals(readings)
        with self._write_lock:  # so a pass cannot overtake an older one on its way into the spool
            if self.spool is not None and (self._in_memory or self._spool_pending()):
                report.spooled = self._hold(_spool_meta(report.results, now), readings)
            else:
                try:
                    with self.store.transaction() as con:
                        report.rows_written = apply_pass(con, report.results, readings, newest, now)
                    self.note_free()
                except StoreUnavailable as exc:
                    if self.spool is None:
                        raise
                    self.note_unavailable(exc)
                    report.spooled = self._hold(_spool_meta(report.results, now), readings)
            if report.spooled:
                report.why_spooled = self._fault or "database held"
        # The kept inputs move on too, so a pass that must fall back on them starts where this one ended.
        _advance(inputs, report.results, newest)

    def _spool_pending(self) -> bool:
        """Whether the spool holds entries; a spool folder that cannot be listed is a fault, reported once."""
        assert self.spool is not None
        try:
            return bool(self.spool.pending())
        except OSError as exc:
            self.note_fault(StoreFault(self.spool.directory, fault_cause(exc) or str(exc)))
            return False

    def _hold(self, meta: dict[str, Any], readings: pl.DataFrame) -> str:
        """Keep a pass the database cannot take now: in the spool, else (full or read-only disk) in memory."""
        assert self.spool is not None
        if not self._in_memory:  # once passes wait in memory, later ones queue behind them there
            try:
                return self.spool.put(meta, readings)
            except (OSError, pl.exceptions.PolarsError) as exc:  # Polars reports a full disk as a ComputeError
                self.note_fault(StoreFault(self.spool.directory, fault_cause(exc) or str(exc).splitlines()[0]))
        if len(self._in_memory) >= MAX_PASSES_IN_MEMORY:
            raise StoreFault(
                self.spool.directory,
                f"{len(self._in_memory)} passes already wait in memory for the disk: polling pauses until it works",
            )
        entry = SpoolEntry(f"{IN_MEMORY}{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}", meta, readings)
        self._in_memory.append(entry)
        return entry.name

    def drain(self) -> int:
        """Write what the spool (and memory) holds, if the file is free; returns the readings written."""
        if self.spool is None or not (self._in_memory or self._spool_pending()):
            return 0
        if not self._drain_lock.acquire(blocking=False):
            return 0
        try:
            with self._write_lock:
                _, rows = self.spool.drain(self.store, apply_entry, timeout_s=READ_WAIT_S)
                # Passes in memory are younger than any entry of the spool: they came once it could not be written.
                while self._in_memory:
                    with self.store.transaction(timeout_s=READ_WAIT_S) as con:
                        rows += apply_entry(con, self._in_memory[0])
                    self._in_memory.pop(0)
            self.note_free()
            return rows
        except StoreUnavailable as exc:
            self.note_unavailable(exc)
            return 0
        except OSError as exc:  # the spool's folder itself (removing an applied entry on a read-only disk)
            self.note_fault(StoreFault(self.spool.directory, fault_cause(exc) or str(exc)))
            return 0
        finally:
            self._drain_lock.release()


def _spool_meta(results: list[GroupResult], now: datetime) -> dict[str, Any]:
    """Everything of a pass but its readings, for a spool entry (`core.pass_write.apply_entry` reads it back)."""
    return {"now": now.isoformat(), "results": [r.to_json() for r in results]}


def _advance(inputs: PassInputs, results: list[GroupResult], newest: dict[int, datetime]) -> None:
    """Move the kept inputs on as if the pass had been written (`newest`: its `newest_finals`): the next pass
    starts where it ended."""
    for result in results:
        for source_id in result.source_ids:
            before = inputs.states.get(source_id, SourceState(None, None, False))
            mine = newest.get(source_id)
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
                refresh_rollups(con, batch)
            if progress:
                progress(done, len(windows), written)
    finally:
        client.close()
    return written
