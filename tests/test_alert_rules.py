"""The alert rules as pure functions on crafted frames: each fires, stays quiet, and holds at its boundaries."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import polars as pl
import pytest
from pvlib.location import Location

from core.analytics.alert_rules import (
    DAILY_SCHEMA,
    LATEST_SCHEMA,
    READING_SCHEMA,
    SOURCE_SCHEMA,
    Finding,
    Rule,
    State,
    Thresholds,
    clear_sky_kwh_per_kw,
    evaluate_rules,
    low_daily_yield,
    no_data,
    out_of_bounds,
    pv_zero_in_sun,
    rule_explanations,
    soc_stuck,
    sun_elevation,
    with_sun_elevation,
    yesterday_bounds,
)
from core.config import Settings
from tests.crafting import readings_frame

BRUSSELS = (50.85, 4.35, "Europe/Brussels")
NOON = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)  # 14:00 in Brussels, the sun ~60 degrees up
TH = Thresholds.from_settings(Settings())


def source(source_id: int, category: str = "PROD", source_type: str = "solar", **fields: Any) -> dict[str, Any]:
    lat, lon, zone = BRUSSELS
    row = {
        "source_id": source_id,
        "site_id": 1,
        "category": category,
        "source_type": source_type,
        "capacity_kw": 100.0,
        "use_api": True,
        "cadence_min": 15,
        "delivery": "poll",
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "latitude": lat,
        "longitude": lon,
        "timezone": zone,
    }
    return row | fields


def sources(*rows: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=SOURCE_SCHEMA)


def readings(source_id: int, start: datetime, values: list[float | None], step_s: int = 900) -> pl.DataFrame:
    return readings_frame(source_id, start, values, step_s).select(READING_SCHEMA.names())


def located(frame: pl.DataFrame, table: pl.DataFrame) -> pl.DataFrame:
    """Readings with their site's place and the sun, as `evaluate_rules` hands them to the solar rules."""
    placed = frame.join(table.select("source_id", "latitude", "longitude"), on="source_id")
    return with_sun_elevation(placed).drop("mid_s")


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, findings
    return findings[0]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- the sun, with pvlib ----------------------------------------------------------------------------------------


def test_sun_elevation_in_brussels_at_june_noon_and_midnight() -> None:
    times = pd.DatetimeIndex([at("2026-06-21T11:43"), at("2026-06-21T00:00")])
    noon, midnight = sun_elevation(50.85, 4.35, times)
    # At the June solstice the sun culminates at 90 - latitude + declination = 90 - 50.85 + 23.44 = 62.59 degrees
    # and at solar midnight is latitude + declination - 90 = -15.71 below the horizon.
    assert noon == pytest.approx(62.59, abs=0.2)
    assert midnight == pytest.approx(-15.7, abs=0.5)
    assert noon > 10 and midnight < 0


def test_clear_sky_insolation_of_a_site_day() -> None:
    june = clear_sky_kwh_per_kw(*BRUSSELS, date(2026, 6, 21))
    december = clear_sky_kwh_per_kw(*BRUSSELS, date(2026, 12, 21))
    # The same Ineichen clear sky integrated minute by minute over the local day (22:00 to 22:00 UTC in June).
    minutes = pd.date_range("2026-06-20 22:00", "2026-06-21 22:00", freq="1min", tz="UTC", inclusive="left")
    fine = float(Location(50.85, 4.35, "Europe/Brussels").get_clearsky(minutes)["ghi"].sum()) / 60 / 1000
    assert june == pytest.approx(fine, rel=0.01)
    assert 7 < june < 9 and 0.5 < december < 1.5


def test_yesterday_is_the_site_day_with_its_dst_length() -> None:
    day, start, end = yesterday_bounds(datetime(2026, 3, 30, 10, tzinfo=UTC), "Europe/Brussels")
    assert day == date(2026, 3, 29)
    assert start == at("2026-03-28T23:00") and end - start == timedelta(hours=23)
    day, start, end = yesterday_bounds(datetime(2026, 10, 25, 23, 30, tzinfo=UTC), "Europe/Brussels")
    assert day == date(2026, 10, 25) and end - start == timedelta(hours=25)  # 00:30 on the 26th locally


# --- no data ----------------------------------------------------------------------------------------------------


def latest(**ends: datetime | None) -> pl.DataFrame:
    rows = [(int(k.removeprefix("s")), v) for k, v in ends.items() if v is not None]
    return pl.DataFrame(rows, schema=LATEST_SCHEMA, orient="row")


