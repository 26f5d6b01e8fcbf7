"""Alerts against a real DuckDB file: crafted readings open alerts, fixed data resolves them, acknowledgement and
re-firing follow the lifecycle, the demo's month raises no false alarm, and the collector evaluates after a poll."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from core import catalog as cat
from core.alert_rules import Rule, State, Thresholds, evaluate_rules
from core.alerts import acknowledge, evaluate, last_evaluated, load_alerts, read_inputs
from core.config import Settings, load_settings
from core.models import Category, MeterIn, SourceIn
from core.providers.channels import group_by_provider_site
from core.runtime import open_runtime
from core.store import Store
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
    evaluate(store, TH, at("2026-06-21T12:45"))
    assert [(a["rule"], a["status"]) for a in alerts(store)] == [
        ("pv_zero_in_sun", "resolved"),
        ("no_data", "resolved"),
    ]


def test_an_alert_of_a_deleted_source_resolves_and_keeps_its_history(store: Store) -> None:
    site_id, pv = add_pv(store)
    write_readings(store, pv, at("2026-06-21T10:00"), [50_000.0] * 8 + [-500.0])
    evaluate(store, TH, at("2026-06-21T12:15"))
    with store.transaction() as con:
        cat.delete_source(con, pv)
    evaluate(store, TH, at("2026-06-21T12:20"))
    [alert] = alerts(store)
    assert alert["status"] == "resolved" and alert["resolved_at"] == at("2026-06-21T12:20")
    [row] = load_alerts(store, site_id, None).to_dicts()
    assert row["source"] is None and row["site"] == "Plant"


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
    minimum): PV in sun, bounds, SoC and data freshness stay quiet. Only low yield may speak on overcast days."""
    runtime = seed_history(now)
    with runtime.store.connect(read_only=True) as con:
        inputs = read_inputs(con, now, TH)
        month = con.sql("SELECT source_id, ts, interval_s, value FROM readings WHERE value IS NOT NULL").pl()
    month = month.cast({"interval_s": pl.Int32})
    end = pl.col("ts") + pl.duration(seconds=pl.col("interval_s").cast(pl.Int64))
    first = month["ts"].min()
    assert isinstance(first, datetime)
    empty_daily = inputs.daily.clear()
    moment, loud, said = first + TH.long_read, [], Counter[tuple[Rule, State]]()
    while moment <= now:
        window = month.filter((pl.col("ts") >= moment - TH.long_read) & (pl.col("ts") < moment))
        latest = window.group_by("source_id").agg(end.max().alias("last_end"))
        for finding in evaluate_rules(inputs.sources, window, latest, empty_daily, moment, TH):
            said[(finding.rule, finding.state)] += 1
            if finding.state == State.FIRING:
                loud.append((moment.isoformat(), finding.rule.value, finding.message))
        moment += timedelta(minutes=60)
    assert loud == []
    # The rules did look: PV judged by day (cleared) and left alone by night, the SoC judged every hour.
    hours = 24 * 30 - 26
    assert (
        said[(Rule.PV_ZERO_IN_SUN, State.CLEAR)] > hours / 4 and said[(Rule.PV_ZERO_IN_SUN, State.UNKNOWN)] > hours / 4
    )
    assert said[(Rule.SOC_STUCK, State.CLEAR)] >= hours and said[(Rule.OUT_OF_BOUNDS, State.CLEAR)] >= 2 * hours
    # And the stored evaluation at the end of the month: nothing but (weather-made) low yield.
    evaluate(runtime.store, TH, now)
    with runtime.store.connect(read_only=True) as con:
        rules = {r[0] for r in con.sql("SELECT rule FROM alerts").fetchall()}
    assert rules <= {Rule.LOW_DAILY_YIELD.value}


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
            assert run_alerts(runtime) is False
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
