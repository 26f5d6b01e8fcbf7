"""The embedded demo: a "Demo Rooftop" site whose sources run on the built-in simulator.

Seeded once, on the first start of an empty database; a marker in `app_state` remembers it, so an analyst who
deletes the demo does not see it come back.
"""

from __future__ import annotations

from core.catalog import insert_meter, insert_site, insert_source
from core.models import ApiSettings, Category, MeterIn, Provider, SiteIn, SourceIn, UpdateFrequency
from core.store import Store

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


def seed_demo(store: Store) -> bool:
    """Create the demo site unless it was seeded before or the database already has sites. True if seeded.

    Looked up with a reader first: every start asks, and a database on a read-only location must still start."""
    with store.connect(read_only=True) as con:
        if con.execute("SELECT 1 FROM app_state WHERE key = ?", [_MARKER]).fetchall():
            return False
    with store.transaction() as con:
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
        con.execute("INSERT INTO app_state (key, value) VALUES (?, 'seeded')", [_MARKER])
    return True
