"""One collection pass: poll each vendor site once, fan its answer out to the sources it feeds, write everything
in one transaction. The scheduling around it (which groups are due, workers, signals) lives in `jobs.collector`.

Rules, each for a reason:
- One call per vendor site per pass, whatever the number of sources it feeds (quotas are per site and key).
- Windows, re-reads and gap fills: `core.collect.pass_inputs`.
- A pass that cannot be written because an outside program holds the file, or the file system refuses it (disk
  full, read-only), is held (`core.store.held_passes`: the spool, else memory) and written, in order, once the file can
  be written. A vendor call whose budget cannot be counted (the same faults) is not made: the group waits.
- Failures are sorted by the provider error tree (`core.collect.source_health`): auth errors and retired APIs stop the
  group until its configuration changes; rate limits wait until `retry_at`; others count towards the circuit.
  Credentials our own keys cannot decrypt stop nothing: the key, once restored, is the cure (`core.store.crypto`).

What a pass writes is in `core.collect.pass_write`; what one poll produced in `core.collect.poll_result`.

Group commit: a poll hands its pass to the collection's writer (`core.collect.group_writer`), which writes every pass
queued in one transaction, at most about once a second and at once when idle, so the file is held once a second
however many vendor sites were polled in it. `run` waits for its pass to be written (the CLI's `--once`, tests);
the collector's polls (`poll`) do not, and share one read of the inputs, kept current by the writes (`inputs`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

import polars as pl
from pydantic import SecretStr

from core.cadence import SETTLE
from core.catalog import catalog as cat
from core.catalog.vendor_sites import group_by_provider_site, provider_site_key
from core.collect.group_writer import GAP_S, GroupWriter
from core.collect.pass_inputs import (
    GAP_RESERVE,
    READ_WAIT_S,
    PassInputs,
    carry_bookmarks,
    gap_window,
    read_inputs,
    window_for,
)
from core.collect.pass_write import apply_entry, apply_pass_per_source, pass_readings, refresh_rollups
from core.collect.poll_result import GroupResult, PassReport, newest_finals
from core.collect.source_health import GroupKey, log_transition, sits_out
from core.models import Category, Source
from core.providers.base import (
    ApiRetired,
    AuthError,
    BadResponse,
    MonitoringProvider,
    ProviderError,
    RateLimited,
    RecordsExchanges,
    split_windows,
)
from core.providers.context import ProviderContext
from core.providers.registry import build_client
from core.providers.spec import ConnectionRequest
from core.roles import channel_for
from core.store.change_marks import ChangeMarks
from core.store.crypto import SecretBox
from core.store.exchange_archive import write_exchanges
from core.store.held_passes import MEMORY_CAPACITY, HeldPasses
from core.store.readings_store import ingest, to_batches
from core.store.source_state import SourceState, read_states
from core.store.spool import Spool
from core.store.store import Store, StoreError, StoreUnavailable
from core.store.store_episodes import StoreEpisodes

log = logging.getLogger(__name__)
PAUSED = "the passes held in memory must be written first"
# Polls that share inputs (the collector's) reuse the last read for at most this long: one read of the whole fleet
# now and then instead of one per poll (a read of a large catalog holds the file for most of a second). Each write
# moves the kept states of the sources it wrote to what it stored, so only changes made elsewhere (the dashboard's,
# a CLI's) wait for the next read; the collector also asks for one at its every-minute sync (`forget_inputs`).
INPUTS_MAX_AGE_S = 10.0
# The holes those polls re-read (core.collect.gaps) are looked for in the whole fleet at most this often: the
# search reads a month of rollups, and a hole waits for its site's next poll anyway (minutes at least).
GAPS_MAX_AGE_S = 60.0


def _spare_budget(client: MonitoringProvider, now: datetime) -> bool:
    """Gap fills use only budget the regular polls leave: none when less than GAP_RESERVE of it remains."""
    if not isinstance(client, RecordsExchanges):
        return True
    try:
        used, remaining = client.quota_snapshot(now)
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
    first = sources[0]
    if first.id in inputs.unreadable:
        raise CredentialsUnreadable(inputs.unreadable[first.id])
    request = request_for(inputs.catalog, sources, inputs.secrets.get(first.id, {}), inputs.outage_days)
    return build_client(request, context)


def request_for(
    catalog: cat.Catalog,
    sources: list[Source],
    secrets: dict[str, SecretStr],
    outage_days: dict[int, frozenset[date]] | None = None,
) -> ConnectionRequest:
    """What a client of the vendor site these sources read is built from (their first source's settings and
    `secrets`, the credentials it reads)."""
    first = sources[0]
    site = catalog.site(catalog.meter(first.meter_id).site_id)
    prod_meters = catalog.meters_of(site.id, Category.PROD)
    pv_capacity = sum(s.capacity_kw for m in prod_meters for s in catalog.sources_of(m.id))
    return ConnectionRequest(
        provider=first.api.api_provider,
        site=site,
        pv_capacity_kw=pv_capacity or 10.0,
        system_id=first.api.system_id,
        client_id=first.api.client_id,
        secrets=secrets,
        source_id=first.id,
        # Only the endpoints these sources need: the quota planner (core.catalog.quota_plan) counts the same calls.
        channels=frozenset(source_channels(catalog, sources).values()),
        outage_days=(outage_days or {}).get(site.id, frozenset()),
    )


def source_channels(catalog: cat.Catalog, sources: list[Source]) -> dict[int, str]:
    """Source id -> the channel it reads (`core.roles.channel_for`); a type no role covers reads none."""
    found = {s.id: channel_for(catalog.meter(s.meter_id).category, s.source_type) for s in sources}
    return {source_id: channel for source_id, channel in found.items() if channel is not None}


def _fan_out(catalog: cat.Catalog, sources: list[Source], answer: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """One vendor answer split into each source's channel (one join, however many sources), as ingest batches."""
    channels = source_channels(catalog, sources)
    targets = pl.DataFrame(
        {"channel": list(channels.values()), "source_id": list(channels)},
        schema={"channel": answer.schema["channel"], "source_id": pl.Int64},
    )
    return to_batches(answer.join(targets, on="channel"), now, final_before=now - SETTLE)


