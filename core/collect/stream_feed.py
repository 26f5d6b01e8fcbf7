"""The collector's Enphase live streams (docs/real-time.md, "The Enphase live stream").

An Enphase system streams while one of its sources asks for it: one that allows streaming while watched
(`ApiSettings.stream_on_live`) and whose site Live shows right now (a watch mark touched in the last `WATCH_S`:
core.store.change_marks.WatchMarks), or one whose schedule (`stream_schedule`) is on now. The stream is the system's:
its frames feed every enabled source of that system, each with its channel (PV, load, grid import or export, battery,
state of charge).

- `sync(catalog, secrets)` (the collector's every-minute configuration read) makes a `StreamPlan` per Enphase system
  with a source that may stream; a plan that changed (settings, sources, credentials) restarts its stream.
- `tick(now)` (every `TICK_S`) decides which systems stream, starts or stops their `SystemStream` threads, hands the
  minutes that completed to a group-commit writer (`live_readings`, then change marks so Live re-reads), and writes
  the streams' states to `stream_status` for API Health every few seconds.
- Each frame replaces the sources' newest values beside the file (core.store.stream_now): Live shows them within a
  second or two, without a database read.
- `close()` stops every stream and writes the minutes the clock has closed (SIGTERM).

Errors (core.providers.enphase.live_frames.error_of): a plan or system that cannot stream, and a grant or key that
is refused, stop that system's stream ("refused", tried again after `REFUSED_RETRY_S` or when its settings change;
its history polls go on); a vendor limit waits until the vendor's time; anything else retries with backoff from
`RETRY_MIN_S` to `RETRY_MAX_S`. A held file keeps the minutes in memory (up to `MAX_PENDING_ROWS`) until it is
free: they are a preview that the vendor's history replaces, not readings to spool.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import polars as pl
from pydantic import SecretStr

from core.catalog.catalog import Catalog
from core.catalog.vendor_sites import provider_site_key
from core.collect.collection import request_for, source_channels
from core.collect.group_writer import GroupWriter
from core.collect.source_health import GroupKey
from core.collect.status_table import StatusTable
from core.models import Provider, Site, Source
from core.providers.base import AuthError, MonitoringProvider, ProviderError, RateLimited
from core.providers.context import ProviderContext
from core.providers.enphase.live_frames import LiveFrame, StreamMinutes
from core.providers.enphase.live_stream import LiveStream
from core.providers.enphase.spec import SPEC as ENPHASE
from core.providers.enphase.stream_schedule import STREAM_CALL_S, StreamSchedule, parse_schedule
from core.providers.registry import build_client
from core.store.change_marks import ChangeMarks, WatchMarks
from core.store.crypto import SecretBox, SecretsError
from core.store.live_readings import SCHEMA as MINUTE_SCHEMA
from core.store.live_readings import store_minutes
from core.store.secret_store import read_secrets
from core.store.store import Store, StoreUnavailable
from core.store.stream_now import StreamNow

log = logging.getLogger(__name__)

TICK_S = 2  # how often streams are started or stopped and completed minutes handed to the writer
WATCH_S = 15  # a watch mark older than this: nobody watches that site any more (Live touches it every 1.5 s)
SCHEDULE_EVERY_S = 60  # a schedule is asked again after this long (daylight costs a solar position)
RETRY_MIN_S, RETRY_MAX_S = 10, 300
REFUSED_RETRY_S = 3600
WRITE_WAIT_S = 2.0
MAX_PENDING_ROWS = 200_000  # minutes kept while the file is held: a day of 6 channels of ~500 systems
TYPED_CREDENTIALS = frozenset(c.name for c in ENPHASE.credentials)
RATE_WINDOW_S = 60  # frames per minute are counted over this window

STATUS_SCHEMA = pl.Schema(
    [
        ("source_id", pl.Int64()),
        ("system_id", pl.String()),
        ("state", pl.String()),
        ("reason", pl.String()),
        ("since", pl.Datetime("us", "UTC")),
        ("wanted_by", pl.String()),
        ("last_frame_at", pl.Datetime("us", "UTC")),
        ("frames_per_minute", pl.Int32()),
        ("streams_opened", pl.Int32()),
        ("updated_at", pl.Datetime("us", "UTC")),
    ]
)


@dataclass(frozen=True)
class StreamPlan:
    """What one Enphase system's stream serves, as the configuration says now."""

    key: GroupKey
    site: Site
    sources: tuple[Source, ...]  # the system's enabled Enphase sources, all fed by its frames
    channels: tuple[tuple[int, str], ...]  # (source id, channel) of those that read one
    on_live: frozenset[int]  # sources whose being watched opens the stream
    schedules: tuple[StreamSchedule, ...]  # of the sources that have one
    secrets: tuple[tuple[str, str], ...] = field(repr=False)  # the credentials the client is built with

    @property
    def system_id(self) -> str:
        return self.key[1]