def test_no_data_fires_only_after_twice_the_cadence_from_the_end_of_the_newest_interval() -> None:
    table = sources(source(1), source(2), source(3, cadence_min=60), source(4, use_api=False))
    ends = latest(
        s1=NOON - timedelta(minutes=30),  # exactly 2 x 15 min: not yet "longer than"
        s2=NOON - timedelta(minutes=30, seconds=1),
        s3=NOON - timedelta(minutes=119),
        s4=NOON - timedelta(days=5),  # no API: imported data, no cadence to miss
    )
    findings = {f.source_id: f for f in no_data(table, ends, NOON, TH)}
    assert set(findings) == {1, 2, 3}
    assert findings[1].state == State.CLEAR and findings[3].state == State.CLEAR
    late = findings[2]
    assert late.state == State.FIRING and late.rule == Rule.NO_DATA
    assert late.value == 30.0  # minutes, from 11:29:59 to 12:00
    assert "expected every 15 min" in late.message and "2026-06-21 13:29 CEST" in late.message


def test_no_data_counts_from_creation_for_a_source_that_never_reported() -> None:
    fresh = source(1, created_at=NOON - timedelta(minutes=20))
    old = source(2, created_at=NOON - timedelta(hours=2))
    findings = {f.source_id: f for f in no_data(sources(fresh, old), latest(), NOON, TH)}
    assert findings[1].state == State.CLEAR
    assert findings[2].state == State.FIRING and findings[2].value == 120.0
    assert findings[2].message == "No reading received yet (expected every 15 min)."


def test_no_data_names_the_sender_or_device_of_a_source_nobody_polls() -> None:
    table = sources(
        source(1, delivery="push"), source(2, delivery="subscribe", cadence_min=5), source(3, delivery="push")
    )
    ends = latest(s1=NOON - timedelta(minutes=47), s2=NOON - timedelta(minutes=11))  # source 3 never sent anything
    messages = {f.source_id: f.message for f in no_data(table, ends, NOON, TH)}
    assert messages == {
        1: "No reading pushed for 47 min (expected every 15 min); the newest ended 2026-06-21 13:13 CEST.",
        2: "No reading from its MQTT device for 11 min (expected every 5 min); the newest ended 2026-06-21 13:49 CEST.",
        3: "No reading pushed yet (expected every 15 min).",
    }


def test_no_data_factor_is_a_setting() -> None:
    ends = latest(s1=NOON - timedelta(minutes=40))
    assert only(no_data(sources(source(1)), ends, NOON, TH)).state == State.FIRING
    assert only(no_data(sources(source(1)), ends, NOON, replace(TH, no_data_factor=3))).state == State.CLEAR


# --- PV zero in sun ---------------------------------------------------------------------------------------------


def zero_check(values: list[float], start: datetime, th: Thresholds = TH) -> Finding:
    table = sources(source(1))
    return only(pv_zero_in_sun(table, located(readings(1, start, values), table), th))


def test_pv_zero_fires_after_30_sunlit_minutes_since_the_last_production() -> None:
    # 11:00-11:30 UTC produces, then 11:30-12:00 (two quarter hours, sun ~60 degrees) gives nothing.
    finding = zero_check([40_000.0, 41_000.0, 0.0, 0.0], at("2026-06-21T11:00"))
    assert finding.state == State.FIRING and finding.rule == Rule.PV_ZERO_IN_SUN
    assert finding.value == 30.0
    assert "since 2026-06-21 13:30 CEST" in finding.message


def test_pv_zero_does_not_fire_after_15_minutes_and_production_clears_it() -> None:
    assert zero_check([40_000.0, 41_000.0, 42_000.0, 0.0], at("2026-06-21T11:00")).state == State.CLEAR
    assert zero_check([0.0, 0.0, 0.0, 35_000.0], at("2026-06-21T11:00")).state == State.CLEAR


def test_pv_zero_threshold_is_at_most_zero_w() -> None:
    at_threshold = zero_check([40_000.0, TH.zero_w, TH.zero_w], at("2026-06-21T11:15"))
    above = zero_check([40_000.0, TH.zero_w + 0.01, TH.zero_w + 0.01], at("2026-06-21T11:15"))
    assert at_threshold.state == State.FIRING and above.state == State.CLEAR


def test_pv_zero_in_the_dark_neither_fires_nor_clears() -> None:
    # 20:00-23:00 UTC in June: the sun has set in Brussels. No production, no sun: nothing to say.
    assert zero_check([0.0] * 12, at("2026-06-21T20:00")).state == State.UNKNOWN


