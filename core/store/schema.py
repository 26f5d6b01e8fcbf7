"""Versioned schema migrations. Each runs once, in its own transaction, recorded in `schema_migrations`.

DuckDB's foreign keys block updating a referenced parent row and deleting parent and children in one
transaction, so referential integrity is kept by `core.catalog.catalog` (children deleted first, in the same
transaction) and checked by tests rather than declared here. Names are unique case-insensitively, which a
UNIQUE constraint cannot express; `core.catalog.catalog` checks that too, under the write lock.
"""

from __future__ import annotations

import logging

import duckdb

from core.store.store import Store

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
        # data on disk. Its natural key is (source_id, ts); `core.store.readings_store.ingest` keeps it unique.
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
        # Kept current by `core.store.rollups` after every write; small enough for the dashboard to read directly.
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
        # `spool_applied`: names of spool entries already written (core.store.spool), so a crash between a commit and
        # the removal of the entry's directory never writes it twice. `gap_attempts`: windows the collector re-read to
        # fill a gap (core.collect.gaps); a window the vendor still answers with nothing is not asked for again.
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
        # One row per occurrence of a rule's condition on a source (core.analytics.alerts): at most one row per (rule,
        # source) is open or acknowledged at a time; a new occurrence after `resolved_at` is a new row. No CHECK on
        # `rule`, so a new rule needs no migration. `site_id` is the source's site when the alert opened.
        # Deleting a source deletes its alerts too (`SOURCE_DATA_TABLES`).
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
    (
        7,
        "daily KPIs view",
        # v_kpi_daily: the KPIs of core.analytics.kpi_formulas per site and local day, from `readings_daily`: one row
        # per site and day that has data; today's row holds today so far, and its coverage is of the whole day. The
        # same rules as the Python: a grid flow without a source is unknown (NULL), production and battery without a
        # source are 0; a role whose sources covered no second of the day is unknown (NULL), not 0; ratios are clipped
        # to [0, 1] and NULL when their denominator is <= 0. DuckDB's greatest/least skip NULLs, so every NULL case is
        # written out with CASE. Battery charge and discharge are left out: the daily rollup holds their net.
        """
        CREATE VIEW v_kpi_daily AS
        WITH roles AS (
            SELECT s.id AS site_id, s.name AS site, s.timezone, e.id AS source_id,
                   e.carbon_intensity_g_per_kwh AS intensity, e.cost_per_mwh AS price,
                   CASE
                       WHEN m.category = 'PROD' THEN 'production'
                       WHEN m.category = 'CONS' AND e.source_type = 'load' THEN 'load'
                       WHEN m.category = 'CONS' AND e.source_type = 'grid' THEN 'grid_import'
                       WHEN m.category = 'INJ' THEN 'grid_export'
                       WHEN m.category = 'STOR' AND e.source_type = 'battery' THEN 'battery'
                   END AS role
            FROM energy_sources e JOIN meters m ON m.id = e.meter_id JOIN sites s ON s.id = m.site_id
        ),
        site_roles AS (
            SELECT site_id,
                   bool_or(role = 'production') AS has_prod, bool_or(role = 'load') AS has_load,
                   bool_or(role = 'grid_import') AS has_imp, bool_or(role = 'grid_export') AS has_exp,
                   bool_or(role = 'battery') AS has_bat,
                   avg(intensity) FILTER (WHERE role = 'production') AS prod_intensity_configured,
                   avg(intensity) FILTER (WHERE role = 'grid_import') AS imp_intensity_configured,
                   avg(price) FILTER (WHERE role = 'grid_import') AS imp_price_configured,
                   count(*) AS energy_sources
            FROM roles WHERE role IS NOT NULL GROUP BY site_id
        ),
        sums AS (
            SELECT r.site_id, r.site, r.timezone, d.bucket,
                   -- a site day lasts 23, 24 or 25 hours; no source counts for more than the whole day
                   epoch(timezone(r.timezone, timezone(r.timezone, d.bucket) + INTERVAL 1 DAY))
                       - epoch(d.bucket) AS day_s,
                   sum(least(d.covered_s, day_s)) AS covered_s,
                   -- seconds with data per role: a role with sources but none of them covering a second is unknown
                   coalesce(sum(d.covered_s) FILTER (WHERE r.role = 'production'), 0) AS prod_covered,
                   coalesce(sum(d.covered_s) FILTER (WHERE r.role = 'load'), 0) AS load_covered,
                   coalesce(sum(d.covered_s) FILTER (WHERE r.role = 'grid_import'), 0) AS imp_covered,
                   coalesce(sum(d.covered_s) FILTER (WHERE r.role = 'grid_export'), 0) AS exp_covered,
                   coalesce(sum(d.covered_s) FILTER (WHERE r.role = 'battery'), 0) AS bat_covered,
                   coalesce(sum(d.energy_wh) FILTER (WHERE r.role = 'production'), 0) / 1000.0 AS prod_kwh,
                   coalesce(sum(d.energy_wh * r.intensity) FILTER (WHERE r.role = 'production'), 0) / 1000.0
                       AS prod_co2_g,
                   coalesce(sum(d.energy_wh) FILTER (WHERE r.role = 'load'), 0) / 1000.0 AS load_kwh,
                   coalesce(sum(d.energy_wh) FILTER (WHERE r.role = 'grid_import'), 0) / 1000.0 AS imp_kwh,
                   coalesce(sum(d.energy_wh * r.intensity) FILTER (WHERE r.role = 'grid_import'), 0) / 1000.0
                       AS imp_co2_g,
                   coalesce(sum(d.energy_wh * r.price) FILTER (WHERE r.role = 'grid_import'), 0) / 1e6 AS imp_cost,
                   coalesce(sum(d.energy_wh) FILTER (WHERE r.role = 'grid_export'), 0) / 1000.0 AS exp_kwh,
                   coalesce(sum(d.energy_wh * r.price) FILTER (WHERE r.role = 'grid_export'), 0) / 1e6 AS exp_revenue,
                   coalesce(sum(d.energy_wh) FILTER (WHERE r.role = 'battery'), 0) / 1000.0 AS bat_kwh
            FROM readings_daily d JOIN roles r ON r.source_id = d.source_id
            WHERE r.role IS NOT NULL
            GROUP BY r.site_id, r.site, r.timezone, d.bucket
        ),
        flows AS (
            SELECT x.*, s.has_prod, s.has_load, s.has_imp, s.has_exp, s.energy_sources,
                   CASE WHEN NOT s.has_prod THEN 0.0 WHEN x.prod_covered > 0 THEN x.prod_kwh END AS e_prod,
                   CASE WHEN s.has_imp AND x.imp_covered > 0 THEN x.imp_kwh END AS e_imp,
                   CASE WHEN s.has_exp AND x.exp_covered > 0 THEN x.exp_kwh END AS e_exp,
                   CASE WHEN NOT coalesce(s.has_bat, false) THEN 0.0 WHEN x.bat_covered > 0 THEN x.bat_kwh END AS e_bat,
                   CASE WHEN x.prod_kwh > 0 THEN x.prod_co2_g / x.prod_kwh
                        ELSE coalesce(s.prod_intensity_configured, 0) END AS i_prod,
                   CASE WHEN s.has_imp THEN
                        CASE WHEN x.imp_kwh > 0 THEN x.imp_co2_g / x.imp_kwh ELSE s.imp_intensity_configured END
                   END AS i_grid,
                   CASE WHEN s.has_imp THEN
                        CASE WHEN x.imp_kwh > 0 THEN x.imp_cost * 1000 / x.imp_kwh ELSE s.imp_price_configured END
                   END AS p_imp
            FROM sums x JOIN site_roles s USING (site_id)
        ),
        balance AS (
            SELECT f.*,
                   CASE WHEN has_load THEN CASE WHEN load_covered > 0 THEN load_kwh END
                        ELSE e_prod + e_imp - e_exp + e_bat END AS e_load,
                   CASE WHEN NOT has_prod THEN 0.0
                        WHEN e_prod IS NOT NULL AND e_exp IS NOT NULL THEN greatest(e_prod - e_exp, 0) END AS e_self
            FROM flows f
        )
        SELECT site_id, site, CAST(timezone(timezone, bucket) AS DATE) AS day, bucket,
               100.0 * covered_s / (energy_sources * day_s) AS coverage_pct,
               e_prod AS e_prod_kwh, e_exp AS e_exp_kwh, e_imp AS e_imp_kwh, e_load AS e_load_kwh,
               e_self AS e_self_kwh, e_bat AS battery_net_kwh,
               CASE WHEN e_prod > 0 AND e_self IS NOT NULL THEN greatest(0, least(1, e_self / e_prod)) END
                   AS self_consumption,
               CASE WHEN e_load > 0 AND e_imp IS NOT NULL THEN greatest(0, least(1, (e_load - e_imp) / e_load)) END
                   AS self_sufficiency,
               CASE WHEN e_imp IS NOT NULL AND e_self IS NOT NULL THEN (imp_co2_g + e_self * i_prod) / 1000 END
                   AS emissions_kg,
               (e_prod * i_grid - prod_co2_g) / 1000 AS co2_avoided_kg,
               CASE WHEN e_imp IS NOT NULL THEN imp_cost END AS import_cost,
               CASE WHEN e_exp IS NOT NULL THEN exp_revenue END AS export_revenue,
               e_self * p_imp / 1000 AS savings
        FROM balance;
        """,
    ),
    (
        8,
        "clear stops recorded for credentials our keys could not decrypt",
        # Versions up to migration 7 stopped a source whose stored credentials our keys could not decrypt, "until its
        # settings change", with this reason (core.collect.collection's prefix, then core.store.crypto's decryption
        # error). That was our key, not the vendor's refusal: restoring the key must be enough, so those stops are
        # cleared once here. Other stops (a vendor's auth error, a retired API) stay, whatever their text.
        """
        UPDATE source_state SET stopped_reason = NULL
        WHERE starts_with(stopped_reason, 'The stored credentials A stored credential cannot be decrypted');
        """,
    ),
]

