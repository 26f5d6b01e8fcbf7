"""API Health's figures for MQTT sources: each one's broker connection as the collector last wrote it
(`mqtt_status`, written by `core.collect.mqtt_status`): connected, connecting or refused and why, whether its topic
is subscribed, its last message, messages per minute and payload errors."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import polars as pl

from core.catalog.catalog import Catalog
from core.models import Provider

STALE_FIGURES = timedelta(minutes=2)  # figures older than this: the collector is not running
MQTT_COLUMNS = [
    "source_id", "site_id", "site", "source", "broker", "state", "reason", "since", "subscribed", "last_message_at",
    "messages_per_minute", "payload_errors", "last_payload_error", "collector_running",
]  # fmt: skip


def read_mqtt(con: duckdb.DuckDBPyConnection, catalog: Catalog, now: datetime) -> pl.DataFrame:
    """One row per MQTT source of the catalog (`MQTT_COLUMNS`); figures are null where the collector wrote none."""
    sources = [s for s in catalog.sources if s.api.api_provider is Provider.MQTT]
    base = pl.DataFrame(
        {
            "source_id": [s.id for s in sources],
            "site_id": [catalog.meter(s.meter_id).site_id for s in sources],
            "site": [catalog.site(catalog.meter(s.meter_id).site_id).name for s in sources],
            "source": [s.name for s in sources],
        },
        schema={"source_id": pl.Int64, "site_id": pl.Int64, "site": pl.String, "source": pl.String},
    )
    status = con.sql(
        "SELECT source_id, broker, state, reason, since, subscribed, last_message_at, messages_per_minute,"
        " payload_errors, last_payload_error, updated_at FROM mqtt_status"
    ).pl()
    return (
        base.join(status, on="source_id", how="left")
        .with_columns((pl.col("updated_at") >= now - STALE_FIGURES).fill_null(False).alias("collector_running"))
        .select(MQTT_COLUMNS)
    )
