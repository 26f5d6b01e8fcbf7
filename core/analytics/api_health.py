"""API health: how polling has gone for each provider account and each source, from what the collector records.

Where each figure comes from, and why it is computed that way:
- Polls, success %, latency p50/p95 and 429s cover the last `WINDOW` (24 h) of `collector_runs`. Only those rows are
  read (`started_at >= now - 24 h`): the table gains a row per source and poll and is never pruned, and DuckDB's
  zone maps skip the older row groups because rows arrive in time order. Rows with outcome `skipped` or `spooled`
  record no vendor call and are not polls. Latency is a poll's `duration_ms` (client set-up, every vendor call of
  the poll, parsing), failed polls included: a timeout is latency too. Percentiles interpolate linearly between
  the two nearest polls (numpy's default). A 429 is a poll whose outcome is `rate_limited` (the vendor said 429,
  or our ledger refused a call beyond a budget) or whose last HTTP status was 429.
- Last success and last error are the newest within `LOOKBACK` (7 days), a bounded scan for the same reason (a
  month of runs of 500 sources polled every 5 minutes is 4.5M rows, too many to scan on every page view); older
  ones show as "none in 7 days". Errors are looked up among failed runs only; successes beyond the last 24 h only
  for the sources that had none in it.
- Accounts and quota: `core.analytics.api_accounts`. An account's poll figures count each poll of a vendor site once,
  however many sources it feeds (the collector writes one run row per source, all with the poll's start and outcome).
- Circuit, status and next poll: `source_state` (`core.store.source_state`, written by the rules of
  `core.collect.source_health`: backoff, circuit, rate-limit waits, stops that hold until the source's settings
  change) and the collector's schedule (`jobs.collector`: a vendor site every m to m + max(1, m // 10) minutes, m its
  sources' fastest Update Frequency, `core.cadence.jitter_minutes`). A source is overdue only once that whole period
  and `OVERDUE_GRACE` have passed since its last poll, so one polled every 6 h is on time for 6 h 36 min, and one
  polled daily for 26 h 24 min.
- Token expiry: the Enphase OAuth grant of the vendor site (only the two expiry instants leave
  `core.analytics.api_accounts`).

- Quarantine: what the collector moved aside because it could not use it (a damaged spool entry, garbled quota
  journal lines), read from `<database file>.spool/quarantine/` (`core.store.quarantine`) until the operator removes it.

Stored error texts were redacted when written; they are scrubbed again, of URL credentials and of every decrypted
credential, before they leave (`core.analytics.api_accounts.scrubber`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import polars as pl

from core.analytics.api_accounts import (
    Account,
    Member,
    Queues,
    Usage,
    account_labels,
    accounts_of,
    queue,
    quota,
    read_queues,
    read_usage,
    scrubber,
)
from core.analytics.mqtt_health import read_mqtt
from core.analytics.push_health import read_pushed
from core.analytics.stream_health import read_streams
from core.cadence import jitter_minutes
from core.catalog import catalog as cat
from core.catalog import quota_plan
from core.models import Provider, Source, every_label
from core.providers.registry import spec_of
from core.store.crypto import SecretBox
from core.store.quarantine import QuarantineReport
from core.store.secret_store import read_all_secrets
from core.store.source_state import SourceState, read_states
from core.store.spool import Spool
from core.store.store import Store, ts_literal

WINDOW = timedelta(hours=24)
LOOKBACK = timedelta(days=7)
NOT_POLLS = ("skipped", "spooled")  # run rows that record no vendor call
OVERDUE_GRACE = timedelta(minutes=2)  # the collector re-reads its schedule every minute

# Status codes, most urgent first, with their labels: words, never emoji (they render as empty boxes where no emoji
# font is installed), so tables and downloads read the same everywhere.
STATUS_LABELS = {
    "stopped": "Stopped",
    "circuit_open": "Circuit open",
    "rate_limited": "Rate limited",
    "failing": "Failing",
    "overdue": "Overdue",
    "waiting": "First poll pending",
    "ok": "OK",
    "off": "API off",
}
# How the page marks each status beside its label: a Material icon (drawn from the font Streamlit ships, so it
# shows everywhere) and a badge colour. Plain strings here; the page hands them to Streamlit.
STATUS_MARKS = {
    "stopped": (":material/block:", "red"),
    "circuit_open": (":material/power_off:", "red"),
    "rate_limited": (":material/speed:", "orange"),
    "failing": (":material/error:", "orange"),
    "overdue": (":material/schedule:", "orange"),
    "waiting": (":material/hourglass_empty:", "gray"),
    "ok": (":material/check_circle:", "green"),
    "off": (":material/cloud_off:", "gray"),
}
NEEDS_ATTENTION = frozenset({"stopped", "circuit_open", "rate_limited", "failing", "overdue"})


@dataclass(frozen=True)
class Health:
    """The figures at `now`: one row per source of the catalog (`SOURCE_COLUMNS`) and one per account
    (`ACCOUNT_COLUMNS`). Instants are UTC; the page shows them in each site's time zone."""

    now: datetime
    sources: pl.DataFrame
    accounts: pl.DataFrame
    quarantine: QuarantineReport | None = None  # None: not looked at
    pushed: pl.DataFrame | None = None  # Push sources' request figures (core.analytics.push_health)
    mqtt: pl.DataFrame | None = None  # MQTT sources' broker connections (core.analytics.mqtt_health)
    streams: pl.DataFrame | None = None  # Enphase live streams (core.analytics.stream_health)


