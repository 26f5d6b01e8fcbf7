"""One provider site feeds several meters: sources grouped by the vendor site they read (core.catalog.vendor_sites)."""

from __future__ import annotations

from core.catalog import catalog as cat
from core.catalog.connections import new_draft, save_connections
from core.catalog.vendor_sites import group_by_provider_site
from core.models import Category, MeterIn, SiteIn
from core.store.crypto import SecretBox
from core.store.store import Store


def add(store: Store, box: SecretBox, site: cat.Site, meter: cat.Meter, name: str, kind: str, **api: str) -> None:
    draft = new_draft(f"new-{name}", meter.id, meter.category)
    draft.values |= {"name": name, "source_type": kind, "capacity_kw": "10", "use_api": True} | api
    if api.get("api_provider", "").startswith("solaredge"):
        # One key per vendor site, polled hourly: two sites on one key would not fit its 2,000 monthly credits.
        draft.values["update_frequency"] = "1hour"
        draft.secrets = {"api_key": f"sk-{api['system_id']}"}
    save_connections(store, box, site.id, [draft], set())


def test_sources_of_one_vendor_site_share_one_group(store: Store, box: SecretBox) -> None:
    site = cat.create_site(store, SiteIn(name="Plant", latitude=50, longitude=4, timezone="Europe/Brussels"))
    prod = cat.create_meter(store, site.id, MeterIn(name="PV", category=Category.PROD))
    inj = cat.create_meter(store, site.id, MeterIn(name="Export", category=Category.INJ))
    cons = cat.create_meter(store, site.id, MeterIn(name="Load", category=Category.CONS))
    solaredge = {"api_provider": "solaredge", "system_id": "3066774"}
    add(store, box, site, prod, "Roof", "solar", **solaredge)
    add(store, box, site, inj, "Feed-in", "grid", **solaredge)
    add(store, box, site, cons, "Other site load", "load", api_provider="solaredge", system_id="999")
    add(store, box, site, cons, "Simulated load", "load")

    groups = group_by_provider_site(cat.load_catalog(store))
    names = {key: sorted(s.name for s in sources) for key, sources in groups.items()}
    assert names == {
        ("solaredge", "3066774"): ["Feed-in", "Roof"],
        ("solaredge", "999"): ["Other site load"],
        ("simulator", f"site:{site.id}"): ["Simulated load"],
    }
