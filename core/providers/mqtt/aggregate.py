"""MQTT samples of many sources into 1-minute rows ready for ingest (docs/real-time.md, "One-minute averages").

Power samples go to `Minutes.add`; counter readings (Wh) become spans of mean power through `Counter.span` and go
to `Minutes.add_span`, so a reset (the counter went down) gives a gap, never negative power. Series are keyed by
source id. Samples come from the subscribers' network threads and the clock tick from the collector's, so a lock
guards the state; each call holds it for microseconds.

A minute leaves once, complete (`core.minute_average`), so its row is final. `tick(now)` returns the minutes that
completed since the previous tick, with the ones the clock closes, as a frame of `MINUTE_ROW_SCHEMA`.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from datetime import datetime

import polars as pl

from core.minute_average import DEFAULT_GRACE_S, DEFAULT_HOLD_S, MINUTE_S, Counter, Minute, Minutes
from core.providers.mqtt.subscriber import Sample

MINUTE_ROW_SCHEMA = pl.Schema(
    [
        ("source_id", pl.Int64()),
        ("ts", pl.Datetime("us", "UTC")),  # the minute's start
        ("interval_s", pl.Int32()),  # always 60
        ("value", pl.Float64()),  # mean W over the covered part; null when nothing covered the minute
        ("coverage", pl.Float64()),  # share of the minute covered, 0 to 1
        ("samples", pl.Int32()),  # messages that fell in the minute
        ("is_final", pl.Boolean()),  # always true: a minute leaves once, complete
    ]
)


class MinuteAggregator:
    """Minute averages of every MQTT source of a process; thread-safe."""

    def __init__(self, *, hold_s: float = DEFAULT_HOLD_S, grace_s: float = DEFAULT_GRACE_S) -> None:
        self._lock = threading.Lock()
        self._minutes = Minutes(hold_s=hold_s, grace_s=grace_s)
        self._counters = Counter()
        self._ready: list[Minute] = []

    def add(self, sample: Sample) -> None:
        """Take one sample (the subscribers' callback)."""
        with self._lock:
            if not sample.counter:
                self._ready += self._minutes.add(sample.source_id, sample.at, sample.value)
                return
            span = self._counters.span(sample.source_id, sample.at, sample.value)
            if span is not None:
                self._ready += self._minutes.add_span(sample.source_id, span.start, span.end, span.watts)

    def tick(self, now: datetime) -> pl.DataFrame:
        """The minutes completed since the last tick, those the clock closes at `now` included."""
        with self._lock:
            ready = self._ready + self._minutes.due(now)
            self._ready = []
        return minute_rows(ready)

    def forget(self, source_id: Hashable) -> None:
        """Drop a source's open minutes and counter (removed, or its topic, path or unit changed)."""
        with self._lock:
            self._minutes.forget(source_id)
            self._counters.forget(source_id)
            self._ready = [minute for minute in self._ready if minute.key != source_id]


def minute_rows(minutes: list[Minute]) -> pl.DataFrame:
    """Minutes as rows of `MINUTE_ROW_SCHEMA`, oldest first per source."""
    return pl.DataFrame(
        {
            "source_id": [minute.key for minute in minutes],
            "ts": [minute.ts for minute in minutes],
            "interval_s": [MINUTE_S] * len(minutes),
            "value": [minute.value for minute in minutes],
            "coverage": [minute.coverage for minute in minutes],
            "samples": [minute.samples for minute in minutes],
            "is_final": [True] * len(minutes),
        },
        schema=MINUTE_ROW_SCHEMA,
    ).sort("source_id", "ts", maintain_order=True)