def _poll_group(inputs: PassInputs, context: ProviderContext, sources: list[Source], now: datetime) -> GroupResult:
    result = GroupResult([s.id for s in sources], sources[0].api.api_provider.value, now)
    bookmarks = {sid: st.bookmark for sid, st in inputs.states.items() if st.bookmark is not None}
    started = time.perf_counter()
    try:
        client = _client_for(inputs, context, sources)
        # One poll: once its first call is made, its other calls wait their turn rather than throw that one away.
        with context.ledger.one_poll():
            try:
                start, end = window_for(sources, bookmarks, now, unmetered=not client.quota_rules)
                answer = client.history(start, end)
                gap = _fill_gap(client, sources, inputs.gaps, start, now)
                if gap:
                    answer, result.gap_window = _with_gap(client, gap, answer)
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


def _with_gap(
    client: MonitoringProvider, gap: tuple[datetime, datetime], answer: pl.DataFrame
) -> tuple[pl.DataFrame, tuple[datetime, datetime] | None]:
    """The poll's answer with the gap's re-read before it, and the window re-read. A gap the budget cannot take
    now stays a gap for a later poll (no attempt is recorded): not a reason to throw the poll's own answer away."""
    try:
        return pl.concat([client.history(*gap), answer]), gap
    except RateLimited as exc:
        log.info("gap re-read put off: %s", exc)
        return answer, None


def _note_calls(client: MonitoringProvider, result: GroupResult, now: datetime) -> None:
    """The raw calls, the last HTTP status and the budget position, for `api_data_cache` and `collector_runs`.
    (The simulator makes no vendor calls and has none of these.)"""
    if not isinstance(client, RecordsExchanges):
        return
    result.exchanges = client.exchanges()
    result.http_status = result.exchanges[-1].http_status if result.exchanges else None
    with contextlib.suppress(StoreError):  # the position is informative; a held file must not fail the poll
        result.quota_used, result.quota_remaining = client.quota_snapshot(now)


