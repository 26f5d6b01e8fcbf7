"""Fault injection in what the collector reads at start: the spool and the quota journal.

Whatever a crash, a full disk or a careless hand leaves there, the collector writes every intact entry, in order,
moves the damaged item to the quarantine with a note saying why, logs it once at ERROR with its path, says so
after `--once` and on API Health, and goes on. A failure that is not the entry's (the file held, a full disk) never
quarantines it. The spool, its quarantine and the journal are their owner's only.

Entries are made as the collector makes them (`Spool.put` of a pass's results and readings) beside a real
temporary DuckDB file; each carries its own block of readings far in the past, so what each wrote can be counted.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from core.analytics.api_health import load_health
from core.analytics.api_health_display import quarantine_table, quarantine_warning
from core.collect.collection import Collection
from core.collect.pass_write import apply_entry
from core.collect.poll_result import GroupResult
from core.config import Settings, load_settings
from core.models import Category
from core.providers.base import QuotaRule
from core.providers.context import ProviderContext
from core.providers.quota import QuotaLedger
from core.runtime import open_runtime
from core.store.crypto import SecretBox
from core.store.private_files import tighten
from core.store.quarantine import NOTE
from core.store.quota_store import JOURNAL_MAX_BYTES, StoredQuotaLedger
from core.store.schema import migrate
from core.store.spool import ENTRY_FILE_MAX_BYTES, Spool, SpoolEntry
from core.store.store import Store, StoreBusy, StoreFault
from tests.crafting import SourceSpec, craft_site, open_page, readings_frame
from tests.holder import held
from tests.processes import run_module

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)
PAST = datetime(2020, 3, 1, tzinfo=UTC)  # spooled readings live here: nothing else writes 2020
ROWS = 8  # readings per spooled pass
JOURNAL = "quota-journal.jsonl"
WAIT_S = 0.1  # how long the tests that hold the database let the spool and the ledger wait for it


# --- making and damaging entries -------------------------------------------------------------------------------


def new_store(path: Path) -> tuple[Store, int]:
    """A migrated database with one source (no API: nothing polls it); returns the store and the source id."""
    store = Store(path, lock_timeout_s=1)
    migrate(store)
    _, ids = craft_site(store, [SourceSpec(Category.PROD, "solar", name="Roof")])
    return store, ids["Roof"]


def spooled_pass(spool: Spool, source_id: int, k: int) -> str:
    """The k-th pass as the collector spools it, with ROWS final readings of its own (value k), after pass k-1's."""
    readings = readings_frame(source_id, PAST + timedelta(minutes=15 * ROWS * k), [float(k)] * ROWS)
    moment = NOW + timedelta(minutes=5 * k)
    result = GroupResult([source_id], "simulator", moment, duration_ms=3.0, batch=readings)
    return spool.put({"now": moment.isoformat(), "results": [result.to_json()]}, readings)


