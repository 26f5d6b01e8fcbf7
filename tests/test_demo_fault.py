"""The demo's recorded fault: a fresh install's Alerts page shows one real alert, for the day the demo's inverter
tripped, which resolves the next day and stays in the history (core/catalog/demo.py)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from core.analytics.alert_rules import Thresholds, yesterday_bounds
from core.analytics.alerts import evaluate
from core.catalog import catalog as cat
from core.catalog.demo import DEMO_SITE, FAULT_KEY, FAULT_KIND, outage_days_by_site, seed_demo
from core.collect.collection import collect_once
from core.config import Settings
from core.models import Category, SiteIn
from core.providers.context import ProviderContext
from core.providers.quota import QuotaLedger
from core.store.crypto import SecretBox
from core.store.store import Store

# pvlib 0.16 still calls a pandas accessor that pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:DatetimeIndex.dayofyear is deprecated")

SEEDED_AT = datetime(2026, 3, 18, 8, 2, tzinfo=UTC)  # a Wednesday morning in Brussels: the fault was on Tuesday
FAULT_DAY = date(2026, 3, 17)
TH = Thresholds.from_settings(Settings())


def collect(store: Store, box: SecretBox, now: datetime) -> None:
    report = collect_once(store, box, ProviderContext(Settings(), QuotaLedger()), now)
    assert not report.deferred


def alerts(store: Store) -> list[tuple[str, int, str, str]]:
    with store.connect(read_only=True) as con:
        return con.sql("SELECT rule, source_id, status, message FROM alerts ORDER BY id").fetchall()


def pv_source_id(store: Store) -> int:
    catalog = cat.load_catalog(store)
    [site] = catalog.sites
    [meter] = catalog.meters_of(site.id, Category.PROD)
    [source] = catalog.sources_of(meter.id)
    return source.id


def test_a_fresh_demo_shows_one_alert_for_its_fault_day_which_resolves_the_next_day(
    store: Store, box: SecretBox
) -> None:
    assert seed_demo(store, SEEDED_AT)
    collect(store, box, SEEDED_AT)  # the first pass reads the demo's month
    pv = pv_source_id(store)
    with store.connect(read_only=True) as con:
        _, start, end = yesterday_bounds(SEEDED_AT, str(DEMO_SITE["timezone"]))
        count, most = con.execute(
            "SELECT count(*), max(value) FROM readings WHERE source_id = ? AND ts >= ? AND ts < ?", [pv, start, end]
        ).fetchone() or (0, None)
        day_before = con.execute(
            "SELECT sum(value) FROM readings WHERE source_id = ? AND ts >= ? AND ts < ?",
            [pv, start - timedelta(days=1), start],
        ).fetchone()
    assert (count, most) == (288, 0.0)  # a whole day of 5-minute readings, all at 0 W
    assert day_before is not None and day_before[0] > 0  # the sun shone the day before: the day is the fault

    first = evaluate(store, TH, SEEDED_AT)
    assert (first.opened, first.resolved) == (1, 0)
    [(rule, source_id, status, message)] = alerts(store)
    assert (rule, source_id, status) == ("low_daily_yield", pv, "open")
    assert message.startswith(f"Yesterday ({FAULT_DAY.isoformat()}) produced 0.0 kWh: 0% of the clear-sky expectation")

    next_day = SEEDED_AT + timedelta(days=1)
    collect(store, box, next_day)
    second = evaluate(store, TH, next_day)
    assert (second.opened, second.resolved) == (0, 1)
    [(rule, source_id, status, _)] = alerts(store)
    assert (rule, source_id, status) == ("low_daily_yield", pv, "resolved")  # kept in the history


def test_the_fault_is_recorded_with_the_demo_and_read_by_each_pass(store: Store) -> None:
    assert seed_demo(store, SEEDED_AT)
    assert not seed_demo(store, SEEDED_AT + timedelta(days=3))  # seeded once: the fault does not move
    [site] = cat.load_catalog(store).sites
    with store.connect(read_only=True) as con:
        [(value,)] = con.execute("SELECT value FROM app_state WHERE key = ?", [FAULT_KEY]).fetchall()
        assert json.loads(value) == {"day": "2026-03-17", "kind": FAULT_KIND, "site_id": site.id}
        assert outage_days_by_site(con) == {site.id: frozenset({FAULT_DAY})}


def test_a_database_that_already_had_sites_gets_no_fault(store: Store) -> None:
    with store.transaction() as con:
        cat.insert_site(con, SiteIn(name="Plant", latitude=50.0, longitude=4.0, timezone="Europe/Brussels"))
    assert not seed_demo(store, SEEDED_AT)
    with store.connect(read_only=True) as con:
        assert outage_days_by_site(con) == {}


def test_a_fault_edited_into_nonsense_is_ignored_with_a_warning(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    assert seed_demo(store, SEEDED_AT)
    with store.transaction() as con:
        con.execute('UPDATE app_state SET value = \'{"day": "yesterday"}\' WHERE key = ?', [FAULT_KEY])
    with store.connect(read_only=True) as con:
        assert outage_days_by_site(con) == {}
    assert "ignoring the demo fault" in caplog.text
