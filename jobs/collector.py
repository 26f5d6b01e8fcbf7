"""The collector process: `python -m jobs.collector` (runs until SIGTERM/SIGINT), `--once` (one pass, then exit)
or `--backfill SOURCE --from DATE --to DATE` (fill a range, with a progress bar).

`schedule` only decides WHEN a vendor site is due; the polls run on a small thread pool, so a slow or failing
vendor never delays the others, and an in-flight set keeps one site from being polled twice at once (schedule
runs jobs in sequence and lets exceptions escape). The configuration is re-read every minute, so sources added,
changed or removed in the dashboard take effect without a restart.

The alert rules are evaluated over the whole fleet after polls, throttled: at most one evaluation starts per
ALERTS_MIN_GAP (a poll ending sooner marks one due, which the next tick runs), and at least one per ALERTS_FLOOR.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import schedule

from core.actors import COLLECTOR, set_process_actor
from core.analytics.alert_rules import Thresholds
from core.analytics.alerts import evaluate as evaluate_alerts
from core.cadence import jitter_minutes
from core.catalog import catalog as cat
from core.catalog.vendor_sites import group_by_provider_site
from core.collect.collection import Collection, backfill
from core.collect.mqtt_feed import TICK_S as MQTT_TICK_S
from core.collect.mqtt_feed import MqttFeed
from core.collect.pass_inputs import READ_WAIT_S
from core.collect.poll_result import GroupResult, PassReport
from core.collect.source_health import EARLY_RETRY_SLOWER_THAN, RETRIED_EARLY, GroupKey, early_retry
from core.collect.stream_feed import TICK_S as STREAM_TICK_S
from core.collect.stream_feed import StreamFeed
from core.config import Settings
from core.models import UpdateFrequency
from core.providers.base import JournalledLedger, ProviderError
from core.runtime import Runtime, open_runtime
from core.store.crypto import SecretsError
from core.store.held_passes import MEMORY_CAPACITY
from core.store.private_files import private_umask
from core.store.quarantine import report_lines
from core.store.retention import apply_retention
from core.store.source_state import read_states
from core.store.spool import Spool
from core.store.store import StoreBusy, StoreError, StoreFault, StoreUnavailable
from jobs.cli import DEBUG_HINT, CliError, settings_from_env

log = logging.getLogger("dataconn.collector")
# Polls ask for an evaluation of the alert rules over the whole fleet; at most one starts per ALERTS_MIN_GAP. One
# per poll would, with 100 vendor sites, mean evaluations back to back, each holding the database file (the
# dashboard's reads wait on it). A minute is well under the fastest update frequency (5 min), so alerts still
# follow the data within about a minute.
ALERTS_MIN_GAP = timedelta(seconds=60)
ALERTS_FLOOR = timedelta(minutes=15)  # the rules run at least this often, polls or not (imported data, no_data)
ALERTS_TICK_S = 5  # how often the main loop checks whether an evaluation is due


class PollPool(ThreadPoolExecutor):
    """The poll threads. A poll hands its pass to the collection's writer and ends without waiting for the write;
    shutting the pool down with `wait` finishes the polls in hand AND waits until their passes are written (or
    spooled), as it did when each poll wrote its own."""

    def __init__(self, workers: int, collection: Collection) -> None:
        super().__init__(max_workers=workers, thread_name_prefix="poll")
        self.collection = collection

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if wait:  # the passes handed over already, while what follows them (alerts) may still run on the pool
            self.collection.writer.flush()
        super().shutdown(wait, cancel_futures=cancel_futures)
        if wait:  # those of the polls that were still running
            self.collection.writer.flush()


class Collector:
    def __init__(
        self,
        runtime: Runtime,
        stop: threading.Event | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        mqtt_backoff: dict[str, int] | None = None,
        stream_options: dict[str, int] | None = None,
    ) -> None:
        mqtt_backoff = mqtt_backoff or {}
        self.runtime = runtime
        self.collection = collection_for(runtime)
        # MQTT sources: subscriptions held by this process, minutes written beside the passes (core.collect.mqtt_feed).
        self.mqtt = MqttFeed(
            runtime.store, runtime.box, Spool.beside(runtime.store.path), self.collection.episodes, **mqtt_backoff
        )
        # Enphase live streams, opened while someone watches a site on Live or on a schedule (core.collect.stream_feed).
        self.streams = StreamFeed(runtime.store, runtime.box, self.collection.context, **(stream_options or {}))
        self.scheduler = schedule.Scheduler()
        # Polls wait on vendors, not the CPU: many threads in flight (DATACONN_COLLECTOR_WORKERS, README "How many
        # polls in flight").
        self.executor = PollPool(runtime.settings.collector_workers, self.collection)
        self.in_flight: set[GroupKey] = set()
        self.lock = threading.Lock()
        self.intervals: dict[GroupKey, int] = {}
        # Groups whose last poll could not be kept anywhere (file-system fault): polled again at the next sync,
        # within a minute, instead of at their next slot.
        self.retry_soon: set[GroupKey] = set()
        # Slow groups whose poll just failed for a passing reason: polled again at that time, ahead of their slot
        # (core.collect.source_health.early_retry).
        self.retry_at: dict[GroupKey, datetime] = {}
        self.stop = stop or threading.Event()
        # Alert evaluations: a poll marks one due (`evaluate_alerts`), which runs at once if the last one started
        # ALERTS_MIN_GAP ago, else at the first tick (`alerts_tick`) after that; one at a time. `clock` is only for
        # this throttle (tests inject one).
        self.clock = clock
        self._alerts_lock = threading.Lock()
        self._alerts_due = False
        self._alerts_running = False
        self._alerts_started: datetime | None = None

    def dispatch(self, key: GroupKey) -> None:
        with self.lock:
            if key in self.in_flight:
                log.info("%s/%s is still being polled; skipping this turn", *key)
                return
            self.in_flight.add(key)
        self.executor.submit(self._poll, key)

    def _poll(self, key: GroupKey) -> None:
        """Poll one vendor site and hand its pass to the collection's writer, without waiting for the write (the
        writer groups the passes of many sites in one transaction: `core.collect.group_writer`)."""
        try:
            report, written = self.collection.poll(datetime.now(UTC), only={key}, shared_inputs=True)
        except StoreUnavailable as exc:  # nothing could keep this pass (no inputs read yet): poll again soon
            self.collection.episodes.unavailable(exc)
            with self.lock:
                self.retry_soon.add(key)
        except Exception:  # the job boundary: one site's failure must never stop the others
            log.exception("poll of %s/%s failed", *key)
        else:
            if report.deferred:  # not polled now (memory full of held passes, a budget that cannot be counted)
                with self.lock:
                    self.retry_soon.add(key)
            if self._retries_early(key, report.results):
                # When to poll it again depends on the state this write records: wait for it (only after a failed
                # poll of a site polled less than hourly; every other poll thread goes on at once).
                with contextlib.suppress(Exception):  # said by `_written`
                    written.result()
            # The site stays in flight until its pass is written or held, so it is never polled again from
            # bookmarks its last pass has not moved yet.
            written.add_done_callback(lambda done: self._written(key, done))
            return
        self._polled(key)

    def _written(self, key: GroupKey, done: Future[PassReport]) -> None:
        """Once a site's pass is written or held (or could be neither): on the writer's thread, or on the poll's
        when it waited for the write."""
        try:
            self._plan_early_retry(key, done.result().results)
        except StoreUnavailable as exc:  # nothing could keep this pass (a file-system fault): poll again soon
            self.collection.episodes.unavailable(exc)
            with self.lock:
                self.retry_soon.add(key)
        except Exception:  # the job boundary, as in `_poll`
            log.exception("the pass of %s/%s could not be written", *key)
        self._polled(key)

    def _polled(self, key: GroupKey) -> None:
        """The site is no longer in flight. The alert rules, which should look at its data, run on the pool, never
        on the writer's thread."""
        with self.lock:
            self.in_flight.discard(key)
        # Also after a failed poll: a vendor that keeps failing is exactly what the no-data rule must report.
        with contextlib.suppress(RuntimeError):  # the pool is shutting down: the next start evaluates
            self.executor.submit(self.evaluate_alerts)

    def _retries_early(self, key: GroupKey, results: list[GroupResult]) -> bool:
        """Whether this poll failed in a way a slow group is polled again for before its next slot."""
        period = timedelta(minutes=self.intervals.get(key, 0))
        return period > EARLY_RETRY_SLOWER_THAN and any(r.outcome in RETRIED_EARLY for r in results)

    def _plan_early_retry(self, key: GroupKey, results: list[GroupResult]) -> None:
        """After a failed poll of a slow group: when to poll it again before its next slot, if at all."""
        if not self._retries_early(key, results):
            return
        failed = [r for r in results if r.outcome in RETRIED_EARLY]
        period = timedelta(minutes=self.intervals.get(key, 0))
        try:
            with self.runtime.store.connect(read_only=True, timeout_s=READ_WAIT_S) as con:
                states = read_states(con)
        except StoreError:  # the regular slot will come; a held file is reported by the pass itself
            return
        when = max((t for r in failed if (t := early_retry(period, r, states)) is not None), default=None)
        if when is not None:
            with self.lock:
                self.retry_at[key] = when
            log.info("%s/%s failed: trying again at %s UTC, before its next regular poll", *key, f"{when:%H:%M:%S}")

    def evaluate_alerts(self) -> bool:
        """A poll ended: the alert rules should look at its data. Runs the evaluation now when allowed (see
        `alerts_tick`), else leaves it due for a later tick. True when it ran."""
        with self._alerts_lock:
            self._alerts_due = True
        return self.alerts_tick()

    def alerts_due(self, now: datetime) -> bool:
        """Whether an evaluation should start at `now`: none running, and either none yet, or one due and the last
        started ALERTS_MIN_GAP ago, or the last started ALERTS_FLOOR ago."""
        with self._alerts_lock:
            return not self._alerts_running and self._due_locked(now)

    def _due_locked(self, now: datetime) -> bool:
        last = self._alerts_started
        return last is None or (self._alerts_due and now - last >= ALERTS_MIN_GAP) or now - last >= ALERTS_FLOOR

    def alerts_tick(self) -> bool:
        """Evaluate the alert rules over every source if due now (see `alerts_due`); True when it ran. A held file
        skips the turn (logged once per hold) and leaves it due for the next tick after the gap."""
        now = self.clock()
        with self._alerts_lock:
            if self._alerts_running or not self._due_locked(now):
                return False
            self._alerts_running, self._alerts_due, self._alerts_started = True, False, now
        try:
            outcome = run_alerts(self.runtime, log_busy=False)
            if isinstance(outcome, StoreUnavailable):
                self.collection.episodes.unavailable(outcome)  # logged once per hold or fault, not per attempt
                with self._alerts_lock:
                    self._alerts_due = True
            elif outcome:
                self.collection.episodes.free()  # the evaluation wrote: a hold or fault, if any, is over
        finally:
            with self._alerts_lock:
                self._alerts_running = False
        return True

    def _alerts_tick_async(self) -> None:
        if self.alerts_due(self.clock()):  # checked here so an idle tick costs no thread hand-off
            self.executor.submit(self.alerts_tick)

    def sync(self) -> None:
        """Make the jobs match the configuration: one job per vendor site at its sources' fastest frequency.
        Also writes what the spool holds, if the file is free again. Runs every minute and never raises: an
        exception would stop the scheduler's loop, and with it all collection."""
        try:
            self._sync()
        except Exception:  # the job boundary
            log.exception("could not update the schedule; trying again in a minute")

    def _sync(self) -> None:
        self.collection.forget_inputs()  # the polls read the configuration again (changes made in the dashboard)
        self.collection.drain()
        self._flush_journal()
        try:
            catalog = cat.load_catalog(self.runtime.store)
            groups = group_by_provider_site(catalog)
        except StoreUnavailable as exc:
            self.collection.episodes.unavailable(exc)  # logged once, when the hold or fault starts
            return
        except Exception:
            log.exception("could not read the configuration; keeping the current schedule")
            return
        self._sync_mqtt(catalog)
        self._sync_streams(catalog)
        wanted = {
            key: min(UpdateFrequency(s.api.update_frequency).minutes for s in sources)
            for key, sources in groups.items()
        }
        for key in set(self.intervals) - set(wanted):
            self.scheduler.clear(_tag(key))
            del self.intervals[key]
            log.info("stopped polling %s/%s (removed or disabled)", *key)
        for key, minutes in wanted.items():
            if self.intervals.get(key) == minutes:
                continue
            self.scheduler.clear(_tag(key))
            jitter = jitter_minutes(minutes)  # spread sites over the period instead of bursting at its start
            self.scheduler.every(minutes).to(minutes + jitter).minutes.do(self.dispatch, key).tag(_tag(key))
            first_time = key not in self.intervals
            self.intervals[key] = minutes
            log.info("polling %s/%s every %d-%d min", *key, minutes, minutes + jitter)
            if first_time:
                self.dispatch(key)
        now = datetime.now(UTC)
        with self.lock:
            again, self.retry_soon = self.retry_soon & set(wanted), set()
            early = {key for key, when in self.retry_at.items() if when <= now and key in wanted}
            self.retry_at = {key: when for key, when in self.retry_at.items() if key not in early and key in wanted}
        for key in again | early:
            self.dispatch(key)

    def _sync_mqtt(self, catalog: cat.Catalog) -> None:
        """Follow the MQTT sources of `catalog`; on its own, so a failure here never keeps polls from their
        schedule (and the reverse)."""
        try:
            self.mqtt.sync(catalog)
        except StoreUnavailable as exc:
            self.collection.episodes.unavailable(exc)
        except Exception:  # the job boundary: the subscriptions stay as they were until the next minute
            log.exception("could not update the MQTT subscriptions; trying again in a minute")

    def _sync_streams(self, catalog: cat.Catalog) -> None:
        """Follow the Enphase sources that may stream; on its own, like the MQTT sources."""
        try:
            self.streams.sync(catalog)
        except StoreUnavailable as exc:
            self.collection.episodes.unavailable(exc)
        except Exception:  # the job boundary: the streams stay as they were until the next minute
            log.exception("could not update the live streams; trying again in a minute")

    def stream_tick(self) -> None:
        """Start or stop live streams, hand their completed minutes to the writer; never raises (a scheduler job)."""
        try:
            self.streams.tick()
        except Exception:  # the job boundary
            log.exception("live streams not steered this time")

    def mqtt_tick(self) -> None:
        """Completed MQTT minutes to the writer, connection states to API Health; never raises (a scheduler job)."""
        try:
            self.mqtt.tick()
        except Exception:  # the job boundary
            log.exception("MQTT minutes not handed over this time")

    def _flush_journal(self) -> None:
        """Add the calls counted while the file was held to the database's counts; on its own, so a journal that
        cannot be flushed never keeps the schedule from being updated."""
        ledger = self.runtime.ledger
        if not isinstance(ledger, JournalledLedger):
            return
        try:
            ledger.flush_journal()
            if ledger.journal is not None:
                self.collection.episodes.free(ledger.journal)
        except StoreUnavailable as exc:  # the ledger says any fault of the journal's file as a StoreFault too
            self.collection.episodes.unavailable(exc)

    def retention(self) -> None:
        settings = self.runtime.settings
        try:
            dropped, cached = apply_retention(
                self.runtime.store, datetime.now(UTC), settings.retention_raw_days, settings.retention_cache_days
            )
        except StoreUnavailable as exc:
            log.warning("retention skipped (%s); will try again tomorrow", exc)
            return
        except Exception:  # the job boundary: retention failing must not stop collection
            log.exception("retention failed; will try again tomorrow")
            return
        log.info("retention: dropped %d raw reading(s) and %d cached response(s)", dropped, cached)

    def run(self) -> None:
        for line in report_lines(Spool.beside(self.runtime.store.path).quarantine.report()):
            log.warning("%s", line)  # each was logged at ERROR when it was moved there; a reminder at each start
        self.sync()
        self.scheduler.every(1).minutes.do(self.sync)
        self.executor.submit(self.retention)
        self.scheduler.every(1).days.do(lambda: self.executor.submit(self.retention))
        # Polls mark the alert rules due; the tick runs them within the throttle, and at least every ALERTS_FLOOR
        # (which also covers a database with no polled source: imported data).
        self.scheduler.every(ALERTS_TICK_S).seconds.do(self._alerts_tick_async)
        self.scheduler.every(MQTT_TICK_S).seconds.do(self.mqtt_tick)
        self.scheduler.every(STREAM_TICK_S).seconds.do(self.stream_tick)
        while not self.stop.is_set():
            self.scheduler.run_pending()
            self.stop.wait(1)
        log.info("stopping: finishing the polls in hand")
        self.mqtt.close()  # disconnects from the brokers, writes (or spools) the minutes the clock closed
        self.streams.close()  # closes the live streams, writes the minutes they completed
        self.executor.shutdown(wait=True)
        self.collection.close()  # writes (or spools) what the polls handed to the writer
        self.runtime.close()  # gives back the day/month calls leased and not made; closes the vendor connections