def load_health(
    store: Store, box: SecretBox, now: datetime, *, enphase_plan: str = quota_plan.DEFAULT_ENPHASE_PLAN
) -> Health:
    """Every figure of the API Health page, read in one short read-only connection."""
    with store.connect(read_only=True) as con:
        catalog = cat.read_catalog(con)
        secrets, unreadable = read_all_secrets(con, box)
        states = read_states(con)
        details = con.sql("SELECT source_id, stopped_reason, updated_at AS last_poll_at FROM source_state").pl()
        runs = _recent_runs(con, now - WINDOW)
        polled = [s.id for s in catalog.sources if s.api.use_api]
        last = _last_seen(con, runs, polled, now - LOOKBACK)
        usage = read_usage(con, now)
        queues = read_queues(con, now)
        pushed = read_pushed(con, catalog, now)
        mqtt = read_mqtt(con, catalog, now)
        streams = read_streams(con, catalog, now)
    members, accounts = accounts_of(catalog, secrets, unreadable)
    clean = scrubber(secrets)
    last = _scrubbed(last, "last_error", clean)
    details = _scrubbed(details, "stopped_reason", clean)
    labels = account_labels(accounts, enphase_plan)
    sources = _source_rows(catalog, members, accounts, labels, states, details, usage, now, enphase_plan)
    sources = (
        sources.join(_poll_figures(runs, "source_id"), on="source_id", how="left")
        .join(last, on="source_id", how="left")
        .with_columns(_success_pct(), pl.col("polls_24h", "ok_24h", "rate_limited_24h").fill_null(0))
        .select(SOURCE_COLUMNS)
    )
    quarantined = Spool.beside(store.path).quarantine.report()
    accounts_table = _account_rows(sources, members, accounts, labels, runs, queues)
    pushed = _scrubbed(pushed, "last_refusal", clean)
    mqtt, streams = _scrubbed(mqtt, "reason", clean), _scrubbed(streams, "reason", clean)
    return Health(now, sources, accounts_table, quarantined, pushed, mqtt, streams)


# --- reads ----------------------------------------------------------------------------------------------------


def _recent_runs(con: duckdb.DuckDBPyConnection, since: datetime) -> pl.DataFrame:
    skip = ", ".join(f"'{o}'" for o in NOT_POLLS)
    return con.sql(
        "SELECT source_id, started_at, duration_ms, outcome, http_status FROM collector_runs"
        f" WHERE started_at >= {ts_literal(since)} AND outcome NOT IN ({skip}) AND source_id IS NOT NULL"
    ).pl()


