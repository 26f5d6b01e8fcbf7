"""Rollups against a real DuckDB file: energy, coverage of gaps, site-local days across DST, and refreshes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.catalog import catalog as cat
from core.catalog.connections import new_draft, save_connections
from core.models import Category, MeterIn, SiteIn
from core.store.crypto import SecretBox
from core.store.store import Store
from tests.crafting import write_readings


def a_source(store: Store, box: SecretBox) -> int:
    site = cat.create_site(store, SiteIn(name="Plant", latitude=50.85, longitude=4.35, timezone="Europe/Brussels"))
    meter = cat.create_meter(store, site.id, MeterIn(name="PV", category=Category.PROD))
    draft = new_draft("new-pv", meter.id, Category.PROD)
    draft.values |= {"name": "Roof", "capacity_kw": "10"}
    save_connections(store, box, site.id, [draft], set())
    return cat.load_catalog(store).sources[0].id


def rows(store: Store, table: str) -> list[tuple]:
    with store.connect(read_only=True) as con:
        return con.sql(
            f"SELECT bucket, avg_value, energy_wh, covered_s, readings FROM {table} ORDER BY bucket"
        ).fetchall()


def test_hourly_energy_and_a_gap_shown_as_missing_coverage(store: Store, box: SecretBox) -> None:
    source = a_source(store, box)
    start = datetime(2026, 6, 1, 10, tzinfo=UTC)
    write_readings(store, source, start, [4000.0, 4000.0, None, 2000.0, 1000.0])  # 10:00-11:15, one null quarter
    (ten, eleven) = rows(store, "readings_hourly")
    assert ten[0] == start and ten[2] == 2500.0  # (4000 + 4000 + 2000) W x 0.25 h
    assert ten[3] == 2700 and ten[4] == 4  # 45 of 60 minutes covered: the gap is visible, not zero energy
    assert eleven[2] == 250.0 and eleven[3] == 900
    assert [r[2] for r in rows(store, "readings_15min")] == [1000.0, 1000.0, None, 500.0, 250.0]


def test_daily_buckets_follow_the_site_day_across_dst(store: Store, box: SecretBox) -> None:
    source = a_source(store, box)
    local_midnight = datetime(2026, 10, 24, 22, tzinfo=UTC)  # 2026-10-25 00:00 in Brussels, a 25-hour day
    write_readings(store, source, local_midnight, [1000.0] * (25 * 4 + 4), step_s=900)  # the day and the next hour
    days = rows(store, "readings_daily")
    assert [d[0] for d in days] == [local_midnight, local_midnight + timedelta(hours=25)]
    assert days[0][2] == 25_000.0 and days[0][3] == 25 * 3600  # 1 kW for 25 hours
    assert days[1][2] == 1000.0


def test_a_refresh_replaces_buckets_instead_of_adding_to_them(store: Store, box: SecretBox) -> None:
    source = a_source(store, box)
    start = datetime(2026, 6, 1, 10, tzinfo=UTC)
    write_readings(store, source, start, [4000.0] * 4)
    write_readings(store, source, start, [4000.0] * 4)  # the same data written again (a re-poll)
    write_readings(store, source, start + timedelta(hours=1), [2000.0] * 4)
    assert [(r[0], r[2]) for r in rows(store, "readings_hourly")] == [
        (start, 4000.0),
        (start + timedelta(hours=1), 2000.0),
    ]
