"""Sites and meters in a real DuckDB file: uniqueness, renames, deletes without orphans, the demo seed."""

from __future__ import annotations

import pytest

from core.catalog import catalog as cat
from core.catalog.connections import new_draft, save_connections
from core.catalog.demo import seed_demo
from core.models import Category, MeterIn, SiteIn
from core.store.crypto import SecretBox
from core.store.store import Store

SITE = SiteIn(name="Plant A", latitude=50.85, longitude=4.35, timezone="Europe/Brussels")


def orphans(store: Store) -> dict[str, int]:
    with store.connect(read_only=True) as con:
        return {
            "meters": con.sql("SELECT count(*) FROM meters WHERE site_id NOT IN (SELECT id FROM sites)").fetchall()[0][
                0
            ],
            "sources": con.sql(
                "SELECT count(*) FROM energy_sources WHERE meter_id NOT IN (SELECT id FROM meters)"
            ).fetchall()[0][0],
            "secrets": con.sql(
                "SELECT count(*) FROM source_secrets WHERE source_id NOT IN (SELECT id FROM energy_sources)"
            ).fetchall()[0][0],
        }


def add_source(store: Store, box: SecretBox, site_id: int, meter: cat.Meter, name: str, secret: str = "") -> None:
    draft = new_draft(f"new-{name}", meter.id, meter.category)
    draft.values |= {"name": name, "capacity_kw": "5"}
    if secret:
        draft.values |= {"use_api": True, "api_provider": "solaredge", "system_id": "1"}
        draft.values["update_frequency"] = "1hour"  # within the V2 monthly credits
        draft.secrets = {"api_key": secret}
    save_connections(store, box, site_id, [draft], set())


def test_create_rename_and_update_a_site(store: Store) -> None:
    site = cat.create_site(store, SITE)
    cat.update_site(store, site.id, SITE.model_copy(update={"name": "Plant B", "timezone": "UTC"}))
    stored = cat.load_catalog(store).site(site.id)
    assert (stored.name, stored.timezone, stored.latitude) == ("Plant B", "UTC", 50.85)


def test_site_names_are_unique_ignoring_case(store: Store) -> None:
    cat.create_site(store, SITE)
    other = cat.create_site(store, SITE.model_copy(update={"name": "Other"}))
    with pytest.raises(cat.InvalidInput) as info:
        cat.create_site(store, SITE.model_copy(update={"name": "plant a"}))
    assert info.value.errors == {"name": "a site named 'plant a' already exists"}
    with pytest.raises(cat.InvalidInput):
        cat.update_site(store, other.id, SITE.model_copy(update={"name": "PLANT A"}))
    assert sorted(s.name for s in cat.load_catalog(store).sites) == ["Other", "Plant A"]


def test_meter_names_are_unique_per_site(store: Store) -> None:
    first = cat.create_site(store, SITE)
    second = cat.create_site(store, SITE.model_copy(update={"name": "Plant B"}))
    cat.create_meter(store, first.id, MeterIn(name="PV", category=Category.PROD))
    cat.create_meter(store, second.id, MeterIn(name="PV", category=Category.PROD))
    with pytest.raises(cat.InvalidInput) as info:
        cat.create_meter(store, first.id, MeterIn(name="pv", category=Category.CONS))
    assert info.value.errors == {"name": "this site already has a meter named 'pv'"}


def test_meter_category_cannot_change_under_its_sources(store: Store, box: SecretBox) -> None:
    site = cat.create_site(store, SITE)
    meter = cat.create_meter(store, site.id, MeterIn(name="PV", category=Category.PROD))
    add_source(store, box, site.id, meter, "Roof")
    with pytest.raises(cat.InvalidInput) as info:
        cat.update_meter(store, meter.id, MeterIn(name="PV", category=Category.CONS))
    assert info.value.errors == {"category": "remove this meter's 1 data source(s) before changing its category"}
    cat.update_meter(store, meter.id, MeterIn(name="Solar", category=Category.PROD))
    assert cat.load_catalog(store).meter(meter.id).name == "Solar"


def test_deleting_a_site_removes_its_meters_sources_and_secrets(store: Store, box: SecretBox) -> None:
    keep = cat.create_site(store, SITE.model_copy(update={"name": "Keep"}))
    doomed = cat.create_site(store, SITE)
    for site in (keep, doomed):
        meter = cat.create_meter(store, site.id, MeterIn(name="PV", category=Category.PROD))
        add_source(store, box, site.id, meter, "Roof", secret="sk-123")
    catalog = cat.load_catalog(store)
    assert cat.dependents(catalog, site_id=doomed.id) == (1, 1)
    cat.delete_site(store, doomed.id)
    catalog = cat.load_catalog(store)
    assert [s.name for s in catalog.sites] == ["Keep"]
    assert len(catalog.meters) == 1 and len(catalog.sources) == 1
    assert catalog.sources[0].secret_names == frozenset({"api_key"})
    assert orphans(store) == {"meters": 0, "sources": 0, "secrets": 0}


def test_deleting_a_meter_removes_its_sources(store: Store, box: SecretBox) -> None:
    site = cat.create_site(store, SITE)
    meter = cat.create_meter(store, site.id, MeterIn(name="PV", category=Category.PROD))
    add_source(store, box, site.id, meter, "Roof", secret="sk-1")
    cat.delete_meter(store, meter.id)
    assert cat.load_catalog(store).meters == []
    assert orphans(store) == {"meters": 0, "sources": 0, "secrets": 0}
    with pytest.raises(cat.NotFound):
        cat.delete_meter(store, meter.id)


def test_demo_is_seeded_once_and_not_recreated_after_deletion(store: Store) -> None:
    assert seed_demo(store) is True
    catalog = cat.load_catalog(store)
    (demo,) = catalog.sites
    assert demo.name == "Demo Rooftop"
    assert {m.category for m in catalog.meters} == set(Category)
    assert all(s.api.use_api and s.api.api_provider.value == "simulator" for s in catalog.sources)
    cat.delete_site(store, demo.id)
    assert seed_demo(store) is False
    assert cat.load_catalog(store).sites == []


def test_demo_is_not_seeded_into_a_database_with_sites(store: Store) -> None:
    cat.create_site(store, SITE)
    assert seed_demo(store) is False
    assert [s.name for s in cat.load_catalog(store).sites] == ["Plant A"]
