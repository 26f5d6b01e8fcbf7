"""The collector's MQTT connections as API Health reads them: one `mqtt_status` row per MQTT source (its broker's
state and reason, whether its topic is subscribed, its last message, messages per minute, payload errors), written
every `PUBLISH_EVERY_S` in one small transaction, replaced in place; rows of sources no longer followed are
deleted. Skipped while the file is held (the figures are in memory and the next write catches up). A broker is named
by host and port, never a credential."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime

import polars as pl

from core.providers.mqtt.status import BrokerStatus
from core.providers.mqtt.subscriber import Subscription
from core.store.store import Store, StoreError

log = logging.getLogger(__name__)

PUBLISH_EVERY_S = 5.0

SCHEMA = pl.Schema(
    [
        ("source_id", pl.Int64()),
        ("broker", pl.String()),
        ("state", pl.String()),
        ("reason", pl.String()),
        ("since", pl.Datetime("us", "UTC")),
        ("subscribed", pl.Boolean()),
        ("last_message_at", pl.Datetime("us", "UTC")),
        ("messages_per_minute", pl.Int32()),
        ("payload_errors", pl.Int32()),
        ("last_payload_error", pl.String()),
        ("updated_at", pl.Datetime("us", "UTC")),
    ]
)


def status_rows(followed: Iterable[tuple[Subscription, BrokerStatus]], now: datetime) -> pl.DataFrame:
    """One row per followed source, from its broker's snapshot."""
    rows = []
    for subscription, broker in followed:
        source = broker.sources.get(subscription.source_id)
        rows.append(
            {
                "source_id": subscription.source_id,
                "broker": broker.broker,
                "state": broker.state.value,
                "reason": broker.reason or None,
                "since": broker.since,
                "subscribed": subscription.topic in broker.subscribed,
                "last_message_at": source.last_message_at if source else None,
                "messages_per_minute": source.messages_per_minute if source else 0,
                "payload_errors": source.payload_errors if source else 0,
                "last_payload_error": (source.last_payload_error or None) if source else None,
                "updated_at": now,
            }
        )
    return pl.DataFrame(rows, schema=SCHEMA)


class StatusPublisher:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._published = -float("inf")
        # The table is known empty: with no MQTT source (the demo, a vendor-only fleet) nothing is written at all
        # after the first clear-out of rows a previous run left.
        self._cleared = False

    def publish(self, rows: pl.DataFrame, *, force: bool = False) -> bool:
        """Write `rows` as the whole table if `PUBLISH_EVERY_S` passed (or `force`); False when skipped or held."""
        if rows.is_empty() and self._cleared:
            return False
        if not force and time.monotonic() - self._published < PUBLISH_EVERY_S:
            return False
        self._published = time.monotonic()
        try:
            with self.store.transaction(timeout_s=0.5) as con:
                if rows.is_empty():
                    con.execute("DELETE FROM mqtt_status")
                    self._cleared = True
                    return True
                con.register("mqtt_status_now", rows)
                con.execute("DELETE FROM mqtt_status WHERE source_id NOT IN (SELECT source_id FROM mqtt_status_now)")
                con.execute("INSERT OR REPLACE INTO mqtt_status SELECT * FROM mqtt_status_now")
                con.unregister("mqtt_status_now")
                self._cleared = False
        except StoreError as exc:
            log.debug("MQTT connection states not written now: %s", exc)
            return False
        return True
