"""Config import applies the quota planner like Save All Connections: a file whose schedules the vendors' budgets
cannot carry is refused on the source's update frequency, counting the configuration as the import would leave it
(the file's sources merged with the stored ones, other sites' sources, stored keys); nothing is written then."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.catalog import catalog as cat
from core.catalog.config_io import ConfigImportError, ImportReport, export_config, import_config
from core.models import UpdateFrequency
from core.store.crypto import SecretBox
from core.store.store import Store
from tests.crafting import saved_solaredge_source
from tests.processes import cli

KEY, OTHER_KEY = "se-shared-key-0001", "se-other-key-0002"
V2_15_MIN = (
    "SolarEdge (V2) allows 2,000 calls a month for this API key; every 15 min needs 2,976; "
    "every 30 min fits: 1,488 calls/month of 2,000."
)
SHARED_30_MIN = (
    "SolarEdge (V2) allows 2,000 calls a month for this API key, shared by 2 sites; this schedule needs 2,232; "
    "every 1 hour fits: 1,488 calls/month of 2,000."
)


def source(name: str, frequency: str = "1hour", system_id: str = "100", **changes: Any) -> dict[str, Any]:
    """A SolarEdge V2 PV source (1 call a poll) of an import file."""
    api = {"enabled": True, "provider": "solaredge", "system_id": system_id, "update_frequency": frequency}
    return {
        "name": name,
        "source_type": "solar",
        "capacity_kw": 5,
        "carbon_intensity_g_per_kwh": 0,
        "cost_per_mwh": 0,
        "api": api,
    } | changes


def simulated(name: str) -> dict[str, Any]:
    api = {"enabled": True, "provider": "simulator", "update_frequency": "5min"}
    return source(name) | {"api": api}


def site(name: str, *sources: dict[str, Any], meter: str = "PV", category: str = "PROD") -> dict[str, Any]:
    meters = [{"name": meter, "category": category, "sources": list(sources)}]
    return {"name": name, "latitude": 50.85, "longitude": 4.35, "timezone": "Europe/Brussels", "meters": meters}


def config(*sites: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "sites": list(sites)}


def stored_source(
    store: Store, box: SecretBox, site_name: str, *, system_id: str, frequency: UpdateFrequency, key: str = KEY
) -> int:
    """A saved SolarEdge V2 PV source, "Roof" on the meter "PV", with its API key stored encrypted."""
    return saved_solaredge_source(store, box, site_name, key, system_id=system_id, every=frequency)


def refused(store: Store, box: SecretBox, data: dict[str, Any], **kwargs: Any) -> list[str]:
    before = export_config(store)
    with pytest.raises(ConfigImportError) as caught:
        import_config(store, box, data, **kwargs)
    assert export_config(store) == before  # nothing written
    return caught.value.errors


def imported(store: Store, box: SecretBox, data: dict[str, Any], **kwargs: Any) -> ImportReport:
    return import_config(store, box, data, **kwargs)


def frequencies(store: Store) -> dict[str, str]:
    catalog = cat.load_catalog(store)
    return {
        f"{catalog.site(catalog.meter(s.meter_id).site_id).name}/{s.name}": s.api.update_frequency.value
        for s in catalog.sources
    }


def test_a_schedule_over_budget_is_refused_on_its_path_and_a_fitting_one_imports(store: Store, box: SecretBox) -> None:
    data = config(site("North", simulated("Sim"), source("Roof", "15min", credentials={"api_key": KEY})))
    assert refused(store, box, data) == [f"sites[0].meters[0].sources[1].api.update_frequency: {V2_15_MIN}"]
    assert refused(store, box, data, dry_run=True) == [
        f"sites[0].meters[0].sources[1].api.update_frequency: {V2_15_MIN}"
    ]
    data["sites"][0]["meters"][0]["sources"][1]["api"]["update_frequency"] = "1hour"  # 744 a month
    assert imported(store, box, data).sources.created == 2
    assert frequencies(store) == {"North/Sim": "5min", "North/Roof": "1hour"}


def test_the_refusal_stands_beside_other_problems(store: Store, box: SecretBox) -> None:
    data = config(site("North", source("Roof", "15min", credentials={"api_key": KEY}), source("Bad", capacity_kw=-1)))
    assert refused(store, box, data) == [
        "sites[0].meters[0].sources[1].capacity_kw: Capacity (kW) must be at least 0",
        f"sites[0].meters[0].sources[0].api.update_frequency: {V2_15_MIN}",
    ]


def test_stored_sources_of_other_sites_on_the_same_key_count(store: Store, box: SecretBox) -> None:
    stored_source(store, box, "North", system_id="100", frequency=UpdateFrequency.HOUR1)  # 744 a month
    # 744 + 1,488 for South every 30 minutes, on the same key (from the environment): 2,232 > 2,000.
    data = config(site("South", source("Roof", "30min", "200", credentials={"api_key": {"env": "SOUTH_KEY"}})))
    assert refused(store, box, data, environ={"SOUTH_KEY": KEY}) == [
        f"sites[0].meters[0].sources[0].api.update_frequency: {SHARED_30_MIN}"
    ]
    imported(store, box, data, environ={"SOUTH_KEY": OTHER_KEY})  # another account: 1,488 of its own
    assert frequencies(store) == {"North/Roof": "1hour", "South/Roof": "30min"}


def test_a_stored_key_counts_when_the_file_gives_none(store: Store, box: SecretBox) -> None:
    stored_source(store, box, "North", system_id="100", frequency=UpdateFrequency.HOUR1)
    stored_source(store, box, "South", system_id="200", frequency=UpdateFrequency.HOUR1)
    exported = export_config(store)  # no credentials: the stored keys stay, and are the same key
    exported["sites"] = [s for s in exported["sites"] if s["name"] == "South"]
    exported["sites"][0]["meters"][0]["sources"][0]["api"]["update_frequency"] = "30min"
    assert refused(store, box, exported) == [f"sites[0].meters[0].sources[0].api.update_frequency: {SHARED_30_MIN}"]
    # A new key given in the file replaces the stored one for the plan too.
    exported["sites"][0]["meters"][0]["sources"][0]["credentials"] = {"api_key": OTHER_KEY}
    assert imported(store, box, exported).secrets_set == 1
    assert frequencies(store) == {"North/Roof": "1hour", "South/Roof": "30min"}


def test_unlisted_sources_of_the_site_count_and_a_matched_one_replaces_the_stored_one(
    store: Store, box: SecretBox
) -> None:
    stored_source(store, box, "North", system_id="100", frequency=UpdateFrequency.HOUR1)  # 744 a month
    # A second source of the site, on another vendor site and the same key: the file does not list Roof, which
    # stays (an import never deletes) and still costs 744.
    data = config(site("North", source("Carport", "30min", "300", credentials={"api_key": KEY})))
    assert refused(store, box, data) == [f"sites[0].meters[0].sources[0].api.update_frequency: {SHARED_30_MIN}"]
    # The stored Roof itself at 30 min: 1,488 in place of its 744, not on top of it, so it fits.
    imported(store, box, config(site("north", source("ROOF", "30min"))))
    assert frequencies(store) == {"north/ROOF": "30min"}


def enphase_site() -> dict[str, Any]:
    """An Enphase system read for PV and consumption every hour: 2 calls a poll, 1,488 a month."""
    creds = {"client_secret": "en-secret", "app_api_key": "en-app-key"}
    api = {"enabled": True, "provider": "enphase", "system_id": "77", "client_id": "app-1", "update_frequency": "1hour"}
    north = site("North", source("PV", api=api, credentials=creds))
    load = source("Load", source_type="load", api=api, credentials=creds)
    north["meters"].append({"name": "Building", "category": "CONS", "sources": [load]})
    return config(north)


def test_the_enphase_budget_follows_the_plan_setting(store: Store, box: SecretBox) -> None:
    data = enphase_site()
    errors = refused(store, box, data)  # Watt: PV and consumption endpoints, 2 x 744 = 1,488 > 1,000
    assert [e.split(": ")[0] for e in errors] == [
        "sites[0].meters[0].sources[0].api.update_frequency",
        "sites[0].meters[1].sources[0].api.update_frequency",
    ]
    assert "Enphase (Watt plan) allows 1,000 calls a month for this application; every 1 hour needs 1,488" in errors[0]
    assert refused(store, box, data, environ={"DATACONN_ENPHASE_PLAN": "ploughshare"}) == [
        "DATACONN_ENPHASE_PLAN: unknown Enphase plan 'ploughshare': use one of watt, kilowatt, megawatt"
    ]
    assert imported(store, box, data, enphase_plan="kilowatt", dry_run=True).sources.created == 2
    assert imported(store, box, data, environ={"DATACONN_ENPHASE_PLAN": "kilowatt"}).sources.created == 2


# --- through the command line ------------------------------------------------------------------------------------


def test_the_cli_prints_the_refusal_and_imports_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    assert cli(env, "init").returncode == 0
    file = tmp_path / "fleet.yaml"
    roof = source("Roof", "15min", credentials={"api_key": {"env": "FLEET_KEY"}})
    file.write_text(yaml.safe_dump(config(site("North", simulated("Sim"), roof))))
    env["FLEET_KEY"] = KEY
    result = cli(env, "config", "import", str(file))
    assert result.returncode == 1, result.stdout
    assert result.stderr.splitlines() == [
        f"sites[0].meters[0].sources[1].api.update_frequency: {V2_15_MIN}",
        "Nothing was imported.",
    ]
    assert KEY not in result.stdout + result.stderr
    assert yaml.safe_load(cli(env, "config", "export").stdout)["sites"] == []

    roof["api"]["update_frequency"] = "1hour"
    file.write_text(yaml.safe_dump(config(site("North", simulated("Sim"), roof))))
    done = cli(env, "config", "import", str(file))
    assert done.returncode == 0, done.stderr
    assert "sources: 2 created" in done.stdout


def test_the_cli_follows_the_enphase_plan_setting(tmp_path: Path, env: dict[str, str]) -> None:
    assert cli(env, "init").returncode == 0
    file = tmp_path / "fleet.json"
    file.write_text(json.dumps(enphase_site()))
    watt = cli(env, "config", "import", str(file))  # the default plan: 1,488 > 1,000
    assert watt.returncode == 1 and "Enphase (Watt plan) allows 1,000 calls a month" in watt.stderr
    env["DATACONN_ENPHASE_PLAN"] = "kilowatt"
    kilowatt = cli(env, "config", "import", str(file))
    assert kilowatt.returncode == 0, kilowatt.stderr
    assert "sources: 2 created" in kilowatt.stdout
