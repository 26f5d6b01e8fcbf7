"""Coverage is judged against what could have arrived (`core.analytics.availability`): a source polled every 15 minutes
is not short of the quarter hour its next poll will bring, and a vendor's delay is allowed for; a late source is still
short, and the KPIs page says up to when the data was judged.

Real DuckDB files with crafted readings; the KPIs page through AppTest.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from core import localtime
from core.analytics import kpis
from core.analytics.availability import available_until
from core.models import ApiSettings, Category, Provider, UpdateFrequency
from core.store.store import Store
from tests.crafting import SourceSpec, craft_site, write_readings

TZ = "Europe/Brussels"
DAY = date(2026, 11, 20)
MIDNIGHT = datetime.combine(DAY, time(), tzinfo=ZoneInfo(TZ)).astimezone(UTC)


def _at(hour: int, minute: int) -> datetime:
    return MIDNIGHT + timedelta(hours=hour, minutes=minute)


def _source(store: Store, provider: Provider, every: UpdateFrequency, data_until: datetime) -> int:
    api = ApiSettings(use_api=True, api_provider=provider, update_frequency=every, system_id="1")
    site_id, ids = craft_site(store, [SourceSpec(Category.PROD, "solar", "PV", api=api)], timezone=TZ)
    quarters = int((data_until - MIDNIGHT) / timedelta(minutes=15))
    write_readings(store, ids["PV"], MIDNIGHT, [1000.0] * quarters)
    return site_id


def _today(store: Store, site_id: int, now: datetime) -> kpis.KpiReport:
    return kpis.site_kpis(store, site_id, kpis.Period(DAY, DAY), now)


def test_a_source_polled_every_15_minutes_is_complete_between_its_polls(store: Store) -> None:
    # Polled at 07:32, it stored up to 07:30; at 07:45 the 07:30-07:45 quarter is its next poll's to bring.
    site_id = _source(store, Provider.SIMULATOR, UpdateFrequency.MIN15, _at(7, 30))
    for now in (_at(7, 33), _at(7, 45), _at(7, 47)):
        report = _today(store, site_id, now)
        assert report.coverage == 1.0, now


def test_a_vendors_delay_is_allowed_for_and_a_late_source_is_still_short(store: Store) -> None:
    site_id = _source(store, Provider.SOLAREDGE, UpdateFrequency.MIN15, _at(7, 0))
    report = _today(store, site_id, _at(7, 46))  # 07:45 - 15 min poll - 20 min delay = 07:10: floored to 07:00
    assert report.coverage == 1.0 and report.judged_until == _at(7, 0)

    report = _today(store, site_id, _at(9, 0))  # up to 08:15 could be here by now: 07:00-08:15 is missing
    assert report.judged_until == _at(8, 15)
    assert report.coverage == pytest.approx(7 / 8.25)


def test_a_source_without_api_is_judged_up_to_the_clock(store: Store) -> None:
    site_id, ids = craft_site(store, [SourceSpec(Category.PROD, "solar", "PV")], timezone=TZ)
    write_readings(store, ids["PV"], MIDNIGHT, [1000.0] * 28)  # imported up to 07:00
    report = _today(store, site_id, _at(8, 0))
    assert report.judged_until is None and report.coverage == pytest.approx(7 / 8)


def test_newer_data_than_the_schedule_promises_counts_in_full() -> None:
    cut = _at(8, 0)
    newest = _at(7, 55)
    assert available_until(True, Provider.ENPHASE, UpdateFrequency.HOUR1, newest, cut) == newest
    assert available_until(True, Provider.ENPHASE, UpdateFrequency.HOUR1, None, cut) == _at(6, 30)  # 8:00-1h-20m
    assert available_until(False, Provider.SIMULATOR, UpdateFrequency.MIN15, None, cut) == cut


def test_the_kpis_page_says_up_to_when_a_late_source_is_judged(app_env: Path) -> None:
    from core.catalog import catalog as cat
    from tests.crafting import app_store, open_page

    at = open_page("pages/kpis.py")  # the first run prepares the database
    store = app_store()
    now = datetime.now(UTC)
    quarter = now - timedelta(minutes=now.minute % 15, seconds=now.second, microseconds=now.microsecond)
    late = quarter - timedelta(hours=3)  # the site's PV stopped delivering three hours ago
    api = ApiSettings(use_api=True, api_provider=Provider.SIMULATOR, update_frequency=UpdateFrequency.MIN15)
    site_id, ids = craft_site(store, [SourceSpec(Category.PROD, "solar", "PV", api=api)], name="Late", timezone="UTC")
    start = datetime.combine(now.date(), time(), tzinfo=UTC)
    write_readings(store, ids["PV"], start, [500.0] * max(1, int((late - start) / timedelta(minutes=15))))
    at.run()
    at.selectbox(key="kpi_site").set_value(site_id).run()
    at.radio(key="kpi_period").set_value("Today").run()
    assert cat.load_catalog(store).site(site_id).name == "Late"
    warnings = [w.value for w in at.warning if "Data incomplete" in w.value]
    judged = f"up to {quarter - timedelta(minutes=15):%H:%M}"
    assert warnings and judged in warnings[0], warnings


def test_a_healthy_demo_is_complete_today_whenever_it_is_looked_at(seeded_env: Path) -> None:
    from core.catalog import catalog as cat
    from tests.crafting import app_store

    store = app_store()
    site = cat.load_catalog(store).sites[0]
    now = datetime.now(UTC)
    today = localtime.site_today(now, site.timezone)
    for minutes in (0, 4, 9, 14):  # until the next poll, 15 minutes later
        looked_at = now + timedelta(minutes=minutes)
        report = kpis.site_kpis(store, site.id, kpis.Period(today, today), looked_at)
        since_midnight = looked_at.astimezone(ZoneInfo(site.timezone)) - datetime.combine(
            today, time(), ZoneInfo(site.timezone)
        )
        if since_midnight < timedelta(minutes=15):  # the day's first interval is not over: nothing to judge yet
            assert report.coverage is None and not report.incomplete_sources, (minutes, report.incomplete_sources)
        else:
            assert report.coverage == 1.0, (minutes, report.incomplete_sources)