def stream_plans(catalog: Catalog, secrets: dict[int, dict[str, SecretStr]]) -> dict[GroupKey, StreamPlan]:
    """A plan per Enphase system with an enabled source that may stream (while watched, or on a schedule that
    reads). A schedule that does not read is left out here; the page and the configuration import refuse it."""
    systems: dict[GroupKey, list[Source]] = {}
    for source in catalog.sources:
        if source.api.use_api and source.api.api_provider is Provider.ENPHASE and source.api.system_id:
            site_id = catalog.meter(source.meter_id).site_id
            systems.setdefault(provider_site_key(source, site_id), []).append(source)
    plans = {}
    for key, sources in systems.items():
        schedules = []
        for source in sources:
            try:
                schedule = parse_schedule(source.api.stream_schedule)
            except ValueError:
                continue
            if schedule.kind != "off":
                schedules.append(schedule)
        on_live = frozenset(s.id for s in sources if s.api.stream_on_live)
        if not schedules and not on_live:
            continue
        first = sources[0]
        plans[key] = StreamPlan(
            key=key,
            site=catalog.site(catalog.meter(first.meter_id).site_id),
            sources=tuple(sources),
            channels=tuple(source_channels(catalog, sources).items()),
            on_live=on_live,
            schedules=tuple(schedules),
            # The typed credentials only: the grant's tokens (renewed daily) are read by the client from its store,
            # and a renewal must not count as a changed plan.
            secrets=tuple(
                sorted(
                    (name, secret.get_secret_value())
                    for name, secret in secrets.get(first.id, {}).items()
                    if name in TYPED_CREDENTIALS
                )
            ),
        )
    return plans


def frame_values(frame: LiveFrame, channels: Sequence[tuple[int, str]]) -> dict[int, tuple[datetime, float | None]]:
    """Each source's value in one frame, by its channel (grid split by sign as the minutes split it)."""
    grid = frame.grid_w
    by_channel = {
        "pv_w": frame.pv_w,
        "load_w": frame.load_w,
        "grid_import_w": None if grid is None else max(grid, 0.0),
        "grid_export_w": None if grid is None else max(-grid, 0.0),
        "battery_w": frame.battery_w,
        "soc_pct": frame.soc_pct,
    }
    return {source_id: (frame.at, by_channel.get(channel)) for source_id, channel in channels}


def fan_out(rows: pl.DataFrame, channels: Sequence[tuple[int, str]]) -> pl.DataFrame:
    """Minute rows by channel -> rows per source (`core.store.live_readings.SCHEMA`)."""
    if rows.is_empty() or not channels:
        return pl.DataFrame(schema=MINUTE_SCHEMA)
    targets = pl.DataFrame(
        {"source_id": [s for s, _ in channels], "channel": [c for _, c in channels]},
        schema={"source_id": pl.Int64, "channel": pl.String},
    )
    return rows.join(targets, on="channel").select(MINUTE_SCHEMA.names()).cast(MINUTE_SCHEMA)


