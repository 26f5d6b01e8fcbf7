"""Alerts in the database: evaluating the rules (`core.alert_rules`) and keeping each alert's lifecycle; listing
and acknowledging them for the Alerts page.

Lifecycle of a row of `alerts` (migration 6):
- a rule FIRING for a (rule, source) with no open or acknowledged row opens one: status `open`, `opened_at` =
  `last_seen_at` = now;
- while it keeps firing, `last_seen_at`, `message`, `value` follow the latest evaluation (the status stays: an
  acknowledged alert stays acknowledged);
- once the rule says CLEAR, or no longer applies to the source (deleted, API switched off, type changed), the row
  gets `resolved_at` = now and status `resolved`; UNKNOWN leaves it as it is;
- `acknowledge` moves open rows to `acknowledged` with `acknowledged_at`;
- a new occurrence after resolution opens a new row, so the table is the alerts' history.

An evaluation reads in one short read-only connection (the configuration, a few hours of readings, the newest
reading time per source, the last days of the daily rollup) and writes in one short transaction, whose checks of
the open rows run under the write lock: evaluations racing each other cannot open the same alert twice, and
repeating one changes nothing but `last_seen_at`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb
import polars as pl

from core.alert_rules import (
    DAILY_SCHEMA,
    LATEST_SCHEMA,
    READING_SCHEMA,
    SOURCE_SCHEMA,
    Finding,
    Rule,
    State,
    Thresholds,
    evaluate_rules,
)
from core.models import ApiSettings, UpdateFrequency
from core.roles import Role, role_expr
from core.store import Store

STATUSES = ("open", "acknowledged", "resolved")
ACTIVE = ("open", "acknowledged")
# The newest reading of a source is looked for this far back in `readings`, then (rarely) in the hourly rollup.
LATEST_LOOKBACK = timedelta(days=2)
DAILY_LOOKBACK = timedelta(days=3)  # yesterday in any time zone, seen from any hour of today
EVALUATED_KEY = "alerts_evaluated_at"  # in `app_state`: when the collector last evaluated the rules

_names = itertools.count()


@dataclass(frozen=True)
class AlertInputs:
    sources: pl.DataFrame
    readings: pl.DataFrame
    latest: pl.DataFrame
    daily: pl.DataFrame


@dataclass(frozen=True)
class Evaluation:
    opened: int
    resolved: int
    active: int  # firing now, acknowledged or not

    def summary(self) -> str:
        return f"{self.opened} opened, {self.resolved} resolved, {self.active} firing"


def _ts(moment: datetime) -> str:
    """A TIMESTAMPTZ literal: the readings queries use literals so DuckDB prunes row groups by their zone maps."""
    return f"TIMESTAMPTZ '{moment.astimezone(UTC).isoformat()}'"


def _ids(ids: Iterable[int]) -> str:
    return ", ".join(str(int(i)) for i in ids) or "NULL"


_API = ApiSettings.model_fields  # the metadata JSON's keys are the model's aliases
_SOURCES_SQL = f"""
    SELECT e.id AS source_id, s.id AS site_id, m.category, e.source_type, e.capacity_kw,
           coalesce((e.metadata->>'{_API["use_api"].alias}')::BOOLEAN, false) AS use_api,
           e.metadata->>'{_API["update_frequency"].alias}' AS update_frequency,
           e.created_at, s.latitude, s.longitude, s.timezone
    FROM energy_sources e JOIN meters m ON m.id = e.meter_id JOIN sites s ON s.id = m.site_id
"""


def _source_table(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """SOURCE_SCHEMA straight from SQL: validating every source's model costs ~0.1 ms each, here a few ms in all."""
    default = UpdateFrequency(_API["update_frequency"].default)
    minutes = {f.value: f.minutes for f in UpdateFrequency}
    frame = con.sql(_SOURCES_SQL).pl()
    cadence = pl.col("update_frequency").replace_strict(minutes, default=default.minutes, return_dtype=pl.Int64)
    return frame.with_columns(cadence.alias("cadence_min")).select(SOURCE_SCHEMA.names()).cast(dict(SOURCE_SCHEMA))


def _latest(
    con: duckdb.DuckDBPyConnection, sources: pl.DataFrame, readings: pl.DataFrame, now: datetime
) -> pl.DataFrame:
    """The end of each source's newest reading with a value: exact from `readings` (which reach back further
    than any no-data limit), else the end of its newest hour with data in the hourly rollup (sources silent for
    hours or days, which the rule flags either way): the last days first, the whole table only if still missing."""
    end = pl.col("ts") + pl.duration(seconds=pl.col("interval_s").cast(pl.Int64))
    latest = readings.group_by("source_id").agg(end.max().alias("last_end"))
    silent = set(sources.filter(pl.col("use_api"))["source_id"].to_list()) - set(latest["source_id"].to_list())
    for bound in (f"bucket >= {_ts(now - LATEST_LOOKBACK)} AND ", ""):
        if not silent:
            break
        older = con.sql(
            "SELECT source_id, max(bucket) + INTERVAL 1 HOUR AS last_end FROM readings_hourly"
            f" WHERE {bound}covered_s > 0 AND source_id IN ({_ids(silent)}) GROUP BY source_id"
        ).pl()
        latest = pl.concat([latest.cast(dict(LATEST_SCHEMA)), older.cast(dict(LATEST_SCHEMA))])  # type: ignore[arg-type]
        silent -= set(older["source_id"].to_list())
    return latest.cast(dict(LATEST_SCHEMA))  # type: ignore[arg-type]


