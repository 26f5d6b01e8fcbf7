"""The API Health tables as the page shows them: ages, times in the site's zone, "used / budget (pct)".

Pure formatting of `core.analytics.api_health` frames, so the rules are unit-tested and the page stays thin. Undefined
values are "-", as everywhere in the dashboard; the simulator's budget is "no limit"; tokens of providers that
have none are "n/a". The quarantine warning names the folder; its table gives each item and why.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from core.analytics.api_health import LOOKBACK, STATUS_LABELS
from core.store.quarantine import NOTE, QuarantineReport

NONE_SEEN = f"none in {LOOKBACK.days} days"
MAX_MESSAGE = 300


def span(seconds: float) -> str:
    """A duration, coarse enough to read at a glance: "45 s", "12 min", "3 h 5 min", "4 d 2 h"."""
    seconds = int(abs(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def relative(moment: datetime | None, now: datetime) -> str:
    """ "in 12 min" or "12 min ago"; "-" when unknown."""
    if moment is None:
        return "-"
    seconds = (moment - now).total_seconds()
    return f"in {span(seconds)}" if seconds > 0 else f"{span(seconds)} ago"


def local_time(moment: datetime | None, zone: str) -> str:
    """ "2026-10-25 02:30 CET" in the site's zone; "-" when unknown."""
    if moment is None:
        return "-"
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def quota_text(used: int | None, budget: int | None, metered: bool | None, period: str) -> str:
    """ "120 / 300 (40%)"; "17 (no daily limit)" where the provider counts another period; "no limit" for the
    simulator; "-" when unknown (API off, or no credentials to tell the account by)."""
    if metered is None:
        return "-"
    if not metered:
        return "no limit"
    if used is None:
        return "-"
    if budget is None:
        return f"{used:,} (no {period} limit)"
    return f"{used:,} / {budget:,} ({round(100 * used / budget)}%)"


def number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def error_text(row: dict[str, Any]) -> str:
    """ "auth_error, HTTP 401: SolarEdge rejected the API key ..."; "-" without one."""
    if row["last_error_at"] is None:
        return "-"
    status = f", HTTP {row['last_error_http_status']}" if row["last_error_http_status"] is not None else ""
    return _cut(f"{row['last_error_outcome']}{status}: {row['last_error'] or 'no message recorded'}")


def _cut(text: str) -> str:
    """Long vendor excerpts shortened for the table; the downloads keep them whole."""
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def token_text(row: dict[str, Any], name: str, now: datetime, zone: str | None) -> str:
    if not row["authorised"]:  # a provider whose owner grants access with tokens that expire (Enphase)
        return "n/a"
    moment = row[name]
    if moment is None:
        return "not authorised" if name == "token_expires_at" else "-"
    shown = local_time(moment, zone) if zone else moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"{shown} ({relative(moment, now)})"


def _seen(moment: datetime | None, now: datetime, polled: bool) -> str:
    if moment is None:
        return NONE_SEEN if polled else "-"
    return relative(moment, now)


def _poll_cells(row: dict[str, Any]) -> dict[str, Any]:
    """The last 24 h's poll figures, alike in both tables (`_SHARED`)."""
    return {
        "Polls 24 h": row["polls_24h"],
        "Success % 24 h": number(row["success_pct"], 1),
        "p50 ms": number(row["p50_ms"]),
        "p95 ms": number(row["p95_ms"]),
        "429s 24 h": row["rate_limited_24h"],
    }


def _quota_cells(row: dict[str, Any]) -> dict[str, str]:
    return {
        "Quota today (UTC)": quota_text(row["quota_today_used"], row["quota_today_budget"], row["metered"], "daily"),
        "Quota this month": quota_text(row["quota_month_used"], row["quota_month_budget"], row["metered"], "monthly"),
    }


