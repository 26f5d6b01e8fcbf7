"""Faults of the encryption keys (issue 10, point 2): a key file deleted, garbled or replaced while credentials are
stored, on real DuckDB files, real key files and real processes against a fake vendor.

What must hold: no new key is ever made while credentials are stored (and nothing is overwritten); the collector
and the dashboard say so in one line naming the key file and DATACONN_SECRET_KEYS; the collector goes on with the
sources that need no key; restoring the key resumes the others without any configuration change;
`forget-credentials` removes exactly the credentials that cannot be decrypted.
"""

from __future__ import annotations

import logging
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core import catalog as cat
from core.config import load_settings
from core.connections import new_draft, save_connections
from core.crypto import SecretBox, SecretsError, generate_key, read_key_file
from core.models import ApiSettings, Category, MeterIn, Provider, SiteIn, SourceIn
from core.runtime import Runtime, open_runtime
from core.secret_store import key_notice, put_secret
from core.source_health import SourceState, read_states
from core.store import Store
from jobs.collector import collection_for
from tests.fakes import solaredge_v1
from tests.fakes.server import serve
from tests.processes import run_module

ROOT = Path(__file__).resolve().parents[1]
API_KEY = solaredge_v1.SANDBOX_API_KEY


@pytest.fixture
def vendor(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """`app_env` (demo site fed by the simulator, which needs no key) with the fake SolarEdge v1 vendor running."""
    with serve(solaredge_v1.create_app(solaredge_v1.sandbox_state())) as url:
        monkeypatch.setenv("DATACONN_SOLAREDGE_V1_BASE_URL", url)
        yield app_env


def key_file() -> Path:
    return load_settings().key_file


def add_roof(runtime: Runtime) -> int:
    """A SolarEdge source whose API key is stored (encrypted under the runtime's key); returns its id."""
    site = cat.create_site(runtime.store, SiteIn(name="B", latitude=50.8, longitude=4.3, timezone="Europe/Brussels"))
    meter = cat.create_meter(runtime.store, site.id, MeterIn(name="PV", category=Category.PROD))
    draft = new_draft("pv", meter.id, Category.PROD)
    draft.values |= {"name": "Roof", "capacity_kw": "8", "use_api": True, "api_provider": "solaredge_v1"}
    draft.values["system_id"] = solaredge_v1.SANDBOX_SITE_ID
    draft.secrets = {"api_key": API_KEY}
    save_connections(runtime.store, runtime.box, site.id, [draft], set())
    return next(s.id for s in cat.load_catalog(runtime.store).sources if s.name == "Roof")


def ciphertexts(store: Store) -> list[tuple[int, str, str]]:
    with store.connect(read_only=True) as con:
        rows = con.sql("SELECT source_id, name, ciphertext FROM source_secrets ORDER BY ALL").fetchall()
    return [(int(source_id), name, token) for source_id, name, token in rows]


def readings_of(store: Store, source_id: int) -> int:
    with store.connect(read_only=True) as con:
        return int(con.execute("SELECT count(*) FROM readings WHERE source_id = ?", [source_id]).fetchall()[0][0])


def collector_once() -> subprocess.CompletedProcess[str]:
    return run_module("jobs.collector", "--once")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module("jobs.cli", *args)


def states(store: Store) -> dict[int, SourceState]:
    with store.connect(read_only=True) as con:
        return read_states(con)


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " WARNING " in line]


def assert_names_the_way_out(line: str, path: Path) -> None:
    assert str(path) in line and "DATACONN_SECRET_KEYS" in line, line
    assert "Traceback" not in line and "unexpected error" not in line and "\n" not in line.strip()


# --- a deleted key file ----------------------------------------------------------------------------------------


def test_deleted_key_file_makes_no_new_key_and_restoring_it_resumes_the_source(vendor: Path) -> None:
    runtime = open_runtime(load_settings())
    roof = add_roof(runtime)
    path = key_file()
    saved = path.read_bytes()
    stored = ciphertexts(runtime.store)
    path.unlink()

    lost = collector_once()
    assert lost.returncode == 0, lost.stderr
    (line,) = warnings_in(lost.stderr)  # one line, however many passes or vendor sites
    assert "Stored credentials of 1 source(s) cannot be decrypted" in line and "is missing" in line
    assert "python -m jobs.cli forget-credentials" in line
    assert_names_the_way_out(line, path)
    assert "1 auth_error, 1 ok" in lost.stdout  # the simulator's demo site goes on being collected
    assert not path.exists() and ciphertexts(runtime.store) == stored
    assert API_KEY not in lost.stderr
    state = states(runtime.store)[roof]
    assert not state.stopped  # our key, not the vendor's refusal: no "stopped until its settings change"
    assert readings_of(runtime.store, roof) == 0

    path.write_bytes(saved)  # restored from a backup; no configuration change
    back = collector_once()
    assert back.returncode == 0, back.stderr
    assert not warnings_in(back.stderr) and "2 ok" in back.stdout, back.stderr
    assert readings_of(runtime.store, roof) > 0
    assert ciphertexts(runtime.store) == stored


