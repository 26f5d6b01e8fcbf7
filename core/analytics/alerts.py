"""Alerts in the database: evaluating the rules (`core.analytics.alert_rules`) and keeping each alert's lifecycle;
listing and acknowledging them for the Alerts page.

Lifecycle of a row of `alerts` (migration 6):
- a rule FIRING for a (rule, source) with no open or acknowledged row opens one: status `open`, `opened_at` =
  `last_seen_at` = now;
- while it keeps firing, `message`, `value` follow the latest evaluation, and `last_seen_at` too, to within
  LAST_SEEN_STEP (the status stays: an acknowledged alert stays acknowledged);
- once the rule says CLEAR, or no longer applies to the source (deleted, API switched off, type changed), the row
  gets `resolved_at` = now (never before its `opened_at` or `acknowledged_at`) and status `resolved`; UNKNOWN
  leaves it as it is;
- `acknowledge` moves open rows to `acknowledged` with `acknowledged_at`;
- a new occurrence after resolution opens a new row, so the table is the alerts' history.

An evaluation reads in one short read-only connection (the configuration, a few hours of readings, the newest
reading time per source, the last days of the daily rollup, a day of solar readings) and writes in one short
transaction, whose checks run under the write lock: evaluations racing each other cannot open the same alert twice,
and one whose `now` is not after the last applied (`app_state` 'alerts_evaluated_at') is stale and changes nothing,
so an older evaluation written last cannot undo a newer one or move a timestamp backwards.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb
import polars as pl

from core.actors import Permission
from core.analytics.alert_rules import (
    DAILY_SCHEMA,
    LATEST_SCHEMA,
    READING_END,
    READING_SCHEMA,
    SOLAR,
    SOURCE_SCHEMA,
    Finding,
    Rule,
    State,
    Thresholds,
    evaluate_rules,
    yesterday_bounds,
)
from core.catalog.audited import audited_change
from core.models import ApiSettings, UpdateFrequency
from core.providers.registry import SPECS
from core.roles import Role, role_expr
from core.store.audit_log import AuditEntry
from core.store.store import Store, ts_literal

STATUSES = ("open", "acknowledged", "resolved")
# The newest reading of a source is looked for this far back in the hourly rollup when `readings` as read for the
# rules do not have it (a source silent for hours), before (rarely) the daily rollup.
LATEST_LOOKBACK = timedelta(days=2)
DAILY_LOOKBACK = timedelta(days=3)  # yesterday in any time zone, seen from any hour of today
EVALUATED_KEY = "alerts_evaluated_at"  # in `app_state`: the `now` of the newest evaluation applied
# A firing alert's `last_seen_at` is rewritten at most this often while its message and value stay the same, so an
# evaluation (up to one a minute) does not rewrite every firing row for a timestamp: it is exact to this step.
LAST_SEEN_STEP = timedelta(minutes=5)

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
    skipped: bool = False  # stale: a later evaluation was already applied, so this one changed nothing

    def summary(self) -> str:
        if self.skipped:
            return "skipped: a later evaluation was already stored"
        return f"{self.opened} opened, {self.resolved} resolved, {self.active} firing"


def _ids(ids: Iterable[int]) -> str:
    return ", ".join(str(int(i)) for i in ids) or "NULL"


_API = ApiSettings.model_fields  # the metadata JSON's keys are the model's aliases
_SOURCES_SQL = f"""
    SELECT e.id AS source_id, s.id AS site_id, m.category, e.source_type, e.capacity_kw,
           coalesce((e.metadata->>'{_API["use_api"].alias}')::BOOLEAN, false) AS use_api,
           e.metadata->>'{_API["update_frequency"].alias}' AS update_frequency,
           e.metadata->>'{_API["api_provider"].alias}' AS api_provider,
           e.created_at, s.latitude, s.longitude, s.timezone
    FROM energy_sources e JOIN meters m ON m.id = e.meter_id JOIN sites s ON s.id = m.site_id
"""


def _source_table(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """SOURCE_SCHEMA straight from SQL: validating every source's model costs ~0.1 ms each, here a few ms in all."""
    default = UpdateFrequency(_API["update_frequency"].default)
    minutes = {f.value: f.minutes for f in UpdateFrequency}
    deliveries = {provider.value: spec.delivery for provider, spec in SPECS.items()}
    frame = con.sql(_SOURCES_SQL).pl()
    cadence = pl.col("update_frequency").replace_strict(minutes, default=default.minutes, return_dtype=pl.Int64)
    delivery = pl.col("api_provider").replace_strict(deliveries, default="poll", return_dtype=pl.Utf8)
    return (
        frame.with_columns(cadence.alias("cadence_min"), delivery.alias("delivery"))
        .select(SOURCE_SCHEMA.names())
        .cast(dict(SOURCE_SCHEMA))
    )