MIGRATIONS.append(
    (
        9,
        "daily KPIs view readable by DuckDB 1.5",
        # Migration 7's view, rewritten: DuckDB 1.5 (analysts' CLI and drivers, core.store.file_format) cannot bind an
        # alias reused in its own SELECT, so `v_kpi_daily` failed there. The day's length is now computed in a lateral
        # join. Same rows, same numbers.
        """
        CREATE OR REPLACE VIEW v_kpi_daily AS
        WITH roles AS (
            SELECT s.id AS site_id, s.name AS site, s.timezone, e.id AS source_id,
                   e.carbon_intensity_g_per_kwh AS intensity, e.cost_per_mwh AS price,
                   CASE
                       WHEN m.category = 'PROD' THEN 'production'
                       WHEN m.category = 'CONS' AND e.source_type = 'load' THEN 'load'
                       WHEN m.category = 'CONS' AND e.source_type = 'grid' THEN 'grid_import'
                       WHEN m.category = 'INJ' THEN 'grid_export'
                       WHEN m.category = 'STOR' AND e.source_type = 'battery' THEN 'battery'
                   END AS role
            FROM energy_sources e JOIN meters m ON m.id = e.meter_id JOIN sites s ON s.id = m.site_id
        ),
        site_roles AS (
            SELECT site_id,
                   bool_or(role = 'production') AS has_prod, bool_or(role = 'load') AS has_load,
                   bool_or(role = 'grid_import') AS has_imp, bool_or(role = 'grid_export') AS has_exp,
                   bool_or(role = 'battery') AS has_bat,
                   avg(intensity) FILTER (WHERE role = 'production') AS prod_intensity_configured,
                   avg(intensity) FILTER (WHERE role = 'grid_import') AS imp_intensity_configured,
                   avg(price) FILTER (WHERE role = 'grid_import') AS imp_price_configured,
                   count(*) AS energy_sources
            FROM roles WHERE role IS NOT NULL GROUP BY site_id
        ),
        sums AS (
            SELECT r.site_id, r.site, r.timezone, d.bucket,
                   k.day_s,
                   sum(least(d.covered_s, k.day_s)) AS covered_s,
                   -- seconds with data per role: a role with sources but none of them covering a second is unknown
                   coalesce(sum(d.covered_s) FILTER (WHERE r.role = 'production'), 0) AS prod_covered,
                   coalesce(sum(d.covered_s) FILTER (WHERE r.role = 'load'), 0) AS load_covered,
                   coalesce(sum(d.covered_s) FILTER (WHERE r.role = 'grid_import'), 0) AS imp_covered,
                   coalesce(sum(d.covered_s) FILTER (WHERE r.role = 'grid_export'), 0) AS exp_covered,
                   coalesce(sum(d.covered_s) FILTER (WHERE r.role = 'battery'), 0) AS bat_covered,
                   coalesce(sum(d.energy_wh) FILTER (WHERE r.role = 'production'), 0) / 1000.0 AS prod_kwh,
                   coalesce(sum(d.energy_wh * r.intensity) FILTER (WHERE r.role = 'production'), 0) / 1000.0
                       AS prod_co2_g,
                   coalesce(sum(d.energy_wh) FILTER (WHERE r.role = 'load'), 0) / 1000.0 AS load_kwh,
                   coalesce(sum(d.energy_wh) FILTER (WHERE r.role = 'grid_import'), 0) / 1000.0 AS imp_kwh,
                   coalesce(sum(d.energy_wh * r.intensity) FILTER (WHERE r.role = 'grid_import'), 0) / 1000.0
                       AS imp_co2_g,
                   coalesce(sum(d.energy_wh * r.price) FILTER (WHERE r.role = 'grid_import'), 0) / 1e6 AS imp_cost,
                   coalesce(sum(d.energy_wh) FILTER (WHERE r.role = 'grid_export'), 0) / 1000.0 AS exp_kwh,
                   coalesce(sum(d.energy_wh * r.price) FILTER (WHERE r.role = 'grid_export'), 0) / 1e6 AS exp_revenue,
                   coalesce(sum(d.energy_wh) FILTER (WHERE r.role = 'battery'), 0) / 1000.0 AS bat_kwh
            FROM readings_daily d JOIN roles r ON r.source_id = d.source_id
            -- a site day lasts 23, 24 or 25 hours; no source counts for more than the whole day. In a join rather
            -- than as an alias reused in the same SELECT, which DuckDB 1.5 (analysts' CLI) cannot bind.
            CROSS JOIN LATERAL (
                SELECT epoch(timezone(r.timezone, timezone(r.timezone, d.bucket) + INTERVAL 1 DAY))
                    - epoch(d.bucket) AS day_s
            ) k
            WHERE r.role IS NOT NULL
            GROUP BY r.site_id, r.site, r.timezone, d.bucket, k.day_s
        ),
        flows AS (
            SELECT x.*, s.has_prod, s.has_load, s.has_imp, s.has_exp, s.energy_sources,
                   CASE WHEN NOT s.has_prod THEN 0.0 WHEN x.prod_covered > 0 THEN x.prod_kwh END AS e_prod,
                   CASE WHEN s.has_imp AND x.imp_covered > 0 THEN x.imp_kwh END AS e_imp,
                   CASE WHEN s.has_exp AND x.exp_covered > 0 THEN x.exp_kwh END AS e_exp,
                   CASE WHEN NOT coalesce(s.has_bat, false) THEN 0.0 WHEN x.bat_covered > 0 THEN x.bat_kwh END AS e_bat,
                   CASE WHEN x.prod_kwh > 0 THEN x.prod_co2_g / x.prod_kwh
                        ELSE coalesce(s.prod_intensity_configured, 0) END AS i_prod,
                   CASE WHEN s.has_imp THEN
                        CASE WHEN x.imp_kwh > 0 THEN x.imp_co2_g / x.imp_kwh ELSE s.imp_intensity_configured END
                   END AS i_grid,
                   CASE WHEN s.has_imp THEN
                        CASE WHEN x.imp_kwh > 0 THEN x.imp_cost * 1000 / x.imp_kwh ELSE s.imp_price_configured END
                   END AS p_imp
            FROM sums x JOIN site_roles s USING (site_id)
        ),
        balance AS (
            SELECT f.*,
                   CASE WHEN has_load THEN CASE WHEN load_covered > 0 THEN load_kwh END
                        ELSE e_prod + e_imp - e_exp + e_bat END AS e_load,
                   CASE WHEN NOT has_prod THEN 0.0
                        WHEN e_prod IS NOT NULL AND e_exp IS NOT NULL THEN greatest(e_prod - e_exp, 0) END AS e_self
            FROM flows f
        )
        SELECT site_id, site, CAST(timezone(timezone, bucket) AS DATE) AS day, bucket,
               100.0 * covered_s / (energy_sources * day_s) AS coverage_pct,
               e_prod AS e_prod_kwh, e_exp AS e_exp_kwh, e_imp AS e_imp_kwh, e_load AS e_load_kwh,
               e_self AS e_self_kwh, e_bat AS battery_net_kwh,
               CASE WHEN e_prod > 0 AND e_self IS NOT NULL THEN greatest(0, least(1, e_self / e_prod)) END
                   AS self_consumption,
               CASE WHEN e_load > 0 AND e_imp IS NOT NULL THEN greatest(0, least(1, (e_load - e_imp) / e_load)) END
                   AS self_sufficiency,
               CASE WHEN e_imp IS NOT NULL AND e_self IS NOT NULL THEN (imp_co2_g + e_self * i_prod) / 1000 END
                   AS emissions_kg,
               (e_prod * i_grid - prod_co2_g) / 1000 AS co2_avoided_kg,
               CASE WHEN e_imp IS NOT NULL THEN imp_cost END AS import_cost,
               CASE WHEN e_exp IS NOT NULL THEN exp_revenue END AS export_revenue,
               e_self * p_imp / 1000 AS savings
        FROM balance;
        """,
    )
)

