"""Samples of a device or stream turned into 1-minute averages with coverage (docs/real-time.md, "One-minute
averages").

A sample is an instant: the value holds from its time until the next sample, but at most `hold_s`, so a device that
went quiet is not assumed to keep its last value for ever. A minute's value is the time-weighted mean of the held
spans inside it; its coverage is the share of the minute they cover (0 to 1). A minute is complete once a sample of
a later minute arrives or the clock passes its end by `grace_s`; `Minutes` hands out complete minutes once and keeps
only what it still needs (the last sample of each series), so memory does not grow with time.

A late sample (older than the newest one of its series) is dropped: with the minute it belongs to perhaps already
written, the rewrite it would need costs more than the second of data it carries.

Cumulative counters (`Counter`) give the mean power of the span between two readings (the energy over the time
apart), which `Minutes.add_span` spreads over the minutes it covers: energy is conserved however rarely the device
publishes. A counter that goes down was reset, and that span gives no power (a gap), never a negative one. The
minute of a counter's newest reading is complete only when the next span fills the rest of it, so the clock
(`due`) leaves it open: closing it early would write half a minute that the next span could only overwrite.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

MINUTE_S = 60
DEFAULT_HOLD_S = 90.0  # a sample speaks for at most this long (devices publishing every minute stay covered)
DEFAULT_GRACE_S = 5.0  # a minute is written this long after its end when no later sample closed it


@dataclass(frozen=True)
class Minute:
    """One complete minute of one series: `ts` its start (UTC), `value` the time-weighted mean of the covered part
    (None when nothing covered it), `coverage` in [0, 1], `samples` the samples that fell in it."""

    key: Hashable
    ts: datetime
    value: float | None
    coverage: float
    samples: int


@dataclass
class _Series:
    last_t: float | None = None  # epoch seconds of the newest sample
    last_value: float | None = None
    held_to: float = -math.inf  # the newest sample's value is spread up to here already
    counting: bool = False  # fed by spans (a counter): the minute of the newest reading waits for the next span
    # Per open minute (its start, epoch seconds): [value-seconds, covered seconds, samples]
    open: dict[int, list[float]] = field(default_factory=dict)


def _minute_of(t: float) -> int:
    return int(t // MINUTE_S) * MINUTE_S


class Minutes:
    """1-minute averages of many series (keyed by anything hashable), fed sample by sample. Not thread-safe: one
    feeder (the MQTT loop, the stream reader) owns it."""

    def __init__(self, *, hold_s: float = DEFAULT_HOLD_S, grace_s: float = DEFAULT_GRACE_S) -> None:
        if hold_s <= 0 or grace_s < 0:
            raise ValueError("hold_s must be positive and grace_s not negative")
        self.hold_s = hold_s
        self.grace_s = grace_s
        self._series: dict[Hashable, _Series] = {}

    def add(self, key: Hashable, at: datetime, value: float | None) -> list[Minute]:
        """Record a sample (None: the device said "no value": it ends the previous span and holds nothing); returns
        the minutes of this series that it completed."""
        t = at.timestamp()
        series = self._series.setdefault(key, _Series())
        if series.last_t is not None and t <= series.last_t:
            return []  # late or repeated: see the module docstring
        if value is not None and not math.isfinite(value):
            value = None
        self._hold(series, t)
        series.last_t, series.last_value, series.held_to, series.counting = t, value, t, False
        bucket = series.open.setdefault(_minute_of(t), [0.0, 0.0, 0])
        bucket[2] += 1
        return list(self._complete(key, series, before=_minute_of(t)))

    def add_span(self, key: Hashable, start: datetime, end: datetime, value: float) -> list[Minute]:
        """Record a mean `value` over [start, end) (a counter's span); returns the minutes it completed. A span
        starting before the series' newest instant is dropped, like a late sample."""
        t0, t1 = start.timestamp(), end.timestamp()
        series = self._series.setdefault(key, _Series())
        if t1 <= t0 or (series.last_t is not None and t0 < series.last_t) or not math.isfinite(value):
            return []
        series.last_t, series.last_value, series.held_to = t0, value, t0
        self._hold(series, t1, cap=False)
        series.last_t, series.last_value, series.counting = t1, None, True
        # The minute the span ends in (a span ending on a minute's start ends in the minute before).
        series.open.setdefault(math.ceil(t1 / MINUTE_S) * MINUTE_S - MINUTE_S, [0.0, 0.0, 0])[2] += 1
        return list(self._complete(key, series, before=_minute_of(t1)))

    def due(self, now: datetime) -> list[Minute]:
        """The minutes of every series whose end is more than `grace_s` before `now` (the clock's tick)."""
        t = now.timestamp()
        done: list[Minute] = []
        for key, series in self._series.items():
            limit = _minute_of(t - self.grace_s)
            if series.last_t is not None and series.last_t < limit:
                self._hold(series, limit)
            if series.counting and series.last_t is not None:
                limit = min(limit, _minute_of(series.last_t))
            done.extend(self._complete(key, series, before=limit))
        return done

    def forget(self, key: Hashable) -> None:
        """Stop tracking a series (its source removed); its open minutes are dropped."""
        self._series.pop(key, None)

    def _hold(self, series: _Series, until: float, *, cap: bool = True) -> None:
        """Spread the newest sample's value over what is not spread yet of [last_t, until), at most `hold_s` past
        the sample (without `cap`: all of it), into its minutes."""
        if series.last_t is None or series.last_value is None:
            return
        start = max(series.last_t, series.held_to)
        end = min(until, series.last_t + self.hold_s) if cap else until
        while start < end:
            minute = _minute_of(start)
            stop = min(end, minute + MINUTE_S)
            bucket = series.open.setdefault(minute, [0.0, 0.0, 0])
            bucket[0] += series.last_value * (stop - start)
            bucket[1] += stop - start
            start = stop
        series.held_to = max(series.held_to, end)

    def _complete(self, key: Hashable, series: _Series, before: int) -> Iterator[Minute]:
        for minute in sorted(m for m in series.open if m < before):
            value_s, covered, samples = series.open.pop(minute)
            yield Minute(
                key=key,
                ts=datetime.fromtimestamp(minute, UTC),
                value=value_s / covered if covered > 0 else None,
                coverage=min(1.0, covered / MINUTE_S),
                samples=int(samples),
            )


@dataclass(frozen=True)
class Span:
    """The mean power (W) of a counter between two readings."""

    start: datetime
    end: datetime
    watts: float


class Counter:
    """Cumulative energy counters (Wh), one per key, turned into the mean power between consecutive readings."""

    def __init__(self) -> None:
        self._last: dict[Hashable, tuple[datetime, float]] = {}  # key -> (when, Wh)

    def span(self, key: Hashable, at: datetime, wh: float) -> Span | None:
        """The span since the previous reading of `key`; None for the first reading, a reset (the counter went
        down: counting resumes from the new value), a repeat or a late reading, and a value that is not a number."""
        previous = self._last.get(key)
        if not math.isfinite(wh) or (previous is not None and at <= previous[0]):
            return None
        self._last[key] = (at, wh)
        if previous is None or wh < previous[1]:
            return None
        seconds = (at - previous[0]).total_seconds()
        return Span(previous[0], at, (wh - previous[1]) * 3600.0 / seconds)

    def forget(self, key: Hashable) -> None:
        self._last.pop(key, None)
