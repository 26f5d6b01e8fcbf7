"""API Health's figures for Enphase live streams: each streaming-enabled source's system stream as the collector last
wrote it (`stream_status`, written by `core.collect.stream_feed`): streaming, opening, waiting or refused and why,
who wants it (Live or the schedule), the last frame, frames per minute and streams opened since the collector
started."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import polars as pl

from core.catalog.catalog import Catalog
from core.models import Provider

STALE_FIGURES = timedelta(minutes=2)  # figures older than this: the collector is not running
STREAM_COLUMNS = [
    "source_id", "site_id", "site", "source", "system_id", "state", "reason", "since", "wanted_by", "last_frame_at",
    "frames_per_minute", "streams_opened", "collector_running",
]  # fmt: skip


def read_streams(con: duckdb.DuckDBPyConnection, catalog: Catalog, now: datetime) -> pl.DataFrame:
    """One row per Enphase source set to stream (while watched or on a schedule other than off) (`STREAM_COLUMNS`);
    figures are null where the collector wrote none."""
    sources = [
        s
        for s in catalog.sources
        if s.api.api_provider is Provider.ENPHASE
        and s.api.use_api
        and (s.api.stream_on_live or s.api.stream_schedule.strip().lower() not in ("", "off"))
    ]
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
        "SELECT source_id, system_id, state, reason, since, wanted_by, last_frame_at, frames_per_minute,"
        " streams_opened, updated_at FROM stream_status"
    ).pl()
    return (
        base.join(status, on="source_id", how="left")
        .with_columns((pl.col("updated_at") >= now - STALE_FIGURES).fill_null(False).alias("collector_running"))
        .select(STREAM_COLUMNS)
    )