MIGRATIONS.append(
    (
        10,
        "request queue figures for API Health",
        # The collector's per-account queues (core.providers.quota: calls waiting for their turn under a vendor's
        # per-minute limit) live in its memory; API Health runs in another process. The collector writes each
        # account's figures here at most every few seconds (core.store.quota_store.StoredQuotaLedger.publish_queues),
        # one row per account replaced in place: a table because the page reads everything else from this file in
        # one read-only connection, and the spool folder is the collector's private staging area, not a source for
        # pages. `updated_at` lets the page tell figures of a stopped collector from current ones.
        """
        CREATE TABLE IF NOT EXISTS request_queues (
            provider VARCHAR NOT NULL,
            scope_key VARCHAR NOT NULL,
            queued INTEGER NOT NULL,
            calls INTEGER NOT NULL,
            wait_p50_s DOUBLE,
            wait_p95_s DOUBLE,
            updated_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (provider, scope_key)
        );
        """,
    )
)

MIGRATIONS.append(
    (
        11,
        "push sources' credentials",
        # A Push source's bearer token is 256 random bits: only its SHA-256 is kept (`token_hash`), enough to check a
        # request and useless to whoever reads the file; `token_hint` (its last 4 characters) tells a user which
        # token a sender has. A source in signature mode is checked by an HMAC whose key must be known, so that key is
        # an encrypted credential in `source_secrets` like every other, and `signed` says the mode
        # (core.store.push_tokens, docs/real-time.md).
        """
        CREATE TABLE IF NOT EXISTS push_tokens (
            source_id BIGINT PRIMARY KEY,
            token_hash VARCHAR NOT NULL UNIQUE,
            token_hint VARCHAR NOT NULL,
            signed BOOLEAN NOT NULL DEFAULT false,
            created_at TIMESTAMPTZ NOT NULL
        );
        """,
    )
)

