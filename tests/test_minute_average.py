"""Samples into 1-minute averages with coverage (core.minute_average), and counters into power."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.minute_average import Counter, Minute, Minutes

T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def feed(minutes: Minutes, samples: list[tuple[float, float | None]], key: str = "dev") -> list[Minute]:
    done: list[Minute] = []
    for seconds, value in samples:
        done += minutes.add(key, at(seconds), value)
    return done


def test_a_steady_device_gives_its_value_with_full_coverage() -> None:
    done = feed(Minutes(hold_s=30), [(s, 100.0) for s in range(0, 130, 10)])
    assert [(m.ts, m.value, m.coverage, m.samples) for m in done] == [
        (at(0), 100.0, 1.0, 6),
        (at(60), 100.0, 1.0, 6),
    ]


def test_the_mean_is_weighted_by_how_long_each_value_held() -> None:
    (minute,) = feed(Minutes(hold_s=60), [(0, 50.0), (45, 150.0), (60, 0.0)])
    assert minute.value == pytest.approx((50 * 45 + 150 * 15) / 60)
    assert minute.coverage == 1.0 and minute.samples == 2


def test_a_quiet_device_covers_only_what_its_samples_hold() -> None:
    (minute,) = feed(Minutes(hold_s=20), [(10, 300.0), (70, 0.0)])
    assert minute.value == 300.0 and minute.coverage == pytest.approx(20 / 60)


def test_no_value_ends_the_span_and_holds_nothing() -> None:
    (minute,) = feed(Minutes(hold_s=60), [(0, 100.0), (15, None), (60, 1.0)])
    assert minute.value == 100.0 and minute.coverage == pytest.approx(15 / 60)
    (empty,) = feed(Minutes(), [(0, None), (60, 1.0)])
    assert empty.value is None and empty.coverage == 0.0 and empty.samples == 1


def test_the_clock_closes_a_minute_and_the_next_one_keeps_its_coverage() -> None:
    minutes = Minutes(hold_s=90, grace_s=5)
    feed(minutes, [(0, 100.0), (30, 100.0), (50, 200.0)])
    assert minutes.due(at(64)) == []  # within the grace
    (first,) = minutes.due(at(66))
    assert first.value == pytest.approx((100 * 50 + 200 * 10) / 60) and first.coverage == 1.0
    # The sample of :50 still speaks for the next minute until the next sample (20 s later).
    (second,) = feed(minutes, [(80, 0.0), (125, 0.0)])
    assert second.coverage == 1.0 and second.value == pytest.approx(200 * 20 / 60)


def test_a_late_or_repeated_sample_is_dropped() -> None:
    minutes = Minutes(hold_s=60)
    feed(minutes, [(0, 100.0), (30, 100.0)])
    assert minutes.add("dev", at(20), 9_999.0) == [] and minutes.add("dev", at(30), 9_999.0) == []
    (minute,) = feed(minutes, [(60, 0.0)])
    assert minute.value == 100.0


def test_series_are_kept_apart_and_memory_stays_bounded() -> None:
    minutes = Minutes(hold_s=60)
    for second in range(0, 3600, 5):
        minutes.add("a", at(second), 1.0)
        minutes.add("b", at(second), 2.0)
    assert all(len(series.open) <= 1 for series in minutes._series.values())  # only the minute in progress
    done = minutes.due(at(3600 + 10))
    assert {(m.key, m.value) for m in done} == {("a", 1.0), ("b", 2.0)}


def test_a_counter_gives_power_and_a_reset_gives_none() -> None:
    counter = Counter()
    assert counter.span("meter", at(0), 1_000.0) is None  # first reading
    span = counter.span("meter", at(360), 1_100.0)
    assert span is not None and span.watts == pytest.approx(1_000.0) and (span.start, span.end) == (at(0), at(360))
    assert counter.span("meter", at(420), 5.0) is None  # reset (device restarted)
    after = counter.span("meter", at(480), 15.0)
    assert after is not None and after.watts == pytest.approx(600.0)
    assert counter.span("meter", at(480), 20.0) is None  # repeated instant
    assert counter.span("meter", at(540), float("nan")) is None


def test_a_counters_energy_is_conserved_across_the_minutes_it_spans() -> None:
    minutes, counter = Minutes(), Counter()
    done: list[Minute] = []
    # The reading at 760 s closes the minute of the one at 700 s (the clock leaves a counter's newest minute open).
    for seconds, wh in [(30, 0.0), (400, 100.0), (410, 102.0), (700, 150.0), (760, 150.0)]:
        span = counter.span("m", at(seconds), wh)
        if span is not None:
            done += minutes.add_span("m", span.start, span.end, span.watts)
    done += minutes.due(at(800))
    energy_wh = sum((m.value or 0.0) * m.coverage * 60 / 3600 for m in done)
    assert energy_wh == pytest.approx(150.0)
    assert [m.ts for m in done] == [at(s) for s in range(0, 720, 60)]
    assert done[0].coverage == pytest.approx(0.5)  # the first reading came at :30


def test_the_clock_leaves_a_counters_newest_minute_open_until_the_next_reading_fills_it() -> None:
    minutes, counter = Minutes(), Counter()
    done: list[Minute] = []
    for seconds, wh in [(0, 0.0), (30, 10.0), (300, 100.0)]:
        span = counter.span("m", at(seconds), wh)
        if span is not None:
            done += minutes.add_span("m", span.start, span.end, span.watts)
        done += minutes.due(at(seconds + 70))  # the clock ticks well past the reading's minute
    # 10 Wh over 30 s and 90 Wh over 270 s are both 1200 W: every minute is whole, and written once.
    assert [(m.ts, m.value, m.coverage) for m in done] == [(at(s), 1200.0, 1.0) for s in range(0, 300, 60)]
    assert minutes.due(at(3600)) == []  # a span ending on a minute's start leaves nothing behind
