"""The archive of raw vendor exchanges in `api_data_cache`.

Every exchange a vendor client recorded (see `core.providers.exchange`) becomes one row: `source_id`, `endpoint`
(path relative to the vendor base URL, credentials redacted), `fetched_at`, `http_status` (NULL when no answer came)
and `body` (at most 256 KiB). Retention drops rows after `DATACONN_RETENTION_CACHE_DAYS` (`core.store.retention`).
The same table also keeps recent Test Connection outcomes (`core.catalog.connection_test_cache`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

import duckdb

from core.providers.exchange import Exchange

INSERT_ROW = "INSERT INTO api_data_cache (source_id, endpoint, fetched_at, http_status, body) VALUES (?, ?, ?, ?, ?)"


def write_exchanges(con: duckdb.DuckDBPyConnection, source_id: int | None, exchanges: Sequence[Exchange]) -> int:
    """Insert the exchanges into `api_data_cache` on the caller's connection (inside its transaction, if any).

    Returns the number of rows written.
    """
    rows = [(source_id, e.endpoint, e.fetched_at.astimezone(UTC), e.http_status, e.body) for e in exchanges]
    if rows:
        con.executemany(INSERT_ROW, rows)
    return len(rows)