def _hourly_ends(con: duckdb.DuckDBPyConnection, ids: Iterable[int], since: datetime, until: datetime) -> pl.DataFrame:
    """The end of each source's newest hour with a stored row (NULL values included) in [since, until)."""
    return con.sql(
        "SELECT source_id, max(bucket) + INTERVAL 1 HOUR AS last_end FROM readings_hourly"
        f" WHERE bucket >= {ts_literal(since)} AND bucket < {ts_literal(until)}"
        f" AND readings > 0 AND source_id IN ({_ids(ids)})"
        " GROUP BY source_id"
    ).pl()


def _latest(
    con: duckdb.DuckDBPyConnection, sources: pl.DataFrame, readings: pl.DataFrame, now: datetime
) -> pl.DataFrame:
    """The end of each source's newest stored reading, a NULL value included (the vendor answered, with no value:
    contact all the same). Exact from `readings` (which reach back further than any no-data limit); for sources
    with the API on that are silent longer, the newest hour with rows in the hourly rollup over LATEST_LOOKBACK;
    failing that, the newest day with rows in the daily rollup (small: one row per source and day, where a scan of
    the hourly one would read every hour of the year), then that day's hours. Never-reported sources stay out."""
    found = [readings.group_by("source_id").agg(READING_END.max().alias("last_end")).cast(dict(LATEST_SCHEMA))]  # type: ignore[arg-type]
    silent = set(sources.filter(pl.col("use_api"))["source_id"].to_list()) - set(found[0]["source_id"].to_list())
    if silent:
        recent = _hourly_ends(con, silent, now - LATEST_LOOKBACK, now)
        found.append(recent.cast(dict(LATEST_SCHEMA)))  # type: ignore[arg-type]
        silent -= set(recent["source_id"].to_list())
    if silent:
        days = con.sql(
            "SELECT source_id, max(bucket) AS day FROM readings_daily"
            f" WHERE readings > 0 AND bucket < {ts_literal(now)} AND source_id IN ({_ids(silent)}) GROUP BY source_id"
        ).fetchall()
        by_day: dict[datetime, list[int]] = {}
        for source_id, day in days:
            by_day.setdefault(day, []).append(int(source_id))
        for day, ids in by_day.items():  # one pruned hourly query per distinct day (a few at most in practice)
            found.append(_hourly_ends(con, ids, day, day + timedelta(hours=26)).cast(dict(LATEST_SCHEMA)))  # type: ignore[arg-type]
    return pl.concat(found).cast(dict(LATEST_SCHEMA))  # type: ignore[arg-type]


_RECEIVED_SCHEMA = pl.Schema(
    [("source_id", pl.Int64()), ("bucket", pl.Datetime("us", "UTC")), ("received_s", pl.Int64())]
)