class SystemStream:
    """One system's stream, renewed every `duration_s` on a thread of its own while wanted; its minutes are averaged
    across renewals (`StreamMinutes`)."""

    def __init__(
        self,
        plan: StreamPlan,
        connect: Callable[[StreamPlan], MonitoringProvider],
        on_values: Callable[[dict[int, tuple[datetime, float | None]]], None],
        *,
        duration_s: int = STREAM_CALL_S,
    ) -> None:
        self.plan = plan
        self._connect, self._on_values = connect, on_values
        self.duration_s = duration_s
        self.state, self.since = "idle", datetime.now(UTC)
        self.reason: str | None = "not wanted now"
        self.wanted_by: str | None = None
        self.last_frame_at: datetime | None = None
        self.streams_opened = 0
        self.refused_until: float | None = None  # monotonic time until which a refusal holds
        self._frames: deque[float] = deque()
        self._minutes = StreamMinutes()
        self._completed: list[pl.DataFrame] = []  # minutes completed by a frame, not yet taken by `due`
        self._lock = threading.Lock()  # the minutes: fed by the stream's thread, taken by the feed's tick
        self._wanted = threading.Event()
        self._wake = threading.Event()
        self._stream: LiveStream | None = None  # the stream being read, to stop it from another thread
        self._thread: threading.Thread | None = None

    # --- asked by the feed ----------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def refused(self) -> bool:
        return self.refused_until is not None and time.monotonic() < self.refused_until

    def want(self, by: str) -> None:
        """Stream (started if it is not running); `by` says why, for API Health."""
        self.wanted_by = by
        if self.running:
            return
        self._wanted.set()
        self._wake.clear()
        self._set("opening", None)
        self._thread = threading.Thread(target=self._run, name=f"stream-{self.plan.system_id}", daemon=True)
        self._thread.start()

    def release(self, reason: str = "not wanted now") -> None:
        """Stop streaming: the stream closes at its next frame, a wait ends at once."""
        self.wanted_by = None
        self._wanted.clear()
        self._wake.set()
        stream = self._stream
        if stream is not None:
            stream.stop()
        if not self.refused and self.state != "idle":
            self._set("idle", reason)

    def join(self, timeout_s: float) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    def due(self, now: datetime) -> pl.DataFrame:
        """Rows of the minutes that completed, per source."""
        with self._lock:
            parts, self._completed = [*self._completed, self._minutes.due(now)], []
        return fan_out(pl.concat(parts), self.plan.channels)

    def frames_per_minute(self) -> int:
        horizon = time.monotonic() - RATE_WINDOW_S
        while self._frames and self._frames[0] < horizon:
            self._frames.popleft()
        return len(self._frames)

    # --- the stream's thread --------------------------------------------------------------------------------------

    def _set(self, state: str, reason: str | None) -> None:
        if (state, reason) != (self.state, self.reason):
            self.state, self.reason, self.since = state, reason, datetime.now(UTC)

    def _run(self) -> None:
        failures = 0
        while self._wanted.is_set():
            client = None
            wait_s: float = 0
            try:
                client = self._connect(self.plan)
                stream = LiveStream(client, duration_s=self.duration_s)  # type: ignore[arg-type]
                self._stream = stream
                if not self._wanted.is_set():
                    break
                self.streams_opened += 1
                for frame in stream.frames():
                    self._frame(frame)
                    failures = 0
                    if not self._wanted.is_set():
                        stream.stop()
            except AuthError as exc:  # StreamNotAvailable among them: this system stops streaming for a while
                self.refused_until = time.monotonic() + REFUSED_RETRY_S
                self._set("refused", str(exc))
                log.warning("Enphase live stream of system %s stopped: %s", self.plan.system_id, exc)
                self._wanted.clear()
            except RateLimited as exc:
                retry_at = exc.retry_at or datetime.now(UTC) + timedelta(seconds=RETRY_MIN_S)
                wait_s = max((retry_at - datetime.now(UTC)).total_seconds(), RETRY_MIN_S)
                self._set("waiting", str(exc))
            except ProviderError as exc:
                failures += 1
                wait_s = min(RETRY_MIN_S * 2 ** (failures - 1), RETRY_MAX_S)
                self._set("waiting", f"{exc} (trying again in {wait_s:.0f} s)")
                log.info("Enphase live stream of system %s: %s", self.plan.system_id, exc)
            except Exception as exc:  # the thread's boundary: a bug must not end streaming for good
                failures += 1
                wait_s = min(RETRY_MIN_S * 2 ** (failures - 1), RETRY_MAX_S)
                self._set("waiting", f"unexpected error ({type(exc).__name__}); trying again in {wait_s:.0f} s")
                log.exception("Enphase live stream of system %s failed", self.plan.system_id)
            finally:
                self._stream = None
                with self._lock:
                    self._minutes.ended(datetime.now(UTC))
                if client is not None:
                    client.close()
            if wait_s and self._wake.wait(wait_s):
                break
            if self._wanted.is_set() and self.state != "opening":
                self._set("opening", None)
        if not self.refused:
            self._set("idle", "not wanted now")

    def _frame(self, frame: LiveFrame) -> None:
        self._set("streaming", None)
        self.last_frame_at = frame.at
        self._frames.append(time.monotonic())
        with self._lock:  # a frame of a new minute completes the one before: kept for the feed's tick (`due`)
            completed = self._minutes.add(frame)
            if completed.height:
                self._completed.append(completed)
        self._on_values(frame_values(frame, self.plan.channels))


