"""Save All Connections refuses a schedule the vendors' budgets cannot carry, on the drafts' Update Frequency,
counting the saved sources of other sites that share a key; nothing is written then."""

from __future__ import annotations

import pytest

from core.catalog import catalog as cat
from core.catalog.connections import (
    SaveRejected,
    SourceDraft,
    draft_from_source,
    new_draft,
    quota_checks,
    save_connections,
)
from core.models import Category, MeterIn, SiteIn, SourceIn, UpdateFrequency
from core.store.crypto import SecretBox
from core.store.secret_store import load_secrets
from core.store.store import Store

V2_15_MIN = (
    "SolarEdge (V2) allows 2,000 calls a month for this API key; every 15 min needs 2,976; "
    "every 30 min fits: 1,488 calls/month of 2,000."
)


def make_site(store: Store, name: str) -> tuple[cat.Site, cat.Meter, cat.Meter]:
    site = cat.create_site(store, SiteIn(name=name, latitude=50.85, longitude=4.35, timezone="Europe/Brussels"))
    pv = cat.create_meter(store, site.id, MeterIn(name="PV", category=Category.PROD))
    load = cat.create_meter(store, site.id, MeterIn(name="Building", category=Category.CONS))
    return site, pv, load


def vendor_draft(meter: cat.Meter, key: str, frequency: str, system_id: str = "100", **values: object) -> SourceDraft:
    draft = new_draft(key, meter.id, meter.category)
    draft.values |= {"name": f"Source {key}", "capacity_kw": "5", "use_api": True, "api_provider": "solaredge"}
    draft.values |= {"system_id": system_id, "update_frequency": frequency} | values
    draft.secrets = {"api_key": "sk-shared-key"}
    return draft


def test_v2_every_15_minutes_is_refused_and_nothing_is_written(store: Store, box: SecretBox) -> None:
    site, pv, _ = make_site(store, "Plant")
    with pytest.raises(SaveRejected) as info:
        save_connections(store, box, site.id, [vendor_draft(pv, "new-a", "15min")], set())
    assert info.value.errors == {"new-a": {"update_frequency": V2_15_MIN}}
    assert cat.load_catalog(store).sources == []
    save_connections(store, box, site.id, [vendor_draft(pv, "new-a", "30min")], set())  # 1,488 a month
    (source,) = cat.load_catalog(store).sources
    assert source.api.update_frequency.value == "30min"


def test_the_refusal_stands_beside_other_problems(store: Store, box: SecretBox) -> None:
    site, pv, _ = make_site(store, "Plant")
    unnamed = vendor_draft(pv, "new-b", "1hour", system_id="200", name="")
    with pytest.raises(SaveRejected) as info:
        save_connections(store, box, site.id, [vendor_draft(pv, "new-a", "15min"), unnamed], set())
    assert info.value.errors == {"new-a": {"update_frequency": V2_15_MIN}, "new-b": {"name": "must not be empty"}}