def _last_seen(con: duckdb.DuckDBPyConnection, runs: pl.DataFrame, polled: list[int], since: datetime) -> pl.DataFrame:
    """Per source, its newest success and its newest failed poll (message, outcome, HTTP status) since `since`.
    `runs` are the last 24 h's; older successes are looked for only for the `polled` sources without one in it."""
    failed = ", ".join(f"'{o}'" for o in ("ok", *NOT_POLLS))
    # A struct, because arg_max skips rows whose value is NULL and a failed run may carry no message.
    errors = con.sql(
        "SELECT source_id, max(started_at) AS last_error_at,"
        " arg_max({'error': error, 'outcome': outcome, 'http_status': http_status}, started_at) AS err"
        f" FROM collector_runs WHERE started_at >= {ts_literal(since)} AND outcome NOT IN ({failed})"
        " AND source_id IS NOT NULL GROUP BY source_id"
    ).pl()
    recent_ok = (
        runs.filter(pl.col("outcome") == "ok")
        .group_by("source_id")
        .agg(pl.col("started_at").max().alias("last_success_at"))
    )
    without = sorted(set(polled) - set(recent_ok["source_id"].to_list()))
    older_ok = recent_ok.clear()
    if without:
        ids = ", ".join(str(int(i)) for i in without)
        older_ok = con.sql(
            "SELECT source_id, max(started_at) AS last_success_at FROM collector_runs"
            f" WHERE started_at >= {ts_literal(since)} AND outcome = 'ok' AND source_id IN ({ids}) GROUP BY source_id"
        ).pl()
    successes = pl.concat([recent_ok, older_ok.cast(recent_ok.schema)])
    return successes.join(
        errors.select(
            "source_id",
            "last_error_at",
            pl.col("err").struct.field("error").alias("last_error"),
            pl.col("err").struct.field("outcome").alias("last_error_outcome"),
            pl.col("err").struct.field("http_status").cast(pl.Int64).alias("last_error_http_status"),
        ),
        on="source_id",
        how="full",
        coalesce=True,
    )


def _scrubbed(frame: pl.DataFrame, column: str, clean: Callable[[str], str]) -> pl.DataFrame:
    values = [None if text is None else clean(text) for text in frame[column].to_list()]
    return frame.with_columns(pl.Series(column, values, dtype=pl.String))


# --- figures --------------------------------------------------------------------------------------------------


def _poll_figures(runs: pl.DataFrame, by: str) -> pl.DataFrame:
    rate_limited = (pl.col("outcome") == "rate_limited") | pl.col("http_status").eq(429).fill_null(False)
    return runs.group_by(by).agg(
        pl.len().cast(pl.Int64).alias("polls_24h"),
        (pl.col("outcome") == "ok").sum().cast(pl.Int64).alias("ok_24h"),
        pl.col("duration_ms").quantile(0.5, "linear").alias("p50_ms"),
        pl.col("duration_ms").quantile(0.95, "linear").alias("p95_ms"),
        rate_limited.sum().cast(pl.Int64).alias("rate_limited_24h"),
    )


def _success_pct() -> pl.Expr:
    return pl.when(pl.col("polls_24h") > 0).then(100.0 * pl.col("ok_24h") / pl.col("polls_24h")).alias("success_pct")


def next_poll(
    member: Member | None, state: SourceState | None, last_poll: datetime | None, reason: str | None, now: datetime
) -> tuple[str, datetime | None, str]:
    """(status code, next poll, what decides it) of a source."""
    if member is None:
        return "off", None, "API off"
    if state is None:
        return "waiting", None, "at the collector's next schedule check (every minute)"
    if state.stopped:
        return "stopped", None, f"stopped until its settings change: {reason or 'no reason recorded'}"
    if state.retry_at is not None and state.retry_at > now:
        return "rate_limited", state.retry_at, "rate limited: waits until the vendor's retry time"
    if state.next_due_at is not None and state.next_due_at > now:
        if state.circuit == "open":
            return "circuit_open", state.next_due_at, "circuit open: one probe poll then"
        return "failing", state.next_due_at, f"backing off after {state.failures} failure(s)"
    # Late only past the period the collector may take (its jitter included) and a grace: a vendor site polled every
    # 6 h is on time 5 h after its last poll.
    period = timedelta(minutes=member.frequency_min)
    jitter = timedelta(minutes=jitter_minutes(member.frequency_min))
    due = (last_poll or now) + period
    status = "circuit_open" if state.circuit == "open" else "failing" if state.failures else "ok"
    if last_poll is not None and now > due + jitter + OVERDUE_GRACE:
        return ("overdue" if status == "ok" else status), due, "overdue: is the collector running?"
    return status, due, f"every {every_label(member.frequency_min)}"