def test_pv_zero_ignores_low_sun_readings() -> None:
    # 19:00-19:45 UTC: the sun is 7 degrees up at 19:00 and sinking, below the 10 degree line.
    times = pd.DatetimeIndex([at("2026-06-21T19:07:30"), at("2026-06-21T19:37:30")])
    assert all(sun_elevation(50.85, 4.35, times) < 10)
    assert zero_check([0.0, 0.0, 0.0, 0.0], at("2026-06-21T19:00")).state == State.UNKNOWN
    # With a lower line, the same readings are daylight: 60 minutes of zero.
    lower = zero_check([0.0, 0.0, 0.0, 0.0], at("2026-06-21T19:00"), replace(TH, sun_elevation_deg=0))
    assert lower.state == State.FIRING and lower.value == 60.0


def test_pv_zero_counts_daylight_across_a_dead_night() -> None:
    # Nothing all night and 04:45-05:45 UTC in the morning (the sun above 10 degrees from about 04:35 UTC).
    night_and_morning = [0.0] * 8
    assert zero_check(night_and_morning, at("2026-06-21T03:45")).state == State.FIRING


def test_pv_zero_applies_to_solar_sources_only() -> None:
    table = sources(source(1, source_type="wind"), source(2, category="CONS", source_type="load"))
    frame = pl.concat([readings(1, at("2026-06-21T11:00"), [0.0] * 4), readings(2, at("2026-06-21T11:00"), [0.0] * 4)])
    assert pv_zero_in_sun(table, located(frame, table), TH) == []


# --- out of bounds ----------------------------------------------------------------------------------------------


def bounds_check(values: list[float], start: datetime, **fields: Any) -> Finding:
    table = sources(source(1, **fields))
    frame = readings(1, start, values)
    if fields.get("source_type", "solar") == "solar":
        frame = located(frame, table)
    else:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Float64).alias("elevation"))
    return only(out_of_bounds(table, frame, TH))


def test_production_above_1_2_times_capacity() -> None:
    assert bounds_check([50_000.0, 120_000.0], at("2026-06-21T11:00")).state == State.CLEAR  # 1.2 x 100 kW
    finding = bounds_check([50_000.0, 120_001.0], at("2026-06-21T11:00"))
    assert finding.state == State.FIRING and finding.rule == Rule.OUT_OF_BOUNDS and finding.value == 120_001.0
    assert finding.message == "120.0 kW at 2026-06-21 13:15 CEST, above 1.2 x capacity (120.0 kW)."


def test_negative_production() -> None:
    assert bounds_check([-TH.zero_w], at("2026-06-21T11:00")).state == State.CLEAR
    finding = bounds_check([-10.5], at("2026-06-21T11:00"))
    assert finding.state == State.FIRING and finding.message == "Negative production -10 W at 2026-06-21 13:00 CEST."


def test_production_at_night() -> None:
    # 23:00 UTC in June: the sun ~15 degrees below the horizon. 1 % of 100 kW is 1,000 W.
    assert bounds_check([1_000.0], at("2026-06-21T23:00")).state == State.CLEAR
    finding = bounds_check([1_001.0], at("2026-06-21T23:00"))
    assert finding.state == State.FIRING and "15° below the horizon" in finding.message
    # Wind turns at night: only the capacity and sign bounds apply to it.
    assert bounds_check([30_000.0], at("2026-06-21T23:00"), source_type="wind").state == State.CLEAR


def test_capacity_zero_skips_the_capacity_bounds() -> None:
    assert bounds_check([500_000.0], at("2026-06-21T11:00"), capacity_kw=0.0).state == State.CLEAR


def test_state_of_charge_outside_0_to_100() -> None:
    assert bounds_check([100.0, 0.0], at("2026-06-21T11:00"), category="STOR", source_type="soc").state == State.CLEAR
    finding = bounds_check([100.5], at("2026-06-21T11:00"), category="STOR", source_type="soc")
    assert finding.state == State.FIRING and finding.value == 100.5


def test_a_spike_resolves_an_hour_after_the_newest_data_moves_past_it() -> None:
    spike_then_fine = [130_000.0] + [50_000.0] * 4  # the spike at 10:00, newest data ends at 11:15
    assert bounds_check(spike_then_fine, at("2026-06-21T10:00")).state == State.CLEAR
    finding = bounds_check([130_000.0, 125_000.0] + [50_000.0] * 3, at("2026-06-21T10:00"))
    assert finding.state == State.FIRING and finding.value == 125_000.0  # the newest bad reading (10:15)
    assert bounds_check([], at("2026-06-21T10:00")).state == State.UNKNOWN


# --- state of charge stuck ----------------------------------------------------------------------------------------