MIGRATIONS.append(
    (
        12,
        "push requests for API Health",
        # The ingest service counts requests per Push source in memory (accepted, refused and why) and writes each
        # source's figures of the last `window_s` here every few seconds (core.collect.push_activity): API Health runs
        # in another process and reads everything from this file. One row per source, replaced in place.
        """
        CREATE TABLE IF NOT EXISTS push_activity (
            source_id BIGINT PRIMARY KEY,
            window_s INTEGER NOT NULL,
            accepted INTEGER NOT NULL,
            refused INTEGER NOT NULL,
            readings INTEGER NOT NULL,
            last_request_at TIMESTAMPTZ,
            last_refused_at TIMESTAMPTZ,
            last_refusal VARCHAR,
            updated_at TIMESTAMPTZ NOT NULL
        );
        """,
    )
)

MIGRATIONS.append(
    (
        13,
        "reading coverage, MQTT connection state",
        # `coverage`: the share of an interval for which a device's samples were seen (MQTT minutes, docs/real-time.md);
        # NULL for every existing row and every vendor, import or push row: the interval as reported.
        # `mqtt_status`: the collector's broker connections, per MQTT source, for API Health (another process), written
        # every few seconds (core.collect.mqtt_status); one row per source, replaced in place. Never a password.
        """
        ALTER TABLE readings ADD COLUMN coverage DOUBLE;
        CREATE TABLE IF NOT EXISTS mqtt_status (
            source_id BIGINT PRIMARY KEY,
            broker VARCHAR NOT NULL,
            state VARCHAR NOT NULL,
            reason VARCHAR,
            since TIMESTAMPTZ NOT NULL,
            subscribed BOOLEAN NOT NULL,
            last_message_at TIMESTAMPTZ,
            messages_per_minute INTEGER NOT NULL,
            payload_errors INTEGER NOT NULL,
            last_payload_error VARCHAR,
            updated_at TIMESTAMPTZ NOT NULL
        );
        """,
    )
)