def _fill_gap(
    client: MonitoringProvider, sources: list[Source], gaps: dict[int, datetime], before: datetime, now: datetime
) -> tuple[datetime, datetime] | None:
    window = gap_window(sources, gaps, before, client.max_window)
    if window is None or not _spare_budget(client, now):
        return None
    log.info("re-reading a gap for %s: %s to %s", [s.id for s in sources], *window)
    return window


@dataclass
class _Pass:
    """A polled pass on its way to the writer."""

    report: PassReport
    inputs: PassInputs
    now: datetime


def _claims(polled: _Pass) -> frozenset[Hashable]:
    """What a pass writes: its sources (two passes of one source never share a commit)."""
    return frozenset(i for r in polled.report.results for i in r.source_ids)


class Collection:
    """Collection passes of one process: polls, then their passes written by one writer thread, several in one
    transaction (`core.collect.group_writer`); what the database cannot take now is held
    (`core.store.held_passes`) and written, in order, once it can.

    The last inputs read are kept, so passes go on (against them) while an outside program holds the file.
    `memory_capacity` bounds the passes held in memory when the spool cannot be written either (0: none, for a
    one-shot process whose memory ends with it). `commit_gap_s`: at most one commit per this many seconds.
    Call `close` when done: it writes what is queued.
    """

    def __init__(
        self,
        store: Store,
        box: SecretBox,
        context: ProviderContext,
        spool: Spool | None = None,
        *,
        memory_capacity: int = MEMORY_CAPACITY,
        commit_gap_s: float = GAP_S,
    ) -> None:
        self.store, self.box, self.context, self.spool = store, box, context, spool
        self.episodes = StoreEpisodes(store, spool.directory if spool else None)
        self.held = HeldPasses(spool, self.episodes, memory_capacity) if spool else None
        self.marks = ChangeMarks(store.path)
        self.writer: GroupWriter[_Pass, PassReport] = GroupWriter(self._commit, _claims, gap_s=commit_gap_s)
        self._inputs: PassInputs | None = None
        self._inputs_lock = threading.Lock()  # one read at a time; polls arriving meanwhile use its result
        self._inputs_read_at = float("-inf")  # monotonic
        self._gaps_read_at = float("-inf")  # monotonic; when the kept inputs' gaps were looked for fleet-wide
        self._kept_lock = threading.Lock()  # replacing the kept inputs vs moving them on after a write
        self._drain_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._keys_notice: str | None = None  # the keys' one line (core.store.crypto), logged when it changes
        self._keys_lock = threading.Lock()

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

    def inputs(self, now: datetime, only: set[GroupKey] | None = None, *, shared: bool = False) -> PassInputs:
        """What a pass reads first. `shared` (the collector's polls): the kept inputs of the whole fleet, read
        again only when older than `INPUTS_MAX_AGE_S` (or forgotten); else a read of its own, as a full pass
        (`--once`) or a test wants."""
        with self._inputs_lock:
            kept = self._inputs
            if shared and kept is not None and time.monotonic() - self._inputs_read_at < INPUTS_MAX_AGE_S:
                return kept
            find_gaps = not shared or kept is None or time.monotonic() - self._gaps_read_at >= GAPS_MAX_AGE_S
            self.box.refresh()  # a key file restored (or, with no credential stored, created) since the last pass
            try:
                fresh = read_inputs(
                    self.store,
                    self.box,
                    now,
                    timeout_s=READ_WAIT_S if self.spool else None,
                    only=None if shared else only,
                    find_gaps=find_gaps,
                )
            except StoreUnavailable as exc:
                if self.spool is None or kept is None:
                    raise
                self.episodes.unavailable(exc)
                # Polls arriving within the next second go on with the kept inputs instead of each waiting again.
                self._inputs_read_at = time.monotonic() - INPUTS_MAX_AGE_S + 1.0
                return kept
            if find_gaps:  # of the whole fleet, unless a pass of its own looked in a few groups only
                self._gaps_read_at = time.monotonic() if shared or only is None else float("-inf")
            waiting = self.writer.pending() or (self.held is not None and self.held.waiting())
            with self._kept_lock:  # the writer's `_advance` sees either the kept inputs or these, never half of both
                kept = self._inputs
                if kept is not None and not find_gaps:
                    fresh.gaps = dict(kept.gaps)  # as the writes since left them (`_advance`)
                if kept is not None and waiting:
                    carry_bookmarks(fresh, kept)
                self._inputs, self._inputs_read_at = fresh, time.monotonic()
            return fresh

    def forget_inputs(self) -> None:
        """The next shared poll reads the inputs again (the configuration may have changed)."""
        self._inputs_read_at = float("-inf")

    def run(self, now: datetime, only: set[GroupKey] | None = None) -> PassReport:
        """Poll every enabled vendor site (or those in `only`) once and store what came back, waiting until it is
        written (with whatever other passes the writer groups it with) or held. Groups that cannot be polled now
        (memory full of held passes, a vendor budget that cannot be counted) are in the report's `deferred`: the
        collector tries them again within a minute."""
        return self.poll(now, only)[1].result()

    def poll(
        self, now: datetime, only: set[GroupKey] | None = None, *, shared_inputs: bool = False
    ) -> tuple[PassReport, Future[PassReport]]:
        """`run` without waiting for the write: the report (its results and `deferred` are final) and a future
        done once the writer has written or held it. `shared_inputs`: see `inputs`."""
        self.drain()
        inputs = self.inputs(now, only, shared=shared_inputs)
        self._note_keys(inputs)
        report = PassReport()
        paused = self.held is not None and self.held.full()
        for key, sources in group_by_provider_site(inputs.catalog).items():
            if only is not None and key not in only:
                continue
            reason = (
                "the passes held in memory must be written first" if paused else sits_out(sources, inputs.states, now)
            )
            if reason:
                log.debug("%s/%s sits this pass out: %s", *key, reason)
                report.skipped += 1
                if paused:
                    report.deferred.append(key)
                continue
            try:
                result = _poll_group(inputs, self.context, sources, now)
            except StoreUnavailable as exc:  # its vendor budget cannot be counted: no call is made until it can
                self.episodes.unavailable(exc)
                report.skipped += 1
                report.deferred.append(key)
                continue
            if sources[0].id not in inputs.unreadable:  # those are said once by `_note_keys`, not once per site
                log_transition(key, result, [inputs.states.get(s.id) for s in sources])
            report.results.append(result)
        if report.results:
            return report, self.writer.submit(_Pass(report, inputs, now))
        log.debug("collection pass: %s", report.summary())
        done: Future[PassReport] = Future()
        done.set_result(report)
        return report, done

    def close(self, timeout_s: float | None = None) -> bool:
        """Write (or hold) every pass queued, then stop the writer; False when `timeout_s` ran out first."""
        return self.writer.close(timeout_s)

    def _commit(self, passes: Sequence[_Pass]) -> list[PassReport]:
        """The writer's commit: every queued pass in one transaction through `apply_pass` (one set of readings, one
        `newest_finals`), or, when the file cannot take them, held together as one pass."""
        results = [r for p in passes for r in p.report.results]
        now = max(p.now for p in passes)
        readings = pass_readings(results)
        newest = newest_finals(readings, results)
        stored: dict[int, SourceState] = {}  # the written sources' states as the file now has them
        with self._write_lock:  # so a pass cannot overtake an older one on its way into the spool
            if self.held is not None and self.held.waiting():
                self._hold(passes, results, readings, now)
            else:
                try:
                    with self.store.transaction() as con:
                        written = apply_pass_per_source(con, results, readings, newest, now)
                        stored = read_states(con, {i for r in results for i in r.source_ids})
                    self.episodes.free()
                except StoreUnavailable as exc:
                    if self.held is None:
                        raise
                    self.episodes.unavailable(exc)
                    self._hold(passes, results, readings, now)
                else:
                    self.marks.mark(i for i, rows in written.items() if rows)  # Live notices within a second or two
                    for p in passes:
                        p.report.rows_written = sum(written.get(i, 0) for r in p.report.results for i in r.source_ids)
        # The kept inputs move on too, so a pass that must fall back on them starts where this one ended.
        with self._kept_lock:
            kept = {id(inputs): inputs for inputs in (*(p.inputs for p in passes), self._inputs) if inputs is not None}
            for inputs in kept.values():
                _advance(inputs, results, newest, stored)
        for p in passes:
            log.info("collection pass: %s", p.report.summary())
        return [p.report for p in passes]

    def _hold(self, passes: Sequence[_Pass], results: list[GroupResult], readings: pl.DataFrame, now: datetime) -> None:
        assert self.held is not None
        held = self.held.hold(_spool_meta(results, now), readings)
        fault = self.episodes.fault
        for p in passes:
            p.report.spooled, p.report.in_memory = held.name, held.in_memory
            p.report.why_held = fault.cause if fault else "database held"

    def drain(self) -> int:
        """Write what is held, if the database can take it; returns the readings written."""
        if self.held is None or not self.held.waiting() or not self._drain_lock.acquire(blocking=False):
            return 0
        try:
            with self._write_lock:
                rows = self.held.drain(self.store, apply_entry, timeout_s=READ_WAIT_S)
            self.episodes.free()
            self.episodes.free(self.held.spool.directory)
            return rows
        except StoreUnavailable as exc:
            self.episodes.unavailable(exc)
            return 0
        finally:
            self._drain_lock.release()