def _received_yesterday(con: duckdb.DuckDBPyConnection, sources: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """Seconds of yesterday (site-local) with a stored row, NULL values included, per solar source: the low-yield
    rule's completeness (the rollups' `covered_s` counts only seconds with a value, so a SolarEdge day, null all
    night, would never look complete). One bounded scan of a day of raw readings per time zone of the fleet."""
    solar = sources.filter(SOLAR)
    parts = []
    for (timezone,), group in solar.group_by(["timezone"]):
        _, start, end = yesterday_bounds(now, str(timezone))
        parts.append(
            f"SELECT source_id, {ts_literal(start)} AS bucket, sum(interval_s) AS received_s FROM readings"
            f" WHERE ts >= {ts_literal(start)} AND ts < {ts_literal(end)} AND source_id IN ({_ids(group['source_id'])})"
            " GROUP BY source_id"
        )
    if not parts:
        return pl.DataFrame(schema=_RECEIVED_SCHEMA)
    return con.sql(" UNION ALL ".join(parts)).pl().cast(dict(_RECEIVED_SCHEMA))


def read_inputs(con: duckdb.DuckDBPyConnection, now: datetime, th: Thresholds) -> AlertInputs:
    """What the rules need, bounded in time so it costs the same on a year of data as on a day."""
    sources = _source_table(con)
    storage = sources.filter(role_expr().is_in([Role.SOC.value, Role.BATTERY.value]))["source_id"]
    short, long = now - th.short_read, now - th.long_read
    stored = (  # NULL values included: they tell when the vendor last answered (the no-data rule)
        con.sql(
            "SELECT source_id, ts, interval_s, value FROM readings"
            f" WHERE ts >= {ts_literal(min(short, long))} AND ts < {ts_literal(now)}"
            f" AND (ts >= {ts_literal(short)} OR source_id IN ({_ids(storage)}))"
        )
        .pl()
        .cast(dict(READING_SCHEMA))
    )
    daily = con.sql(
        "SELECT source_id, bucket, energy_wh, covered_s FROM readings_daily"
        f" WHERE bucket >= {ts_literal(now - DAILY_LOOKBACK)} AND bucket < {ts_literal(now)}"
    ).pl()
    daily = daily.cast({"source_id": pl.Int64(), "bucket": pl.Datetime("us", "UTC")}).join(
        _received_yesterday(con, sources, now), on=["source_id", "bucket"], how="left"
    )
    return AlertInputs(
        sources=sources,
        readings=stored.filter(pl.col("value").is_not_null()),
        latest=_latest(con, sources, stored, now),
        daily=daily.select(DAILY_SCHEMA.names()).cast(dict(DAILY_SCHEMA)),
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


def _evaluated_at(con: duckdb.DuckDBPyConnection) -> datetime | None:
    rows = con.execute("SELECT value FROM app_state WHERE key = ?", [EVALUATED_KEY]).fetchall()
    return datetime.fromisoformat(rows[0][0]) if rows else None


def apply_findings(con: duckdb.DuckDBPyConnection, findings: list[Finding], now: datetime) -> Evaluation:
    """Move the stored alerts to what `findings` say (see the module docstring). Runs in the caller's transaction.

    An evaluation at or before the last one applied is stale (another process, e.g. `collector --once` beside the
    daemon, read later data and wrote first): it changes nothing and comes back with `skipped` set.
    """
    firing = sum(1 for f in findings if f.state == State.FIRING)
    last = _evaluated_at(con)
    if last is not None and last >= now:
        return Evaluation(opened=0, resolved=0, active=firing, skipped=True)
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
    # A row still firing is rewritten only when what it says changed, or its `last_seen_at` is LAST_SEEN_STEP old:
    # not every firing row on every evaluation (one a minute with a busy fleet) for a timestamp alone.
    changed = (
        "(a.message IS DISTINCT FROM f.message OR a.value IS DISTINCT FROM f.value OR a.severity <> f.severity"
        " OR a.last_seen_at <= ?)"
    )
    con.register(view, frame)
    try:
        # greatest(): whatever order the writes of racing processes take, no timestamp moves backwards, and an
        # alert is never resolved before it was opened or acknowledged (`acknowledge` takes the page's clock).
        con.execute(
            "UPDATE alerts a SET last_seen_at = greatest(a.last_seen_at, ?), message = f.message, value = f.value,"
            f" severity = f.severity FROM {view} f WHERE {active} AND f.state = 'firing' AND {same} AND {changed}",
            [now, now - LAST_SEEN_STEP],
        )
        resolved = con.execute(
            "UPDATE alerts a SET status = 'resolved',"
            " resolved_at = greatest(?, a.opened_at, coalesce(a.acknowledged_at, a.opened_at))"
            f" WHERE {active} AND NOT EXISTS"
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
    done: list[AuditEntry] = []
    with audited_change(store, Permission.ACKNOWLEDGE, extra=done) as con:
        # Never before the alert opened (the page's clock and the collector's may disagree a little); a resolved
        # alert stays resolved, so an acknowledgement never follows its resolution.
        rows = con.execute(
            "UPDATE alerts SET status = 'acknowledged', acknowledged_at = greatest(?, opened_at)"
            " WHERE status = 'open' AND id IN (SELECT unnest(?::BIGINT[])) RETURNING id",
            [now, ids],
        ).fetchall()
        acknowledged = [int(r[0]) for r in rows]
        if acknowledged:
            named = con.execute(
                "SELECT id, rule || ': ' || coalesce(message, '') FROM alerts WHERE id IN (SELECT unnest(?::BIGINT[]))",
                [acknowledged],
            ).fetchall()
            done += [AuditEntry("acknowledge", "alert", int(i), str(name), "alert acknowledged") for i, name in named]
    return len(rows)


def last_evaluated(store: Store) -> datetime | None:
    """When the rules last ran (by the collector), or None if never."""
    with store.connect(read_only=True) as con:
        return _evaluated_at(con)


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
        conditions.append(f"(resolved_at IS NULL OR resolved_at >= {ts_literal(since)})")
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


# Severities, most urgent first: the order the page gives their colours in. Text only here: emoji need a font that
# many machines lack (they showed as empty boxes), so the page marks them with colours and Material icons.
SEVERITIES = ("critical", "warning", "info")


def severity_label(code: str) -> str:
    """ "warning" -> "Warning"."""
    return code.title()


def rule_label(code: str) -> str:
    """A rule's label; a code this version does not know (written by a newer one) as it is."""
    try:
        return Rule(code).label
    except ValueError:
        return code


def display_table(frame: pl.DataFrame) -> pl.DataFrame:
    """The page's table: labels instead of codes, site-local times as text, "-" where a value is undefined. The
    severity is a list of one label, which a table can show as a coloured tag (`SEVERITIES` gives the order)."""

    def local(column: str) -> pl.Expr:
        return pl.col(f"{column}_local").dt.strftime("%Y-%m-%d %H:%M").fill_null("-")

    return frame.select(
        pl.col("id").alias("ID"),
        pl.concat_list(pl.col("severity").str.to_titlecase()).alias("Severity"),
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
            f"#{row['id']} · {severity_label(row['severity'])} · {rule_label(row['rule'])} ·"
            f" {row['source'] or 'deleted source'}"
        )
        for row in frame.filter(pl.col("status") == "open").iter_rows(named=True)
    }