class StreamFeed:
    def __init__(
        self,
        store: Store,
        box: SecretBox,
        context: ProviderContext,
        *,
        duration_s: int = STREAM_CALL_S,
        watch_s: float = WATCH_S,
    ) -> None:
        self.store, self.box, self.context = store, box, context
        self._closing = False
        self.duration_s, self.watch_s = duration_s, watch_s
        self.marks = ChangeMarks(store.path)
        self.watch = WatchMarks(store.path)
        self.now_values = StreamNow(store.path)
        self.status = StatusTable(store, "stream_status")
        self._catalog: Catalog | None = None
        self._plans: dict[GroupKey, StreamPlan] = {}
        self._streams: dict[GroupKey, SystemStream] = {}
        self._scheduled: dict[GroupKey, tuple[float, bool]] = {}  # last answer of the schedules, and when
        self._pending: list[pl.DataFrame] = []  # minutes a held file kept from being written
        self._pending_lock = threading.Lock()
        self.writer: GroupWriter[pl.DataFrame, None] = GroupWriter(
            self._commit, lambda rows: frozenset(), name="stream-writer"
        )

    def sync(self, catalog: Catalog) -> None:
        """Follow the configuration: a plan per system that may stream; a changed plan restarts its stream.
        `StoreUnavailable` (the credentials cannot be read now) leaves the streams as they are."""
        plans = stream_plans(catalog, self._secrets(catalog))
        self._catalog = catalog
        for key, stream in list(self._streams.items()):
            if plans.get(key) != stream.plan:
                stream.release("its settings changed")
                self._finish(key, stream)
        self._plans = plans

    def _secrets(self, catalog: Catalog) -> dict[int, dict[str, SecretStr]]:
        """The credentials of the first source of each Enphase system that may stream (its client is built from
        them); a source whose credentials cannot be decrypted is left out, and its system streams without them (the
        client then says what is missing)."""
        firsts = {plan.sources[0].id for plan in stream_plans(catalog, {}).values()}
        found: dict[int, dict[str, SecretStr]] = {}
        if not firsts:
            return found
        with self.store.connect(read_only=True) as con:
            for source_id in sorted(firsts):
                try:
                    found[source_id] = read_secrets(con, self.box, source_id)
                except SecretsError as exc:  # a key lost or rotated away: this system waits, the others run
                    log.error(
                        "Enphase source %s: its credentials cannot be read for its live stream (%s)", source_id, exc
                    )
        return found

    def _finish(self, key: GroupKey, stream: SystemStream) -> None:
        """A stream whose plan is gone: its minutes so far are written, then it is forgotten."""
        stream.join(0)
        rows = stream.due(datetime.now(UTC) + timedelta(minutes=2))
        if rows.height:
            self.writer.submit(rows)
        del self._streams[key]

    def tick(self, now: datetime | None = None) -> None:
        """Start or stop streams, hand completed minutes to the writer, write the states when due."""
        now = now or datetime.now(UTC)
        if not self._closing:
            self._steer(now)
        parts = [stream.due(now) for stream in self._streams.values()]
        with self._pending_lock:
            parts, self._pending = [*self._pending, *parts], []
        if any(p.height for p in parts):
            self.writer.submit(pl.concat([p for p in parts if p.height], how="vertical"))
        self.publish_status()

    def _steer(self, now: datetime) -> None:
        watched = self._watched()
        for key, plan in self._plans.items():
            stream = self._streams.get(key)
            by = self._wanted_by(plan, watched, now)
            if by is None:
                if stream is not None and (stream.running or stream.wanted_by):
                    stream.release()
                continue
            if stream is None:
                stream = SystemStream(plan, self._client, self.now_values.write, duration_s=self.duration_s)
                self._streams[key] = stream
            if stream.refused:
                continue
            stream.want(by)

    def _watched(self) -> set[int]:
        ids = [i for plan in self._plans.values() for i in plan.on_live]
        if not ids:
            return set()
        return self.watch.watched(ids, within_ns=int(self.watch_s * 1e9), now_ns=time.time_ns())

    def _wanted_by(self, plan: StreamPlan, watched: set[int], now: datetime) -> str | None:
        if plan.schedules and self._scheduled_now(plan, now):
            return "schedule"
        if plan.on_live & watched:
            return "Live"
        return None

    def _scheduled_now(self, plan: StreamPlan, now: datetime) -> bool:
        asked = self._scheduled.get(plan.key)
        if asked is not None and time.monotonic() - asked[0] < SCHEDULE_EVERY_S:
            return asked[1]
        active = any(schedule.active(now, plan.site) for schedule in plan.schedules)
        self._scheduled[plan.key] = (time.monotonic(), active)
        return active

    def _client(self, plan: StreamPlan) -> MonitoringProvider:
        assert self._catalog is not None
        secrets = {name: SecretStr(value) for name, value in plan.secrets}
        return build_client(request_for(self._catalog, list(plan.sources), secrets), self.context)

    def status_rows(self, now: datetime) -> pl.DataFrame:
        rows = []
        for key, plan in self._plans.items():
            stream = self._streams.get(key)
            for source in plan.sources:
                rows.append(
                    {
                        "source_id": source.id,
                        "system_id": plan.system_id,
                        "state": stream.state if stream else "idle",
                        "reason": stream.reason if stream else "not wanted now",
                        "since": stream.since if stream else now,
                        "wanted_by": stream.wanted_by if stream else None,
                        "last_frame_at": stream.last_frame_at if stream else None,
                        "frames_per_minute": stream.frames_per_minute() if stream else 0,
                        "streams_opened": stream.streams_opened if stream else 0,
                        "updated_at": now,
                    }
                )
        return pl.DataFrame(rows, schema=STATUS_SCHEMA)

    def publish_status(self, *, force: bool = False) -> bool:
        """Write the streams' states to `stream_status` if due (or `force`); the rows are built only then."""
        if not force and not self.status.due():
            return False
        return self.status.publish(self.status_rows(datetime.now(UTC)), force=force)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop every stream, write the minutes they completed, and end the writer."""
        self._closing = True
        for stream in self._streams.values():
            stream.release("the collector stopped")
        deadline = time.monotonic() + timeout_s / 2
        for stream in self._streams.values():
            stream.join(max(0.0, deadline - time.monotonic()))
        self.tick(datetime.now(UTC) + timedelta(minutes=2))  # every minute the streams touched is complete now
        self.publish_status(force=True)
        self.writer.close(timeout_s / 2)

    def _commit(self, frames: Sequence[pl.DataFrame]) -> list[None]:
        rows = pl.concat(frames)
        now = datetime.now(UTC)
        try:
            with self.store.transaction(timeout_s=WRITE_WAIT_S) as con:
                store_minutes(con, rows, now)
        except StoreUnavailable as exc:
            with self._pending_lock:
                self._pending.append(rows)
                kept = sum(p.height for p in self._pending)
                if kept > MAX_PENDING_ROWS:  # the oldest go first: the history replaces them anyway
                    merged = pl.concat(self._pending).tail(MAX_PENDING_ROWS)
                    self._pending = [merged]
                    log.warning("live-stream minutes older than the newest %d dropped (%s)", MAX_PENDING_ROWS, exc)
            return [None] * len(frames)
        self.marks.mark(rows["source_id"].unique().to_list())
        return [None] * len(frames)
