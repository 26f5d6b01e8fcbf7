"""API Health's figures for Push (HTTP) sources: what the ingest service accepted and refused over its window
(`push_activity`, written by `core.collect.push_activity`) and when the newest reading arrived."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import polars as pl

from core.catalog.catalog import Catalog
from core.models import Provider

STALE_FIGURES = timedelta(minutes=2)  # figures older than this: the ingest service is not running
PUSHED_COLUMNS = [
    "source_id", "site_id", "site", "source", "requests_per_min", "readings", "refused",
    "last_request_at", "last_refused_at", "last_refusal", "service_running",
]  # fmt: skip


def read_pushed(con: duckdb.DuckDBPyConnection, catalog: Catalog, now: datetime) -> pl.DataFrame:
    """One row per Push source of the catalog (`PUSHED_COLUMNS`); figures are null where the service recorded none."""
    sources = [s for s in catalog.sources if s.api.api_provider is Provider.PUSH]
    base = pl.DataFrame(
        {
            "source_id": [s.id for s in sources],
            "site_id": [catalog.meter(s.meter_id).site_id for s in sources],
            "site": [catalog.site(catalog.meter(s.meter_id).site_id).name for s in sources],
            "source": [s.name for s in sources],
        },
        schema={"source_id": pl.Int64, "site_id": pl.Int64, "site": pl.String, "source": pl.String},
    )
    activity = con.sql(
        "SELECT source_id, window_s, accepted, refused, readings, last_request_at, last_refused_at, last_refusal,"
        " updated_at FROM push_activity"
    ).pl()
    return (
        base.join(activity, on="source_id", how="left")
        .with_columns(
            ((pl.col("accepted") + pl.col("refused")) * 60 / pl.col("window_s")).alias("requests_per_min"),
            (pl.col("updated_at") >= now - STALE_FIGURES).fill_null(False).alias("service_running"),
        )
        .select(PUSHED_COLUMNS)
    )
