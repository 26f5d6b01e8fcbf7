"""The collector's MQTT connections as API Health reads them: one `mqtt_status` row per MQTT source (its broker's
state and reason, whether its topic is subscribed, its last message, messages per minute, payload errors), written
every few seconds by a `core.collect.status_table.StatusTable`. A broker is named by host and port, never a
credential."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import polars as pl

from core.providers.mqtt.status import BrokerStatus
from core.providers.mqtt.subscriber import Subscription

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