def read_inputs(con: duckdb.DuckDBPyConnection, now: datetime, th: Thresholds) -> AlertInputs:
    """What the rules need, bounded in time so it costs the same on a year of data as on a day."""
    sources = _source_table(con)
    storage = sources.filter(role_expr().is_in([Role.SOC.value, Role.BATTERY.value]))["source_id"]
    short, long = now - th.short_read, now - th.long_read
    readings = (
        con.sql(
            "SELECT source_id, ts, interval_s, value FROM readings"
            f" WHERE ts >= {_ts(min(short, long))} AND ts < {_ts(now)} AND value IS NOT NULL"
            f" AND (ts >= {_ts(short)} OR source_id IN ({_ids(storage)}))"
        )
        .pl()
        .cast(dict(READING_SCHEMA))
    )
    daily = con.sql(
        "SELECT source_id, bucket, energy_wh, covered_s FROM readings_daily"
        f" WHERE bucket >= {_ts(now - DAILY_LOOKBACK)} AND bucket < {_ts(now)}"
    ).pl()
    return AlertInputs(
        sources=sources,
        readings=readings,
        latest=_latest(con, sources, readings, now),
        daily=daily.cast(dict(DAILY_SCHEMA)),
    )


FINDING_SCHEMA = pl.Schema(
    [
        ("rule", pl.Utf8()),
        ("source_id", pl.Int64()),
        ("site_id", pl.Int64()),
        ("severity", pl.Utf8()),
        ("state", pl.Utf8()),
        ("message", pl.Utf8()),
        ("value", pl.Float64()),
    ]
)


def apply_findings(con: duckdb.DuckDBPyConnection, findings: list[Finding], now: datetime) -> Evaluation:
    """Move the stored alerts to what `findings` say (see the module docstring). Runs in the caller's transaction."""
    frame = pl.DataFrame(
        [
            (f.rule.value, f.source_id, f.site_id, f.rule.severity, f.state.value, f.message, f.value)
            for f in findings
            if f.state != State.CLEAR  # whatever is neither firing nor unknown resolves: clear ones need no row
        ],
        schema=FINDING_SCHEMA,
        orient="row",
    )
    view = f"_alert_findings_{next(_names)}"
    same = "a.rule = f.rule AND a.source_id = f.source_id"
    active = "a.status IN ('open', 'acknowledged')"
    con.register(view, frame)
    try:
        con.execute(
            f"UPDATE alerts a SET last_seen_at = ?, message = f.message, value = f.value, severity = f.severity"
            f" FROM {view} f WHERE {active} AND f.state = 'firing' AND {same}",
            [now],
        )
        resolved = con.execute(
            f"UPDATE alerts a SET status = 'resolved', resolved_at = ? WHERE {active} AND NOT EXISTS"
            f" (SELECT 1 FROM {view} f WHERE {same} AND f.state IN ('firing', 'unknown')) RETURNING id",
            [now],
        ).fetchall()
        opened = con.execute(
            "INSERT INTO alerts (rule, source_id, site_id, severity, status, opened_at, last_seen_at, message, value)"
            f" SELECT f.rule, f.source_id, f.site_id, f.severity, 'open', ?, ?, f.message, f.value FROM {view} f"
            f" WHERE f.state = 'firing' AND NOT EXISTS (SELECT 1 FROM alerts a WHERE {active} AND {same})"
            " RETURNING id",
            [now, now],
        ).fetchall()
    finally:
        con.unregister(view)
    con.execute(
        "INSERT INTO app_state (key, value, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        [EVALUATED_KEY, now.astimezone(UTC).isoformat(), now],
    )
    firing = sum(1 for f in findings if f.state == State.FIRING)
    return Evaluation(opened=len(opened), resolved=len(resolved), active=firing)


