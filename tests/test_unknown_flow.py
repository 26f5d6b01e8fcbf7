"""One rule for a flow the site has no meter for (`core.roles.ABSENT_FLOW`): Live, History, KPIs, `v_kpi_daily` and
Alerts agree, site by site, on whether the load is known and on its value.

Each crafted site misses some meters; every source reads a constant power for a whole local day, so Live's power
at the end of the day times 24 h is the day's energy. Real DuckDB files, the real rollups and the real view.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.analytics import kpis, live
from core.analytics.alert_rules import Thresholds
from core.analytics.alerts import evaluate
from core.analytics.history import Level, Resolution, load_history
from core.config import Settings
from core.models import Category
from core.roles import Role
from core.store.store import Store
from tests.crafting import SourceSpec, craft_site, write_readings

TZ = "Europe/Brussels"
DAY = date(2026, 6, 10)
START = datetime.combine(DAY, time(), tzinfo=ZoneInfo(TZ)).astimezone(UTC)
WATTS = {"PV": 3000.0, "Load": 2500.0, "Import": 1000.0, "Export": 1500.0, "Battery": 0.0}
SPECS = {
    "PV": (Category.PROD, "solar"),
    "Load": (Category.CONS, "load"),
    "Import": (Category.CONS, "grid"),
    "Export": (Category.INJ, "grid"),
    "Battery": (Category.STOR, "battery"),
}
# The site's meters, and the load every tool must report (kWh over the day; None: unknown).
SITES = {
    "PV only": (("PV",), None),  # the grid is unmetered: load unknown, never "= PV"
    "PV and import": (("PV", "Import"), None),  # export unmetered
    "PV and grid": (("PV", "Import", "Export"), 60.0),  # 3 + 1 - 1.5 = 2.5 kW
    "Grid only": (("Import", "Export"), -12.0),  # no PV counts as 0: 1 - 1.5 = -0.5 kW (as measured)
    "Metered load": (("PV", "Load"), 60.0),  # the load meter is the load, whatever the grid
    "Everything": (("PV", "Import", "Export", "Battery"), 60.0),
}


def _site(store: Store, name: str, meters: tuple[str, ...]) -> int:
    specs = [SourceSpec(SPECS[m][0], SPECS[m][1], m) for m in meters]
    site_id, ids = craft_site(store, specs, name=name, timezone=TZ)
    for meter, source_id in ids.items():
        write_readings(store, source_id, START, [WATTS[meter]] * 96)
    return site_id


@pytest.mark.parametrize("name", list(SITES))
def test_live_history_kpis_the_view_and_alerts_agree_on_the_load(store: Store, name: str) -> None:
    meters, expected = SITES[name]
    site_id = _site(store, name, meters)
    end = START + timedelta(days=1)

    flow = live.live_snapshot(store, site_id, end).flow[Role.LOAD]
    live_kwh = None if flow.value is None else flow.value * 24 / 1000
    history = load_history(store, site_id, Level.SITE, None, Resolution.DAY, DAY, DAY, end + timedelta(days=1))
    history_kwh = history.balance["load_kwh"].to_list()[0]
    report = kpis.site_kpis(store, site_id, kpis.Period(DAY, DAY), end + timedelta(days=1))
    kpi_kwh = report.kpis["e_load_kwh"].value
    with store.connect(read_only=True) as con:
        view = con.execute("SELECT e_load_kwh FROM v_kpi_daily WHERE site_id = ?", [site_id]).fetchall()

    assert live_kwh == pytest.approx(expected) if expected is not None else live_kwh is None
    assert history_kwh == pytest.approx(expected) if expected is not None else history_kwh is None
    assert kpi_kwh == pytest.approx(expected) if expected is not None else kpi_kwh is None
    assert view == [(pytest.approx(expected),)] if expected is not None else view == [(None,)]
    if expected is None:  # each says why
        assert flow.note is not None and "no grid" in flow.note
        assert history.unmetered


def test_alerts_raise_nothing_for_a_meter_the_site_does_not_have(store: Store) -> None:
    for name, (meters, _) in SITES.items():
        _site(store, name, meters)
    opened = evaluate(store, Thresholds.from_settings(Settings()), START + timedelta(days=1, minutes=5))
    with store.connect(read_only=True) as con:
        alerts = con.sql("SELECT rule, message FROM alerts").fetchall()
    # The crafted PV reads 3 kW all night, which the bounds rule rightly reports; nothing reports a meter a site
    # does not have (no "no data" for an unmetered grid) or a flow computed from one.
    assert opened.opened == len(alerts) and {rule for rule, _ in alerts} <= {"out_of_bounds"}
    assert all(message.startswith("3,000 W") for _, message in alerts)
