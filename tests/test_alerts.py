"""Alerts against a real DuckDB file: crafted readings open alerts, fixed data resolves them, acknowledgement and
re-firing follow the lifecycle, the demo's month raises no false alarm, and the collector evaluates after a poll."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from core.analytics.alert_rules import Finding, Rule, State, Thresholds, evaluate_rules
from core.analytics.alerts import (
    Evaluation,
    acknowledge,
    apply_findings,
    evaluate,
    last_evaluated,
    load_alerts,
    read_inputs,
)
from core.catalog import catalog as cat
from core.catalog.demo import DEMO_SITE, outage_days_by_site
from core.catalog.vendor_sites import group_by_provider_site
from core.config import Settings, load_settings
from core.models import Category, MeterIn, SourceIn
from core.runtime import open_runtime
from core.store.store import Store
from jobs.collector import Collector, run_alerts
from tests.crafting import SourceSpec, craft_site, simulator_api, write_readings
from tests.holder import held
from tests.seeding import seed_history

NOON = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)  # 14:00 in Brussels
TH = Thresholds.from_settings(Settings())


def add_pv(store: Store, name: str = "Plant", *, use_api: bool = True) -> tuple[int, int]:
    """A Brussels site with one 100 kW solar source polled every 15 minutes, added a month before NOON."""
    roof = SourceSpec(Category.PROD, "solar", "Roof", capacity_kw=100, api=simulator_api(use_api=use_api))
    site_id, ids = craft_site(store, [roof], name=name, meter_names={Category.PROD: "PV"})
    with store.transaction() as con:
        con.execute("UPDATE energy_sources SET created_at = ? WHERE id = ?", [NOON - timedelta(days=30), ids["Roof"]])
    return site_id, ids["Roof"]


def alerts(store: Store) -> list[dict[str, Any]]:
    with store.connect(read_only=True) as con:
        return con.sql("SELECT * FROM alerts ORDER BY id").pl().to_dicts()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_bad_reading_opens_one_alert_that_resolves_once_the_data_is_fine(store: Store) -> None:
    _, pv = add_pv(store)
    write_readings(store, pv, at("2026-06-21T10:00"), [50_000.0] * 8 + [-500.0])  # the 12:00-12:15 reading is negative
    first = evaluate(store, TH, at("2026-06-21T12:15"))
    assert (first.opened, first.resolved) == (1, 0)
    [alert] = alerts(store)
    assert alert["rule"] == "out_of_bounds" and alert["status"] == "open" and alert["severity"] == "warning"
    assert alert["source_id"] == pv and alert["value"] == -500.0
    assert alert["message"] == "Negative production -500 W at 2026-06-21 14:00 CEST."
    assert alert["opened_at"] == alert["last_seen_at"] == at("2026-06-21T12:15")

    # Evaluating again changes nothing but when the condition was last seen: still one row, still open.
    for minute in (20, 25, 25):
        again = evaluate(store, TH, at(f"2026-06-21T12:{minute}"))
        assert (again.opened, again.resolved, again.active) == (0, 0, 1)
    [alert] = alerts(store)
    assert alert["status"] == "open" and alert["opened_at"] == at("2026-06-21T12:15")
    assert alert["last_seen_at"] == at("2026-06-21T12:25") and alert["resolved_at"] is None

    # An hour of good data later the bad reading is out of the window: resolved.
    write_readings(store, pv, at("2026-06-21T12:15"), [50_000.0] * 5)  # newest data ends at 13:30
    fixed = evaluate(store, TH, at("2026-06-21T13:30"))
    assert (fixed.opened, fixed.resolved) == (0, 1)
    [alert] = alerts(store)
    assert alert["status"] == "resolved" and alert["resolved_at"] == at("2026-06-21T13:30")
    assert alert["last_seen_at"] == at("2026-06-21T12:25")


def test_acknowledged_until_resolved_then_a_new_occurrence_is_a_new_row(store: Store) -> None:
    _, pv = add_pv(store)
    write_readings(store, pv, at("2026-06-21T10:00"), [50_000.0] * 8 + [-500.0])
    evaluate(store, TH, at("2026-06-21T12:15"))
    [alert] = alerts(store)
    assert acknowledge(store, [alert["id"]], at("2026-06-21T12:16")) == 1
    assert acknowledge(store, [alert["id"]], at("2026-06-21T12:17")) == 0  # already acknowledged

    evaluate(store, TH, at("2026-06-21T12:20"))  # still firing: stays acknowledged, not reopened
    [alert] = alerts(store)
    assert alert["status"] == "acknowledged" and alert["acknowledged_at"] == at("2026-06-21T12:16")
    assert alert["last_seen_at"] == at("2026-06-21T12:20")

    write_readings(store, pv, at("2026-06-21T12:15"), [50_000.0] * 5)
    evaluate(store, TH, at("2026-06-21T13:30"))
    [alert] = alerts(store)
    assert alert["status"] == "resolved" and alert["acknowledged_at"] == at("2026-06-21T12:16")
    assert acknowledge(store, [alert["id"]], at("2026-06-21T13:31")) == 0  # a resolved alert stays resolved

    write_readings(store, pv, at("2026-06-21T13:30"), [-800.0])
    reopened = evaluate(store, TH, at("2026-06-21T13:45"))
    assert reopened.opened == 1
    old, new = alerts(store)
    assert old["id"] == alert["id"] and old["status"] == "resolved"
    assert new["id"] != old["id"] and new["status"] == "open" and new["opened_at"] == at("2026-06-21T13:45")
    assert new["value"] == -800.0 and new["acknowledged_at"] is None


def test_pv_zero_in_sun_and_no_data_fire_and_resolve(store: Store) -> None:
    _, pv = add_pv(store)
    # nothing from 11:00, with the sun ~60 degrees up
    write_readings(store, pv, at("2026-06-21T10:00"), [45_000.0] * 4 + [0.0] * 4)
    evaluate(store, TH, at("2026-06-21T12:00"))
    [zero] = alerts(store)
    assert zero["rule"] == "pv_zero_in_sun" and zero["severity"] == "critical" and zero["value"] == 60.0

    evaluate(store, TH, at("2026-06-21T12:45"))  # no reading since 12:00: 45 min > 2 x 15 min
    zero, silent = alerts(store)
    assert silent["rule"] == "no_data" and silent["status"] == "open" and silent["value"] == 45.0
    assert zero["status"] == "open"  # no new data: still what the newest data says

    write_readings(store, pv, at("2026-06-21T12:00"), [30_000.0, 32_000.0, 31_000.0])
    evaluate(store, TH, at("2026-06-21T12:46"))  # (a second evaluation at 12:45 would be stale: skipped)
    assert [(a["rule"], a["status"]) for a in alerts(store)] == [
        ("pv_zero_in_sun", "resolved"),
        ("no_data", "resolved"),
    ]


def test_deleting_a_source_deletes_its_alerts_and_the_next_evaluation_opens_none(store: Store) -> None:
    site_id, pv = add_pv(store)
    write_readings(store, pv, at("2026-06-21T10:00"), [50_000.0] * 8 + [-500.0])
    evaluate(store, TH, at("2026-06-21T12:15"))
    assert len(alerts(store)) == 1
    with store.transaction() as con:
        cat.delete_source(con, pv)
    evaluate(store, TH, at("2026-06-21T12:20"))
    assert alerts(store) == [] and load_alerts(store, site_id, None).is_empty()


def test_v_alerts_names_and_site_times_and_the_listing_filters(store: Store) -> None:
    site_id, pv = add_pv(store)
    other_site, _ = add_pv(store, "Other", use_api=False)
    write_readings(store, pv, at("2026-06-21T10:00"), [50_000.0] * 8 + [-500.0])
    evaluate(store, TH, at("2026-06-21T12:15"))
    [row] = load_alerts(store, site_id, None).to_dicts()
    assert (row["site"], row["meter"], row["category"], row["source"]) == ("Plant", "PV", "PROD", "Roof")
    assert row["opened_at_local"] == datetime(2026, 6, 21, 14, 15)  # CEST, wall clock
    assert row["timezone"] == "Europe/Brussels" and row["resolved_at_local"] is None
    assert load_alerts(store, other_site, None).is_empty()

    write_readings(store, pv, at("2026-06-21T12:15"), [50_000.0] * 5)
    evaluate(store, TH, at("2026-06-21T13:30"))
    assert load_alerts(store, None, at("2026-06-21T13:00")).height == 1  # resolved after 13:00: still listed
    assert load_alerts(store, None, at("2026-06-21T14:00")).is_empty()  # resolved before: not
    assert last_evaluated(store) == at("2026-06-21T13:30")


def test_evaluations_never_open_a_second_row_for_the_same_rule_and_source(store: Store) -> None:
    _, pv = add_pv(store)
    write_readings(store, pv, at("2026-06-21T10:00"), [50_000.0] * 8 + [-500.0])
    for minute in range(15, 60, 5):
        evaluate(store, TH, at(f"2026-06-21T12:{minute:02d}"))
    with store.connect(read_only=True) as con:
        counts = con.sql(
            "SELECT rule, source_id, count(*) FROM alerts WHERE status IN ('open', 'acknowledged') GROUP BY ALL"
        ).fetchall()
    assert sorted(counts) == [("no_data", pv, 1), ("out_of_bounds", pv, 1)]


@pytest.mark.parametrize("now", [datetime(2026, 6, 21, 12, 2, tzinfo=UTC), datetime(2026, 12, 21, 12, 2, tzinfo=UTC)])
def test_the_demo_month_raises_no_false_alarm(app_env: Path, now: datetime) -> None:
    """Every hour of the simulator's month (long summer days, long winter nights with the battery resting at its
    minimum): PV in sun, bounds, SoC and data freshness stay quiet. Only low yield may speak on overcast days.

    Exempt: the demo's recorded fault (core.catalog.demo), a day with the inverter tripped, on the day before the demo
    was seeded (by the clock, so inside this month only when the month ends soon after today). PV zero in sun is a true
    alarm on that day; outside it, nothing may fire."""
    runtime = seed_history(now)
    with runtime.store.connect(read_only=True) as con:
        inputs = read_inputs(con, now, TH)
        fault_days = {day for days in outage_days_by_site(con).values() for day in days}
        month = con.sql("SELECT source_id, ts, interval_s, value FROM readings WHERE value IS NOT NULL").pl()
    month = month.cast({"interval_s": pl.Int32})
    end = pl.col("ts") + pl.duration(seconds=pl.col("interval_s").cast(pl.Int64))
    first = month["ts"].min()
    assert isinstance(first, datetime)
    empty_daily = inputs.daily.clear()
    moment, loud, said = first + TH.long_read, [], Counter[tuple[Rule, State]]()
    tripped: list[datetime] = []
    zone = ZoneInfo(str(DEMO_SITE["timezone"]))
    while moment <= now:
        window = month.filter((pl.col("ts") >= moment - TH.long_read) & (pl.col("ts") < moment))
        latest = window.group_by("source_id").agg(end.max().alias("last_end"))
        for finding in evaluate_rules(inputs.sources, window, latest, empty_daily, moment, TH):
            said[(finding.rule, finding.state)] += 1
            if finding.state != State.FIRING:
                continue
            if finding.rule is Rule.PV_ZERO_IN_SUN and moment.astimezone(zone).date() in fault_days:
                tripped.append(moment)
                continue
            loud.append((moment.isoformat(), finding.rule.value, finding.message))
        moment += timedelta(minutes=60)
    assert loud == []
    # The fault's day, when inside the month, is loud (so the exemption is one day's and not a blind spot).
    in_month = [day for day in fault_days if first.astimezone(zone).date() < day < now.astimezone(zone).date()]
    assert tripped or not in_month
    # The rules did look: PV judged by day (cleared) and left alone by night, the SoC judged every hour.
    hours = 24 * 30 - 26
    assert (
        said[(Rule.PV_ZERO_IN_SUN, State.CLEAR)] > hours / 4 and said[(Rule.PV_ZERO_IN_SUN, State.UNKNOWN)] > hours / 4
    )
    assert said[(Rule.SOC_STUCK, State.CLEAR)] >= hours and said[(Rule.OUT_OF_BOUNDS, State.CLEAR)] >= 2 * hours
    # And the stored evaluation at the end of the month: nothing but (weather- or fault-made) low yield, and PV zero
    # in sun only if the month ends on the fault's day.
    evaluate(runtime.store, TH, now)
    with runtime.store.connect(read_only=True) as con:
        rules = {r[0] for r in con.sql("SELECT rule FROM alerts").fetchall()}
    tripped_now = {Rule.PV_ZERO_IN_SUN.value} if now.astimezone(zone).date() in fault_days else set()
    assert rules <= {Rule.LOW_DAILY_YIELD.value} | tripped_now


def test_a_collector_poll_evaluates_the_alerts(seeded_env: Path) -> None:
    runtime = open_runtime(load_settings())
    demo = cat.load_catalog(runtime.store).sites[0]
    now = datetime.now(UTC)
    with runtime.store.transaction() as con:  # a source without API whose imported data went negative
        meter_id = cat.insert_meter(con, demo.id, MeterIn(name="Imported PV", category=Category.PROD))
        source = SourceIn(
            name="Carport", source_type="solar", capacity_kw=20, carbon_intensity_g_per_kwh=0, cost_per_mwh=0
        )
        carport = cat.insert_source(con, meter_id, source)
    write_readings(runtime.store, carport, now - timedelta(minutes=20), [-300.0])
    [key] = group_by_provider_site(cat.load_catalog(runtime.store))
    collector = Collector(runtime)
    try:
        collector._poll(key)
    finally:
        collector.executor.shutdown(wait=True)
    evaluated = last_evaluated(runtime.store)
    assert evaluated is not None and evaluated >= now
    [alert] = [a for a in alerts(runtime.store) if a["source_id"] == carport]
    assert alert["rule"] == "out_of_bounds" and alert["status"] == "open"


def test_a_held_file_skips_the_evaluation_without_a_traceback(
    seeded_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = open_runtime(load_settings())
    collector = Collector(runtime)
    caplog.set_level(logging.INFO)
    try:
        with held(runtime.store.path):
            assert run_alerts(runtime) is not None  # what kept it from the file
            collector.evaluate_alerts()  # return, raise nothing,
            collector.evaluate_alerts()  # and say it once per hold, not once per poll
    finally:
        collector.executor.shutdown(wait=True)
    said = [r.getMessage() for r in caplog.records]
    assert sum("alerts not evaluated this time" in m for m in said) == 1
    assert sum("another program holds the database" in m for m in said) == 2  # the line above and the hold's
    assert all(r.exc_info is None for r in caplog.records)
    assert last_evaluated(runtime.store) is None
    assert run_alerts(runtime) is True and last_evaluated(runtime.store) is not None


# --- SolarEdge nights: NULL values are contact ----------------------------------------------------------------------


def pv_day_with_null_nights(first_day: datetime, days: int, watts: float) -> list[float | None]:
    """15-minute values from `first_day` (a UTC midnight): NULL from 20:00 to 04:00 UTC (the night in Brussels in
    June, as SolarEdge reports it), `watts` in between."""
    return [None if not 4 <= (i % 96) // 4 < 20 else watts for i in range(96 * days)]


def test_null_readings_at_night_are_contact_not_missing_data(store: Store) -> None:
    _, pv = add_pv(store)
    night = pv_day_with_null_nights(at("2026-06-21T00:00"), 1, 40_000.0)[:92]  # rows up to 23:00
    write_readings(store, pv, at("2026-06-21T00:00"), night)
    # At 23:00 UTC the newest value ended at 20:00, but NULL rows kept arriving until 23:00: no no_data alert.
    evaluate(store, TH, at("2026-06-21T23:00"))
    assert [a["rule"] for a in alerts(store)] == []
    with store.connect(read_only=True) as con:
        inputs = read_inputs(con, at("2026-06-21T23:00"), TH)
    assert inputs.latest.to_dicts() == [{"source_id": pv, "last_end": at("2026-06-21T23:00")}]
    assert inputs.readings["value"].null_count() == 0  # the value rules still see values only
    # When even the NULLs stop, it is late again (45 min > 2 x 15 min after the last row).
    evaluate(store, TH, at("2026-06-21T23:45"))
    [late] = alerts(store)
    assert late["rule"] == "no_data" and late["value"] == 45.0


def test_low_daily_yield_judges_a_day_with_null_nights(store: Store) -> None:
    _, pv = add_pv(store)
    # Brussels' 2026-06-20 runs from 06-19 22:00 to 06-20 22:00 UTC. Every row is there (NULL at night); values:
    # 06-20 04:00-20:00 UTC, 64 quarter hours of 1 kW = 16 kWh, and 06-19 22:00-24:00 is NULL.
    start = at("2026-06-19T00:00")
    write_readings(store, pv, start, pv_day_with_null_nights(start, 2, 1_000.0) + [None] * 16 + [1_000.0] * 24)
    evaluate(store, TH, at("2026-06-21T10:00"))  # rows up to 10:00, so no_data is quiet
    [low] = alerts(store)
    assert low["rule"] == "low_daily_yield" and low["status"] == "open" and low["value"] == 16.0
    assert low["message"].startswith("Yesterday (2026-06-20) produced 16.0 kWh")


def test_a_source_silent_for_days_gets_its_newest_hour_from_the_rollups(store: Store) -> None:
    _, pv = add_pv(store)
    write_readings(store, pv, at("2026-06-15T10:00"), [40_000.0, 41_000.0, None])  # the NULL row ends at 10:45
    with store.connect(read_only=True) as con:
        latest = read_inputs(con, NOON, TH).latest
    assert latest.to_dicts() == [{"source_id": pv, "last_end": at("2026-06-15T11:00")}]  # the end of that hour


# --- evaluations out of order ---------------------------------------------------------------------------------------


def firing(source_id: int, site_id: int, message: str = "Crafted.", value: float = 1.0) -> Finding:
    return Finding(Rule.OUT_OF_BOUNDS, source_id, site_id, State.FIRING, message, value)


def apply(store: Store, findings: list[Finding], now: datetime) -> Evaluation:
    with store.transaction() as con:
        return apply_findings(con, findings, now)


def test_an_older_evaluation_applied_after_a_newer_one_changes_nothing(store: Store) -> None:
    site_id, pv = add_pv(store)
    apply(store, [firing(pv, site_id)], at("2026-06-21T12:30"))  # the newer evaluation opens the alert
    before = alerts(store)
    stale = apply(store, [], at("2026-06-21T12:20"))  # an older one, which saw nothing firing, writes last
    assert stale.skipped and (stale.opened, stale.resolved) == (0, 0)
    assert alerts(store) == before and before[0]["status"] == "open"
    assert last_evaluated(store) == at("2026-06-21T12:30")
    assert apply(store, [firing(pv, site_id, "Other.")], at("2026-06-21T12:30")).skipped  # the same instant too
    assert alerts(store) == before


def test_resolution_is_never_before_acknowledgement(store: Store) -> None:
    site_id, pv = add_pv(store)
    apply(store, [firing(pv, site_id)], at("2026-06-21T12:30"))
    [alert] = alerts(store)
    assert acknowledge(store, [alert["id"]], at("2026-06-21T12:40")) == 1  # the page's clock ran ahead
    apply(store, [], at("2026-06-21T12:35"))  # the collector's evaluation, read before that, resolves
    [alert] = alerts(store)
    assert alert["status"] == "resolved" and alert["acknowledged_at"] == at("2026-06-21T12:40")
    assert alert["resolved_at"] == at("2026-06-21T12:40")
    apply(store, [firing(pv, site_id)], at("2026-06-21T12:45"))
    new = alerts(store)[1]
    assert acknowledge(store, [new["id"]], at("2026-06-21T12:44")) == 1  # a clock behind the opening
    assert alerts(store)[1]["acknowledged_at"] == at("2026-06-21T12:45")


def test_last_seen_is_rewritten_every_few_minutes_or_when_the_alert_changes(store: Store) -> None:
    site_id, pv = add_pv(store)
    apply(store, [firing(pv, site_id)], at("2026-06-21T12:00"))
    apply(store, [firing(pv, site_id)], at("2026-06-21T12:04"))  # same message and value, 4 min: row untouched
    assert alerts(store)[0]["last_seen_at"] == at("2026-06-21T12:00")
    apply(store, [firing(pv, site_id, value=2.0)], at("2026-06-21T12:06"))  # a new value: rewritten
    [alert] = alerts(store)
    assert alert["last_seen_at"] == at("2026-06-21T12:06") and alert["value"] == 2.0
    apply(store, [firing(pv, site_id, value=2.0)], at("2026-06-21T12:11"))  # 5 min on: rewritten
    assert alerts(store)[0]["last_seen_at"] == at("2026-06-21T12:11")


# --- the collector's throttle ----------------------------------------------------------------------------------------


def test_the_collector_evaluates_at_most_once_a_minute_and_at_least_every_15(app_env: Path) -> None:
    # The throttle follows the collector's clock (set here); each evaluation it lets through is a real one, which
    # stores the wall-clock time it ran at in the file: a new stored time is an evaluation, the same time none.
    clock = [NOON]
    runtime = open_runtime(load_settings())
    collector = Collector(runtime, clock=lambda: clock[0])
    evaluations: list[datetime | None] = [last_evaluated(runtime.store)]

    def after(seconds: int) -> datetime:
        clock[0] = NOON + timedelta(seconds=seconds)
        return clock[0]

    def ran(tick: bool) -> bool:
        """Whether an evaluation was stored since the last look, checked against what the tick said."""
        stored = last_evaluated(runtime.store)
        new = stored != evaluations[-1]
        evaluations.append(stored)
        assert new == tick, (tick, evaluations)
        return new

    try:
        assert ran(collector.evaluate_alerts())  # the first poll: at once
        after(10)
        assert not ran(collector.evaluate_alerts())  # a poll 10 s later: due, not run
        after(59)
        assert not collector.alerts_due(clock[0]) and not ran(collector.alerts_tick())
        after(60)
        assert collector.alerts_due(clock[0]) and ran(collector.alerts_tick())  # the next tick after the gap runs it
        after(150)
        assert not ran(collector.alerts_tick())  # nothing polled since: not due
        after(60 + 15 * 60 - 1)
        assert not ran(collector.alerts_tick())
        after(60 + 15 * 60)
        assert ran(collector.alerts_tick())  # the floor
    finally:
        collector.executor.shutdown(wait=True)
    assert evaluations[0] is None and len({moment for moment in evaluations if moment is not None}) == 3