def test_two_sites_on_one_key_add_up_whether_the_key_is_typed_or_stored(store: Store, box: SecretBox) -> None:
    north, north_pv, _ = make_site(store, "North")
    south, south_pv, _ = make_site(store, "South")
    save_connections(store, box, north.id, [vendor_draft(north_pv, "new-n", "1hour", system_id="100")], set())
    # 744 on North's site + 1,488 for South's every 30 minutes, on the same key: 2,232 > 2,000.
    with pytest.raises(SaveRejected) as info:
        save_connections(store, box, south.id, [vendor_draft(south_pv, "new-s", "30min", system_id="200")], set())
    assert info.value.errors["new-s"]["update_frequency"] == (
        "SolarEdge (V2) allows 2,000 calls a month for this API key, shared by 2 sites; this schedule needs 2,232; "
        "every 1 hour fits: 1,488 calls/month of 2,000."
    )
    other_key = vendor_draft(south_pv, "new-s", "30min", system_id="200")
    other_key.secrets = {"api_key": "sk-another-key"}
    save_connections(store, box, south.id, [other_key], set())  # another account: 1,488 of its own
    # North's stored key is compared too: with South back on the shared key, North at 30 min is refused.
    (south_source,) = cat.load_catalog(store).sources_of_site(south.id)
    back = draft_from_source(south_source)
    back.values["update_frequency"] = "1hour"
    back.secrets = {"api_key": "sk-shared-key"}
    save_connections(store, box, south.id, [back], set())
    (north_source,) = cat.load_catalog(store).sources_of_site(north.id)
    faster = draft_from_source(north_source)  # the key stays masked: the stored one is what counts
    faster.values["update_frequency"] = "30min"
    with pytest.raises(SaveRejected) as refused:
        save_connections(store, box, north.id, [faster], set())
    assert "shared by 2 sites" in refused.value.errors[f"s{north_source.id}"]["update_frequency"]
    assert cat.load_catalog(store).source(north_source.id).api.update_frequency.value == "1hour"  # unchanged
    assert load_secrets(store, box, north_source.id)["api_key"].get_secret_value() == "sk-shared-key"


def test_sources_of_one_vendor_site_are_polled_once(store: Store, box: SecretBox) -> None:
    site, pv, load = make_site(store, "Plant")
    drafts = [vendor_draft(pv, "new-pv", "1hour"), vendor_draft(load, "new-load", "1hour", source_type="load")]
    checks = quota_checks(store, box, cat.load_catalog(store), drafts, set())
    (scope,) = checks["new-pv"]
    assert checks["new-load"] == [scope]
    assert (scope.calls_per_month, scope.vendor_sites, scope.fits) == (2 * 744, 1, True)  # power + meters
    save_connections(store, box, site.id, drafts, set())
    assert len(cat.load_catalog(store).sources) == 2


def test_enphase_budget_follows_the_plan_setting(store: Store, box: SecretBox) -> None:
    site, pv, load = make_site(store, "Plant")

    def enphase_draft(meter: cat.Meter, key: str, source_type: str) -> SourceDraft:
        draft = vendor_draft(meter, key, "1hour", api_provider="enphase", client_id="app-1", source_type=source_type)
        draft.secrets = {"client_secret": "secret", "app_api_key": "key"}
        return draft

    drafts = [enphase_draft(pv, "new-pv", "solar"), enphase_draft(load, "new-load", "load")]
    with pytest.raises(SaveRejected) as info:
        save_connections(store, box, site.id, drafts, set())  # Watt: 2 endpoints x 744 = 1,488 > 1,000
    assert info.value.errors["new-pv"]["update_frequency"].startswith(
        "Enphase (Watt plan) allows 1,000 calls a month for this application; every 1 hour needs 1,488"
    )
    save_connections(store, box, site.id, drafts, set(), enphase_plan="kilowatt")
    assert len(cat.load_catalog(store).sources) == 2


def test_a_site_off_the_busy_key_still_saves(store: Store, box: SecretBox) -> None:
    """Budgets only refuse the drafts that use them: a simulator site saves whatever other sites do."""
    north, north_pv, _ = make_site(store, "North")
    save_connections(store, box, north.id, [vendor_draft(north_pv, "new-n", "1hour")], set())
    (stored,) = cat.load_catalog(store).sources
    values = stored.model_dump(exclude={"id", "meter_id", "secret_names"})
    values["api"]["update_frequency"] = UpdateFrequency.MIN5
    with store.transaction() as con:  # saved before the planner existed: 8,928 a month
        cat.update_source(con, stored.id, SourceIn.model_validate(values))
    south, south_pv, _ = make_site(store, "South")
    simulated = new_draft("new-sim", south_pv.id, Category.PROD)
    simulated.values |= {"name": "Roof", "capacity_kw": "5", "use_api": True, "update_frequency": "5min"}
    save_connections(store, box, south.id, [simulated], set())
    assert len(cat.load_catalog(store).sources) == 2
