"""Configuration as code: stable, secret-free exports; imports validate everything, then merge or write nothing."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.catalog import catalog as cat
from core.catalog.config_io import ConfigFileError, ConfigImportError, dump, export_config, import_config, parse
from core.catalog.demo import seed_demo
from core.models import ApiSettings, Category, ConnectionStatus, MeterIn, Provider, SiteIn, SourceIn, UpdateFrequency
from core.store.crypto import SecretBox, SecretsError, generate_key
from core.store.schema import migrate
from core.store.secret_store import put_secret, read_secrets
from core.store.store import Store

SECRET = "sEcReT-ApiKey-7f3a9c1e5b"
TABLES = ("sites", "meters", "energy_sources", "source_secrets")


@pytest.fixture
def box() -> SecretBox:
    return SecretBox([generate_key()])


def new_store(path: Path) -> Store:
    store = Store(path)
    migrate(store)
    return store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return new_store(tmp_path / "config.duckdb")


def add_solaredge_source(
    store: Store, box: SecretBox, *, site: str = "Plant A", secret: str = SECRET, status: bool = False
) -> int:
    """A site with a PROD meter and one SolarEdge source whose API key is stored encrypted, polled hourly (what the
    SolarEdge budget allows: see tests/test_config_quota.py)."""
    created = cat.create_site(store, SiteIn(name=site, latitude=50.5, longitude=4.25, timezone="Europe/Brussels"))
    meter = cat.create_meter(store, created.id, MeterIn(name="PV", category=Category.PROD))
    api = ApiSettings(
        use_api=True, api_provider=Provider.SOLAREDGE, system_id="123456", update_frequency=UpdateFrequency.HOUR1
    )
    if status:
        api = api.model_copy(
            update={"connection_status": ConnectionStatus.CONNECTED, "last_tested": datetime(2026, 1, 2, tzinfo=UTC)}
        )
    source = SourceIn(
        name="Array", source_type="solar", capacity_kw=99.5, carbon_intensity_g_per_kwh=0, cost_per_mwh=12, api=api
    )
    with store.transaction() as con:
        source_id = cat.insert_source(con, meter.id, source)
        put_secret(con, box, source_id, "api_key", secret)
    return source_id


def source_dict(**changes: Any) -> dict[str, Any]:
    base = {
        "name": "Array",
        "source_type": "solar",
        "capacity_kw": 10,
        "carbon_intensity_g_per_kwh": 0,
        "cost_per_mwh": 0,
        "api": {"enabled": False, "provider": "simulator"},
    }
    return base | changes


def site_dict(name: str = "Plant A", sources: list[dict[str, Any]] | None = None, **changes: Any) -> dict[str, Any]:
    meters = [{"name": "PV", "category": "PROD", "sources": sources if sources is not None else [source_dict()]}]
    return {
        "name": name,
        "latitude": 50.5,
        "longitude": 4.25,
        "timezone": "Europe/Brussels",
        "meters": meters,
    } | changes


def config(*sites: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "sites": list(sites)}


def counts(store: Store) -> dict[str, int]:
    with store.connect(read_only=True) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES}


def timestamps(store: Store) -> dict[str, list[Any]]:
    with store.connect(read_only=True) as con:
        return {t: con.execute(f"SELECT updated_at FROM {t} ORDER BY ALL").fetchall() for t in TABLES}


def import_errors(store: Store, box: SecretBox, data: Any, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigImportError) as caught:
        import_config(store, box, data, environ=environ or {})
    return caught.value.errors


def test_round_trip_into_an_empty_database_gives_the_same_export(tmp_path: Path, store: Store, box: SecretBox) -> None:
    seed_demo(store)
    add_solaredge_source(store, box)
    exported = export_config(store)
    assert [s["name"] for s in exported["sites"]] == ["Demo Rooftop", "Plant A"]
    # Credentials are never exported, so the file names where they come from for the new installation.
    plant = exported["sites"][1]["meters"][0]["sources"][0]
    plant["credentials"] = {"api_key": {"env": "SE_KEY"}}
    for fmt in ("yaml", "json"):
        target = new_store(tmp_path / f"target-{fmt}.duckdb")
        report = import_config(target, box, parse(dump(exported, fmt), fmt), environ={"SE_KEY": "k-1"})
        assert (report.sites.created, report.meters.created, report.sources.created, report.secrets_set) == (2, 5, 7, 1)
        again = export_config(target)
        del plant["credentials"]
        assert again == export_config(store)
        plant["credentials"] = {"api_key": {"env": "SE_KEY"}}


def test_export_is_sorted_and_holds_no_secret_and_no_runtime_state(store: Store, box: SecretBox) -> None:
    add_solaredge_source(store, box, site="b site", status=True)
    add_solaredge_source(store, box, site="A site")
    exported = export_config(store)
    assert [s["name"] for s in exported["sites"]] == ["A site", "b site"]
    with store.connect(read_only=True) as con:
        ciphertexts = [r[0] for r in con.sql("SELECT ciphertext FROM source_secrets").fetchall()]
    for fmt in ("yaml", "json"):
        text = dump(exported, fmt)
        assert SECRET not in text and not any(c in text for c in ciphertexts)
        assert "credentials" not in text and "connect" not in text.lower() and "tested" not in text.lower()
    assert exported["sites"][0]["meters"][0]["sources"][0]["api"] == {
        "enabled": True,
        "provider": "solaredge",
        "system_id": "123456",
        "client_id": "",
        "update_frequency": "1hour",
    }


def test_importing_the_same_file_twice_changes_nothing(store: Store, box: SecretBox) -> None:
    seed_demo(store)
    data = config(
        site_dict(
            sources=[
                source_dict(
                    api={"enabled": True, "provider": "solaredge", "system_id": "42", "update_frequency": "1hour"},
                    credentials={"api_key": SECRET},
                )
            ]
        )
    )
    first = import_config(store, box, data)
    assert (first.sites.created, first.meters.created, first.sources.created, first.secrets_set) == (1, 1, 1, 1)
    before = timestamps(store)
    second = import_config(store, box, data)
    assert (second.sites.unchanged, second.meters.unchanged, second.sources.unchanged) == (1, 1, 1)
    assert second.sites.created + second.sites.updated + second.meters.created + second.meters.updated == 0
    assert second.sources.created + second.sources.updated + second.secrets_set + second.secrets_removed == 0
    assert timestamps(store) == before


def test_import_merges_updates_what_differs_and_never_deletes(store: Store, box: SecretBox) -> None:
    seed_demo(store)
    add_solaredge_source(store, box)
    data = export_config(store)
    data["sites"] = [s for s in data["sites"] if s["name"] == "Plant A"]  # the demo site is absent from the file
    data["sites"][0]["name"] = "PLANT A"  # matched case-insensitively, renamed to the file's spelling
    data["sites"][0]["meters"][0]["sources"][0]["capacity_kw"] = 120
    report = import_config(store, box, data)
    assert (report.sites.updated, report.sources.updated, report.secrets_set) == (1, 1, 0)
    names = [s["name"] for s in export_config(store)["sites"]]
    assert names == ["Demo Rooftop", "PLANT A"]
    assert counts(store)["energy_sources"] == 7


def test_connection_status_is_kept_only_for_the_settings_it_tested(store: Store, box: SecretBox) -> None:
    source_id = add_solaredge_source(store, box, status=True)
    data = export_config(store)
    source = data["sites"][0]["meters"][0]["sources"][0]
    source["cost_per_mwh"] = 50  # not a connection setting: the test result still applies
    assert import_config(store, box, data).sources.updated == 1
    assert cat.load_catalog(store).source(source_id).api.connection_status is ConnectionStatus.CONNECTED
    source["credentials"] = {"api_key": SECRET}  # the same key as stored: nothing to re-write
    assert import_config(store, box, data).secrets_set == 0
    source["credentials"] = {"api_key": "another-key"}  # a new key was never tested
    report = import_config(store, box, data)
    assert (report.secrets_set, report.sources.updated) == (1, 1)
    stored = cat.load_catalog(store).source(source_id)
    assert stored.api.connection_status is ConnectionStatus.UNTESTED and stored.api.last_tested is None
    with store.connect(read_only=True) as con:
        assert read_secrets(con, box, source_id)["api_key"].get_secret_value() == "another-key"


def test_switching_provider_drops_the_old_providers_credentials(store: Store, box: SecretBox) -> None:
    source_id = add_solaredge_source(store, box)
    data = export_config(store)
    data["sites"][0]["meters"][0]["sources"][0]["api"]["provider"] = "simulator"
    report = import_config(store, box, data)
    assert (report.sources.updated, report.secrets_removed) == (1, 1)
    assert cat.load_catalog(store).source(source_id).secret_names == frozenset()


def _fleet(*, latitude: float, capacity: float, key: str, meter: str = "PV") -> dict[str, Any]:
    """Four sites of a PV meter with a SolarEdge source (its own key) and a simulated one."""
    sites = []
    for n in range(4):
        api = {"enabled": True, "provider": "solaredge", "system_id": str(n), "update_frequency": "1hour"}
        keyed = source_dict(name="Keyed", capacity_kw=capacity, api=api, credentials={"api_key": f"{key}-{n}"})
        site = site_dict(f"Site {n}", [keyed, source_dict(name="Simulated", capacity_kw=capacity + n)])
        site["latitude"] = latitude + n
        site["meters"][0]["name"] = meter
        sites.append(site)
    return config(*sites)


def _rows(store: Store, sites: str) -> dict[str, list[Any]]:
    """Every column of the rows of the sites named like `sites` (SQL LIKE), of their meters and of their sources."""
    site_ids = "SELECT id FROM sites WHERE name LIKE ?"
    meter_ids = f"SELECT id FROM meters WHERE site_id IN ({site_ids})"
    queries = {
        "sites": f"SELECT * FROM sites WHERE id IN ({site_ids})",
        "meters": f"SELECT * FROM meters WHERE id IN ({meter_ids})",
        "energy_sources": f"SELECT * FROM energy_sources WHERE meter_id IN ({meter_ids})",
    }
    with store.connect(read_only=True) as con:
        return {table: con.execute(sql + " ORDER BY id", [sites]).fetchall() for table, sql in queries.items()}


def test_changing_many_rows_at_once_updates_each_in_place(store: Store, box: SecretBox) -> None:
    """Changed rows are written together, one statement per level and one for the credentials: each row gets its
    own values and keeps its id, its parent and its creation time; rows the file leaves alone are not touched."""
    seed_demo(store)
    import_config(store, box, _fleet(latitude=40, capacity=10, key="old"))
    fleet_before, demo_before = _rows(store, "Site %"), _rows(store, "Demo%")
    changed = _fleet(latitude=50, capacity=20, key="new", meter="pv")
    changed["sites"][0]["meters"][0]["sources"][0]["api"] = {"enabled": False, "provider": "simulator"}
    del changed["sites"][0]["meters"][0]["sources"][0]["credentials"]
    report = import_config(store, box, changed)
    assert (report.sites.updated, report.meters.updated, report.sources.updated) == (4, 4, 8)
    assert (report.secrets_set, report.secrets_removed) == (3, 1)
    fleet_after = _rows(store, "Site %")
    for table, rows in fleet_after.items():
        # The id (and the parent's id) come first, created_at and updated_at last: kept, kept, moved on.
        ids = {"sites": 1, "meters": 2, "energy_sources": 2}[table]
        old_rows = fleet_before[table]
        assert [row[:ids] + row[-2:-1] for row in rows] == [row[:ids] + row[-2:-1] for row in old_rows]
        assert all(new[-1] > old[-1] for new, old in zip(rows, old_rows, strict=True))
    assert _rows(store, "Demo%") == demo_before
    fleet = [s for s in export_config(store)["sites"] if s["name"].startswith("Site ")]
    assert [(s["name"], s["latitude"], s["meters"][0]["name"]) for s in fleet] == [
        (f"Site {n}", 50.0 + n, "pv") for n in range(4)
    ]
    sources = [[(x["name"], x["api"]["provider"], x["capacity_kw"]) for x in s["meters"][0]["sources"]] for s in fleet]
    assert sources == [
        [("Keyed", "simulator" if n == 0 else "solaredge", 20.0), ("Simulated", "simulator", 20.0 + n)]
        for n in range(4)
    ]
    keyed = sorted(s.id for s in cat.load_catalog(store).sources if s.name == "Keyed")
    with store.connect(read_only=True) as con:
        keys = [{k: v.get_secret_value() for k, v in read_secrets(con, box, i).items()} for i in keyed]
    assert keys == [{}] + [{"api_key": f"new-{n}"} for n in range(1, 4)]


def test_every_problem_is_reported_with_its_path_in_the_file(store: Store, box: SecretBox) -> None:
    bad_sources = [
        source_dict(capacity_kw=-1),
        source_dict(name="Wind", source_type="load"),
        source_dict(name="SE", api={"enabled": True, "provider": "solaredge"}),
        source_dict(
            name="SE env",
            api={"enabled": True, "provider": "solaredge", "system_id": "7"},
            credentials={"api_key": {"env": "SE_KEY"}},
        ),
        source_dict(
            name="EN", api={"enabled": False, "provider": "enphase"}, credentials={"api_key": "x", "token": "y"}
        ),
        source_dict(name="array"),
    ]
    data = config(
        site_dict(sources=bad_sources),
        site_dict(name="PLANT a", latitude=91, colour="red"),
        site_dict(name="Plant B", meters=[{"name": "M", "category": "PROD"}, {"name": "m", "category": "XYZ"}]),
    )
    assert import_errors(store, box, data) == [
        "sites[0].meters[0].sources[0].capacity_kw: Capacity (kW) must be at least 0",
        "sites[0].meters[0].sources[1].source_type: Source Type must be one of solar, wind, hydro, chp, other for a"
        " PROD meter",
        "sites[0].meters[0].sources[2].api.system_id: Site ID is required for SolarEdge",
        "sites[0].meters[0].sources[2].credentials.api_key: API Key is required for SolarEdge",
        "sites[0].meters[0].sources[3].credentials.api_key: API Key: environment variable SE_KEY is not set",
        "sites[0].meters[0].sources[4].credentials.api_key: API Key is not used by Enphase"
        " (needs client_secret, app_api_key)",
        "sites[0].meters[0].sources[4].credentials.token: is not a known credential"
        " (use api_key, client_secret, app_api_key, mqtt_password)",
        "sites[0].meters[0].sources[5].name: Source Name: 'array' duplicates the name of sites[0].meters[0].sources[0]",
        "sites[1].latitude: Latitude must be at most 90",
        "sites[1].colour: is not a known field",
        "sites[1].name: Site Name: 'PLANT a' duplicates the name of sites[0]",
        "sites[2].meters[1].category: Category must be one of 'PROD', 'CONS', 'STOR' or 'INJ'",
        "sites[2].meters[1].name: Meter Name: 'm' duplicates the name of sites[2].meters[0]",
    ]
    assert counts(store) == dict.fromkeys(TABLES, 0)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"version": 2, "sites": []}, "version: unsupported version '2': this program reads version 1"),
        ({"sites": []}, "version: is required: this program reads version 1"),
        ([], '(file): must be a mapping with "version" and "sites"'),
        ({"version": 1, "sites": {"name": "x"}}, "sites: must be a list"),
        (
            config(site_dict(sources=[source_dict(api={"enabled": True, "provider": "solaredge", "system_id": 42})])),
            "sites[0].meters[0].sources[0].api.system_id: Site ID must be text: put it in quotes",
        ),
        (
            config(site_dict(sources=[source_dict(credentials={"api_key": {"env": "A", "default": "x"}})])),
            "sites[0].meters[0].sources[0].credentials.api_key: API Key must be the value as text or"
            ' {"env": "VARIABLE_NAME"}',
        ),
    ],
)
def test_file_level_errors(store: Store, box: SecretBox, data: Any, expected: str) -> None:
    assert expected in import_errors(store, box, data)


def test_credentials_already_stored_count_as_present(store: Store, box: SecretBox) -> None:
    add_solaredge_source(store, box)
    report = import_config(store, box, export_config(store))  # the export has no credentials
    assert (report.sources.unchanged, report.secrets_set) == (1, 0)
    # ... but not for a new source with the same settings elsewhere.
    other = export_config(store)
    other["sites"][0]["name"] = "Plant Z"
    assert import_errors(store, box, other) == [
        "sites[0].meters[0].sources[0].credentials.api_key: API Key is required for SolarEdge"
    ]


def test_a_meters_category_cannot_change_while_it_has_sources(store: Store, box: SecretBox) -> None:
    add_solaredge_source(store, box)
    data = config(site_dict(meters=[{"name": "pv", "category": "CONS", "sources": []}]))
    assert import_errors(store, box, data) == [
        "sites[0].meters[0].category: Category: meter 'PV' is stored as PROD with 1 data source(s):"
        " remove them before changing its category"
    ]
    empty = cat.create_meter(store, cat.load_catalog(store).sites[0].id, MeterIn(name="Spare", category=Category.PROD))
    report = import_config(store, box, config(site_dict(meters=[{"name": "Spare", "category": "STOR"}])))
    assert report.meters.updated == 1
    assert cat.load_catalog(store).meter(empty.id).category is Category.STOR


def test_one_bad_row_among_many_writes_nothing(store: Store, box: SecretBox) -> None:
    seed_demo(store)
    before, stamps = counts(store), timestamps(store)
    sites = [
        site_dict(name=f"Site {i}", sources=[source_dict(name=f"S{j}", credentials={}) for j in range(5)])
        for i in range(20)
    ]
    sites.append(site_dict(name="Demo Rooftop", latitude=1.0))  # an update of a stored site, to be rolled back too
    sites[13]["meters"][0]["sources"][3]["cost_per_mwh"] = "cheap"
    assert import_errors(store, box, config(*sites)) == [
        "sites[13].meters[0].sources[3].cost_per_mwh: Cost (per MWh) must be a number (got 'cheap')"
    ]
    assert counts(store) == before
    assert timestamps(store) == stamps


def test_dry_run_reports_without_writing(store: Store, box: SecretBox) -> None:
    data = config(site_dict(sources=[source_dict(), source_dict(name="Two")]))
    report = import_config(store, box, data, dry_run=True)
    assert report.dry_run and (report.sites.created, report.meters.created, report.sources.created) == (1, 1, 2)
    assert counts(store) == dict.fromkeys(TABLES, 0)


def test_inline_secret_is_stored_encrypted_and_never_reported(store: Store, box: SecretBox) -> None:
    api = {"enabled": True, "provider": "solaredge", "system_id": "9", "update_frequency": "1hour"}
    good = source_dict(api=api, credentials={"api_key": SECRET})
    # Failing elsewhere: the errors do not carry the secret.
    errors = import_errors(store, box, config(site_dict(sources=[good, source_dict(name="x", capacity_kw=-5)])))
    assert errors and all(SECRET not in e for e in errors)
    bad_secret = source_dict(api=api, credentials={"api_key": SECRET + " tail"})
    errors = import_errors(store, box, config(site_dict(sources=[bad_secret])))
    assert errors == [
        "sites[0].meters[0].sources[0].credentials.api_key: API Key must not contain spaces or line breaks"
    ]

    report = import_config(store, box, config(site_dict(sources=[good])))
    assert SECRET not in repr(report) and SECRET not in "\n".join(report.lines())
    with store.connect() as con:
        con.execute("CHECKPOINT")
        ((source_id, ciphertext),) = con.sql("SELECT source_id, ciphertext FROM source_secrets").fetchall()
        assert ciphertext != SECRET
        assert read_secrets(con, box, source_id)["api_key"].get_secret_value() == SECRET
    files = [store.path, store.path.with_name(store.path.name + ".wal")]
    assert all(SECRET.encode() not in p.read_bytes() for p in files if p.exists())
    with pytest.raises(SecretsError):
        SecretBox([generate_key()]).decrypt(ciphertext)


def test_environment_reference_is_resolved(store: Store, box: SecretBox) -> None:
    api = {"enabled": True, "provider": "enphase", "system_id": "77", "client_id": "app-1", "update_frequency": "1hour"}
    creds = {"client_secret": {"env": "EN_SECRET"}, "app_api_key": {"env": "EN_APP_KEY"}}
    data = config(site_dict(sources=[source_dict(api=api, credentials=creds)]))
    assert import_errors(store, box, data, {"EN_SECRET": "s3cr3t"}) == [
        "sites[0].meters[0].sources[0].credentials.app_api_key: Application API Key: environment variable EN_APP_KEY"
        " is not set"
    ]
    assert import_errors(store, box, data, {"EN_SECRET": "s3cr3t", "EN_APP_KEY": "  "}) == [
        "sites[0].meters[0].sources[0].credentials.app_api_key: Application API Key: environment variable EN_APP_KEY"
        " must not be empty"
    ]
    report = import_config(store, box, data, environ={"EN_SECRET": "s3cr3t", "EN_APP_KEY": "app-key\n"})
    assert report.secrets_set == 2
    source = cat.load_catalog(store).sources[0]
    with store.connect(read_only=True) as con:
        values = {k: v.get_secret_value() for k, v in read_secrets(con, box, source.id).items()}
    assert values == {"client_secret": "s3cr3t", "app_api_key": "app-key"}


def test_syntax_errors_name_the_line() -> None:
    with pytest.raises(ConfigFileError, match=r"^invalid YAML at line 4, column 1: "):
        parse("version: 1\nsites:\n  - name: A\n\tlatitude: 1\n", "yaml")
    with pytest.raises(ConfigFileError, match=r"^invalid JSON at line 2, column 3: "):
        parse('{"version": 1,\n  ]', "json")
    with pytest.raises(ConfigFileError, match=r"^invalid YAML at line 3, column 1: duplicate key 'version'$"):
        parse("version: 1\nsites: []\nversion: 2\n", "yaml")


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(ConfigFileError, match="duplicate key 'capacity_kw'"):
        parse("name: A\ncapacity_kw: 1\ncapacity_kw: 2\n", "yaml")
    with pytest.raises(ConfigFileError, match="duplicate key 'name'"):
        parse('{"name": "A", "name": "B"}', "json")
    # Aliases and merge keys are refused (tests/test_fault_config.py): a configuration file has no use for them.
    with pytest.raises(ConfigFileError, match=r"line 3: YAML aliases \(\*name\) are not allowed"):
        parse("a: &x {k: 1}\nb:\n  <<: *x\n  j: 2\n", "yaml")


def test_input_is_not_mutated(store: Store, box: SecretBox) -> None:
    data = config(site_dict())
    original = copy.deepcopy(data)
    import_config(store, box, data)
    assert data == original