def run_alerts(runtime: Runtime, *, log_busy: bool = True) -> StoreUnavailable | bool:
    """One evaluation of the alert rules at now: True when done, False when it failed (logged), or what kept it
    from the file (held by another program, or a file-system fault). Skipped evaluations leave no trace."""
    try:
        outcome = evaluate_alerts(
            runtime.store, Thresholds.from_settings(runtime.settings), datetime.now(UTC), timeout_s=READ_WAIT_S
        )
    except StoreUnavailable as exc:
        if log_busy:
            why = "another program holds the database" if isinstance(exc, StoreBusy) else str(exc)
            log.info("alerts not evaluated this time: %s", why)
        return exc
    except Exception:  # the job boundary: a failing evaluation must not stop collection
        log.exception("alert evaluation failed")
        return False
    log.log(logging.INFO if outcome.opened or outcome.resolved else logging.DEBUG, "alerts: %s", outcome.summary())
    return True


def collection_for(runtime: Runtime, *, once: bool = False) -> Collection:
    """The collector's passes spool beside the database file when it cannot take them; a one-shot process holds
    none in memory (its memory ends with it)."""
    spool = Spool.beside(runtime.store.path)
    return Collection(
        runtime.store, runtime.box, runtime.providers, spool, memory_capacity=0 if once else MEMORY_CAPACITY
    )


