"""Hostile and oversized configuration files, and names that look alike: each is refused with one clear message
(or a bounded list), in bounded memory, before the database is locked for writing, and nothing changes."""

from __future__ import annotations

import contextlib
import json
import os
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from core.catalog import catalog as cat
from core.catalog.config_io import (
    MAX_ATTEMPTS,
    ConfigFileError,
    ConfigFileLimits,
    ConfigImportError,
    dump,
    export_config,
    import_config,
    parse,
)
from core.catalog.connections import SaveRejected, new_draft, save_connections
from core.models import ApiSettings, Category, MeterIn, Provider, SiteIn, SourceIn, UpdateFrequency
from core.store.crypto import SecretBox, read_key_file
from core.store.secret_store import put_secret
from core.store.store import Store
from tests.holder import held
from tests.processes import cli

A_FEW_MB = 5_000_000  # what refusing a hostile file may cost, in bytes of Python memory at its peak


def billion_laughs(levels: int = 10) -> str:
    """Levels of aliases, each a list of nine of the previous: under 1 KB, 9^levels strings once expanded."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]" for n in range(1, levels)]
    return "\n".join(lines) + "\n"


def peak_memory(work: Callable[[], object]) -> int:
    """The peak of Python's allocations (bytes) while `work` runs, whatever it raises."""
    tracemalloc.start()
    try:
        with contextlib.suppress(Exception):
            work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def site(name: str = "Plant A", latitude: float = 50.5, sources: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    source = {
        "name": "Array",
        "source_type": "solar",
        "capacity_kw": 10,
        "carbon_intensity_g_per_kwh": 0,
        "cost_per_mwh": 0,
    }
    meter = {"name": "PV", "category": "PROD", "sources": [source] if sources is None else sources}
    return {"name": name, "latitude": latitude, "longitude": 4.25, "timezone": "Europe/Brussels", "meters": [meter]}


def config(*sites: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "sites": list(sites)}


def state(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every configuration row, to show that nothing changed."""
    with store.connect(read_only=True) as con:
        return {
            table: con.sql(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
            for table in ("sites", "meters", "energy_sources", "source_secrets")
        }


# --- through the CLI, in a process of its own -------------------------------------------------------------------


@pytest.fixture
def cli_store(env: dict[str, str]) -> Store:
    """An initialised database holding one site, for the CLI runs."""
    result = cli(env, "init")
    assert result.returncode == 0, result.stderr
    store = Store(env["DATACONN_DB_PATH"])
    created = cat.create_site(store, SiteIn(name="Stored", latitude=45, longitude=5, timezone="Europe/Paris"))
    cat.create_meter(store, created.id, MeterIn(name="PV", category=Category.PROD))
    return store


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_an_alias_bomb_is_refused_in_a_few_mb_of_memory() -> None:
    """Measured in this process (tracemalloc counts every Python allocation, whatever the allocator or the machine's
    core count), not as a memory limit on a CLI process, whose threads and allocator arenas grow with the cores."""
    refused: list[str] = []

    def parse_the_bomb() -> None:
        try:
            parse(billion_laughs(), "yaml")
        except ConfigFileError as exc:
            refused.append(str(exc))

    assert peak_memory(parse_the_bomb) < A_FEW_MB
    assert refused == ["line 2: YAML aliases (*name) are not allowed: write the values out"]
    # The bound is not a formality: walking the expansion of a far smaller bomb (6 levels, 9^6 strings), as
    # validating it did, passes it.
    small_bomb = billion_laughs(levels=6)
    assert peak_memory(lambda: json.dumps(yaml.load(small_bomb, Loader=yaml.CSafeLoader))) > A_FEW_MB


def test_the_cli_refuses_an_alias_bomb_in_one_line_and_writes_nothing(
    tmp_path: Path, env: dict[str, str], cli_store: Store
) -> None:
    bomb = write(tmp_path, "laughs.yaml", billion_laughs())
    before = state(cli_store)
    result = cli(env, "config", "import", str(bomb))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.strip() == f"{bomb}: line 2: YAML aliases (*name) are not allowed: write the values out"
    assert state(cli_store) == before


def test_merge_keys_are_refused_like_aliases() -> None:
    with pytest.raises(ConfigFileError, match=r"^line 3: YAML merge keys \(<<\) are not allowed"):
        parse("version: 1\nsites:\n- <<: {name: A}\n", "yaml")


def test_a_small_file_with_hundreds_of_problems_prints_the_first_hundred(
    tmp_path: Path, env: dict[str, str], cli_store: Store
) -> None:
    text = "version: 1\nsites: [" + "{}, " * 140 + "]\n"  # 580 bytes; each empty site lacks 4 fields
    assert len(text) <= 600
    result = cli(env, "config", "import", str(write(tmp_path, "empty-sites.yaml", text)))
    lines = result.stderr.splitlines()
    assert result.returncode == 1
    assert lines[:2] == ["sites[0].name: Site Name is required", "sites[0].latitude: Latitude is required"]
    assert lines[100:] == ["... and 460 more problem(s)", "Nothing was imported."]


def test_the_error_list_is_capped_in_one_place() -> None:
    error = ConfigImportError([f"sites[{n}].name: is required" for n in range(250)])
    assert error.count == 250
    assert error.errors[99] == "sites[99].name: is required"
    assert error.errors[100:] == ["... and 150 more problem(s)"]
    assert ConfigImportError(["one"]).errors == ["one"]


def test_a_file_over_the_size_limit_is_refused_without_reading_it(
    tmp_path: Path, env: dict[str, str], cli_store: Store
) -> None:
    env["DATACONN_CONFIG_IMPORT_MAX_MB"] = "1"
    big = write(tmp_path, "big.yaml", "#" * 1_000_001)
    result = cli(env, "config", "import", str(big))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"{big}: the file is larger than 1 MB, the limit of DATACONN_CONFIG_IMPORT_MAX_MB: split it into several"
        " files (an import merges, so they can be imported one after the other)"
    )
    endless = tmp_path / "endless.yaml"  # read to its end, this file would never finish
    endless.symlink_to("/dev/zero")
    pipe = tmp_path / "pipe.yaml"  # opened for reading, a named pipe without a writer blocks for good
    os.mkfifo(pipe)
    for path, kind in ((endless, "a device"), (pipe, "a named pipe")):
        result = cli(env, "config", "import", str(path))
        assert (result.returncode, result.stderr.strip()) == (
            1,
            f"{path}: is {kind}; give the path of a configuration file (.yaml or .json)",
        )


def test_too_many_sites_are_refused_before_any_row_is_validated(
    tmp_path: Path, env: dict[str, str], cli_store: Store
) -> None:
    env["DATACONN_CONFIG_IMPORT_MAX_SITES"] = "3"
    path = write(tmp_path, "fleet.json", json.dumps(config(*({"name": f"S{n}"} for n in range(4)))))
    result = cli(env, "config", "import", str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "sites: the file has 4 sites, more than the limit of 3 (DATACONN_CONFIG_IMPORT_MAX_SITES): split the file"
        " (an import merges, so the parts can be imported one after the other), or raise the limit",
        "Nothing was imported.",
    ]


def test_meter_and_source_counts_have_limits_too(store: Store, box: SecretBox) -> None:
    data = config(site("A", sources=[site()["meters"][0]["sources"][0]] * 3), site("B"))
    limits = ConfigFileLimits(max_bytes=10**6, max_sites=10, max_meters=1, max_sources=3)
    with pytest.raises(ConfigImportError) as caught:
        import_config(store, box, data, environ={}, limits=limits)
    assert [line.split(":")[0] for line in caught.value.errors] == ["meters", "sources"]
    meters, sources = caught.value.errors
    assert "the file has 2 meters, more than the limit of 1 (DATACONN_CONFIG_IMPORT_MAX_METERS)" in meters
    assert "the file has 4 sources, more than the limit of 3 (DATACONN_CONFIG_IMPORT_MAX_SOURCES)" in sources
    assert cat.load_catalog(store).sites == []


@pytest.mark.parametrize(
    ("fmt", "text", "line"),
    [
        ("json", "[" * 100_000 + "]" * 100_000, 1),  # past Python's recursion limit
        ("json", '{"version": 1,\n "sites":\n' + "[" * 25 + "]" * 25 + "}", 3),  # within it
        ("yaml", "[" * 100_000 + "]" * 100_000, 1),
        ("yaml", "version: 1\nsites:\n" + "".join("  " * n + "- \n" for n in range(25)), 22),
    ],
)
def test_deep_nesting_is_refused_with_the_line(fmt: str, text: str, line: int) -> None:
    with pytest.raises(ConfigFileError) as caught:
        parse(text, fmt)
    assert str(caught.value) == f"the file nests deeper than 20 levels at line {line}: a configuration file needs 9"


def test_deep_nesting_through_the_cli_is_one_line(tmp_path: Path, env: dict[str, str], cli_store: Store) -> None:
    path = write(tmp_path, "deep.json", "[" * 100_000 + "]" * 100_000)
    result = cli(env, "config", "import", str(path))
    assert (result.returncode, result.stderr.strip()) == (
        1,
        f"{path}: the file nests deeper than 20 levels at line 1: a configuration file needs 9",
    )


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_a_number_of_thousands_of_digits_is_refused_with_its_path(fmt: str) -> None:
    data = config(site())
    data["sites"][0]["meters"][0]["sources"][0]["capacity_kw"] = 7
    text = dump(data, fmt).replace(" 7", " " + "7" * 5000)
    with pytest.raises(ConfigFileError) as caught:
        parse(text, fmt)
    assert str(caught.value) == (
        "sites[0].meters[0].sources[0].capacity_kw: a number of 5000 digits is not a plausible value (at most 100)"
    )


def test_a_huge_number_through_the_cli_names_the_field(tmp_path: Path, env: dict[str, str], cli_store: Store) -> None:
    path = write(tmp_path, "huge.json", '{"version": 1, "sites": [{"name": "A", "latitude": ' + "1" * 5000 + "}]}")
    result = cli(env, "config", "import", str(path))
    assert (result.returncode, result.stderr.strip()) == (
        1,
        f"{path}: sites[0].latitude: a number of 5000 digits is not a plausible value (at most 100)",
    )


# --- validation comes before the write transaction --------------------------------------------------------------


def test_while_another_program_reads_the_file_a_bad_import_still_reports_its_problems(
    tmp_path: Path, env: dict[str, str], cli_store: Store
) -> None:
    """A read-only holder (an analyst's duckdb session) lets readers in but no writer. An import that validates
    before it writes reports the file's problems, the quota plan's included (which needs the stored keys); only a
    valid file waits for the write lock, and then writes nothing."""
    env["DATACONN_LOCK_TIMEOUT_S"] = "1"
    box = SecretBox(read_key_file(Path(env["DATACONN_KEY_FILE"])))
    _stored_solaredge_source(cli_store, box, key="shared-key-1")
    invalid = write(tmp_path, "invalid.json", json.dumps(config(site(latitude=123))))
    same_key = _solaredge(system_id="778", every=UpdateFrequency.MIN30, credentials={"api_key": "shared-key-1"})
    over_quota = write(tmp_path, "quota.json", json.dumps(config(site("Plant B", sources=[same_key]))))
    valid = write(tmp_path, "valid.json", json.dumps(config(site("Plant C"))))
    before = state(cli_store)
    with held(cli_store.path, read_only=True):
        bad = cli(env, "config", "import", str(invalid))
        quota = cli(env, "config", "import", str(over_quota))
        good = cli(env, "config", "import", str(valid))
    assert (bad.returncode, bad.stderr.splitlines()) == (
        1,
        ["sites[0].latitude: Latitude must be at most 90", "Nothing was imported."],
    )
    assert (quota.returncode, quota.stderr.splitlines()) == (
        1,
        [
            "sites[0].meters[0].sources[0].api.update_frequency: SolarEdge (V2) allows 2,000 calls a month for this"
            " API key, shared by 2 sites; this schedule needs 2,232; every 1 hour fits: 1,488 calls/month of 2,000.",
            "Nothing was imported.",
        ],
    )
    assert good.returncode == 1 and "is busy" in good.stderr
    assert state(cli_store) == before


def _solaredge(*, system_id: str, every: UpdateFrequency, credentials: dict[str, Any]) -> dict[str, Any]:
    api = {"enabled": True, "provider": "solaredge", "system_id": system_id, "update_frequency": every.value}
    return site()["meters"][0]["sources"][0] | {"name": "Roof", "api": api, "credentials": credentials}


def _stored_solaredge_source(store: Store, box: SecretBox, *, key: str) -> None:
    """A saved SolarEdge V2 source polled hourly (what one key's 2,000 calls a month allow), its key stored."""
    created = cat.create_site(store, SiteIn(name="Keyed", latitude=50, longitude=4, timezone="Europe/Brussels"))
    meter = cat.create_meter(store, created.id, MeterIn(name="PV", category=Category.PROD))
    api = ApiSettings(
        use_api=True, api_provider=Provider.SOLAREDGE, system_id="777", update_frequency=UpdateFrequency.HOUR1
    )
    source = SourceIn(
        name="Roof", source_type="solar", capacity_kw=5, carbon_intensity_g_per_kwh=0, cost_per_mwh=0, api=api
    )
    with store.transaction() as con:
        put_secret(con, box, cat.insert_source(con, meter.id, source), "api_key", key)


class RacingStore(Store):
    """Another writer (another tab, another import, the collector) gets in just before each of the next `races`
    write transactions: between the import's checks and its writes. `change(store, race)` is what it writes."""

    def __init__(self, path: Path, races: int, change: Callable[[Store, int], None]) -> None:
        super().__init__(path)
        self.races, self.change = races, change

    @contextlib.contextmanager
    def transaction(self, *, timeout_s: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        if self.races:
            self.races -= 1
            self.change(Store(self.path), self.races)
        with super().transaction(timeout_s=timeout_s) as con:
            yield con


def _create_plant_a(store: Store, race: int) -> None:
    name = f"plant a{' ' + str(race) if race else ''}"
    cat.create_site(store, SiteIn(name=name, latitude=1, longitude=1, timezone="UTC"))


def test_a_change_between_the_checks_and_the_writes_makes_the_import_check_again(store: Store, box: SecretBox) -> None:
    racing = RacingStore(store.path, 1, _create_plant_a)
    report = import_config(racing, box, config(site("Plant A")), environ={})
    # Checked again, the file's "Plant A" is the site created meanwhile: updated, not created a second time.
    assert (report.sites.created, report.sites.updated) == (0, 1)
    assert [(s.name, s.latitude) for s in cat.load_catalog(store).sites] == [("Plant A", 50.5)]


def test_an_import_gives_up_when_the_configuration_keeps_changing(store: Store, box: SecretBox) -> None:
    racing = RacingStore(store.path, MAX_ATTEMPTS, _create_plant_a)
    with pytest.raises(ConfigImportError) as caught:
        import_config(racing, box, config(site("Plant Z")), environ={})
    assert caught.value.errors == [
        f"the stored configuration changed {MAX_ATTEMPTS} times while the file was being checked (someone is editing"
        " it, or another import runs): try again in a moment"
    ]
    assert sorted(s.name for s in cat.load_catalog(store).sites) == ["plant a", "plant a 1", "plant a 2"]


def test_the_collector_refreshing_oauth_tokens_meanwhile_does_not_count_as_a_change(
    store: Store, box: SecretBox
) -> None:
    import_config(store, box, config(site("Plant A")), environ={})
    (source,) = cat.load_catalog(store).sources
    with store.transaction() as con:
        put_secret(con, box, source.id, "oauth_tokens", "tokens-0")

    def refresh(other: Store, race: int) -> None:
        with other.transaction() as con:
            put_secret(con, box, source.id, "oauth_tokens", f"tokens-{race + 1}")

    racing = RacingStore(store.path, MAX_ATTEMPTS, refresh)
    report = import_config(racing, box, config(site("Plant A", latitude=51)), environ={})
    assert (report.sites.updated, racing.races) == (1, MAX_ATTEMPTS - 1)  # written at the first attempt


# --- names compared as people read them -------------------------------------------------------------------------


FULLWIDTH = "\uff24\uff45\uff4d\uff4f \uff32\uff4f\uff4f\uff46\uff54\uff4f\uff50"  # "Demo Rooftop" in fullwidth letters
DECOMPOSED = "Cafe\u0301"  # "e" and a combining acute accent
COMPOSED = "Caf\u00e9"


def test_names_are_stored_in_their_normal_form(store: Store) -> None:
    created = cat.create_site(store, SiteIn(name=FULLWIDTH, latitude=1, longitude=1, timezone="UTC"))
    assert created.name == "Demo Rooftop"
    assert [s.name for s in cat.load_catalog(store).sites] == ["Demo Rooftop"]
    assert SiteIn(name=DECOMPOSED, latitude=1, longitude=1, timezone="UTC").name == COMPOSED


def test_lookalike_names_are_duplicates_in_a_file(store: Store, box: SecretBox) -> None:
    data = config(site("Demo Rooftop"), site(FULLWIDTH), site(COMPOSED), site(DECOMPOSED.upper()))
    with pytest.raises(ConfigImportError) as caught:
        import_config(store, box, data, environ={})
    assert caught.value.errors == [
        "sites[1].name: Site Name: 'Demo Rooftop' duplicates the name of sites[0]",
        "sites[3].name: Site Name: 'CAFÉ' duplicates the name of sites[2]",
    ]
    assert state(store)["sites"] == []


def test_a_file_matches_stored_rows_whatever_form_their_names_were_stored_in(store: Store, box: SecretBox) -> None:
    """Rows written before names were normalised may hold another form: both sides are compared normalised."""
    with store.transaction() as con:
        con.execute(
            "INSERT INTO sites (name, latitude, longitude, timezone) VALUES (?, 1, 1, 'UTC'), (?, 1, 1, 'UTC')",
            [FULLWIDTH, DECOMPOSED],
        )
    report = import_config(store, box, config(site("demo rooftop"), site(COMPOSED)), environ={})
    assert (report.sites.created, report.sites.updated) == (0, 2)
    assert sorted(s.name for s in cat.load_catalog(store).sites) == ["Café", "demo rooftop"]


def test_the_catalog_refuses_lookalike_names(store: Store, box: SecretBox) -> None:
    with store.transaction() as con:  # stored un-normalised, as an older version could have
        con.execute("INSERT INTO sites (name, latitude, longitude, timezone) VALUES (?, 1, 1, 'UTC')", [FULLWIDTH])
    with pytest.raises(cat.InvalidInput) as caught:
        cat.create_site(store, SiteIn(name="DEMO ROOFTOP", latitude=1, longitude=1, timezone="UTC"))
    assert caught.value.errors == {"name": "a site named 'DEMO ROOFTOP' already exists"}
    site_id = cat.load_catalog(store).sites[0].id
    meter = cat.create_meter(store, site_id, MeterIn(name=COMPOSED, category=Category.PROD))
    with pytest.raises(cat.InvalidInput):
        cat.create_meter(store, site_id, MeterIn(name=DECOMPOSED, category=Category.CONS))
    drafts = [new_draft("new-1", meter.id, Category.PROD), new_draft("new-2", meter.id, Category.PROD)]
    drafts[0].values |= {"name": "Array", "capacity_kw": "5"}
    drafts[1].values |= {"name": "\uff21\uff52\uff52\uff41\uff59", "capacity_kw": "5"}  # "Array", fullwidth
    with pytest.raises(SaveRejected) as rejected:
        save_connections(store, box, site_id, drafts, set())
    assert rejected.value.errors == {"new-2": {"name": "another source of this meter is already named 'Array'"}}


def test_an_export_has_no_aliases_even_for_shared_values(tmp_path: Path, store: Store, box: SecretBox) -> None:
    shared = site()["meters"][0]["sources"][0]
    data = config(site("A", sources=[shared]), site("B", sources=[shared]))
    assert parse(dump(data, "yaml"), "yaml") == data
    import_config(store, box, data, environ={})
    assert parse(dump(export_config(store), "yaml"), "yaml") == export_config(store)


def _stored_by_an_older_version(con: duckdb.DuckDBPyConnection, table: str, rows: list[Any]) -> list[int]:
    """Rows inserted as an older version stored them (names neither normalised nor compared as people read them)."""
    columns = {"sites": "name, latitude, longitude, timezone", "meters": "site_id, name, category"}
    columns["energy_sources"] = (
        "meter_id, name, source_type, capacity_kw, carbon_intensity_g_per_kwh, cost_per_mwh, metadata"
    )
    marks = ", ".join("?" for _ in columns[table].split(", "))
    sql = f"INSERT INTO {table} ({columns[table]}) VALUES ({marks}) RETURNING id"
    return [int(con.execute(sql, row).fetchall()[0][0]) for row in rows]


def test_a_file_row_matching_two_stored_lookalikes_is_refused_naming_both(store: Store, box: SecretBox) -> None:
    """Lookalike names stored by an older version: a file's row that matches two of them cannot say which it
    means, so the import names both (at each level, with the page that renames or deletes them) and writes nothing;
    the rows below it are not matched to anything, so no stored credential is reported missing."""
    place = [1.0, 1.0, "UTC"]
    metadata = ApiSettings().model_dump_json()
    with store.transaction() as con:
        demo = _stored_by_an_older_version(con, "sites", [["Demo Rooftop", *place], [FULLWIDTH, *place]])
        plant, plant_b = _stored_by_an_older_version(con, "sites", [["Plant", *place], ["Plant B", *place]])
        cafes = _stored_by_an_older_version(con, "meters", [[plant, COMPOSED, "PROD"], [plant, DECOMPOSED, "PROD"]])
        (pv,) = _stored_by_an_older_version(con, "meters", [[plant_b, "PV", "PROD"]])
        arrays = [[pv, name, "solar", 1, 0, 0, metadata] for name in ("Array", "\uff21\uff52\uff52\uff41\uff59")]
        array_ids = _stored_by_an_older_version(con, "energy_sources", arrays)
    keyless = _solaredge(system_id="5", every=UpdateFrequency.HOUR1, credentials={})  # would need a stored key
    cafe = site("Plant")
    cafe["meters"][0]["name"] = COMPOSED
    data = config(site("demo rooftop", sources=[keyless]), cafe, site("Plant B"))
    before = state(store)
    with pytest.raises(ConfigImportError) as caught:
        import_config(store, box, data, environ={})
    # Named as the pages show them (in their normal form, so told apart by their ids).
    assert caught.value.errors == [
        f"sites[0].name: Site Name matches 2 stored sites whose names read the same, 'Demo Rooftop' (id {demo[0]})"
        f" and 'Demo Rooftop' (id {demo[1]}): rename or delete one of them on the Control Room page, then import"
        " again",
        f"sites[1].meters[0].name: Meter Name matches 2 stored meters of this site whose names read the same,"
        f" 'Café' (id {cafes[0]}) and 'Café' (id {cafes[1]}): rename or delete one of them on the Control Room page,"
        " then import again",
        "sites[2].meters[0].sources[0].name: Source Name matches 2 stored sources of this meter whose names read the"
        f" same, 'Array' (id {array_ids[0]}) and 'Array' (id {array_ids[1]}): rename or delete one of them on the Data"
        " Connections page, then import again",
    ]
    assert state(store) == before
    # The database's own export names each lookalike twice: the duplicates are reported, the lookalikes once.
    with pytest.raises(ConfigImportError) as caught:
        import_config(store, box, export_config(store), environ={})
    assert [error.split(", ")[0] for error in caught.value.errors] == [
        "sites[0].name: Site Name matches 2 stored sites whose names read the same",
        "sites[1].name: Site Name: 'Demo Rooftop' duplicates the name of sites[0]",
        "sites[2].meters[0].name: Meter Name matches 2 stored meters of this site whose names read the same",
        "sites[2].meters[1].name: Meter Name: 'Café' duplicates the name of sites[2].meters[0]",
        "sites[3].meters[0].sources[0].name: Source Name matches 2 stored sources of this meter whose names read"
        " the same",
        "sites[3].meters[0].sources[1].name: Source Name: 'Array' duplicates the name of sites[3].meters[0].sources[0]",
    ]
    # Lookalikes the file does not name are no obstacle; once one of them is renamed, the file imports.
    assert import_config(store, box, config(site("Elsewhere")), environ={}).sites.created == 1
    cat.update_site(store, demo[1], SiteIn(name="Demo Rooftop (old)", latitude=1, longitude=1, timezone="UTC"))
    report = import_config(store, box, config(site("demo rooftop")), environ={})
    assert (report.sites.created, report.sites.updated) == (0, 1)
    assert cat.load_catalog(store).site(demo[0]).name == "demo rooftop"