def evaluate(store: Store, th: Thresholds, now: datetime, *, timeout_s: float | None = None) -> Evaluation:
    """Evaluate every rule at `now` and store the outcome: one read-only connection, then one short transaction.

    `timeout_s` bounds the wait for the file (the collector passes a short one and skips a turn when it is held).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    with store.connect(read_only=True, timeout_s=timeout_s) as con:
        inputs = read_inputs(con, now, th)
    findings = evaluate_rules(inputs.sources, inputs.readings, inputs.latest, inputs.daily, now, th)
    with store.transaction(timeout_s=timeout_s) as con:
        return apply_findings(con, findings, now)


def acknowledge(store: Store, alert_ids: Iterable[int], now: datetime) -> int:
    """Acknowledge these alerts where still open; returns how many changed (acknowledged or resolved ones stay)."""
    ids = sorted({int(i) for i in alert_ids})
    if not ids:
        return 0
    with store.transaction() as con:
        rows = con.execute(
            "UPDATE alerts SET status = 'acknowledged', acknowledged_at = ?"
            " WHERE status = 'open' AND id IN (SELECT unnest(?::BIGINT[])) RETURNING id",
            [now, ids],
        ).fetchall()
    return len(rows)


def last_evaluated(store: Store) -> datetime | None:
    """When the rules last ran (by the collector), or None if never."""
    with store.connect(read_only=True) as con:
        rows = con.execute("SELECT value FROM app_state WHERE key = ?", [EVALUATED_KEY]).fetchall()
    return datetime.fromisoformat(rows[0][0]) if rows else None


ALERT_COLUMNS = (
    "id, rule, severity, status, site, meter, category, source, message, value, opened_at, opened_at_local,"
    " last_seen_at, last_seen_at_local, acknowledged_at, acknowledged_at_local, resolved_at, resolved_at_local,"
    " timezone, site_id, source_id"
)


def load_alerts(store: Store, site_id: int | None, since: datetime | None) -> pl.DataFrame:
    """Rows of `v_alerts` of one site (all when None) that were active at some point since `since` (all when None):
    still active, or resolved after it. Newest first."""
    conditions = ["true"]
    if site_id is not None:
        conditions.append(f"site_id = {int(site_id)}")
    if since is not None:
        conditions.append(f"(resolved_at IS NULL OR resolved_at >= {_ts(since)})")
    with store.connect(read_only=True) as con:
        return con.sql(
            f"SELECT {ALERT_COLUMNS} FROM v_alerts WHERE {' AND '.join(conditions)} ORDER BY opened_at DESC, id DESC"
        ).pl()


def filter_alerts(frame: pl.DataFrame, status: str, rules: Iterable[str]) -> pl.DataFrame:
    """`status` is one of STATUSES or "all"; an empty `rules` means every rule."""
    if status != "all" and status not in STATUSES:
        raise ValueError(f"unknown status {status!r}: choose one of {', '.join(STATUSES)} or all")
    wanted = list(rules)
    if status != "all":
        frame = frame.filter(pl.col("status") == status)
    if wanted:
        frame = frame.filter(pl.col("rule").is_in(wanted))
    return frame


def status_counts(frame: pl.DataFrame) -> dict[str, int]:
    counts = dict(frame.group_by("status").len().iter_rows()) if not frame.is_empty() else {}
    return {status: int(counts.get(status, 0)) for status in STATUSES}


SEVERITY_ICONS = {"critical": "🔴", "warning": "🟠", "info": "🔵"}


def rule_label(code: str) -> str:
    """A rule's label; a code this version does not know (written by a newer one) as it is."""
    try:
        return Rule(code).label
    except ValueError:
        return code


def display_table(frame: pl.DataFrame) -> pl.DataFrame:
    """The page's table: labels instead of codes, site-local times as text, "-" where a value is undefined."""

    def local(column: str) -> pl.Expr:
        return pl.col(f"{column}_local").dt.strftime("%Y-%m-%d %H:%M").fill_null("-")

    icon = pl.col("severity").replace_strict(SEVERITY_ICONS, default="")
    return frame.select(
        pl.col("id").alias("ID"),
        pl.concat_str(icon, pl.col("severity").str.to_titlecase(), separator=" ").alias("Severity"),
        pl.col("status").str.to_titlecase().alias("Status"),
        pl.col("rule").map_elements(rule_label, return_dtype=pl.Utf8).alias("Rule"),
        pl.col("site").fill_null("-").alias("Site"),
        pl.coalesce(pl.col("source"), pl.format("deleted source #{}", pl.col("source_id"))).alias("Source"),
        pl.col("message").alias("Message"),
        local("opened_at").alias("Opened"),
        local("last_seen_at").alias("Last seen"),
        local("acknowledged_at").alias("Acknowledged"),
        local("resolved_at").alias("Resolved"),
        pl.col("timezone").fill_null("-").alias("Time zone"),
    )


def acknowledge_choices(frame: pl.DataFrame) -> dict[int, str]:
    """The open alerts among `frame`, as {id: label} for a picker."""
    return {
        int(row["id"]): (
            f"#{row['id']} · {SEVERITY_ICONS.get(row['severity'], '')} {rule_label(row['rule'])} ·"
            f" {row['source'] or 'deleted source'}"
        )
        for row in frame.filter(pl.col("status") == "open").iter_rows(named=True)
    }
