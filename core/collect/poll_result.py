"""What one poll of a vendor site produced, and what a whole pass reports.

Everything in a `GroupResult` but its readings is JSON-safe, so a pass that cannot be written at once can wait in
the spool (`core.store.spool`) and be written later exactly as it would have been.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from core.providers.exchange import Exchange


@dataclass
class GroupResult:
    """One vendor site's poll; everything but `batch` is JSON-safe, so a pass can wait in the spool."""

    source_ids: list[int]
    provider: str
    started_at: datetime
    duration_ms: float = 0.0
    outcome: str = "ok"
    error: str | None = None
    retry_at: datetime | None = None
    stopped_reason: str | None = None
    gap_window: tuple[datetime, datetime] | None = None
    http_status: int | None = None  # of the last vendor call
    quota_used: int | None = None  # in the current period of the tightest day/month budget
    quota_remaining: int | None = None
    exchanges: list[Exchange] = field(default_factory=list)  # raw calls, for `api_data_cache`
    batch: pl.DataFrame | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "source_ids": self.source_ids,
            "provider": self.provider,
            "started_at": self.started_at.isoformat(),
            "duration_ms": self.duration_ms,
            "outcome": self.outcome,
            "error": self.error,
            "retry_at": _iso(self.retry_at),
            "stopped_reason": self.stopped_reason,
            "gap_window": [t.isoformat() for t in self.gap_window] if self.gap_window else None,
            "http_status": self.http_status,
            "quota_used": self.quota_used,
            "quota_remaining": self.quota_remaining,
            "exchanges": [
                {
                    "endpoint": e.endpoint,
                    "fetched_at": e.fetched_at.isoformat(),
                    "http_status": e.http_status,
                    "body": e.body,
                    "duration_ms": e.duration_ms,
                }
                for e in self.exchanges
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], readings: pl.DataFrame) -> GroupResult:
        gap = data.get("gap_window")
        ids = [int(i) for i in data["source_ids"]]
        return cls(
            source_ids=ids,
            provider=data["provider"],
            started_at=datetime.fromisoformat(data["started_at"]),
            duration_ms=float(data["duration_ms"]),
            outcome=data["outcome"],
            error=data["error"],
            retry_at=_from_iso(data["retry_at"]),
            stopped_reason=data["stopped_reason"],
            gap_window=(datetime.fromisoformat(gap[0]), datetime.fromisoformat(gap[1])) if gap else None,
            http_status=data.get("http_status"),
            quota_used=data.get("quota_used"),
            quota_remaining=data.get("quota_remaining"),
            exchanges=[
                Exchange(
                    e["endpoint"],
                    datetime.fromisoformat(e["fetched_at"]),
                    e["http_status"],
                    e["body"],
                    e["duration_ms"],
                )
                for e in data.get("exchanges", [])
            ],
            batch=readings.filter(pl.col("source_id").is_in(ids)),
        )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _from_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass
class PassReport:
    results: list[GroupResult] = field(default_factory=list)
    rows_written: int = 0
    skipped: int = 0  # groups stopped or waiting for a rate limit to pass
    spooled: str | None = None  # the spool entry (or memory) holding this pass, when the database could not take it
    in_memory: bool = False  # held in memory: the spool could not be written either
    why_held: str = "database held"  # or the file-system fault that kept the pass from the database
    deferred: list[tuple[str, str]] = field(default_factory=list)  # groups not polled now, to try again soon

    def summary(self) -> str:
        outcomes: dict[str, int] = {}
        for result in self.results:
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
        parts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items())) or "nothing due"
        skipped = f", {self.skipped} waiting or stopped" if self.skipped else ""
        if self.spooled:
            readings = sum(r.batch.height for r in self.results if r.batch is not None)
            where = "kept in memory" if self.in_memory else "spooled"
            return (
                f"{len(self.results)} vendor site(s): {parts}{skipped}; {readings} reading(s) {where} ({self.why_held})"
            )
        return f"{len(self.results)} vendor site(s): {parts}{skipped}; {self.rows_written} reading(s) written"


def newest_finals(batch: pl.DataFrame | None, results: Sequence[GroupResult] = ()) -> dict[int, datetime]:
    """Per source id, the start of its newest final interval in `batch` (the bookmark it earns).

    A source of a successful poll (`results`) that got no row at all, while others of its vendor site did, earns
    theirs: the vendor answered the window and has nothing on that channel for this site (a SolarEdge site without a
    battery or a meter). Held back, its bookmark would keep the group's window open, and every poll would re-read
    a whole first backfill; a hole it leaves is re-read by the gap rule (core.collect.gaps) if the vendor fills it
    later."""
    if batch is None or batch.height == 0:
        return {}
    finals = batch.filter(pl.col("is_final")).group_by("source_id").agg(pl.col("ts").max())
    found = {int(source_id): ts for source_id, ts in finals.iter_rows()}
    answered = set(batch["source_id"].unique().to_list())
    for result in results:
        earned = [found[i] for i in result.source_ids if i in found]
        if result.outcome == "ok" and earned:
            for source_id in result.source_ids:
                if source_id not in answered:
                    found[source_id] = max(earned)
    return found