MIGRATIONS.append(
    (
        14,
        "Enphase live stream minutes and stream state",
        # `live_readings`: 1-minute averages of an Enphase system's live stream, per source, with their coverage
        # (docs/real-time.md, "The Enphase live stream"). A table of their own because the same source has the vendor's
        # 5/15-minute history in `readings`, which is its energy: a minute row beside a 15-minute row of the same start
        # would share the natural key (source_id, ts) and double the energy. Live reads both; KPIs, History and the
        # rollups never read this one. No PRIMARY KEY for the reason `readings` has none; the natural key is
        # (source_id, ts), kept unique by `core.store.live_readings`.
        # `stream_status`: the collector's streams per source for API Health (another process), written every few
        # seconds (core.collect.stream_status); one row per source, replaced in place.
        """
        CREATE TABLE IF NOT EXISTS live_readings (
            source_id BIGINT NOT NULL,
            ts TIMESTAMPTZ NOT NULL,
            interval_s INTEGER NOT NULL CHECK (interval_s > 0),
            value DOUBLE,
            coverage DOUBLE,
            received_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE IF NOT EXISTS stream_status (
            source_id BIGINT PRIMARY KEY,
            system_id VARCHAR NOT NULL,
            state VARCHAR NOT NULL,
            reason VARCHAR,
            since TIMESTAMPTZ NOT NULL,
            wanted_by VARCHAR,
            last_frame_at TIMESTAMPTZ,
            frames_per_minute INTEGER NOT NULL,
            streams_opened INTEGER NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        );
        """,
    )
)