def soc_case(soc: list[float], power: list[float] | None, start: datetime, th: Thresholds = TH) -> Finding:
    rows = [source(1, category="STOR", source_type="soc")]
    frames = [readings(1, start, soc)]
    if power is not None:
        rows.append(source(2, category="STOR", source_type="battery", capacity_kw=50.0))  # flow above 1 kW
        frames.append(readings(2, start, power))
    return only(soc_stuck(sources(*rows), pl.concat(frames), th))


START = at("2026-06-21T04:00")


def test_soc_stuck_while_the_battery_moves_power() -> None:
    finding = soc_case([50.0] * 28, [3_000.0] * 28, START)  # 7 hours
    assert finding.state == State.FIRING and finding.rule == Rule.SOC_STUCK and finding.value == 50.0
    assert "stuck at 50.0 %" in finding.message and "7.0 h" in finding.message and "3,000 W" in finding.message


def test_soc_resting_at_its_minimum_without_flow_is_not_stuck() -> None:
    assert soc_case([10.0] * 56, [0.0] * 56, START).state == State.CLEAR  # 14 h at 10 %, as the demo's nights


def test_soc_flow_boundary_and_flow_in_both_directions() -> None:
    assert soc_case([50.0] * 28, [1_000.0] * 28, START).state == State.CLEAR  # exactly 2 % of 50 kW
    assert soc_case([50.0] * 28, [1_001.0] * 28, START).state == State.FIRING
    # Charging and discharging in turn averages 0 W but is real flow: the mean of |power| counts.
    assert soc_case([50.0] * 28, [3_000.0, -3_000.0] * 14, START).state == State.FIRING


def test_soc_range_boundary() -> None:
    wobble = [50.0, 50.4] * 14
    assert soc_case(wobble, [3_000.0] * 28, START).state == State.FIRING  # moved 0.4 points: unchanged
    moved = [50.0, 50.5] * 14
    assert soc_case(moved, [3_000.0] * 28, START).state == State.CLEAR  # 0.5 points is a move


def test_soc_stuck_needs_the_full_window() -> None:
    # A move, then 5 h 45 min unchanged (23 quarter hours): not yet.
    assert soc_case([40.0] + [50.0] * 23, [3_000.0] * 24, START).state == State.CLEAR
    # A move, then 6 h unchanged (the run spans from the first 50 % reading's start to the newest end).
    assert soc_case([40.0] + [50.0] * 24, [3_000.0] * 25, START).state == State.FIRING


def test_soc_without_battery_power_uses_the_longer_window() -> None:
    assert soc_case([40.0] + [50.0] * 100, None, START).state == State.FIRING  # 25 h
    assert soc_case([40.0] + [50.0] * 92, None, START).state == State.CLEAR  # 23 h after a move
    assert soc_case([50.0] * 92, None, START).state == State.UNKNOWN  # 23 h of data, all unchanged: too early


# --- low daily yield --------------------------------------------------------------------------------------------


def daily(
    source_id: int, bucket: datetime, energy_wh: float | None, covered_s: int, received_s: int | None = None
) -> pl.DataFrame:
    return pl.DataFrame([(source_id, bucket, energy_wh, covered_s, received_s)], schema=DAILY_SCHEMA, orient="row")


def test_low_daily_yield_against_the_clear_sky_expectation() -> None:
    # Yesterday in Brussels is 2026-06-20, from 2026-06-19 22:00 UTC, 24 hours long.
    bucket = at("2026-06-19T22:00")
    expected_kwh = 100.0 * clear_sky_kwh_per_kw(*BRUSSELS, date(2026, 6, 20)) * 0.8
    limit_wh = 0.2 * expected_kwh * 1000
    table = sources(source(1))
    at_limit = only(low_daily_yield(table, daily(1, bucket, limit_wh, 86_400), NOON, TH))
    below = only(low_daily_yield(table, daily(1, bucket, limit_wh - 1, 86_400), NOON, TH))
    assert at_limit.state == State.CLEAR
    assert below.state == State.FIRING and below.rule == Rule.LOW_DAILY_YIELD
    assert below.value == pytest.approx((limit_wh - 1) / 1000, abs=0.001)
    assert "Yesterday (2026-06-20)" in below.message and "20%" in below.message