def _tag(key: GroupKey) -> str:
    return f"{key[0]}:{key[1]}"


def run_backfill(runtime: Runtime, source_id: int, first_day: str, last_day: str) -> int:
    """`--backfill`: dates are calendar days in the source's site time zone; prints a progress bar on stderr."""
    try:
        catalog = cat.load_catalog(runtime.store)
        source = catalog.source(source_id)
        zone = ZoneInfo(catalog.site(catalog.meter(source.meter_id).site_id).timezone)
        start = datetime.combine(date.fromisoformat(first_day), datetime.min.time(), zone).astimezone(UTC)
        end = datetime.combine(date.fromisoformat(last_day) + timedelta(days=1), datetime.min.time(), zone)
    except cat.NotFound:
        print(f"No source with id {source_id}: see `SELECT id, name FROM energy_sources`.", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"Dates must be YYYY-MM-DD ({exc}).", file=sys.stderr)
        return 1
    if end.astimezone(UTC) <= start:
        print("--to must not be before --from.", file=sys.stderr)
        return 1

    def show(done: int, total: int, rows: int) -> None:
        filled = round(30 * done / total)
        bar = "#" * filled + "-" * (30 - filled)
        print(f"\rbackfill {source.name}: [{bar}] {done}/{total} windows, {rows} readings", end="", file=sys.stderr)

    try:
        rows = backfill(
            runtime.store,
            runtime.box,
            runtime.providers,
            source_id,
            start,
            end.astimezone(UTC),
            datetime.now(UTC),
            show,
        )
    except ProviderError as exc:
        print(f"\nbackfill stopped: {exc}", file=sys.stderr)
        return 1
    print(f"\n{rows} readings written for {source.name} and the sources sharing its vendor site.", file=sys.stderr)
    return 0