def pushed_status(source: Source, last_write: datetime | None, now: datetime) -> tuple[str, datetime | None, str]:
    """(status code, when the next readings are expected, what decides it) of a Push or MQTT source: nobody polls
    it, so it is on time while its readings are written at its Update Frequency (twice that, and a grace, at most):
    a Push source's sender's requests, an MQTT source's minutes (each written once its device's messages close it)."""
    if not source.api.use_api:
        return "off", None, "API off"
    minutes = source.api.update_frequency.minutes
    device = source.api.api_provider is Provider.MQTT
    if last_write is None:
        first = "its device's first message" if device else "its sender's first request"
        return "waiting", None, f"waiting for {first}"
    expected = last_write + timedelta(minutes=minutes)
    if now > last_write + 2 * timedelta(minutes=minutes) + OVERDUE_GRACE:
        if device:
            return "overdue", expected, "overdue: is the collector running, and the device publishing?"
        return "overdue", expected, "overdue: is its sender running, and its token current?"
    if device:
        return "ok", expected, f"published by its device, expected every {every_label(minutes)}"
    return "ok", expected, f"pushed by its sender, expected every {every_label(minutes)}"


def _source_rows(
    catalog: cat.Catalog,
    members: dict[int, Member],
    accounts: dict[str, Account],
    labels: dict[str, str],
    states: dict[int, SourceState],
    details: pl.DataFrame,
    usage: Usage,
    now: datetime,
    enphase_plan: str,
) -> pl.DataFrame:
    extra = {int(r["source_id"]): r for r in details.iter_rows(named=True)}
    rows = []
    for source in catalog.sources:
        member = members.get(source.id)
        account = accounts.get(member.account) if member else None
        site = member.site if member else catalog.site(catalog.meter(source.meter_id).site_id)
        state = states.get(source.id)
        detail = extra.get(source.id, {})
        if spec_of(source.api.api_provider).polled:
            status, due, note = next_poll(member, state, detail.get("last_poll_at"), detail.get("stopped_reason"), now)
        else:
            status, due, note = pushed_status(source, detail.get("last_poll_at"), now)
        today, today_budget, month, month_budget = quota(account, usage, enphase_plan)
        grant = account.grants.get(member.group) if account and member else None
        rows.append(
            {
                "site_id": site.id,
                "site": site.name,
                "timezone": site.timezone,
                "source_id": source.id,
                "source": source.name,
                "provider": spec_of(source.api.api_provider).label,
                "account": labels[account.id] if account else None,
                "status": status,
                "metered": account.metered if account else None,
                "quota_today_used": today,
                "quota_today_budget": today_budget,
                "quota_month_used": month,
                "quota_month_budget": month_budget,
                "authorised": bool(spec_of(source.api.api_provider).obtained_secrets),
                "token_expires_at": grant.access_expires_at if grant else None,
                "refresh_expires_at": grant.refresh_expires_at if grant else None,
                "circuit": state.circuit if state else None,
                "failures": state.failures if state else None,
                "last_poll_at": detail.get("last_poll_at"),
                "next_poll_at": due,
                "next_poll_note": note,
            }
        )
    return pl.DataFrame(rows, schema=_SOURCE_BASE)