def source_table(frame: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """One display row per source of `core.analytics.api_health.Health.sources`, times in each source's site zone."""
    rows = []
    for row in frame.iter_rows(named=True):
        zone = row["timezone"]
        polled = row["status"] != "off"
        due = row["next_poll_at"]
        next_poll = f"{local_time(due, zone)} ({relative(due, now)}) · {row['next_poll_note']}" if due else None
        circuit = row["circuit"] or "-"
        if row["failures"]:
            circuit += f" ({row['failures']} failed in a row)"
        rows.append(
            {
                "Source": row["source"],
                "Status": STATUS_LABELS[row["status"]],
                "Provider": row["provider"],
                "Account": row["account"] or "-",
                "Last success": _seen(row["last_success_at"], now, polled),
                "Last error": error_text(row),
                "Last error at": _seen(row["last_error_at"], now, polled),
                **_poll_cells(row),
                **_quota_cells(row),
                "Token expiry": token_text(row, "token_expires_at", now, zone),
                "Refresh token expiry": token_text(row, "refresh_expires_at", now, zone),
                "Circuit": circuit,
                "Next poll": next_poll or row["next_poll_note"],
            }
        )
    return pl.DataFrame(rows, schema=_schema(SOURCE_HEADERS))


def account_table(frame: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """One display row per account of `core.analytics.api_health.Health.accounts` (ages, not clock times: an account can
    span sites in several zones)."""
    rows = []
    for row in frame.iter_rows(named=True):
        rows.append(
            {
                "Provider": row["provider"],
                "Account": row["account"],
                "Vendor sites": row["vendor_sites"],
                "Sources": row["sources"],
                "Needing attention": row["needing_attention"],
                **_poll_cells(row),
                "Last success": _seen(row["last_success_at"], now, True),
                "Last error": (
                    _cut(f"{relative(row['last_error_at'], now)}: {row['last_error'] or 'no message recorded'}")
                    if row["last_error_at"]
                    else "-"
                ),
                **_quota_cells(row),
                "Token expiry": token_text(row, "token_expires_at", now, None),
                "Refresh token expiry": token_text(row, "refresh_expires_at", now, None),
                "Circuits open": row["circuits_open"],
                "Queued": row["queued"],
                "Wait p95": wait_text(row["wait_p95_s"]),
            }
        )
    return pl.DataFrame(rows, schema=_schema(ACCOUNT_HEADERS))


def wait_text(seconds: float | None) -> str:
    """How long the account's calls waited for their turn (95th percentile of the last 15 minutes): "-" without
    figures, "none" for calls that never waited, "0.4 s" under 10 s, then as `span`."""
    if seconds is None:
        return "-"
    if seconds < 0.05:
        return "none"
    return f"{seconds:.1f} s" if seconds < 10 else span(seconds)


_COUNTS = {"Polls 24 h", "429s 24 h", "Vendor sites", "Sources", "Needing attention", "Circuits open", "Queued"}


def _schema(headers: list[str]) -> pl.Schema:
    return pl.Schema({h: pl.Int64() if h in _COUNTS else pl.String() for h in headers})


_SHARED = ["Polls 24 h", "Success % 24 h", "p50 ms", "p95 ms", "429s 24 h"]
SOURCE_HEADERS = [
    *("Source", "Status", "Provider", "Account", "Last success", "Last error", "Last error at"),
    *_SHARED,
    *("Quota today (UTC)", "Quota this month", "Token expiry", "Refresh token expiry", "Circuit", "Next poll"),
]
ACCOUNT_HEADERS = [
    *("Provider", "Account", "Vendor sites", "Sources", "Needing attention"),
    *_SHARED,
    *("Last success", "Last error", "Quota today (UTC)", "Quota this month", "Token expiry", "Refresh token expiry"),
    *("Circuits open", "Queued", "Wait p95"),
]


def status_counts(frame: pl.DataFrame) -> dict[str, int]:
    """Sources per status label, most urgent first, statuses with none left out."""
    counts = dict(frame.group_by("status").len().iter_rows())
    return {label: int(counts[code]) for code, label in STATUS_LABELS.items() if counts.get(code)}


def quarantine_warning(report: QuarantineReport | None) -> str | None:
    """The page's warning while the quarantine holds anything (or cannot be looked into); None when empty. Markdown:
    the folder in a code span (a path's underscores are not emphasis); the reasons go in `quarantine_table`."""
    if report is None:
        return None
    folder = str(report.folder).replace("`", "")
    if report.unreadable:
        return f"The quarantine folder `{folder}` cannot be read by the dashboard ({report.unreadable})."
    if not report.items:
        return None
    return (
        f"**{len(report.items)} item(s) in quarantine** in `{folder}`: the collector could not use them (a damaged"
        " spool entry, garbled quota journal lines), moved them there and went on without them. Look at each"
        f" folder (its {NOTE} says why), then delete it, or repair a spool entry, delete its {NOTE} and move it"
        " back into the spool folder: it is written at the next pass. This warning stays until the folder is empty."
    )


def quarantine_table(report: QuarantineReport | None) -> pl.DataFrame:
    """One row per quarantined item: its folder, when (UTC), why."""
    items = report.items if report else []
    return pl.DataFrame(
        {
            "Item": [item.name for item in items],
            "Quarantined (UTC)": [
                item.quarantined_at.strftime("%Y-%m-%d %H:%M") if item.quarantined_at else "-" for item in items
            ],
            "Why": [item.reason for item in items],
        },
        schema={"Item": pl.String, "Quarantined (UTC)": pl.String, "Why": pl.String},
    )


def pushed_table(frame: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """One display row per Push source of `core.analytics.push_health.read_pushed`."""
    rows = []
    for row in frame.iter_rows(named=True):
        running = row["service_running"]
        rate = row["requests_per_min"]
        rows.append(
            {
                "Source": row["source"],
                "Requests/min": f"{rate:.1f}" if running and rate is not None else "-",
                "Readings (15 min)": str(row["readings"]) if running and row["readings"] is not None else "-",
                "Refused (15 min)": str(row["refused"]) if running and row["refused"] is not None else "-",
                "Last request": relative(row["last_request_at"], now),
                "Last refused": (
                    f"{relative(row['last_refused_at'], now)}: {row['last_refusal']}" if row["last_refused_at"] else "-"
                ),
                "Ingest service": "running" if running else "no figures in 2 min (not running?)",
            }
        )
    headers = ["Source", "Requests/min", "Readings (15 min)", "Refused (15 min)", "Last request", "Last refused",
               "Ingest service"]  # fmt: skip
    return pl.DataFrame(rows, schema=dict.fromkeys(headers, pl.String))


_STATE_WORDS = {"connected": "connected", "connecting": "connecting", "refused": "refused", "stopped": "stopped"}


def mqtt_table(frame: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """One display row per MQTT source of `core.analytics.mqtt_health.read_mqtt`."""
    rows = []
    for row in frame.iter_rows(named=True):
        running = row["collector_running"]
        state = _STATE_WORDS.get(row["state"] or "", "-") if running else "no figures in 2 min (collector not running?)"
        if running and row["reason"]:
            state = f"{state}: {row['reason']}"
        if running and row["state"] == "connected" and not row["subscribed"]:
            state = "connected, topic not subscribed yet"
        errors = row["payload_errors"]
        rows.append(
            {
                "Source": row["source"],
                "Broker": row["broker"] or "-",
                "Connection": state,
                "Last message": relative(row["last_message_at"], now),
                "Messages/min": str(row["messages_per_minute"])
                if running and row["messages_per_minute"] is not None
                else "-",
                "Payload errors": (f"{errors}: {row['last_payload_error']}" if errors else "0")
                if running and errors is not None
                else "-",
            }
        )
    headers = ["Source", "Broker", "Connection", "Last message", "Messages/min", "Payload errors"]
    return pl.DataFrame(rows, schema=dict.fromkeys(headers, pl.String))


_STREAM_WORDS = {"streaming": "streaming", "opening": "opening", "waiting": "waiting", "refused": "refused",
                 "idle": "closed"}  # fmt: skip
_WANTED_BY = {"Live": "someone watches Live", "schedule": "its schedule"}


def stream_table(frame: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """One display row per source of `core.analytics.stream_health.read_streams`."""
    rows = []
    for row in frame.iter_rows(named=True):
        running = row["collector_running"]
        state = (
            _STREAM_WORDS.get(row["state"] or "", "-") if running else "no figures in 2 min (collector not running?)"
        )
        if running and row["state"] == "idle":
            state = "closed (nobody watches, and the schedule is off now)"
        elif running and row["reason"]:
            state = f"{state}: {row['reason']}"
        wanted = _WANTED_BY.get(row["wanted_by"] or "", "-") if running else "-"
        rate = row["frames_per_minute"]
        opened = row["streams_opened"]
        rows.append(
            {
                "Source": row["source"],
                "System": row["system_id"] or "-",
                "Stream": state,
                "Open because": wanted,
                "Last frame": relative(row["last_frame_at"], now),
                "Frames/min": str(rate) if running and rate is not None else "-",
                "Streams opened": str(opened) if running and opened is not None else "-",
            }
        )
    headers = ["Source", "System", "Stream", "Open because", "Last frame", "Frames/min", "Streams opened"]
    return pl.DataFrame(rows, schema=dict.fromkeys(headers, pl.String))
