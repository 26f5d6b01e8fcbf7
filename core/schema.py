"""Versioned schema migrations. Each runs once, in its own transaction, recorded in `schema_migrations`.

DuckDB's foreign keys block updating a referenced parent row and deleting parent and children in one
transaction, so referential integrity is kept by `core.catalog` (children deleted first, in the same
transaction) and checked by tests rather than declared here. Names are unique case-insensitively, which a
UNIQUE constraint cannot express; `core.catalog` checks that too, under the write lock.
"""

from __future__ import annotations

import logging

import duckdb

from core.store import Store

log = logging.getLogger(__name__)

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "configuration tables",
        """
        CREATE SEQUENCE sites_id_seq;
        CREATE SEQUENCE meters_id_seq;
        CREATE SEQUENCE energy_sources_id_seq;
        CREATE TABLE sites (
            id BIGINT PRIMARY KEY DEFAULT nextval('sites_id_seq'),
            name VARCHAR NOT NULL,
            latitude DOUBLE NOT NULL CHECK (latitude BETWEEN -90 AND 90),
            longitude DOUBLE NOT NULL CHECK (longitude BETWEEN -180 AND 180),
            timezone VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE meters (
            id BIGINT PRIMARY KEY DEFAULT nextval('meters_id_seq'),
            site_id BIGINT NOT NULL,
            name VARCHAR NOT NULL,
            category VARCHAR NOT NULL CHECK (category IN ('PROD', 'CONS', 'STOR', 'INJ')),
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE energy_sources (
            id BIGINT PRIMARY KEY DEFAULT nextval('energy_sources_id_seq'),
            meter_id BIGINT NOT NULL,
            name VARCHAR NOT NULL,
            source_type VARCHAR NOT NULL,
            capacity_kw DOUBLE NOT NULL CHECK (capacity_kw >= 0),
            carbon_intensity_g_per_kwh DOUBLE NOT NULL CHECK (carbon_intensity_g_per_kwh >= 0),
            cost_per_mwh DOUBLE NOT NULL CHECK (cost_per_mwh >= 0),
            metadata JSON NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE source_secrets (
            source_id BIGINT NOT NULL,
            name VARCHAR NOT NULL,
            ciphertext VARCHAR NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (source_id, name)
        );
        CREATE TABLE app_state (
            key VARCHAR PRIMARY KEY,
            value VARCHAR NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        2,
        "readings and collector state",
        # `readings` has no PRIMARY KEY on purpose: an ART key makes bulk inserts ~11x slower and costs 3.5-5x the
        # data on disk. Its natural key is (source_id, ts); `core.readings_store.ingest` keeps it unique.
        # `collector_runs` is an append-only log: ids come from its sequence, no index is kept on it.
        """
        CREATE TABLE readings (
            source_id BIGINT NOT NULL,
            ts TIMESTAMPTZ NOT NULL,
            interval_s INTEGER NOT NULL CHECK (interval_s > 0),
            value DOUBLE,
            is_final BOOLEAN NOT NULL,
            received_at TIMESTAMPTZ NOT NULL
        );
        CREATE SEQUENCE collector_runs_id_seq;
        CREATE TABLE collector_runs (
            id BIGINT NOT NULL DEFAULT nextval('collector_runs_id_seq'),
            source_id BIGINT,
            provider VARCHAR,
            started_at TIMESTAMPTZ NOT NULL,
            duration_ms DOUBLE,
            outcome VARCHAR NOT NULL CHECK (outcome IN (
                'ok', 'rate_limited', 'auth_error', 'retired', 'connection_error', 'bad_response', 'skipped', 'spooled'
            )),
            http_status INTEGER,
            error VARCHAR,
            rows_written INTEGER,
            quota_used INTEGER,
            quota_remaining INTEGER
        );
        CREATE TABLE source_state (
            source_id BIGINT PRIMARY KEY,
            bookmark_ts TIMESTAMPTZ,
            consecutive_failures INTEGER NOT NULL DEFAULT 0,
            circuit VARCHAR NOT NULL DEFAULT 'closed' CHECK (circuit IN ('closed', 'open', 'half_open')),
            next_due_at TIMESTAMPTZ,
            retry_at TIMESTAMPTZ,
            stopped_reason VARCHAR,
            updated_at TIMESTAMPTZ
        );
        CREATE TABLE api_data_cache (
            source_id BIGINT,
            endpoint VARCHAR,
            fetched_at TIMESTAMPTZ,
            http_status INTEGER,
            body VARCHAR
        );
        CREATE TABLE quota_usage (
            provider VARCHAR NOT NULL,
            scope_key VARCHAR NOT NULL,
            period VARCHAR NOT NULL,
            bucket_start TIMESTAMPTZ NOT NULL,
            calls INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (provider, scope_key, period, bucket_start)
        );
        """,
    ),
    (
        3,
        "rollups",
        # Kept current by `core.rollups` after every write; small enough for the dashboard to read directly.
        # Migrations are frozen once released: this text must never change, only new migrations may follow.
        "".join(
            f"CREATE TABLE {table} (source_id BIGINT NOT NULL, bucket TIMESTAMPTZ NOT NULL, avg_value DOUBLE,"
            " energy_wh DOUBLE, covered_s INTEGER NOT NULL, readings INTEGER NOT NULL);"
            for table in ("readings_15min", "readings_hourly", "readings_daily")
        ),
    ),
    (
        4,
        "spool and gap bookkeeping",
        # `spool_applied`: names of spool entries already written (core.spool), so a crash between a commit and the
        # removal of the entry's directory never writes it twice. `gap_attempts`: windows the collector re-read to
        # fill a gap (core.gaps); a window the vendor still answers with nothing is not asked for again.
        """
        CREATE TABLE spool_applied (entry VARCHAR PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL);
        CREATE TABLE gap_attempts (
            source_id BIGINT NOT NULL,
            window_start TIMESTAMPTZ NOT NULL,
            window_end TIMESTAMPTZ NOT NULL,
            attempted_at TIMESTAMPTZ NOT NULL
        );
        """,
    ),
    (
        5,
        "views for SQL users",
        # Names instead of ids, local time beside UTC, kWh instead of Wh. Later changes come as new migrations
        # with CREATE OR REPLACE VIEW. `timezone(zone, ts)` turns a UTC instant into the site's wall-clock time.
        """
        CREATE VIEW v_sources AS
            SELECT s.id AS site_id, s.name AS site, s.timezone, m.id AS meter_id, m.name AS meter, m.category,
                   e.id AS source_id, e.name AS source, e.source_type, e.capacity_kw,
                   e.carbon_intensity_g_per_kwh, e.cost_per_mwh,
                   e.metadata->>'apiProvider' AS api_provider,
                   coalesce((e.metadata->>'useAPI')::BOOLEAN, false) AS use_api
            FROM energy_sources e JOIN meters m ON m.id = e.meter_id JOIN sites s ON s.id = m.site_id;
        CREATE VIEW v_readings AS
            SELECT v.site, v.meter, v.category, v.source, v.source_type, r.source_id,
                   r.ts, timezone(v.timezone, r.ts) AS ts_local, r.interval_s,
                   r.value AS power_w, r.value * r.interval_s / 3600.0 AS energy_wh, r.is_final, r.received_at
            FROM readings r JOIN v_sources v USING (source_id);
        """
        + "".join(
            f"""
        CREATE VIEW v_energy_{name} AS
            SELECT v.site, v.meter, v.category, v.source, v.source_type, b.source_id,
                   b.bucket, timezone(v.timezone, b.bucket) AS bucket_local,
                   b.energy_wh / 1000.0 AS energy_kwh, b.avg_value AS avg_power_w,
                   100.0 * b.covered_s / ({length}) AS coverage_pct, b.readings
            FROM {table} b JOIN v_sources v USING (source_id);
        """
            for name, table, length in (
                ("15min", "readings_15min", "900"),
                ("hourly", "readings_hourly", "3600"),
                # A site day lasts 23, 24 or 25 hours: from its local midnight to the next one.
                (
                    "daily",
                    "readings_daily",
                    "epoch(timezone(v.timezone, timezone(v.timezone, b.bucket) + INTERVAL 1 DAY)) - epoch(b.bucket)",
                ),
            )
        )
        + """
        CREATE VIEW v_collector_runs AS
            SELECT c.id, c.started_at, v.site, v.source, c.source_id, c.provider, c.outcome, c.http_status,
                   c.error, c.duration_ms, c.rows_written, c.quota_used, c.quota_remaining
            FROM collector_runs c LEFT JOIN v_sources v USING (source_id);
        """,
    ),
    (
        6,
        "alerts",
        # One row per occurrence of a rule's condition on a source (core.alerts): at most one row per (rule,
        # source) is open or acknowledged at a time; a new occurrence after `resolved_at` is a new row. No CHECK on
        # `rule`, so a new rule needs no migration. `site_id` is the source's site when the alert opened.
        # The view's LEFT JOINs keep the history of sources deleted since.
        """
        CREATE SEQUENCE alerts_id_seq;
        CREATE TABLE alerts (
            id BIGINT PRIMARY KEY DEFAULT nextval('alerts_id_seq'),
            rule VARCHAR NOT NULL,
            source_id BIGINT NOT NULL,
            site_id BIGINT,
            severity VARCHAR NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
            status VARCHAR NOT NULL CHECK (status IN ('open', 'acknowledged', 'resolved')),
            opened_at TIMESTAMPTZ NOT NULL,
            last_seen_at TIMESTAMPTZ NOT NULL,
            acknowledged_at TIMESTAMPTZ,
            resolved_at TIMESTAMPTZ,
            message VARCHAR NOT NULL,
            value DOUBLE
        );
        CREATE VIEW v_alerts AS
            SELECT a.id, a.rule, a.severity, a.status, s.name AS site, m.name AS meter, m.category,
                   e.name AS source, a.message, a.value,
                   a.opened_at, timezone(s.timezone, a.opened_at) AS opened_at_local,
                   a.last_seen_at, timezone(s.timezone, a.last_seen_at) AS last_seen_at_local,
                   a.acknowledged_at, timezone(s.timezone, a.acknowledged_at) AS acknowledged_at_local,
                   a.resolved_at, timezone(s.timezone, a.resolved_at) AS resolved_at_local,
                   s.timezone, a.site_id, a.source_id
            FROM alerts a
            LEFT JOIN energy_sources e ON e.id = a.source_id
            LEFT JOIN meters m ON m.id = e.meter_id
            LEFT JOIN sites s ON s.id = a.site_id;
        """,
    ),
]

LATEST_VERSION = MIGRATIONS[-1][0]


def _applied(con: duckdb.DuckDBPyConnection) -> set[int]:
    rows = con.sql("SELECT version FROM schema_migrations").fetchall()
    return {int(r[0]) for r in rows}


def schema_version(store: Store) -> int:
    """The newest applied migration, 0 for a new file."""
    if not store.exists():
        return 0
    with store.connect(read_only=True) as con:
        present = con.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_migrations'").fetchall()[0][
            0
        ]
        if not present:
            return 0
        return max(_applied(con), default=0)


def migrate(store: Store) -> list[int]:
    """Apply pending migrations; returns the versions applied (empty when already current)."""
    if schema_version(store) >= LATEST_VERSION:
        return []
    applied_now: list[int] = []
    with store.connect() as con:
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = _applied(con)
        for version, name, sql in MIGRATIONS:
            if version in done:
                continue
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(sql)
                con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
            log.info("applied schema migration %d (%s)", version, name)
            applied_now.append(version)
    return applied_now