def truncate_readings(entry: Path) -> None:
    data = (entry / "readings.parquet").read_bytes()
    (entry / "readings.parquet").write_bytes(data[: len(data) // 2])


def garble_meta(entry: Path) -> None:
    (entry / "pass.json").write_bytes(b'{"now": "2026-06-21T12:05:00+00:00", "results": [{"source_ids": [\x00\x9f')


def drop_meta_keys(entry: Path) -> None:
    meta = json.loads((entry / "pass.json").read_text())
    (entry / "pass.json").write_text(json.dumps({"now": meta["now"]}))  # valid JSON, no "results"


def empty_folder(entry: Path) -> None:
    for file in entry.iterdir():
        file.unlink()


def foreign_parquet(entry: Path) -> None:
    pl.DataFrame({"site": ["Roof"], "kwh": [1.5]}).write_parquet(entry / "readings.parquet")


def mistyped_parquet(entry: Path) -> None:
    frame = pl.read_parquet(entry / "readings.parquet")
    frame.with_columns(pl.col("ts").dt.to_string()).write_parquet(entry / "readings.parquet")


def pipe_as(name: str) -> Callable[[Path], None]:
    """A named pipe in place of one of the entry's files: read, it would block the drain (and the database's write
    lock) for good."""

    def damage(entry: Path) -> None:
        (entry / name).unlink()
        os.mkfifo(entry / name)

    return damage


def absurd_readings(entry: Path) -> None:
    """A readings file larger than any pass (sparse: it takes no room, and would take minutes to read)."""
    os.truncate(entry / "readings.parquet", ENTRY_FILE_MAX_BYTES + 1)


def unappliable_meta(entry: Path) -> None:
    meta = json.loads((entry / "pass.json").read_text())
    meta["results"][0]["started_at"] = "yesterday at noon"
    (entry / "pass.json").write_text(json.dumps(meta))


# kind -> (damage, what the note and the log must say)
DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated parquet": (truncate_readings, "readings.parquet cannot be read, it is truncated or damaged"),
    "garbled pass.json": (garble_meta, "pass.json is not"),
    "incomplete pass.json": (drop_meta_keys, "a required field is missing from pass.json: 'results'"),
    "empty pass folder": (empty_folder, "pass.json is missing (the entry is incomplete)"),
    "parquet of other columns": (foreign_parquet, "readings.parquet has the columns (site String, kwh Float64)"),
    "parquet of wrong types": (mistyped_parquet, "readings.parquet has the columns (source_id Int64, ts String"),
    "meta that cannot be applied": (unappliable_meta, "it cannot be written to the database: Invalid isoformat"),
    "named pipe as readings": (pipe_as("readings.parquet"), "readings.parquet is a named pipe, not a file this"),
    "named pipe as pass.json": (pipe_as("pass.json"), "pass.json is a named pipe, not a file this collector wrote"),
    "readings of absurd size": (absurd_readings, "readings.parquet is larger than 2 GB: no pass this collector"),
}


def table(store: Store, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    with store.connect(read_only=True) as con:
        return con.sql(sql).fetchall()


def spooled_rows(store: Store) -> dict[float, int]:
    """Readings of spooled passes in the database, by pass number (their value)."""
    return dict(table(store, "SELECT value, count(*) FROM readings WHERE ts < '2021-01-01' GROUP BY value"))


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture
def provider_context() -> ProviderContext:
    """What a pass needs of its providers (the name `context` is pytest-playwright's fixture)."""
    return ProviderContext(Settings(), QuotaLedger())


# --- the spool -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_entry_goes_to_quarantine_and_the_entries_around_it_are_written(
    kind: str, tmp_path: Path, box: SecretBox, provider_context: ProviderContext, caplog: pytest.LogCaptureFixture
) -> None:
    damage, why = DAMAGE[kind]
    store, source_id = new_store(tmp_path / "db.duckdb")
    spool = Spool.beside(store.path)
    names = [spooled_pass(spool, source_id, k) for k in range(4)]
    damage(spool.directory / names[1])
    collection = Collection(store, box, provider_context, spool)

    assert collection.drain() == 3 * ROWS  # the collector's drain: it does not raise, it writes the others
    assert spooled_rows(store) == {0.0: ROWS, 2.0: ROWS, 3.0: ROWS}
    assert [r[0] for r in table(store, "SELECT entry FROM spool_applied ORDER BY applied_at")] == [
        names[0],
        names[2],
        names[3],
    ]  # in order
    assert spool.pending() == []

    held_aside = spool.quarantine.directory / names[1]
    assert held_aside.is_dir() and held_aside.parent == spool.directory / "quarantine"
    note = (held_aside / NOTE).read_text()
    assert why in note and "When: " in note and "What to do: " in note
    (item,) = spool.quarantine.report().items
    assert item.name == names[1] and why in item.reason and item.quarantined_at is not None
    (logged,) = errors(caplog)  # once, at ERROR, with its path
    assert str(held_aside) in logged and why in logged

    # It goes on: the next drain finds nothing to do and says nothing again; a new pass is written.
    names.append(spooled_pass(spool, source_id, 4))
    assert collection.drain() == ROWS
    assert len(errors(caplog)) == 1 and len(spool.quarantine.report().items) == 1


def test_what_a_crash_left_of_a_written_entry_is_removed_not_quarantined(
    tmp_path: Path, box: SecretBox, provider_context: ProviderContext, caplog: pytest.LogCaptureFixture
) -> None:
    """A kill during the removal of a written entry can leave its folder half empty: its name is recorded as
    written, so it is just removed."""
    store, source_id = new_store(tmp_path / "db.duckdb")
    spool = Spool.beside(store.path)
    written = spooled_pass(spool, source_id, 0)
    with store.transaction() as con:
        apply_entry(con, spool.read(written))
        con.execute("INSERT INTO spool_applied VALUES (?, now())", [written])
    (spool.directory / written / "readings.parquet").unlink()
    later = spooled_pass(spool, source_id, 1)

    assert Collection(store, box, provider_context, spool).drain() == ROWS
    assert spool.pending() == [] and spool.quarantine.report().items == []
    assert spooled_rows(store) == {0.0: ROWS, 1.0: ROWS} and errors(caplog) == []
    assert later not in {item.name for item in spool.quarantine.report().items}


def test_a_held_file_never_quarantines(tmp_path: Path) -> None:
    store, source_id = new_store(tmp_path / "db.duckdb")
    spool = Spool.beside(store.path)
    names = [spooled_pass(spool, source_id, k) for k in range(2)]
    with held(store.path), pytest.raises(StoreBusy):
        spool.drain(store, apply_entry, timeout_s=WAIT_S)
    assert spool.pending() == names and not spool.quarantine.directory.exists()
    assert spool.drain(store, apply_entry) == (2, 2 * ROWS)


def _full_disk(con: duckdb.DuckDBPyConnection, entry: SpoolEntry) -> int:
    raise OSError(errno.ENOSPC, "No space left on device")


def _io_error(con: duckdb.DuckDBPyConnection, entry: SpoolEntry) -> int:
    raise duckdb.IOException('IO Error: Could not write file "db.duckdb.wal": Input/output error')


@pytest.mark.parametrize("apply", [_full_disk, _io_error], ids=["disk full", "I/O error"])
def test_a_store_or_disk_failure_while_applying_leaves_the_entry_for_later(
    apply: Callable[[duckdb.DuckDBPyConnection, SpoolEntry], int],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, source_id = new_store(tmp_path / "db.duckdb")
    spool = Spool.beside(store.path)
    names = [spooled_pass(spool, source_id, k) for k in range(2)]
    with pytest.raises(StoreFault, match=names[0]):
        spool.drain(store, apply)
    assert spool.pending() == names and not spool.quarantine.directory.exists() and errors(caplog) == []
    assert spool.drain(store, apply_entry) == (2, 2 * ROWS)  # the fault is over: both are written


def test_a_note_that_cannot_be_written_leaves_the_entry_where_it_is_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The note is written before the move: when it fails (a full disk; here a folder in its place), the entry has
    not moved, so the message naming it in the spool is true, and nothing behind it is written out of order."""
    store, source_id = new_store(tmp_path / "db.duckdb")
    spool = Spool.beside(store.path)
    names = [spooled_pass(spool, source_id, k) for k in range(2)]
    entry = spool.directory / names[0]
    truncate_readings(entry)
    (entry / NOTE).mkdir()

    with pytest.raises(StoreFault) as fault:
        spool.drain(store, apply_entry)
    assert str(fault.value).startswith(f"{entry}: damaged (readings.parquet cannot be read")
    assert str(fault.value).endswith("but cannot be moved aside: is a directory")
    assert spool.pending() == names and spool.quarantine.report().items == []
    assert spooled_rows(store) == {} and errors(caplog) == []

    (entry / NOTE).rmdir()  # the fault is over
    assert spool.drain(store, apply_entry) == (1, ROWS)
    assert [item.name for item in spool.quarantine.report().items] == [names[0]]


def test_an_entry_another_drainer_moved_first_is_not_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A `collector --once` beside the daemon: both find the same damaged entry, one moves it, the other's move
    finds it gone. That is handled, not an ERROR, and the drain goes on."""
    store, source_id = new_store(tmp_path / "db.duckdb")
    spool = Spool.beside(store.path)
    names = [spooled_pass(spool, source_id, k) for k in range(2)]
    unappliable_meta(spool.directory / names[0])

    def other_drainer_first(con: duckdb.DuckDBPyConnection, entry: SpoolEntry) -> int:
        if entry.name == names[0]:  # the other process quarantines it while this one is applying it
            Spool(spool.directory).quarantine.hold_entry(spool.directory / entry.name, "spool entry", "damaged")
        return apply_entry(con, entry)

    assert spool.drain(store, other_drainer_first) == (1, ROWS)
    assert [item.name for item in spool.quarantine.report().items] == [names[0]]
    assert len(errors(caplog)) == 1  # the other drainer's "moved to quarantine"; none from this one
    assert not [m for m in errors(caplog) if "cannot be moved aside" in m]


def test_a_leftover_that_vanishes_while_listed_is_skipped(tmp_path: Path) -> None:
    """Another drainer removes a stale `tmp-*` leftover between this one's listing and its look at it (here: a
    name that lists but cannot be looked at, as a removed one)."""
    store, source_id = new_store(tmp_path / "db.duckdb")
    spool = Spool.beside(store.path)
    name = spooled_pass(spool, source_id, 0)
    (spool.directory / "tmp-pass-removed-meanwhile").symlink_to(spool.directory / "gone")
    assert spool.drain(store, apply_entry) == (1, ROWS)
    assert spool.pending() == [] and name not in {item.name for item in spool.quarantine.report().items}


# --- the quota journal ---------------------------------------------------------------------------------------------

RULES = (QuotaRule("account", "day", 100),)
SCOPE = {"account": "key-1"}
DAY = datetime(2026, 6, 21, tzinfo=UTC)


def call_line() -> bytes:
    return json.dumps(["solaredge", "key-1", "day", DAY.isoformat()]).encode() + b"\n"


TORN = b'["solaredge", "key-1", "da'  # a crash in the middle of an append
BAD_LINES = {
    "not UTF-8": b"\xff\xfe\x00\x81 written by something else\n",
    "garbled line": b'["solaredge", "key-1"]\n',
}


def counted(store: Store) -> int:
    return int(table(store, "SELECT coalesce(sum(calls), 0) FROM quota_usage")[0][0])


def journal_ledger(store: Store, journal: Path) -> StoredQuotaLedger:
    """The collector's ledger, waiting WAIT_S (not 2 s) for a held file before counting in the journal."""
    return StoredQuotaLedger(store, journal=journal, db_wait_s=WAIT_S)


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_a_garbled_journal_line_goes_to_quarantine_and_the_good_lines_count(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, _ = new_store(tmp_path / "db.duckdb")
    spool = Spool.beside(store.path)
    journal = spool.directory / JOURNAL
    journal.parent.mkdir()
    journal.write_bytes(call_line() + BAD_LINES[kind] + call_line() + TORN)
    ledger = StoredQuotaLedger(store, journal=journal)

    assert ledger.used("solaredge", "key-1", "day", NOW) == 2  # read, not stopped: the good lines count
    ledger.flush_journal()  # what the collector's sync and every reservation do first
    assert counted(store) == 2 and journal.read_bytes() == b""

    (item,) = spool.quarantine.report().items
    kept = spool.quarantine.directory / item.name
    assert (kept / JOURNAL).read_bytes() == BAD_LINES[kind]  # byte for byte; the torn tail was no call
    assert "1 line(s) are not a counted vendor call" in item.reason and "2 good line(s)" in item.reason
    (logged,) = errors(caplog)
    assert str(kept) in logged

    ledger.reserve("solaredge", SCOPE, RULES, NOW)  # and the ledger goes on counting
    assert counted(store) == 3 and len(spool.quarantine.report().items) == 1


def test_a_torn_last_line_is_tolerated_and_cut_before_the_next_append(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, _ = new_store(tmp_path / "db.duckdb")
    journal = Spool.beside(store.path).directory / JOURNAL
    ledger = journal_ledger(store, journal)
    ledger.reserve("solaredge", SCOPE, RULES, NOW)  # seen with the file free: 1
    journal.parent.mkdir()
    journal.write_bytes(TORN)  # another process was killed while appending
    with held(store.path):
        ledger.reserve("solaredge", SCOPE, RULES, NOW)  # counted in the journal, on a line of its own
    assert journal.read_bytes() == call_line()
    ledger.flush_journal()
    assert counted(store) == 2
    assert not Spool.beside(store.path).quarantine.directory.exists() and errors(caplog) == []


def blocked(quarantine: Path) -> None:
    """The quarantine cannot be written: something else has its name (as a folder of root's refuses the collector
    after a `sudo ... --once`, or a full disk refuses everyone)."""
    quarantine.parent.mkdir(exist_ok=True)
    quarantine.write_bytes(b"not a folder")


def test_lines_that_cannot_be_moved_aside_never_make_calls_count_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, _ = new_store(tmp_path / "db.duckdb")
    spool = Spool.beside(store.path)
    journal = spool.directory / JOURNAL
    blocked(spool.quarantine.directory)
    journal.write_bytes(call_line() * 2 + BAD_LINES["not UTF-8"] + call_line())
    ledger = journal_ledger(store, journal)

    for _ in range(4):  # the collector's sync every minute, while the fault lasts
        with pytest.raises(StoreFault) as fault:
            ledger.flush_journal()
        assert counted(store) == 3  # counted once, never again
        assert journal.read_bytes() == BAD_LINES["not UTF-8"]  # kept, and only them
    assert str(fault.value) == (
        f"{journal}: 1 line(s) that are not vendor calls cannot be moved aside to {spool.quarantine.directory}:"
        " a part of the path is a file, not a folder"
    )
    ledger.reserve("solaredge", SCOPE, RULES, NOW)  # polling goes on: the lines left count nothing
    assert counted(store) == 4 and errors(caplog) == []

    spool.quarantine.directory.unlink()  # the fault is over
    ledger.flush_journal()
    assert counted(store) == 4 and journal.read_bytes() == b""
    (item,) = spool.quarantine.report().items
    assert (spool.quarantine.directory / item.name / JOURNAL).read_bytes() == BAD_LINES["not UTF-8"]
    assert "the journal's calls had been counted already" in item.reason
    assert len(errors(caplog)) == 1


def test_the_daemon_says_once_that_journal_lines_cannot_be_moved_aside(
    app_env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The long-running collector's minute sync, twice: one ERROR naming the journal, no traceback, no job boundary
    hit; the good call counted once."""
    from jobs.collector import Collector

    monkeypatch.setenv("DATACONN_SEED_DEMO", "false")
    runtime = open_runtime(load_settings())
    spool = Spool.beside(runtime.store.path)
    blocked(spool.quarantine.directory)
    (spool.directory / JOURNAL).write_bytes(call_line() + BAD_LINES["garbled line"])
    collector = Collector(runtime)
    try:
        collector.sync()
        collector.sync()
    finally:
        collector.executor.shutdown(wait=True)
    assert counted(runtime.store) == 1
    (logged,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert str(spool.directory / JOURNAL) in logged.getMessage() and "cannot be moved aside" in logged.getMessage()
    assert logged.exc_info is None and "Traceback" not in caplog.text


def absurd_journal(path: Path) -> None:
    path.write_bytes(call_line())
    os.truncate(path, JOURNAL_MAX_BYTES + 1)  # sparse: it takes no room


@pytest.mark.parametrize(
    ("make", "why"),
    [(os.mkfifo, "it is a named pipe"), (os.mkdir, "it is a directory"), (absurd_journal, "it is larger than 256 MB")],
    ids=["named pipe", "folder", "file of absurd size"],
)
def test_a_journal_that_is_not_a_file_we_wrote_is_moved_aside_whole(
    make: Callable[[Path], None], why: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Read, a named pipe would block the reservation for good; a folder cannot be read; a file of absurd size
    would be read whole into memory at every reservation. Each is moved aside and a new journal started."""
    store, _ = new_store(tmp_path / "db.duckdb")
    spool = Spool.beside(store.path)
    journal = spool.directory / JOURNAL
    journal.parent.mkdir()
    make(journal)
    ledger = journal_ledger(store, journal)
    ledger.reserve("solaredge", SCOPE, RULES, NOW)  # seen with the file free
    with held(store.path):
        ledger.reserve("solaredge", SCOPE, RULES, NOW)  # counted in a new journal
    assert journal.read_bytes() == call_line()
    (item,) = spool.quarantine.report().items
    assert item.reason.startswith(f"{why}, not a journal this collector wrote")
    (logged,) = errors(caplog)
    assert str(spool.quarantine.directory / item.name) in logged
    ledger.flush_journal()
    assert counted(store) == 2


# --- the collector, as it runs -------------------------------------------------------------------------------------


@contextmanager
def loose_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def damaged_spool(store: Store, source_id: int) -> tuple[Spool, list[str], list[str]]:
    """Every kind of damage, each between intact entries; returns the spool, the intact and the damaged names."""
    spool = Spool.beside(store.path)
    intact, damaged = [spooled_pass(spool, source_id, 0)], []
    for k, (damage, _) in enumerate(DAMAGE.values()):
        name = spooled_pass(spool, source_id, 2 * k + 1)
        damage(spool.directory / name)
        damaged.append(name)
        intact.append(spooled_pass(spool, source_id, 2 * k + 2))
    return spool, intact, damaged


def test_the_collector_goes_on_past_every_damaged_item_and_says_where_it_is(
    app_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m jobs.collector --once` as a real process: exit 0, every intact entry written, each damaged one
    in quarantine and logged once, and the quarantine named beside the summary. Files an older version left
    readable by others are made private at start."""
    monkeypatch.setenv("DATACONN_SEED_DEMO", "false")
    store = open_runtime(load_settings()).store
    _, ids = craft_site(store, [SourceSpec(Category.PROD, "solar", name="Roof")])
    with loose_umask():
        spool, intact, damaged = damaged_spool(store, ids["Roof"])
        (spool.directory / JOURNAL).write_bytes(call_line() + BAD_LINES["not UTF-8"])
    assert stat.S_IMODE(spool.directory.stat().st_mode) == 0o700  # created private even under umask 022...
    os.chmod(spool.directory, 0o755)  # ... but an older version left it open
    os.chmod(spool.directory / intact[0] / "pass.json", 0o644)
    os.chmod(spool.directory / JOURNAL, 0o644)

    result = run_module("jobs.collector", "--once")

    assert result.returncode == 0, result.stderr
    assert spooled_rows(store) == {float(2 * k): ROWS for k in range(len(intact))}
    assert spool.pending() == []
    report = spool.quarantine.report()
    assert sorted(item.name for item in report.items) == sorted(damaged)
    for name, (_, why) in zip(damaged, DAMAGE.values(), strict=True):
        assert why in (spool.quarantine.directory / name / NOTE).read_text()
        assert result.stderr.count(f"{spool.quarantine.directory / name}:") == 1  # logged once, with its path
    assert f"{len(damaged)} item(s) in quarantine, {spool.quarantine.directory}" in result.stderr
    assert result.stdout.strip()  # the pass's summary is still there
    assert "made private" in result.stderr
    assert stat.S_IMODE(spool.directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((spool.directory / JOURNAL).stat().st_mode) == 0o600


def test_the_daemons_sync_writes_past_damage_and_adds_up_the_journal(
    app_env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The long-running collector's start (`Collector.sync`): same outcome, journal included, nothing raised."""
    from jobs.collector import Collector

    monkeypatch.setenv("DATACONN_SEED_DEMO", "false")
    runtime = open_runtime(load_settings())
    _, ids = craft_site(runtime.store, [SourceSpec(Category.PROD, "solar", name="Roof")])
    spool, intact, damaged = damaged_spool(runtime.store, ids["Roof"])
    (spool.directory / JOURNAL).write_bytes(call_line() + BAD_LINES["garbled line"] + call_line())
    collector = Collector(runtime)
    try:
        collector.sync()
    finally:
        collector.executor.shutdown(wait=True)
    assert spooled_rows(runtime.store) == {float(2 * k): ROWS for k in range(len(intact))}
    assert counted(runtime.store) == 2
    assert len(spool.quarantine.report().items) == len(damaged) + 1  # and the journal's garbled line
    assert len([m for m in errors(caplog) if "moved to quarantine" in m]) == len(damaged) + 1
    assert not [m for m in errors(caplog) if "could not" in m]  # no job boundary was hit


# --- what the operator sees ----------------------------------------------------------------------------------------


def test_api_health_warns_of_the_quarantine_until_it_is_emptied(app_env: Path) -> None:
    runtime = open_runtime(load_settings())
    store = runtime.store
    source_id = int(table(store, "SELECT min(id) FROM energy_sources")[0][0])
    spool = Spool.beside(store.path)
    name = spooled_pass(spool, source_id, 0)
    truncate_readings(spool.directory / name)
    Collection(store, runtime.box, runtime.providers, spool).drain()

    health = load_health(store, runtime.box, datetime.now(UTC))
    warning = quarantine_warning(health.quarantine)
    assert warning is not None and "1 item(s) in quarantine" in warning
    assert str(spool.quarantine.directory) in warning
    assert quarantine_table(health.quarantine).row(0)[0] == name

    page = open_page("pages/api_health.py")
    (shown,) = [w.value for w in page.warning if "in quarantine" in w.value]
    assert str(spool.quarantine.directory) in shown and "1 item(s)" in shown
    listed = page.dataframe[0].value  # above the other tables
    assert list(listed.columns) == ["Item", "Quarantined (UTC)", "Why"] and listed.iloc[0]["Item"] == name
    assert "readings.parquet cannot be read" in listed.iloc[0]["Why"]

    for item in spool.quarantine.directory.iterdir():  # the operator deletes it
        for file in item.iterdir():
            file.unlink()
        item.rmdir()
    assert quarantine_warning(load_health(store, runtime.box, datetime.now(UTC)).quarantine) is None


# --- privacy -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o277], ids=["umask 000", "umask 277"])
def test_the_spool_quarantine_and_journal_are_created_owner_only_whatever_the_umask(
    umask: int, tmp_path: Path, box: SecretBox, provider_context: ProviderContext
) -> None:
    store, source_id = new_store(tmp_path / "db.duckdb")
    spool = Spool.beside(store.path)
    ledger = journal_ledger(store, spool.directory / JOURNAL)
    ledger.reserve("solaredge", SCOPE, RULES, NOW)
    previous = os.umask(umask)
    try:
        names = [spooled_pass(spool, source_id, k) for k in range(2)]
        with held(store.path):
            ledger.reserve("solaredge", SCOPE, RULES, NOW)  # creates the journal
        drop_meta_keys(spool.directory / names[0])
        Collection(store, box, provider_context, spool).drain()  # creates the quarantine
    finally:
        os.umask(previous)
    spooled_pass(spool, source_id, 2)
    paths = [spool.directory, *spool.directory.rglob("*")]
    assert {p.name for p in paths} >= {"quarantine", NOTE, JOURNAL, "readings.parquet", "pass.json"}
    for path in paths:
        wanted = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == wanted, path


def test_an_open_spool_is_tightened_at_start_with_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    store, source_id = new_store(tmp_path / "db.duckdb")
    spool = Spool.beside(store.path)
    name = spooled_pass(spool, source_id, 0)
    quarantined = spool.quarantine.hold_bytes(JOURNAL, b"junk\n", "test bytes", "a test")
    loose = [spool.directory, spool.directory / name, spool.directory / name / "pass.json", quarantined]
    for path in loose:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)

    assert sorted(tighten(spool.private_paths())) == sorted(loose)
    lines = [r.getMessage() for r in caplog.records if "made private" in r.getMessage()]
    assert len(lines) == 1 and all(str(path) in lines[0] for path in loose)
    for path in [spool.directory, *spool.directory.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    assert tighten(spool.private_paths()) == []  # nothing left to do: nothing said
    assert len([r for r in caplog.records if "made private" in r.getMessage()]) == 1