def test_a_running_collector_notices_the_restored_key_and_says_it_once(
    vendor: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = open_runtime(load_settings())
    roof = add_roof(runtime)
    path = key_file()
    saved = path.read_bytes()
    path.unlink()
    collection = collection_for(open_runtime(load_settings(), prepare=False))  # started with the key missing
    caplog.set_level(logging.INFO, logger="core.collection")

    for _ in range(3):
        report = collection.run(datetime.now(UTC))
        assert sorted(r.outcome for r in report.results) == ["auth_error", "ok"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot be decrypted" in warnings[0], warnings
    assert not path.exists()

    path.write_bytes(saved)
    report = collection.run(datetime.now(UTC))
    assert [r.outcome for r in report.results] == ["ok", "ok"]
    assert readings_of(runtime.store, roof) > 0
    assert any("can be decrypted again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


def test_without_a_key_new_credentials_are_refused_not_encrypted_under_a_new_key(app_env: Path) -> None:
    runtime = open_runtime(load_settings())
    add_roof(runtime)
    path = key_file()
    path.unlink()
    stored = ciphertexts(runtime.store)

    restarted = open_runtime(load_settings())
    assert not path.exists()
    site = cat.create_site(restarted.store, SiteIn(name="C", latitude=50, longitude=4, timezone="Europe/Brussels"))
    meter = cat.create_meter(restarted.store, site.id, MeterIn(name="PV", category=Category.PROD))
    draft = new_draft("pv", meter.id, Category.PROD)
    draft.values |= {"name": "Shed", "capacity_kw": "3", "use_api": True, "api_provider": "solaredge_v1"}
    draft.values["system_id"] = "42"
    draft.secrets = {"api_key": "SHEDKEY0000000000000000000000000"}
    with pytest.raises(SecretsError) as refused:
        save_connections(restarted.store, restarted.box, site.id, [draft], set())
    assert "Credentials cannot be saved" in str(refused.value)
    assert_names_the_way_out(str(refused.value), path)
    assert ciphertexts(restarted.store) == stored and not path.exists()


def test_a_key_file_is_created_only_while_no_credential_is_stored(app_env: Path) -> None:
    path = key_file()
    runtime = open_runtime(load_settings())  # a new database: a new key
    assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.unlink()
    open_runtime(load_settings())  # tables exist, no credential: a new key is harmless
    assert path.exists()
    add_roof(open_runtime(load_settings()))
    path.unlink()
    open_runtime(load_settings())
    assert not path.exists()
    assert key_notice(runtime.store, runtime.box) is not None


# --- a garbled or unreadable key file ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\x00\xff\xfe\x80binary", "holds binary data, not keys"),
        (b"this is not a key\n", "is not a valid Fernet key"),
        (b"\n\n", "holds no key"),
        (None, "does not hold the key they were encrypted with"),  # a valid key, but another one
    ],
)
def test_a_garbled_key_file_is_one_line_naming_it_and_is_left_as_it_is(
    app_env: Path, content: bytes | None, says: str
) -> None:
    runtime = open_runtime(load_settings())
    add_roof(runtime)
    path = key_file()
    garbled = content if content is not None else f"{generate_key()}\n".encode()
    path.write_bytes(garbled)
    stored = ciphertexts(runtime.store)

    restarted = open_runtime(load_settings())
    notice = key_notice(restarted.store, restarted.box)
    assert notice is not None and says in notice
    assert_names_the_way_out(notice, path)
    assert path.read_bytes() == garbled and ciphertexts(restarted.store) == stored


def test_a_directory_at_the_key_path_is_one_line(app_env: Path) -> None:
    runtime = open_runtime(load_settings())
    add_roof(runtime)
    path = key_file()
    path.unlink()
    path.mkdir()
    notice = key_notice(runtime.store, open_runtime(load_settings()).box)
    assert notice is not None and "cannot be read (is a directory)" in notice
    assert_names_the_way_out(notice, path)
    assert path.is_dir()


def test_cli_commands_on_a_binary_key_file_fail_in_one_line(app_env: Path) -> None:
    add_roof(open_runtime(load_settings()))
    path = key_file()
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    for args in (["rotate-keys"], ["forget-credentials", "--yes"]):
        result = cli(*args)
        assert result.returncode == 1, result.stderr
        (line,) = result.stderr.splitlines()
        assert "holds binary data, not keys" in line and str(path) in line
        assert "Traceback" not in result.stderr and "unexpected error" not in result.stderr
    assert path.read_bytes() == b"\x89PNG\r\n\x1a\n\x00\x00"
    assert len(ciphertexts(open_runtime(load_settings(), prepare=False).store)) == 1


def test_wrong_environment_keys_name_the_variable(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    add_roof(open_runtime(load_settings()))
    monkeypatch.setenv("DATACONN_SECRET_KEYS", generate_key())
    runtime = open_runtime(load_settings())
    notice = key_notice(runtime.store, runtime.box)
    assert notice is not None and "DATACONN_SECRET_KEYS does not hold the key they were encrypted with" in notice
    monkeypatch.setenv("DATACONN_SECRET_KEYS", "not-a-key")  # an invalid setting: refused at start, as any other
    with pytest.raises(SecretsError) as refused:
        open_runtime(load_settings())
    assert "Key 1 in DATACONN_SECRET_KEYS is not a valid Fernet key" in str(refused.value)
    assert "not-a-key" not in str(refused.value)


# --- key file privacy -------------------------------------------------------------------------------------------


def test_a_key_file_readable_by_others_is_tightened_at_start(app_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    open_runtime(load_settings())
    path = key_file()
    path.chmod(0o644)
    caplog.set_level(logging.INFO)
    open_runtime(load_settings())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (line,) = [r for r in caplog.records if str(path) in r.getMessage()]
    assert line.levelno == logging.INFO


# --- forget-credentials -----------------------------------------------------------------------------------------


def test_forget_credentials_lists_then_removes_only_what_cannot_be_decrypted(app_env: Path) -> None:
    runtime = open_runtime(load_settings())
    roof = add_roof(runtime)
    site = cat.create_site(runtime.store, SiteIn(name="Old", latitude=1, longitude=1, timezone="UTC"))
    meter = cat.create_meter(runtime.store, site.id, MeterIn(name="PV", category=Category.PROD))
    api = ApiSettings(use_api=True, api_provider=Provider.SOLAREDGE, system_id="1")
    source = SourceIn(
        name="Orphan", source_type="solar", capacity_kw=5, carbon_intensity_g_per_kwh=0, cost_per_mwh=0, api=api
    )
    with runtime.store.transaction() as con:  # a credential saved under a key nobody has any more
        orphan = cat.insert_source(con, meter.id, source)
        put_secret(con, SecretBox([generate_key()]), orphan, "api_key", "lost-value-123")
    before = ciphertexts(runtime.store)

    preview = cli("forget-credentials")
    assert preview.returncode == 0, preview.stderr
    assert f'source {orphan} "Orphan" (site "Old"): api_key' in preview.stdout
    assert '"Roof"' not in preview.stdout and "Nothing was removed" in preview.stdout
    assert ciphertexts(runtime.store) == before

    done = cli("forget-credentials", "--yes")
    assert done.returncode == 0, done.stderr
    assert "Removed 1 stored credential(s) of 1 source(s)" in done.stdout
    assert ciphertexts(runtime.store) == [row for row in before if row[0] == roof]
    assert "lost-value-123" not in done.stdout + done.stderr
    assert "nothing to remove" in cli("forget-credentials").stdout


def test_forget_credentials_with_the_key_file_gone_removes_them_all_and_then_a_key_is_made(app_env: Path) -> None:
    runtime = open_runtime(load_settings())
    add_roof(runtime)
    path = key_file()
    path.unlink()
    done = cli("forget-credentials", "--yes")
    assert done.returncode == 0, done.stderr
    assert ciphertexts(runtime.store) == []
    assert path.exists() and f"Created a new key file {path}" in done.stdout
    assert read_key_file(path)  # a usable key, owner-only
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- the dashboard ----------------------------------------------------------------------------------------------


def test_the_dashboard_shows_the_banner_and_drops_it_once_the_key_is_back(app_env: Path) -> None:
    runtime = open_runtime(load_settings())
    add_roof(runtime)
    path = key_file()
    saved = path.read_bytes()
    path.unlink()

    banners = key_banners()
    assert len(banners) == 1
    assert_names_the_way_out(banners[0], path)
    assert "forget-credentials" in banners[0] and not path.exists()

    path.write_bytes(saved)
    assert key_banners() == []  # the same dashboard process (its runtime is cached): no restart needed


def key_banners() -> list[str]:
    """The key banners of a fresh page load of the app (a new session; the process's caches are kept)."""
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    app.run()
    assert not app.exception
    assert [c.value for c in app.sidebar.caption][:1] == ["Energy Data Connections"]  # app.py ran
    return [e.value for e in app.error if "cannot be decrypted" in e.value]


def test_a_stop_recorded_for_unreadable_credentials_by_an_older_version_clears_by_itself(vendor: Path) -> None:
    runtime = open_runtime(load_settings())
    roof = add_roof(runtime)
    with runtime.store.transaction() as con:  # what the collector wrote before this fix, after the key was lost
        con.execute(
            "INSERT INTO source_state (source_id, stopped_reason, updated_at) VALUES (?, ?, now())",
            [roof, "The stored credentials A stored credential cannot be decrypted with the configured keys."],
        )
    report = collection_for(runtime).run(datetime.now(UTC))
    assert [r.outcome for r in report.results] == ["ok", "ok"] and not report.skipped
    assert readings_of(runtime.store, roof) > 0