def run_once(runtime: Runtime) -> int:
    """`--once`: one pass over every vendor site, its summary on stdout; exit 1 when a group could not be polled
    or its pass not kept (a file-system fault: said in one line), 0 otherwise."""
    collection = collection_for(runtime, once=True)
    try:
        report = collection.run(datetime.now(UTC))
    finally:
        collection.close()
        runtime.close()  # gives back the day/month calls leased and not made; closes the vendor connections
    print(report.summary())
    for line in report_lines(Spool.beside(runtime.store.path).quarantine.report()):
        print(f"collector: {line}", file=sys.stderr)
    fault = collection.episodes.fault
    if report.deferred and fault is not None:
        print(f"collector: {len(report.deferred)} vendor site(s) not polled: {fault}", file=sys.stderr)
        return 1
    run_alerts(runtime)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.collector", description=__doc__.split("\n")[0])
    parser.add_argument("--once", action="store_true", help="poll every enabled vendor site once, then exit")
    parser.add_argument("--backfill", metavar="SOURCE", type=int, help="fill a date range for this source id")
    parser.add_argument("--from", dest="start", metavar="DATE", help="first day to fill (YYYY-MM-DD, site time)")
    parser.add_argument("--to", dest="end", metavar="DATE", help="last day to fill, included (YYYY-MM-DD)")
    args = parser.parse_args(argv)
    if args.backfill is not None and not (args.start and args.end):
        parser.error("--backfill needs --from DATE and --to DATE")
    private_umask()
    set_process_actor(COLLECTOR)  # what it changes, the audit log records as the collector's
    try:
        settings = _settings()
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        runtime = open_waiting(settings, wait=not (args.once or args.backfill is not None), stop=stop)
        if runtime is None:
            return 0
        if args.backfill is not None:
            with runtime:
                return run_backfill(runtime, args.backfill, args.start, args.end)
        if args.once:
            return run_once(runtime)
    except (CliError, StoreError, SecretsError) as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return 1
    except Exception:  # the command's boundary: a bug of ours, never a traceback on the terminal
        log.debug("collector failed", exc_info=True)
        print(f"collector: stopped on a problem it cannot explain; {DEBUG_HINT}", file=sys.stderr)
        return 1
    collector = Collector(runtime, stop)
    collector.run()
    return 0


def _settings() -> Settings:
    settings = settings_from_env("%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO; the collector's own line per pass says what matters (DEBUG shows them).
    level = logging.getLogger().level
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))
    return settings


STARTUP_RETRY_S = 30


def open_waiting(
    settings: Settings, *, wait: bool, stop: threading.Event, retry_s: float = STARTUP_RETRY_S
) -> Runtime | None:
    """The runtime (migrated). The long-running collector waits out a held file at startup instead of exiting;
    None when it was told to stop while waiting."""
    reported = False
    while True:
        try:
            runtime = open_runtime(settings, queued=True)  # calls wait their turn (core.providers.quota)
        except StoreUnavailable as exc:
            if not wait:
                raise
            if not reported:  # once: a full disk can last a weekend, and the log may be on it
                log.log(logging.ERROR if isinstance(exc, StoreFault) else logging.WARNING, "%s", exc)
                log.info("retrying every %g s", retry_s)
                reported = True
            if stop.wait(retry_s):
                return None
            continue
        if reported:
            log.info("the database %s can be used: starting", settings.db_path)
        return runtime


if __name__ == "__main__":
    sys.exit(main())
