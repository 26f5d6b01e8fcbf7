"""The live view on a real temporary DuckDB file with crafted readings: newest reading, age, staleness, power flow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

import polars as pl
import pytest

from core.analytics import live
from core.analytics.live import Status
from core.models import ApiSettings, Category, UpdateFrequency
from core.roles import Role
from core.store.store import Store
from tests.crafting import SourceSpec, craft_site, simulator_api, write_readings

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)  # Brussels summer time: 12:00 local

# (source name, category, type); every source polls every 15 minutes unless the test says otherwise
FULL_SITE = [
    ("Roof PV", Category.PROD, "solar"),
    ("Building Load", Category.CONS, "load"),
    ("Grid Import", Category.CONS, "grid"),
    ("Battery", Category.STOR, "battery"),
    ("Battery SoC", Category.STOR, "soc"),
    ("Grid Export", Category.INJ, "grid"),
]


def build_site(
    store: Store, sources: list[tuple[str, Category, str]], frequency: dict[str, UpdateFrequency | None] | None = None
) -> tuple[int, dict[str, int]]:
    """A site with one meter per category; `frequency[name] = None` makes a source without API."""
    frequency = frequency or {}
    specs = []
    for name, category, source_type in sources:
        every = frequency.get(name, UpdateFrequency.MIN15)
        api = simulator_api(every) if every is not None else ApiSettings(use_api=False)
        specs.append(SourceSpec(category, source_type, name, api=api))
    return craft_site(store, specs)


# Readings every 5 minutes unless a test says otherwise.
write = partial(write_readings, step_s=300)


def by_name(snapshot: live.LiveSnapshot) -> dict[str, live.SourceLive]:
    return {s.source.name: s for s in snapshot.sources}


def test_the_newest_reading_of_every_source(store: Store) -> None:
    site, ids = build_site(store, FULL_SITE[:3])
    write(store, ids["Roof PV"], T0, [1000.0, 2000.0, 3000.0])  # 10:00, 10:05, 10:10
    write(store, ids["Building Load"], T0, [500.0, 700.0, None])  # the newest slot is the vendor's "no data"
    snapshot = live.live_snapshot(store, site, T0 + timedelta(minutes=20))
    sources = by_name(snapshot)
    pv, load, grid = sources["Roof PV"], sources["Building Load"], sources["Grid Import"]
    assert pv.reading is not None and load.reading is not None
    assert (pv.value, pv.unit, pv.reading.ts, pv.reading.interval_s) == (3000.0, "W", T0 + timedelta(minutes=10), 300)
    # The newest row is the vendor answering without a figure: contact (as of 10:15, 5 min ago), no value.
    assert (load.value, load.reading.ts, load.age) == (None, T0 + timedelta(minutes=10), timedelta(minutes=5))
    assert load.status is Status.CURRENT and load.status_text == "current, no value reported"
    assert live.format_value(load.value, load.unit) == "-"
    assert grid.reading is None and grid.status is Status.NO_DATA and grid.age is None
    assert [s.source.name for s in snapshot.sources] == ["Roof PV", "Building Load", "Grid Import"]  # PROD first


def test_age_counts_from_the_end_of_the_interval(store: Store) -> None:
    site, ids = build_site(store, FULL_SITE[:1])
    write(store, ids["Roof PV"], T0, [4000.0], step_s=900)  # covers 10:00-10:15
    pv = by_name(live.live_snapshot(store, site, T0 + timedelta(minutes=20)))["Roof PV"]
    assert pv.reading is not None and pv.reading.as_of == T0 + timedelta(minutes=15)
    assert pv.age == timedelta(minutes=5)  # not 20: the value describes the site up to 10:15
    assert live.format_age(timedelta(minutes=5)) == "5 min ago"


def test_an_interval_still_open_when_stored_is_as_of_its_storing(store: Store) -> None:
    site, ids = build_site(store, FULL_SITE[:1])
    # The 10:15-10:30 interval, stored at 10:20 while it was running.
    write(
        store, ids["Roof PV"], T0 + timedelta(minutes=15), [4000.0], step_s=900, received_at=T0 + timedelta(minutes=20)
    )
    pv = by_name(live.live_snapshot(store, site, T0 + timedelta(minutes=22)))["Roof PV"]
    assert pv.reading is not None and pv.reading.as_of == T0 + timedelta(minutes=20)
    assert pv.age == timedelta(minutes=2)


@pytest.mark.parametrize(
    ("after_as_of", "status"),
    [
        (timedelta(minutes=29, seconds=59), Status.CURRENT),
        (timedelta(minutes=30), Status.CURRENT),  # exactly twice the 15-minute cadence: still current
        (timedelta(minutes=30, seconds=1), Status.STALE),
    ],
)
def test_stale_after_twice_the_cadence(store: Store, after_as_of: timedelta, status: Status) -> None:
    site, ids = build_site(store, FULL_SITE[:1])
    write(store, ids["Roof PV"], T0, [4000.0], step_s=300)  # as of 10:05
    snapshot = live.live_snapshot(store, site, T0 + timedelta(minutes=5) + after_as_of)
    pv = by_name(snapshot)["Roof PV"]
    assert (pv.age, pv.status) == (after_as_of, status)
    flow = snapshot.flow[Role.PRODUCTION]
    if status is Status.CURRENT:
        assert flow.value == 4000.0
    else:
        assert flow.value is None and flow.note == "Roof PV is stale: last reading 30 min ago"


def test_the_cadence_follows_the_update_frequency(store: Store) -> None:
    site, ids = build_site(store, FULL_SITE[:2], {"Building Load": UpdateFrequency.HOUR1})
    for name in ("Roof PV", "Building Load"):
        write(store, ids[name], T0, [1000.0], step_s=900)  # as of 10:15
    sources = by_name(live.live_snapshot(store, site, T0 + timedelta(minutes=15 + 45)))
    assert sources["Roof PV"].status is Status.STALE  # 45 min > 2 x 15 min
    assert sources["Building Load"].status is Status.CURRENT  # 45 min <= 2 x 60 min


def test_a_source_without_data_and_one_without_api(store: Store) -> None:
    site, ids = build_site(store, FULL_SITE[:3], {"Grid Import": None})
    write(store, ids["Roof PV"], T0, [1000.0])
    write(store, ids["Grid Import"], T0 - timedelta(hours=3), [800.0], step_s=3600)  # imported, as of 08:00
    snapshot = live.live_snapshot(store, site, T0 + timedelta(minutes=10))
    sources = by_name(snapshot)
    load, grid = sources["Building Load"], sources["Grid Import"]
    assert (load.status, load.value, load.age) == (Status.NO_DATA, None, None)
    assert grid.status is Status.NO_API and grid.age == timedelta(hours=2, minutes=10)  # > 2 x the nominal hour
    assert grid.cadence == live.MANUAL_CADENCE
    assert snapshot.flow[Role.GRID_IMPORT].value is None
    assert snapshot.flow[Role.GRID_IMPORT].note == "Grid Import is not polled (no API): last reading 2 h 10 min ago"


def test_missing_battery_is_undefined_not_zero(store: Store) -> None:
    site, ids = build_site(store, [FULL_SITE[0], FULL_SITE[1]])
    write(store, ids["Roof PV"], T0, [1000.0])
    write(store, ids["Building Load"], T0, [1500.0])
    flow = live.live_snapshot(store, site, T0 + timedelta(minutes=10)).flow
    assert flow[Role.BATTERY].value is None and flow[Role.SOC].value is None
    assert flow[Role.BATTERY].note == "no battery source (STOR battery) at this site"
    assert live.format_value(flow[Role.BATTERY].value, "W") == "-"
    assert (flow[Role.PRODUCTION].value, flow[Role.LOAD].value) == (1000.0, 1500.0)


def test_load_is_computed_from_the_balance_without_a_load_source(store: Store) -> None:
    site, ids = build_site(store, [s for s in FULL_SITE if s[0] != "Building Load"])
    write(store, ids["Roof PV"], T0, [5000.0])
    write(store, ids["Grid Import"], T0, [1000.0])
    write(store, ids["Grid Export"], T0, [2000.0])
    write(store, ids["Battery"], T0, [-500.0])  # charging
    write(store, ids["Battery SoC"], T0, [63.5])
    snapshot = live.live_snapshot(store, site, T0 + timedelta(minutes=10))
    load = snapshot.flow[Role.LOAD]
    assert load.computed and load.value == 3500.0  # 5000 + 1000 - 2000 + (-500)
    assert load.note is not None and "computed as production + grid import - grid export + battery" in load.note
    soc = snapshot.flow[Role.SOC]
    assert (soc.value, Role.SOC.unit, live.format_value(soc.value, "%")) == (63.5, "%", "63.5 %")
    assert by_name(snapshot)["Battery SoC"].unit == "%"
    # The chart follows the same balance, bucket by bucket.
    assert snapshot.recent_load_computed
    assert snapshot.recent.filter(pl.col("bucket") == T0)["load_w"].to_list() == [3500.0]


def test_a_stale_load_source_gives_way_to_the_balance_and_a_stale_term_blocks_it(store: Store) -> None:
    site, ids = build_site(store, [*FULL_SITE[:3], FULL_SITE[5]])
    write(store, ids["Roof PV"], T0, [5000.0])
    write(store, ids["Grid Import"], T0, [1000.0])
    write(store, ids["Grid Export"], T0, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    write(store, ids["Building Load"], T0 - timedelta(hours=2), [9999.0])
    load = live.live_snapshot(store, site, T0 + timedelta(minutes=10)).flow[Role.LOAD]
    assert load.computed and load.value == 6000.0
    assert load.note is not None and load.note.startswith("Building Load is stale: last reading 2 h 5 min ago; ")

    write(store, ids["Roof PV"], T0 + timedelta(minutes=5), [5100.0])
    load = live.live_snapshot(store, site, T0 + timedelta(minutes=38)).flow[Role.LOAD]
    assert load.value is None  # PV is current (as of 10:10, 28 min ago), grid import is not (as of 10:05, 33 min ago)
    assert load.note is not None and load.note.endswith("cannot be computed: Grid Import not current")


def test_several_sources_of_one_flow_add_up_unless_one_is_stale(store: Store) -> None:
    site, ids = build_site(store, [*FULL_SITE[:1], ("East PV", Category.PROD, "solar")])
    write(store, ids["Roof PV"], T0, [1000.0])
    write(store, ids["East PV"], T0, [250.0])
    assert live.live_snapshot(store, site, T0 + timedelta(minutes=10)).flow[Role.PRODUCTION].value == 1250.0
    write(store, ids["Roof PV"], T0 + timedelta(minutes=5), [1100.0, 1200.0, 1300.0, 1400.0, 1500.0, 1600.0, 1700.0])
    flow = live.live_snapshot(store, site, T0 + timedelta(minutes=45)).flow[Role.PRODUCTION]
    assert flow.value is None and flow.note == "East PV is stale: last reading 40 min ago"


def test_pv_reporting_null_all_night_stays_current_with_unknown_value(store: Store) -> None:
    # SolarEdge: PV power is `null` from 18:00 to 05:00 (5-minute rows); the load is metered.
    site, ids = build_site(store, FULL_SITE[:2])
    evening = T0.replace(hour=16)  # 18:00 Brussels
    write(store, ids["Roof PV"], evening - timedelta(minutes=10), [800.0, 400.0] + [None] * (11 * 12))
    write(store, ids["Building Load"], evening, [600.0] * (11 * 12))
    now = evening + timedelta(hours=11)  # 05:00: the newest rows, 04:55-05:00, are as of now
    snapshot = live.live_snapshot(store, site, now)
    pv = by_name(snapshot)["Roof PV"]
    assert pv.reading is not None and pv.reading.ts == now - timedelta(minutes=5)
    assert (pv.value, pv.age, pv.status) == (None, timedelta(0), Status.CURRENT)  # not stale: the vendor answered
    flow = snapshot.flow
    assert flow[Role.PRODUCTION].value is None
    assert flow[Role.PRODUCTION].note == "Roof PV: no value reported (last reading 0 s ago)"
    assert flow[Role.LOAD].value == 600.0 and not flow[Role.LOAD].computed  # a metered load is unaffected


def test_a_null_pv_row_makes_the_computed_load_unknown_with_its_reason(store: Store) -> None:
    site, ids = build_site(store, [FULL_SITE[0], FULL_SITE[2], FULL_SITE[5]])  # the grid metered, no load source
    write(store, ids["Roof PV"], T0, [None, None])  # 10:00 and 10:05
    write(store, ids["Grid Import"], T0, [900.0, 950.0])
    write(store, ids["Grid Export"], T0, [0.0, 0.0])
    load = live.live_snapshot(store, site, T0 + timedelta(minutes=10)).flow[Role.LOAD]
    assert load.value is None and not load.computed
    assert load.note == ("no load source (CONS load) at this site; cannot be computed: Roof PV no value reported")


def test_a_source_whose_last_rows_were_null_days_ago_is_stale_not_without_data(store: Store) -> None:
    site, ids = build_site(store, FULL_SITE[:1])
    three_days_ago = T0 - timedelta(days=3)
    write(store, ids["Roof PV"], three_days_ago, [None, None], step_s=900)  # 10:00 and 10:15, three days ago
    pv = by_name(live.live_snapshot(store, site, T0))["Roof PV"]
    assert pv.reading is not None and pv.reading.ts == three_days_ago + timedelta(minutes=15)
    assert (pv.value, pv.status, pv.age) == (None, Status.STALE, timedelta(days=2, hours=23, minutes=30))


def test_a_reading_older_than_the_recent_window_is_still_found(store: Store) -> None:
    site, ids = build_site(store, FULL_SITE[:2])
    three_days_ago = T0 - timedelta(days=3)
    write(store, ids["Building Load"], three_days_ago - timedelta(hours=1), [700.0, 800.0], step_s=1800)
    write(store, ids["Roof PV"], T0, [1000.0])
    snapshot = live.live_snapshot(store, site, T0 + timedelta(minutes=10))
    load = by_name(snapshot)["Building Load"]
    assert load.reading is not None
    assert (load.value, load.reading.ts) == (800.0, three_days_ago - timedelta(minutes=30))
    assert load.age == timedelta(days=3, minutes=10) and load.status is Status.STALE
    assert load.problem() == "Building Load is stale: last reading 3 days ago"
    assert by_name(snapshot)["Roof PV"].status is Status.CURRENT


def test_readings_after_now_do_not_count(store: Store) -> None:
    site, ids = build_site(store, FULL_SITE[:1])
    write(store, ids["Roof PV"], T0, [1000.0, 2000.0])  # 10:00 and 10:05
    pv = by_name(live.live_snapshot(store, site, T0 + timedelta(minutes=3)))["Roof PV"]
    assert pv.value == 1000.0


def test_recent_power_keeps_gaps_and_follows_the_coarsest_interval(store: Store) -> None:
    site, ids = build_site(store, FULL_SITE[:3])
    start = T0 - timedelta(minutes=30)
    write(store, ids["Roof PV"], start, [1000.0, 2000.0, None, 4000.0, 5000.0, 6000.0])  # 09:30-10:00, 5-min
    write(store, ids["Building Load"], start, [3000.0, 3000.0], step_s=900)  # 09:30 and 09:45, 15-min
    write(store, ids["Grid Import"], start, [100.0])  # 09:30 only
    snapshot = live.live_snapshot(store, site, T0)
    recent = snapshot.recent
    assert snapshot.recent_step_s == 900 and not snapshot.recent_load_computed
    assert recent.columns == ["bucket", "production_w", "load_w", "grid_import_w"]
    assert recent["bucket"][0] == T0 - live.RECENT and recent["bucket"][-1] == T0  # every bucket, 6 h back
    assert recent.height == 6 * 4 + 1
    rows = recent.filter(pl.col("bucket") >= start).rows()
    assert rows == [
        (start, 1500.0, 3000.0, 100.0),  # mean of 1000 and 2000 (the NULL is no reading)
        (start + timedelta(minutes=15), 5000.0, 3000.0, None),  # mean of 4000, 5000 and 6000
        (T0, None, None, None),
    ]
    assert recent.filter(pl.col("bucket") < start)["production_w"].null_count() == 6 * 4 - 2


def test_age_and_value_formats() -> None:
    assert [live.format_age(timedelta(seconds=s)) for s in (45, 240, 7500, 7200, 3 * 86400 + 5)] == [
        "45 s ago",
        "4 min ago",
        "2 h 5 min ago",
        "2 h ago",
        "3 days ago",
    ]
    assert [live.format_value(v, "W") for v in (850.4, 12345.0, -2500.0, None)] == [
        "850 W",
        "12.35 kW",
        "-2.50 kW",
        "-",
    ]


def test_a_deleted_site_is_reported(store: Store) -> None:
    from core.catalog.catalog import NotFound

    with pytest.raises(NotFound, match="site 99 no longer exists"):
        live.live_snapshot(store, 99, T0)


# --- the Enphase live stream: stored minutes and the newest frames ------------------------------------------------


def _stream_minute(store: Store, source_id: int, ts: datetime, value: float, coverage: float = 1.0) -> None:
    from core.store.live_readings import store_minutes

    frame = pl.DataFrame(
        {"source_id": [source_id], "ts": [ts], "interval_s": [60], "value": [value], "coverage": [coverage]}
    )
    with store.transaction() as con:
        store_minutes(con, frame, ts + timedelta(seconds=62))


def test_a_stream_minute_newer_than_the_history_is_shown_and_never_reaches_the_chart(store: Store) -> None:
    site, ids = build_site(store, FULL_SITE[:1])
    pv = ids["Roof PV"]
    write(store, pv, T0, [1000.0, 2000.0])  # 10:00 and 10:05: as of 10:10
    _stream_minute(store, pv, T0 + timedelta(minutes=12), 2600.0)  # 10:12-10:13
    now = T0 + timedelta(minutes=13, seconds=30)
    shown = by_name(live.live_snapshot(store, site, now))["Roof PV"]
    assert (shown.value, shown.status_text) == (2600.0, "current, live stream")
    assert shown.reading is not None and shown.reading.interval_s == 60 and shown.age == timedelta(seconds=30)
    snapshot = live.live_snapshot(store, site, now)
    assert snapshot.flow[Role.PRODUCTION].value == 2600.0
    assert 2600.0 not in snapshot.recent["production_w"].to_list()  # the chart is the history's
    # A history row reaching further wins again.
    write(store, pv, T0 + timedelta(minutes=10), [2500.0])  # 10:10-10:15
    later = by_name(live.live_snapshot(store, site, T0 + timedelta(minutes=16)))["Roof PV"]
    assert (later.value, later.status_text) == (2500.0, "current")


def test_fresh_frames_stand_in_for_older_readings_and_stale_ones_do_not(store: Store) -> None:
    site, ids = build_site(store, FULL_SITE[:3])
    pv, load, grid = ids["Roof PV"], ids["Building Load"], ids["Grid Import"]
    write(store, pv, T0, [1000.0])
    write(store, load, T0, [400.0])
    write(store, grid, T0, [0.0])
    now = T0 + timedelta(minutes=10)
    snapshot = live.live_snapshot(store, site, now)
    frames = {
        pv: (now - timedelta(seconds=2), 3100.0),
        load: (now - timedelta(seconds=31), 900.0),  # older than FRAME_FRESH: the stream stopped
        grid: (now - timedelta(seconds=2), 0.0),
    }
    followed = by_name(live.with_stream_frames(snapshot, frames, now))
    assert (followed["Roof PV"].value, followed["Roof PV"].status_text) == (3100.0, "current, live stream")
    assert followed["Roof PV"].age == timedelta(seconds=2)
    assert followed["Building Load"].value == 400.0  # the stale frame is not "now"
    assert live.with_stream_frames(snapshot, frames, now).flow[Role.PRODUCTION].value == 3100.0
    assert live.with_stream_frames(snapshot, {}, now) is snapshot
