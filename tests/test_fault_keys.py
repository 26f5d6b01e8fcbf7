"""Faults of the encryption keys (issue 10, point 2): a key file deleted, garbled or replaced while credentials are
stored, on real DuckDB files, real key files and real processes against a fake vendor.

What must hold: no new key is ever made while credentials are stored (and nothing is overwritten); the collector
and the dashboard say so in one line naming the key file and DATACONN_SECRET_KEYS; the collector goes on with the
sources that need no key; restoring the key resumes the others without any configuration change;
`forget-credentials` removes exactly the credentials that cannot be decrypted.

Each command runs once as a real process (`python -m ...`) as the end-to-end check; the other checks of its messages
call `jobs.cli.main(argv)` in this process, which is the same code without a second of interpreter start-up.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.catalog import catalog as cat
from core.catalog.connections import new_draft, save_connections
from core.config import load_settings
from core.models import ApiSettings, Category, MeterIn, Provider, SiteIn, SourceIn
from core.runtime import Runtime, open_runtime
from core.store import schema
from core.store.crypto import SecretBox, SecretsError, generate_key, read_key_file
from core.store.secret_store import KeyNoticeCache, key_notice, put_secret
from core.store.source_state import SourceState, read_states
from core.store.store import Store, StoreBusy
from jobs.cli import main as cli_main
from jobs.collector import collection_for
from tests.fakes import solaredge_v1
from tests.fakes.server import serve
from tests.holder import held
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


CliRun = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli_here(capsys: pytest.CaptureFixture[str]) -> Iterator[CliRun]:
    """`python -m jobs.cli ARGS` as `main(ARGS)` in this process: its exit code, stdout and stderr. `main` sets the
    process's umask (owner-only files), so this test's umask is put back afterwards."""
    umask = os.umask(0o077)
    os.umask(umask)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()  # only this command's output
        code = cli_main(list(args))
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["jobs.cli", *args], code, out.out, out.err)

    yield run
    os.umask(umask)


def states(store: Store) -> dict[int, SourceState]:
    with store.connect(read_only=True) as con:
        return read_states(con)


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " WARNING " in line]


def assert_names_the_way_out(line: str, path: Path) -> None:
    assert str(path) in line and "DATACONN_SECRET_KEYS" in line, line
    assert "Traceback" not in line and "unexpected error" not in line and "\n" not in line.strip()


# --- a deleted key file ----------------------------------------------------------------------------------------


def test_deleted_key_file_makes_no_new_key_and_restoring_it_resumes_the_source(
    vendor: Path, caplog: pytest.LogCaptureFixture
) -> None:
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
    caplog.set_level(logging.WARNING)
    back = collection_for(open_runtime(load_settings(), prepare=False), once=True).run(datetime.now(UTC))
    assert [r.outcome for r in back.results] == ["ok", "ok"] and not back.skipped
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
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
    caplog.set_level(logging.INFO, logger="core.collect.collection")

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


def link_to_dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


@pytest.mark.parametrize(
    ("make", "kind"),
    [(os.mkfifo, "a named pipe"), (link_to_dev_zero, "a device")],
    ids=["named pipe", "symlink to /dev/zero"],
)
def test_a_key_file_that_is_not_a_file_is_one_line_at_once(
    app_env: Path, make: Callable[[Path], None], kind: str
) -> None:
    """Read, a named pipe blocks its reader for good and /dev/zero fills the memory. The commands and the collector
    (real processes, given a minute where they need a second) say so in one line and touch nothing."""
    runtime = open_runtime(load_settings())
    add_roof(runtime)
    path = key_file()
    stored = ciphertexts(runtime.store)
    path.unlink()
    make(path)
    file_type = stat.S_IFMT(os.lstat(path).st_mode)

    refused = run_module("jobs.cli", "rotate-keys", timeout=60)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [f"The key file {path} cannot be read (is {kind})."]

    once = run_module("jobs.collector", "--once", timeout=60)
    assert once.returncode == 0, once.stderr
    (line,) = warnings_in(once.stderr)
    assert f"cannot be decrypted: the key file {path} cannot be read (is {kind})" in line
    assert_names_the_way_out(line, path)
    assert "1 auth_error, 1 ok" in once.stdout  # the simulator's demo site goes on being collected

    assert stat.S_IFMT(os.lstat(path).st_mode) == file_type and ciphertexts(runtime.store) == stored


def test_cli_commands_on_a_binary_key_file_fail_in_one_line(app_env: Path, cli_here: CliRun) -> None:
    add_roof(open_runtime(load_settings()))
    path = key_file()
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    for result in (cli("rotate-keys"), cli_here("forget-credentials", "--yes")):
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


def test_forget_credentials_lists_then_removes_only_what_cannot_be_decrypted(app_env: Path, cli_here: CliRun) -> None:
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

    preview = cli_here("forget-credentials")
    assert preview.returncode == 0, preview.stderr
    assert f'source {orphan} "Orphan" (site "Old"): api_key' in preview.stdout
    assert '"Roof"' not in preview.stdout and "Nothing was removed" in preview.stdout
    assert ciphertexts(runtime.store) == before

    done = cli("forget-credentials", "--yes")
    assert done.returncode == 0, done.stderr
    assert "Removed 1 stored credential(s) of 1 source(s)" in done.stdout
    assert ciphertexts(runtime.store) == [row for row in before if row[0] == roof]
    assert "lost-value-123" not in done.stdout + done.stderr
    assert "nothing to remove" in cli_here("forget-credentials").stdout


def test_forget_credentials_with_the_key_file_gone_removes_them_all_and_then_a_key_is_made(
    app_env: Path, cli_here: CliRun
) -> None:
    runtime = open_runtime(load_settings())
    add_roof(runtime)
    path = key_file()
    path.unlink()
    done = cli_here("forget-credentials", "--yes")
    assert done.returncode == 0, done.stderr
    assert ciphertexts(runtime.store) == []
    assert path.exists() and f"Created a new key file {path}" in done.stdout
    assert read_key_file(path)  # a usable key, owner-only
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- rotate-keys ------------------------------------------------------------------------------------------------


def test_rotate_keys_says_a_rewritten_key_file_needs_no_restart(app_env: Path, cli_here: CliRun) -> None:
    runtime = open_runtime(load_settings())
    add_roof(runtime)
    for args in (["rotate-keys", "--keep-old"], ["rotate-keys"]):
        done = cli_here(*args)
        assert done.returncode == 0, done.stderr
        assert "Re-encrypted 1 secret(s) under a new key" in done.stdout and "no restart is needed" in done.stdout
        assert "Restart" not in done.stdout
        # which the running dashboard's box confirms: it reads the credential with the rewritten file, unrestarted
        assert runtime.box.decrypt(ciphertexts(runtime.store)[0][2]).get_secret_value() == API_KEY
    assert len(read_key_file(key_file())) == 1 and key_notice(runtime.store, runtime.box) is None


def test_rotate_keys_with_environment_keys_says_to_restart(
    app_env: Path, cli_here: CliRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = generate_key()
    monkeypatch.setenv("DATACONN_SECRET_KEYS", old)
    add_roof(open_runtime(load_settings()))
    alone = cli_here("rotate-keys")
    assert alone.returncode == 0, alone.stderr
    assert "set it to 'NEW,OLD' (see generate-key), restart the app and the collector, and rerun" in alone.stdout
    monkeypatch.setenv("DATACONN_SECRET_KEYS", f"{generate_key()},{old}")
    rotated = cli_here("rotate-keys")
    assert rotated.returncode == 0, rotated.stderr
    assert "remove the other keys from DATACONN_SECRET_KEYS, then restart the app and the collector" in rotated.stdout
    assert "no restart" not in alone.stdout + rotated.stdout


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


def test_the_banner_is_kept_between_page_runs_until_the_keys_change(app_env: Path) -> None:
    runtime = open_runtime(load_settings())
    add_roof(runtime)
    path = key_file()
    saved = path.read_bytes()
    path.unlink()
    notices = KeyNoticeCache(runtime.store, runtime.box, max_age_s=3600)
    lost = notices.notice()
    assert lost is not None and "is missing" in lost

    with held(runtime.store.path):  # an outside program holds the file: asking the database would fail now
        assert notices.notice(timeout_s=0.2) == lost  # same keys: the kept answer, without reading or decrypting
        path.write_bytes(saved)
        with pytest.raises(StoreBusy):
            notices.notice(timeout_s=0.2)  # the key is back: asked again at once (and the failure is not kept)
    assert notices.notice() is None

    at_once = KeyNoticeCache(runtime.store, runtime.box, max_age_s=0)  # an answer older than max_age_s is not used
    assert at_once.notice() is None
    with held(runtime.store.path), pytest.raises(StoreBusy):
        at_once.notice(timeout_s=0.2)


def test_a_database_that_cannot_be_opened_is_said_once_on_the_dashboard(app_env: Path) -> None:
    from streamlit.testing.v1 import AppTest

    database = load_settings().db_path
    database.mkdir()  # a directory where the database should be
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    app.run()
    assert not app.exception
    said = [e.value for e in app.error if str(database) in e.value]
    assert len(said) == 1 and "is a directory" in said[0], [e.value for e in app.error]
    assert not app.sidebar.error


# --- stops that older versions recorded -------------------------------------------------------------------------

KEY_STOPS_CLEARED = 8  # the schema migration that clears them
# What versions before it recorded for a source whose credentials our keys could not decrypt (core.collect.collection's
# prefix, then the decryption error of core.store.crypto), stopping it until its settings changed.
OLD_KEY_STOP = (
    "The stored credentials A stored credential cannot be decrypted with the configured keys: was a key removed"
    " before rotation finished? Re-enter the credential or restore the key."
)


def test_the_migration_clears_the_stops_older_versions_recorded_for_unreadable_credentials_and_no_other(
    vendor: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as older:  # a database of a version that knew the migrations before it
        older.setattr(schema, "MIGRATIONS", [m for m in schema.MIGRATIONS if m[0] < KEY_STOPS_CLEARED])
        older.setattr(schema, "LATEST_VERSION", KEY_STOPS_CLEARED - 1)
        runtime = open_runtime(load_settings())
        roof = add_roof(runtime)
        demo = [s.id for s in cat.load_catalog(runtime.store).sources if s.id != roof]
        # The vendor's own refusal of the demo's credentials, worded (on purpose) with the same first words.
        refused = "The stored credentials were refused by the vendor (HTTP 401): check the API key."
        with runtime.store.transaction() as con:
            con.executemany(
                "INSERT INTO source_state (source_id, stopped_reason, updated_at) VALUES (?, ?, now())",
                [[roof, OLD_KEY_STOP], *([source_id, refused] for source_id in demo)],
            )
        assert schema.schema_version(runtime.store) == KEY_STOPS_CLEARED - 1
        assert all(state.stopped for state in states(runtime.store).values())  # as that version left them

    restarted = open_runtime(load_settings())  # this version starts: the migration runs, once
    assert schema.schema_version(restarted.store) == schema.LATEST_VERSION
    after = states(restarted.store)
    assert not after[roof].stopped and all(after[source_id].stopped for source_id in demo)
    with restarted.store.connect(read_only=True) as con:
        reasons = dict(con.sql("SELECT source_id, stopped_reason FROM source_state").fetchall())
    assert reasons == {roof: None} | dict.fromkeys(demo, refused)

    report = collection_for(restarted).run(datetime.now(UTC))
    assert [r.outcome for r in report.results] == ["ok"] and report.skipped == 1  # the roof polled, the demo stopped
    assert readings_of(restarted.store, roof) > 0
