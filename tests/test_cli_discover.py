"""`python -m jobs.cli discover`, run as a real subprocess against the fake SolarEdge V2 on loopback: the file it
writes is one `config import` takes, the key stays out of it, and refusals exit 1 with one message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from core.catalog import catalog as cat
from core.store.store import Store
from tests.fakes import solaredge_v2 as se
from tests.fakes.server import free_port, serve
from tests.processes import cli, operator_env

KEY = se.SANDBOX_API_KEY


@pytest.fixture
def fleet() -> Iterator[tuple[se.FakeState, str]]:
    state = se.FakeState(sites=se.fleet_sites(50))
    with serve(se.create_app(state)) as url:
        yield state, f"{url}/v2"


@pytest.fixture
def env(tmp_path: Path, fleet: tuple[se.FakeState, str]) -> dict[str, str]:
    settings = operator_env(tmp_path / "dataconn.duckdb", tmp_path / "secret.key", DATACONN_SOLAREDGE_BASE_URL=fleet[1])
    assert cli(settings, "init").returncode == 0
    return settings


def test_discover_lists_the_account_then_writes_a_file_config_import_takes(
    tmp_path: Path, env: dict[str, str], fleet: tuple[se.FakeState, str]
) -> None:
    env["SOLAREDGE_API_KEY"] = KEY
    listing = cli(env, "discover", "solaredge")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.startswith("50 site(s); 0 configured already")
    assert "Fleet Site 050" in listing.stdout and "Europe/Brussels" in listing.stdout

    out = tmp_path / "fleet.yaml"
    wanted = [arg for site in fleet[0].sites[:8] for arg in ("--site", str(site.site_id))]
    written = cli(env, "discover", "solaredge", *wanted, "--output", str(out))
    assert written.returncode == 0, written.stderr
    assert "Wrote 8 site(s)" in written.stderr and "SOLAREDGE_API_KEY" in written.stderr
    text = out.read_text()
    assert KEY not in text
    data = yaml.safe_load(text)
    assert len(data["sites"]) == 8
    assert data["sites"][0]["meters"][0]["sources"][0]["credentials"] == {"api_key": {"env": "SOLAREDGE_API_KEY"}}

    imported = cli(env, "config", "import", str(out))
    assert imported.returncode == 0, imported.stderr
    assert "sites:   8 created" in imported.stdout
    catalog = cat.load_catalog(Store(Path(env["DATACONN_DB_PATH"])))
    assert len(catalog.sites) == 8 and {s.api.system_id for s in catalog.sources} == {
        w for w in wanted if w != "--site"
    }

    # Again: the eight are skipped, listed as configured.
    again = cli(env, "discover", "solaredge", *wanted, "--output", str(tmp_path / "again.yaml"))
    assert (
        again.returncode == 1 and again.stderr.strip() == "Every chosen site is configured already: nothing to write."
    )
    assert "50 site(s); 8 configured already" in again.stdout
    assert not (tmp_path / "again.yaml").exists()


def test_reported_channels_follow_each_sites_devices(tmp_path: Path, env: dict[str, str]) -> None:
    env["SOLAREDGE_API_KEY"] = KEY
    out = tmp_path / "reported.json"
    sites = ("4000001", "4000002", "4000004")  # meters and battery; PV only; meters only
    args = [arg for site in sites for arg in ("--site", site)]
    written = cli(env, "discover", "solaredge", *args, "--channels", "reported", "--output", str(out))
    assert written.returncode == 0, written.stderr
    data = yaml.safe_load(out.read_text())
    meters = {site["name"]: [m["name"] for m in site["meters"]] for site in data["sites"]}
    assert meters == {
        "Fleet Site 001": ["Solar", "Consumption", "Injection", "Battery"],
        "Fleet Site 002": ["Solar"],
        "Fleet Site 004": ["Solar", "Consumption", "Injection"],
    }


def test_a_selection_beyond_the_budget_writes_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    env["SOLAREDGE_API_KEY"] = KEY
    out = tmp_path / "all.json"
    refused = cli(env, "discover", "solaredge", "--channels", "meters,battery", "--output", str(out))
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "allows 2,000 calls a month" in lines[0]
    assert not out.exists()


def test_a_bad_key_a_missing_key_or_no_vendor_is_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    missing = cli(env, "discover", "solaredge")
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        "Set SOLAREDGE_API_KEY to the SolarEdge V2 API key of the account.",
    )
    env["SOLAREDGE_API_KEY"] = "not-the-key"
    bad = cli(env, "discover", "solaredge")
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert "rejected the API key" in bad.stderr and "not-the-key" not in bad.stderr and "Traceback" not in bad.stderr
    env["SOLAREDGE_API_KEY"] = KEY
    env["DATACONN_SOLAREDGE_BASE_URL"] = f"http://127.0.0.1:{free_port()}/v2"
    offline = cli(env, "discover", "solaredge")
    assert offline.returncode == 1 and offline.stderr.startswith("Could not list the sites of this account.")
    assert len(offline.stderr.strip().splitlines()) == 1
    enphase = cli(env, "discover", "enphase")
    assert enphase.returncode == 1 and "--source" in enphase.stderr


def test_discover_enphase_uses_an_authorised_sources_application(tmp_path: Path) -> None:
    from core.config import Settings
    from core.runtime import open_runtime
    from tests.fakes import enphase
    from tests.test_account_import import enphase_source

    fake = enphase.FakeState(systems=enphase.sandbox_systems() | enphase.fleet_systems(3))
    with serve(enphase.create_app(fake)) as url:
        urls = {"DATACONN_ENPHASE_BASE_URL": f"{url}/api/v4", "DATACONN_ENPHASE_AUTH_URL": f"{url}/oauth"}
        env = operator_env(tmp_path / "db.duckdb", tmp_path / "secret.key", DATACONN_ENPHASE_PLAN="kilowatt", **urls)
        assert cli(env, "init").returncode == 0
        settings = Settings(db_path=tmp_path / "db.duckdb", key_file=tmp_path / "secret.key", **_lower(urls))
        runtime = open_runtime(settings, prepare=False)
        source_id = enphase_source(runtime.store, runtime.box, authorised=True, settings=settings, fake=fake)

        out = tmp_path / "systems.yaml"
        written = cli(env, "discover", "enphase", "--source", str(source_id), "--output", str(out))
        assert written.returncode == 0, written.stderr
        assert "5 site(s); 1 configured already" in written.stdout
        text = out.read_text()
        assert enphase.SANDBOX_CLIENT_SECRET not in text and enphase.SANDBOX_API_KEY not in text
        data = yaml.safe_load(text)
        assert len(data["sites"]) == 4
        first = data["sites"][0]["meters"][0]["sources"][0]
        assert "credentials" not in first  # the authorised source's application and grant are shared, not copied
        holder = cat.load_catalog(runtime.store).names_of(source_id)
        assert first["api"]["credentials_from"] == holder
        imported = cli(env, "config", "import", str(out))  # no credential to give
        assert imported.returncode == 0, imported.stderr
        assert "sites:   4 created" in imported.stdout


def _lower(settings: dict[str, str]) -> dict[str, str]:
    return {name.removeprefix("DATACONN_").lower(): value for name, value in settings.items()}
