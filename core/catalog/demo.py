"""The embedded demo: a "Demo Rooftop" site whose sources run on the built-in simulator.

Seeded once, on the first start of an empty database; a marker in `app_state` remembers it, so an analyst who
deletes the demo does not see it come back.

The demo also has a fault in its recent past, so the Alerts page shows on a fresh install what an alert looks like:
the inverter tripped (an isolation fault, as damp wiring causes) for the whole local day before the demo was seeded
and was reset the next morning. Its PV source reads 0 that day, so the collector's first evaluation opens a "Low
daily yield" alert for it, which resolves the day after and stays in the history. The fault is a fact of this
database, not of the simulator: `app_state` holds it (key `FAULT_KEY`, JSON `{"day", "kind", "site_id"}`), written
with the demo; each collection pass reads it (`outage_days_by_site`) and asks the simulator for that site with the
day as an outage (`core.providers.registry.ConnectionRequest.outage_days`).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import duckdb

from core.actors import OPERATOR, acting_as
from core.catalog.audited import audited_change
from core.catalog.catalog import insert_meter, insert_site, insert_source
from core.models import ApiSettings, Category, MeterIn, Provider, SiteIn, SourceIn, UpdateFrequency
from core.store.store import Store

DEMO_SITE: dict[str, object] = {
    "name": "Demo Rooftop",
    "latitude": 50.8503,
    "longitude": 4.3517,
    "timezone": "Europe/Brussels",
}

# (meter name, category, [(source name, type, capacity kW, carbon g/kWh, cost per MWh)])
DEMO_METERS: list[tuple[str, Category, list[tuple[str, str, float, float, float]]]] = [
    ("Rooftop PV", Category.PROD, [("Rooftop PV Array", "solar", 120.0, 0.0, 0.0)]),
    (
        "Building Consumption",
        Category.CONS,
        [("Building Load", "load", 80.0, 0.0, 0.0), ("Grid Import", "grid", 150.0, 167.0, 180.0)],
    ),
    (
        "Battery Storage",
        Category.STOR,
        [("Battery", "battery", 50.0, 0.0, 0.0), ("Battery State of Charge", "soc", 50.0, 0.0, 0.0)],
    ),
    ("Grid Injection", Category.INJ, [("Grid Export", "grid", 150.0, 0.0, 60.0)]),
]

_MARKER = "demo_seeded"
FAULT_KEY = "demo_fault"
FAULT_KIND = "inverter trip (isolation fault)"

log = logging.getLogger(__name__)


def fault_day(now: datetime) -> date:
    """The demo's faulty day when seeded at `now`: the whole local day before, in the demo site's zone."""
    return now.astimezone(ZoneInfo(str(DEMO_SITE["timezone"]))).date() - timedelta(days=1)


def outage_days_by_site(con: duckdb.DuckDBPyConnection) -> dict[int, frozenset[date]]:
    """Site id -> the local days its simulated inverter is tripped (the demo's recorded fault; empty without one).

    A value that does not parse (edited by hand) is ignored and logged: the demo then simply has no fault."""
    rows = con.execute("SELECT value FROM app_state WHERE key = ?", [FAULT_KEY]).fetchall()
    if not rows:
        return {}
    try:
        fault = json.loads(rows[0][0])
        return {int(fault["site_id"]): frozenset({date.fromisoformat(fault["day"])})}
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("ignoring the demo fault in app_state (%s): %r", FAULT_KEY, exc)
        return {}


def seed_demo(store: Store, now: datetime | None = None) -> bool:
    """Create the demo site, and its fault on the local day before `now` (the clock when None), unless it was seeded
    before or the database already has sites. True if seeded.

    Looked up with a reader first: every start asks, and a database on a read-only location must still start."""
    with store.connect(read_only=True) as con:
        if con.execute("SELECT 1 FROM app_state WHERE key = ?", [_MARKER]).fetchall():
            return False
    # The seed is the installation's, whoever's page run happens to open the file first.
    with acting_as(OPERATOR), audited_change(store, origin="demo seed") as con:
        if con.execute("SELECT 1 FROM app_state WHERE key = ?", [_MARKER]).fetchall():
            return False
        if con.sql("SELECT count(*) FROM sites").fetchall()[0][0]:
            con.execute("INSERT INTO app_state (key, value) VALUES (?, 'skipped: database had sites')", [_MARKER])
            return False
        site_id = insert_site(con, SiteIn(**DEMO_SITE))
        api = ApiSettings(use_api=True, api_provider=Provider.SIMULATOR, update_frequency=UpdateFrequency.MIN15)
        for meter_name, category, sources in DEMO_METERS:
            meter_id = insert_meter(con, site_id, MeterIn(name=meter_name, category=category))
            for name, source_type, capacity, carbon, cost in sources:
                source = SourceIn(
                    name=name,
                    source_type=source_type,
                    capacity_kw=capacity,
                    carbon_intensity_g_per_kwh=carbon,
                    cost_per_mwh=cost,
                    api=api,
                )
                insert_source(con, meter_id, source)
        fault = {"day": fault_day(now or datetime.now(UTC)).isoformat(), "kind": FAULT_KIND, "site_id": site_id}
        con.execute("INSERT INTO app_state (key, value) VALUES (?, ?)", [FAULT_KEY, json.dumps(fault)])
        con.execute("INSERT INTO app_state (key, value) VALUES (?, 'seeded')", [_MARKER])
    return True