def _spool_meta(results: list[GroupResult], now: datetime) -> dict[str, Any]:
    """Everything of a pass but its readings, for a spool entry (`core.collect.pass_write.apply_entry` reads it
    back)."""
    return {"now": now.isoformat(), "results": [r.to_json() for r in results]}


def _advance(
    inputs: PassInputs,
    results: list[GroupResult],
    newest: dict[int, datetime],
    stored: dict[int, SourceState] | None = None,
) -> None:
    """Move the kept inputs on as if the pass had been written (`newest`: its `newest_finals`): the next pass
    starts where it ended. When it was written, `stored` holds the states the file now has (failures, circuit,
    backoff), taken for its sources, with the bookmark never moved back. New dicts replace the old ones, so a poll
    reading the shared inputs meanwhile sees either."""
    states, gaps = dict(inputs.states), dict(inputs.gaps)
    for result in results:
        for source_id in result.source_ids:
            before = states.get(source_id, SourceState(None, None, False))
            mine = newest.get(source_id)
            bookmark = max((t for t in (before.bookmark, mine) if t is not None), default=None)
            if stored and source_id in stored:
                after = stored[source_id]
                bookmark = max((t for t in (bookmark, after.bookmark) if t is not None), default=None)
                states[source_id] = replace(after, bookmark=bookmark)  # type: ignore[arg-type]
                continue
            states[source_id] = replace(
                before,
                bookmark=bookmark,  # type: ignore[arg-type]
                retry_at=result.retry_at,
                stopped=before.stopped or result.stopped_reason is not None,
            )
        if result.gap_window:
            for source_id in result.source_ids:
                gaps.pop(source_id, None)
    inputs.states, inputs.gaps = states, gaps


def collect_once(
    store: Store,
    box: SecretBox,
    context: ProviderContext,
    now: datetime,
    only: set[GroupKey] | None = None,
    spool: Spool | None = None,
) -> PassReport:
    """One pass by a short-lived `Collection` (the CLI's `--once`, tests)."""
    collection = Collection(store, box, context, spool)
    try:
        return collection.run(now, only)
    finally:
        collection.close()


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
    its own transaction, with the vendor's answers archived in `api_data_cache` as a poll's are, so an interrupted
    backfill keeps what it fetched; re-running it duplicates nothing.
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
        recorded = client if isinstance(client, RecordsExchanges) else None  # the simulator makes no calls
        for done, (lower, upper) in enumerate(windows, start=1):
            batch = _fan_out(catalog, sources, client.history(lower, upper), now)
            with store.transaction() as con:
                written += ingest(con, batch, now) if batch.height else 0
                refresh_rollups(con, batch)
                if recorded is not None:  # every vendor answer is archived, a backfill's too
                    write_exchanges(con, sources[0].id, recorded.exchanges())
            if progress:
                progress(done, len(windows), written)
    finally:
        client.close()
    return written
