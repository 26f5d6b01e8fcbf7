"""How fast the configuration pages get their data, for a fleet of 500 sources.

Every page run reads the whole configuration through the store (lock + connect + queries + close), and Save All
Connections writes one site's sources in one transaction. The baseline is the store's fixed cost: an empty
operation (lock, connect, `SELECT 1`, close), so the ratio says how much the real work adds on top of it.
Targets: configuration read p95 under 100 ms; saving one site's sources p95 under 200 ms.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.timing import measure
from core.catalog import catalog as cat
from core.catalog.connections import draft_from_source, save_connections
from core.models import ApiSettings, Category, MeterIn, Provider, SiteIn, SourceIn
from core.store.crypto import SecretBox, generate_key
from core.store.schema import migrate
from core.store.store import Store

SITES = 100
TYPES = {Category.PROD: "solar", Category.CONS: "load", Category.STOR: "battery", Category.INJ: "grid"}


def populate(store: Store) -> None:
    """100 sites x 4 meters, 500 sources (an extra grid-import source on every CONS meter)."""
    with store.transaction() as con:
        for s in range(SITES):
            site = SiteIn(name=f"Site {s:03d}", latitude=50 + s / 100, longitude=4, timezone="Europe/Brussels")
            site_id = con.execute(
                "INSERT INTO sites (name, latitude, longitude, timezone) VALUES (?, ?, ?, ?) RETURNING id",
                [site.name, site.latitude, site.longitude, site.timezone],
            ).fetchall()[0][0]
            for category in Category:
                meter = MeterIn(name=f"{category.value} meter", category=category)
                meter_id = con.execute(
                    "INSERT INTO meters (site_id, name, category) VALUES (?, ?, ?) RETURNING id",
                    [site_id, meter.name, category.value],
                ).fetchall()[0][0]
                types = [TYPES[category]] + (["grid"] if category is Category.CONS else [])
                for source_type in types:
                    source = SourceIn(
                        name=f"{category.value} {source_type}",
                        source_type=source_type,
                        capacity_kw=100,
                        carbon_intensity_g_per_kwh=0,
                        cost_per_mwh=0,
                        api=ApiSettings(use_api=True, api_provider=Provider.SIMULATOR),
                    )
                    cat.insert_source(con, meter_id, source)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb")
        migrate(store)
        populate(store)
        box = SecretBox([generate_key()])

        def empty_operation() -> None:
            with store.connect(read_only=True) as con:
                con.sql("SELECT 1").fetchall()

        catalog = cat.load_catalog(store)
        site = catalog.sites[0]
        drafts = [draft_from_source(s) for s in catalog.sources_of_site(site.id)]
        calls = [0]

        def save_site() -> None:
            # A different capacity each call, so every save really updates all five rows.
            calls[0] += 1
            for draft in drafts:
                draft.values["capacity_kw"] = str(100 + calls[0])
            report = save_connections(store, box, site.id, drafts, set())
            assert report.updated == len(drafts)

        base_p50, base_p95 = measure(empty_operation, 50)
        read_p50, read_p95 = measure(lambda: cat.load_catalog(store), 50)
        save_p50, save_p95 = measure(save_site, 30)
        print(
            f"configuration: {len(catalog.sites)} sites, {len(catalog.meters)} meters, {len(catalog.sources)} sources"
        )
        print(f"baseline (lock + connect + SELECT 1 + close): p50 {base_p50:.1f} ms, p95 {base_p95:.1f} ms")
        for label, p50, p95, target in (
            ("read the whole configuration", read_p50, read_p95, 100),
            ("save one site's 5 sources", save_p50, save_p95, 200),
        ):
            verdict = "meets" if p95 < target else "MISSES"
            print(
                f"{label}: p50 {p50:.1f} ms, p95 {p95:.1f} ms ({p95 / base_p95:.1f}x baseline); "
                f"target p95 < {target} ms: {verdict}"
            )