def test_low_daily_yield_needs_a_complete_day_and_a_capacity() -> None:
    bucket = at("2026-06-19T22:00")
    table = sources(source(1))
    partial = only(low_daily_yield(table, daily(1, bucket, 0.0, int(0.9 * 86_400) - 1), NOON, TH))
    assert partial.state == State.UNKNOWN
    complete = only(low_daily_yield(table, daily(1, bucket, 0.0, int(0.9 * 86_400)), NOON, TH))
    assert complete.state == State.FIRING
    assert only(low_daily_yield(table, daily(1, bucket - timedelta(days=1), 0.0, 86_400), NOON, TH)).state == (
        State.UNKNOWN  # the day before yesterday says nothing about yesterday
    )
    assert low_daily_yield(sources(source(1, capacity_kw=0.0)), daily(1, bucket, 0.0, 86_400), NOON, TH) == []


def test_low_daily_yield_counts_null_night_readings_towards_a_complete_day() -> None:
    # SolarEdge answers null all night: 16 h with a value, 24 h of rows. 10 kWh is far below 20 % of the clear sky.
    bucket = at("2026-06-19T22:00")
    table = sources(source(1))
    night_nulls = only(low_daily_yield(table, daily(1, bucket, 10_000.0, 16 * 3600, 86_400), NOON, TH))
    assert night_nulls.state == State.FIRING and night_nulls.value == 10.0
    gaps = only(low_daily_yield(table, daily(1, bucket, 10_000.0, 16 * 3600, 16 * 3600), NOON, TH))
    assert gaps.state == State.UNKNOWN  # 8 h without any row: not complete
    all_null = only(low_daily_yield(table, daily(1, bucket, None, 0, 86_400), NOON, TH))
    assert all_null.state == State.FIRING and all_null.value == 0.0  # null all day: no energy at all


def test_low_daily_yield_share_and_ratio_are_settings() -> None:
    bucket = at("2026-06-19T22:00")
    expected_kwh = 100.0 * clear_sky_kwh_per_kw(*BRUSSELS, date(2026, 6, 20)) * 0.8
    frame = daily(1, bucket, 0.15 * expected_kwh * 1000, 86_400)  # 15 % of the default expectation
    table = sources(source(1))
    assert only(low_daily_yield(table, frame, NOON, TH)).state == State.FIRING
    assert only(low_daily_yield(table, frame, NOON, replace(TH, low_yield_share=0.1))).state == State.CLEAR
    assert only(low_daily_yield(table, frame, NOON, replace(TH, performance_ratio=0.6))).state == State.CLEAR


# --- all together ------------------------------------------------------------------------------------------------


def test_evaluate_rules_covers_every_applicable_source_once_per_rule() -> None:
    table = sources(
        source(1),
        source(2, category="CONS", source_type="load"),
        source(3, category="STOR", source_type="soc"),
        source(4, category="STOR", source_type="battery"),
    )
    frame = pl.concat(
        [
            readings(1, at("2026-06-21T11:00"), [0.0] * 4),
            readings(2, at("2026-06-21T11:00"), [5_000.0] * 4),
            readings(3, at("2026-06-21T11:00"), [101.0] * 4),
            readings(4, at("2026-06-21T11:00"), [0.0] * 4),
        ]
    )
    ends = latest(s1=NOON, s2=NOON, s3=NOON, s4=NOON)
    empty = pl.DataFrame(schema=DAILY_SCHEMA)
    findings = evaluate_rules(table, frame, ends, empty, NOON, TH)
    pairs = {(f.rule, f.source_id): f.state for f in findings}
    assert len(pairs) == len(findings)
    assert {rule for rule, _ in pairs} == set(Rule)
    assert pairs[(Rule.PV_ZERO_IN_SUN, 1)] == State.FIRING
    assert pairs[(Rule.OUT_OF_BOUNDS, 3)] == State.FIRING
    assert pairs[(Rule.OUT_OF_BOUNDS, 1)] == State.CLEAR
    assert pairs[(Rule.SOC_STUCK, 3)] == State.UNKNOWN
    assert pairs[(Rule.LOW_DAILY_YIELD, 1)] == State.UNKNOWN
    assert all(state == State.CLEAR for (rule, _), state in pairs.items() if rule == Rule.NO_DATA)
    assert (Rule.OUT_OF_BOUNDS, 2) not in pairs and (Rule.PV_ZERO_IN_SUN, 3) not in pairs


def test_explanations_show_the_thresholds_in_force() -> None:
    texts = rule_explanations(replace(TH, zero_minutes=45, sun_elevation_deg=12, low_yield_share=0.25))
    assert set(texts) == set(Rule)
    assert "45 minutes" in texts[Rule.PV_ZERO_IN_SUN] and "12°" in texts[Rule.PV_ZERO_IN_SUN]
    assert "below 25%" in texts[Rule.LOW_DAILY_YIELD]