MIGRATIONS.append(
    (
        15,
        "users, personal API tokens and the audit log",
        # docs/access.md. `users`: everyone who signed in through the identity provider, keyed by the provider's
        # `sub` claim; `role_from` says whether the role is the provider's claim (re-read at every sign-in) or an
        # admin's choice on the Users page ('table'), or the first user's admin ('first user').
        # `api_tokens`: personal tokens for scripts, kept as SHA-256 hashes with the last four characters; a token
        # acts with its owner's current role, so demoting a person demotes their tokens.
        # `audit_log`: one row per changed object, added in the change's own transaction, never updated
        # (core.store.audit_log). Deleting a source keeps its rows: the log outlives what it describes.
        """
        CREATE TABLE IF NOT EXISTS users (
            subject VARCHAR PRIMARY KEY,
            email VARCHAR,
            name VARCHAR,
            role VARCHAR NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
            role_from VARCHAR NOT NULL CHECK (role_from IN ('claim', 'table', 'first user', 'default')),
            created_at TIMESTAMPTZ NOT NULL,
            last_seen_at TIMESTAMPTZ NOT NULL
        );
        CREATE SEQUENCE IF NOT EXISTS api_tokens_id_seq;
        CREATE TABLE IF NOT EXISTS api_tokens (
            id BIGINT PRIMARY KEY DEFAULT nextval('api_tokens_id_seq'),
            owner_subject VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            token_hash VARCHAR NOT NULL UNIQUE,
            token_hint VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            expires_at TIMESTAMPTZ,
            last_used_at TIMESTAMPTZ,
            revoked_at TIMESTAMPTZ
        );
        CREATE SEQUENCE IF NOT EXISTS audit_log_id_seq;
        CREATE TABLE IF NOT EXISTS audit_log (
            id BIGINT PRIMARY KEY DEFAULT nextval('audit_log_id_seq'),
            changed_at TIMESTAMPTZ NOT NULL,
            actor VARCHAR NOT NULL,
            actor_kind VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            object_type VARCHAR NOT NULL,
            object_id BIGINT,
            object_name VARCHAR,
            fields VARCHAR[],
            before JSON,
            after JSON,
            summary VARCHAR NOT NULL,
            origin VARCHAR
        );
        """,
    )
)

LATEST_VERSION = MIGRATIONS[-1][0]

# Every table whose rows belong to one source (`source_id`): deleting the source deletes them, in the same
# transaction (`core.catalog.catalog`). `quota_usage` is not among them: it counts calls against a vendor account, and
# the calls a deleted source made still count in that account's month.
SOURCE_DATA_TABLES = (
    "readings",
    "readings_15min",
    "readings_hourly",
    "readings_daily",
    "collector_runs",
    "source_state",
    "api_data_cache",
    "gap_attempts",
    "alerts",
    "source_secrets",
    "push_tokens",
    "push_activity",
    "mqtt_status",
    "live_readings",
    "stream_status",
)


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
