"""The collector's MQTT sources: one `BrokerSubscriber` per broker, one `MinuteAggregator` for all, and the minute
rows written through the normal ingest (docs/real-time.md).

- `sync(catalog)` (the collector's every-minute configuration read) builds {Broker: [Subscription]} from the
  enabled MQTT sources whose settings pass the spec's check, passwords decrypted with the runtime's box, and starts,
  updates or stops subscribers to match. A source whose broker, topic, path or unit changed starts its minutes
  afresh (`MinuteAggregator.forget`): a half minute of the old settings is not this source's any more.
- `tick(now)` (every `TICK_S`) hands the completed minutes to a `GroupWriter`, whose commit writes them like a
  collection pass (`apply_pass_per_source`, one `GroupResult` per source, provider "mqtt": rollups, run rows and
  source state, so History, KPIs, alerts and API Health see them), or spools them while another program holds the
  file (the collector's passes drain the spool, and so does the next commit here); change marks after the commit
  let Live follow. It also writes the connection states to `mqtt_status` every few seconds.
- `close()` stops every subscriber, writes the minutes the clock has closed, and ends the writer (SIGTERM).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import polars as pl

from core.catalog.catalog import Catalog
from core.collect.group_writer import GroupWriter
from core.collect.mqtt_status import status_rows
from core.collect.pass_write import apply_entry, apply_pass_per_source
from core.collect.poll_result import GroupResult, newest_finals
from core.collect.status_table import StatusTable
from core.models import Provider
from core.providers.mqtt.aggregate import MinuteAggregator
from core.providers.mqtt.source import broker_of, subscription_of
from core.providers.mqtt.spec import PASSWORD, check_settings
from core.providers.mqtt.status import BrokerStatus
from core.providers.mqtt.subscriber import (
    DEFAULT_MAX_BACKOFF_S,
    DEFAULT_MIN_BACKOFF_S,
    Broker,
    BrokerSubscriber,
    Subscription,
)
from core.store.change_marks import ChangeMarks
from core.store.crypto import SecretBox
from core.store.held_passes import HeldPasses
from core.store.readings_store import COVERAGE_SCHEMA
from core.store.secret_store import read_all_secrets
from core.store.spool import Spool
from core.store.store import Store, StoreError, StoreUnavailable
from core.store.store_episodes import StoreEpisodes

log = logging.getLogger(__name__)

TICK_S = 2  # how often completed minutes are handed to the writer: a minute is stored within seconds of closing
WRITE_WAIT_S = 2.0  # how long a commit waits for a held file before the spool takes the minutes
DRAIN_WAIT_S = 0.5


class MqttFeed:
    def __init__(
        self,
        store: Store,
        box: SecretBox,
        spool: Spool,
        episodes: StoreEpisodes,
        *,
        min_backoff_s: int = DEFAULT_MIN_BACKOFF_S,
        max_backoff_s: int = DEFAULT_MAX_BACKOFF_S,
    ) -> None:
        self.store, self.box = store, box
        self.episodes = episodes
        self.held = HeldPasses(spool, episodes, memory_capacity=0)  # minutes are final: durable or not at all
        self.marks = ChangeMarks(store.path)
        self.aggregator = MinuteAggregator()
        self.status = StatusTable(store, "mqtt_status")
        self._backoff = (min_backoff_s, max_backoff_s)
        self._subscribers: dict[Broker, BrokerSubscriber] = {}
        self._followed: dict[int, tuple[Broker, Subscription]] = {}
        # What the connection states are built from: each followed source's subscription and its broker's
        # subscriber, replaced whole at the end of each sync, so a status build sees one sync's result, never half of
        # it (a subscriber stopped by the sync, a broker not in `_subscribers` yet).
        self._following: tuple[tuple[Subscription, BrokerSubscriber], ...] = ()
        self._refused: dict[int, str] = {}  # sources left out, and why (logged when it changes)
        self._lock = threading.Lock()  # serialises drain, commit and spool, as the collection's own writer does
        self.writer: GroupWriter[pl.DataFrame, None] = GroupWriter(
            self._commit, lambda rows: frozenset(), name="mqtt-writer"
        )

    def sync(self, catalog: Catalog) -> None:
        """Follow the catalog's enabled MQTT sources. `StoreUnavailable` (the secrets cannot be read now) leaves
        the subscriptions as they are."""
        sources = [s for s in catalog.sources if s.api.use_api and s.api.api_provider is Provider.MQTT]
        before = self._refused  # each reason is logged when it appears or changes, not at every sync
        refused = {s.id: next(iter(problems.values())) for s in sources if (problems := check_settings(s.api))}
        for source_id, why in refused.items():
            if before.get(source_id) != why:
                log.warning("MQTT source %s not followed: %s", source_id, why)
        wanted: dict[int, tuple[Broker, Subscription]] = {}
        checked = [s for s in sources if s.id not in refused]
        if checked:
            # One query for all of them: one per source took 2.5 s for 1,000 sources, every minute, on the thread
            # that also hands the minutes over.
            with self.store.connect(read_only=True) as con:
                secrets, unreadable = read_all_secrets(con, self.box, [s.id for s in checked])
            for source in checked:
                if source.id in unreadable:  # a key lost or rotated away: this source waits, the others run
                    refused[source.id] = why = unreadable[source.id]
                    if before.get(source.id) != why:
                        log.error("MQTT source %s not followed: its password cannot be read (%s)", source.id, why)
                    continue
                secret = secrets.get(source.id, {}).get(PASSWORD)
                password = secret.get_secret_value() if secret is not None else ""
                wanted[source.id] = (broker_of(source.api, password), subscription_of(source.id, source.api))
        self._refused = refused
        self._follow(wanted)

    def _follow(self, wanted: dict[int, tuple[Broker, Subscription]]) -> None:
        for source_id, before in self._followed.items():
            if wanted.get(source_id) != before:
                self.aggregator.forget(source_id)
        by_broker: dict[Broker, list[Subscription]] = {}
        for broker, subscription in wanted.values():
            by_broker.setdefault(broker, []).append(subscription)
        for broker in [b for b in self._subscribers if b not in by_broker]:
            self._subscribers.pop(broker).stop()
            log.info("MQTT broker %s: no source follows it any more", broker.label)
        for broker, subscriptions in by_broker.items():
            subscriber = self._subscribers.get(broker)
            if subscriber is None:
                minimum, maximum = self._backoff
                subscriber = BrokerSubscriber(
                    broker, subscriptions, self.aggregator.add, min_backoff_s=minimum, max_backoff_s=maximum
                )
                self._subscribers[broker] = subscriber
                subscriber.start()
                log.info("MQTT broker %s: following %d source(s)", broker.label, len(subscriptions))
            else:
                subscriber.update(subscriptions)
        self._followed = wanted
        self._following = tuple((subscription, self._subscribers[broker]) for broker, subscription in wanted.values())

    def tick(self, now: datetime | None = None) -> None:
        """Hand the completed minutes to the writer; write the connection states when due."""
        now = now or datetime.now(UTC)
        rows = self.aggregator.tick(now)
        if rows.height:
            self.writer.submit(rows)
        self.publish_status()

    def publish_status(self, *, force: bool = False) -> bool:
        """Write the connection states to `mqtt_status` if due (or `force`); False when skipped or held. The rows are
        built only then, from one snapshot per broker: a snapshot holds every source's counters of that broker,
        and its lock, which the broker's network thread takes for every message."""
        if not force and not self.status.due():
            return False
        following = self._following  # one reference: `sync` (maybe on another thread) replaces it whole
        snapshots: dict[BrokerSubscriber, BrokerStatus] = {}
        for _, subscriber in following:
            if subscriber not in snapshots:
                snapshots[subscriber] = subscriber.status()
        rows = status_rows(((sub, snapshots[subscriber]) for sub, subscriber in following), datetime.now(UTC))
        return self.status.publish(rows, force=force)

    def close(self, timeout_s: float | None = 10.0) -> None:
        """Stop every subscriber, write the minutes the clock has closed, and end the writer."""
        for subscriber in self._subscribers.values():
            subscriber.stop()
        self.tick()
        self.publish_status(force=True)
        self.writer.close(timeout_s)

    def _commit(self, frames: Sequence[pl.DataFrame]) -> list[None]:
        now = datetime.now(UTC)
        readings = pl.concat(frames).select(COVERAGE_SCHEMA.names()).cast(COVERAGE_SCHEMA)
        results = []
        for source_id in readings["source_id"].unique(maintain_order=True).to_list():
            result = GroupResult([source_id], Provider.MQTT.value, now)
            result.batch = readings.filter(pl.col("source_id") == source_id)
            results.append(result)
        with self._lock:
            self._drain()
            if self.held.waiting():
                self._spool(results, readings, now)
                return [None] * len(frames)
            try:
                with self.store.transaction(timeout_s=WRITE_WAIT_S) as con:
                    apply_pass_per_source(con, results, readings, newest_finals(readings, results), now)
            except StoreUnavailable as exc:
                self.episodes.unavailable(exc)
                self._spool(results, readings, now)
                return [None] * len(frames)
            self.episodes.free()
        self.marks.mark(r.source_ids[0] for r in results)
        return [None] * len(frames)

    def _spool(self, results: list[GroupResult], readings: pl.DataFrame, now: datetime) -> None:
        try:
            self.held.hold({"now": now.isoformat(), "results": [r.to_json() for r in results]}, readings)
        except StoreError as exc:
            log.error("%d MQTT minute(s) could not be stored nor spooled: %s", readings.height, exc)

    def _drain(self) -> None:
        if not self.held.waiting():
            return
        try:
            self.held.drain(self.store, apply_entry, timeout_s=DRAIN_WAIT_S)
        except StoreUnavailable as exc:
            self.episodes.unavailable(exc)
            return
        self.episodes.free()