def _account_rows(
    sources: pl.DataFrame,
    members: dict[int, Member],
    accounts: dict[str, Account],
    labels: dict[str, str],
    runs: pl.DataFrame,
    queues: Queues,
) -> pl.DataFrame:
    """Per account: each vendor site's poll counted once (the rows of one poll share its vendor site and start)."""
    membership = pl.DataFrame(
        {
            "source_id": list(members),
            "group": [m.group for m in members.values()],
            "account_id": [m.account for m in members.values()],
        },
        schema={"source_id": pl.Int64, "group": pl.String, "account_id": pl.String},
    )
    polls = runs.join(membership, on="source_id").unique(subset=["group", "started_at"], keep="first")
    summary = (
        sources.join(membership.select("source_id", "account_id"), on="source_id")
        .group_by("account_id")
        .agg(
            pl.len().cast(pl.Int64).alias("sources"),
            pl.col("source").sort().str.join(", ").alias("source_names"),
            pl.col("status").is_in(NEEDS_ATTENTION).sum().cast(pl.Int64).alias("needing_attention"),
            (pl.col("circuit") == "open").sum().cast(pl.Int64).alias("circuits_open"),
            pl.col("last_success_at").max(),
            pl.col("last_error").sort_by("last_error_at", nulls_last=False).last(),  # the newest error's message
            pl.col("last_error_at").max(),
            pl.col("quota_today_used", "quota_today_budget", "quota_month_used", "quota_month_budget").first(),
        )
    )
    rows = []
    for account in accounts.values():
        grants = [g for g in account.grants.values() if g is not None]
        queued, wait_p95_s = queue(account, queues)
        rows.append(
            {
                "account_id": account.id,
                "provider": spec_of(account.provider).label,
                "account": labels[account.id],
                "vendor_sites": len(account.vendor_sites),
                "metered": account.metered,
                "authorised": bool(spec_of(account.provider).obtained_secrets),
                "token_expires_at": min((g.access_expires_at for g in grants), default=None),
                "refresh_expires_at": min((g.refresh_expires_at for g in grants if g.refresh_expires_at), default=None),
                "queued": queued,
                "wait_p95_s": wait_p95_s,
            }
        )
    return (
        pl.DataFrame(rows, schema=_ACCOUNT_BASE)
        .join(summary, on="account_id", how="left")
        .join(_poll_figures(polls, "account_id"), on="account_id", how="left")
        .with_columns(_success_pct(), pl.col("polls_24h", "ok_24h", "rate_limited_24h").fill_null(0))
        .select(ACCOUNT_COLUMNS)
    )


_UTC = pl.Datetime("us", "UTC")
_SOURCE_BASE = pl.Schema(
    {
        "site_id": pl.Int64(),
        "site": pl.String(),
        "timezone": pl.String(),
        "source_id": pl.Int64(),
        "source": pl.String(),
        "provider": pl.String(),
        "account": pl.String(),
        "status": pl.String(),
        "metered": pl.Boolean(),
        "quota_today_used": pl.Int64(),
        "quota_today_budget": pl.Int64(),
        "quota_month_used": pl.Int64(),
        "quota_month_budget": pl.Int64(),
        "authorised": pl.Boolean(),
        "token_expires_at": _UTC,
        "refresh_expires_at": _UTC,
        "circuit": pl.String(),
        "failures": pl.Int64(),
        "last_poll_at": _UTC,
        "next_poll_at": _UTC,
        "next_poll_note": pl.String(),
    }
)
_ACCOUNT_BASE = pl.Schema(
    {
        "account_id": pl.String(),
        "provider": pl.String(),
        "account": pl.String(),
        "vendor_sites": pl.Int64(),
        "metered": pl.Boolean(),
        "authorised": pl.Boolean(),
        "token_expires_at": _UTC,
        "refresh_expires_at": _UTC,
        "queued": pl.Int64(),
        "wait_p95_s": pl.Float64(),
    }
)
_POLLS = ["polls_24h", "ok_24h", "success_pct", "p50_ms", "p95_ms", "rate_limited_24h"]
_QUOTA = ["metered", "quota_today_used", "quota_today_budget", "quota_month_used", "quota_month_budget"]
_TOKENS = ["authorised", "token_expires_at", "refresh_expires_at"]
SOURCE_COLUMNS = [
    *("site_id", "site", "timezone", "source_id", "source", "provider", "account", "status"),
    *("last_success_at", "last_error_at", "last_error", "last_error_outcome", "last_error_http_status"),
    *_POLLS,
    *_QUOTA,
    *_TOKENS,
    *("circuit", "failures", "last_poll_at", "next_poll_at", "next_poll_note"),
]
ACCOUNT_COLUMNS = [
    *("provider", "account", "vendor_sites", "sources", "source_names", "needing_attention"),
    *_POLLS,
    *("last_success_at", "last_error_at", "last_error"),
    *_QUOTA,
    *_TOKENS,
    "circuits_open",
    *("queued", "wait_p95_s"),
]
