"""The DuckDB file's storage format: readable by the DuckDB CLI and drivers analysts have (`STORAGE_COMPATIBILITY`).

New files are created in that format by `core.store.store`. A file created before that (by DuckDB 2.0 in its own format,
which the 1.5 line refuses) is converted once, by `init`, with `convert_if_newer`:

1. under the store's write connection (so no writer of ours or of anyone else changes the file meanwhile), a
   checkpoint, then the whole database (tables, views, sequences with their positions) copied into a new file
   `<name>.converting` attached in the compatible format, and the rows of every table counted on both sides;
2. the connection closed (DuckDB checkpoints and releases the file), the new file flushed to disk (`fsync`);
3. the original hard-linked to `<name>.<format>-backup` beside it, then the new file renamed over the original
   (`os.replace`, atomic), then the folder flushed.

The original is at its path, untouched, until that rename: a crash before it leaves the original as it was (and a
`.converting` file that the next run removes), a crash after it the converted file. A file held by another program
raises `StoreBusy` before anything is written; a count that differs, or any failure, removes the new file and
leaves the original as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from pathlib import Path

import duckdb

from core.store.private_files import make_private
from core.store.store import STORAGE_COMPATIBILITY, Store, StoreError, fault_cause

log = logging.getLogger(__name__)

_VERSION = re.compile(r"v(\d+)\.(\d+)\.(\d+)")


class ConversionFailed(StoreError):
    """The copy could not be made or did not match; the original file is unchanged."""


def _parsed(version: str | None) -> tuple[int, int, int] | None:
    match = _VERSION.match(version or "")
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def storage_version(con: duckdb.DuckDBPyConnection, database: str | None = None) -> str | None:
    """The oldest DuckDB version that reads `database` (the connection's own by default), as DuckDB tags it
    ("v1.5.0"); None when DuckDB does not say (an in-memory database)."""
    rows = con.execute(
        "SELECT tags['storage_version'] FROM duckdb_databases() WHERE database_name = coalesce(?, current_database())",
        [database],
    ).fetchall()
    return rows[0][0].rstrip("+") if rows and rows[0][0] else None


def file_storage_version(store: Store) -> str | None:
    """The storage version of the store's file, read-only; None when there is no file."""
    if not store.exists():
        return None
    with store.connect(read_only=True) as con:
        return storage_version(con)


def is_newer_than_compatible(version: str | None) -> bool:
    parsed, target = _parsed(version), _parsed(STORAGE_COMPATIBILITY)
    return parsed is not None and target is not None and parsed > target


def converting_path(path: Path) -> Path:
    return path.with_name(path.name + ".converting")


def backup_path(path: Path, version: str) -> Path:
    """A name beside `path` that says what the file is and is not taken yet (a crash may have left one)."""
    first = path.with_name(f"{path.name}.{version}-format-backup")
    candidates = [first, *(first.with_name(f"{first.name}-{n}") for n in range(2, 1000))]
    return next(p for p in candidates if not os.path.lexists(p) or os.path.samefile(p, path))


def _remove(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _fsync(path: Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _table_counts(con: duckdb.DuckDBPyConnection, database: str) -> dict[str, int]:
    tables = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ? AND NOT internal ORDER BY ALL",
        [database],
    ).fetchall()
    return {
        f"{schema}.{table}": con.sql(f'SELECT count(*) FROM "{database}"."{schema}"."{table}"').fetchall()[0][0]
        for schema, table in tables
    }


def _copy(con: duckdb.DuckDBPyConnection, target: Path) -> dict[str, int]:
    """Copy the connection's database into `target` in the compatible format; the row counts of its tables."""
    source = con.sql("SELECT current_database()").fetchall()[0][0]
    con.execute("CHECKPOINT")  # the WAL merged into the file: after the swap no WAL of the old file may remain
    quoted = str(target).replace("'", "''")
    con.execute(f"ATTACH '{quoted}' AS dataconn_converted (STORAGE_VERSION '{STORAGE_COMPATIBILITY}')")
    try:
        con.execute(f'COPY FROM DATABASE "{source}" TO dataconn_converted')
        counts = _table_counts(con, source)
        copied = _table_counts(con, "dataconn_converted")
        written = storage_version(con, "dataconn_converted")
    finally:
        con.execute("DETACH dataconn_converted")
    if copied != counts:
        differing = sorted(t for t in counts.keys() | copied.keys() if counts.get(t) != copied.get(t))
        raise ConversionFailed(f"the copy's row counts differ from the original's in {', '.join(differing)}")
    if is_newer_than_compatible(written):
        raise ConversionFailed(f"the copy was written in storage format {written}, not {STORAGE_COMPATIBILITY}")
    return counts


def _swap(path: Path, target: Path, version: str) -> Path:
    """Put the flushed copy at `path`, the original kept as the returned backup; the original stays at `path`
    until the one atomic rename."""
    leftover_wal = path.with_name(path.name + ".wal")
    if leftover_wal.exists():  # it would be replayed onto the copy
        raise ConversionFailed(f"{leftover_wal.name} remained after closing the database; the file is unchanged")
    make_private(target)
    _fsync(target)
    backup = backup_path(path, version)
    if not backup.exists():
        try:
            os.link(path, backup)  # instant, and no second copy of the data on disk
        except OSError:  # a file system without hard links
            shutil.copyfile(path, backup)
            _fsync(backup)
    os.replace(target, path)
    make_private(backup)  # it holds what the database held
    return backup


def convert_if_newer(store: Store) -> Path | None:
    """Convert the store's file to the compatible format if it is in a newer one; the backup's path, else None.

    Raises `StoreBusy` when another program holds the file and `ConversionFailed` (or `StoreFault`) when the copy
    cannot be made; in every such case the original file is as it was."""
    # A look first, read-only: a current file on a read-only location needs no write access.
    if not is_newer_than_compatible(file_storage_version(store)):
        return None
    path = store.path
    target = converting_path(path)
    _remove(target, target.with_name(target.name + ".wal"))  # left by a crash of an earlier run
    with store.connect() as con:  # the write connection: nobody else writes until the swap is done
        version = storage_version(con)
        if not is_newer_than_compatible(version):  # converted by another process meanwhile
            return None
        assert version is not None  # a version newer than the target is a known one
        try:
            counts = _copy(con, target)
            con.close()  # DuckDB releases the file; the sidecar lock, held until the block ends, keeps ours away
            backup = _swap(path, target, version)
        except ConversionFailed:
            _remove(target, target.with_name(target.name + ".wal"))
            raise
        except (duckdb.Error, OSError) as exc:
            _remove(target, target.with_name(target.name + ".wal"))
            log.debug("converting %s failed", path, exc_info=True)
            cause = fault_cause(exc) or str(exc).splitlines()[0]
            raise ConversionFailed(f"{path}: could not convert the file ({cause}); it is unchanged") from exc
        _fsync(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    log.info(
        "converted %s from storage format %s to %s (readable by DuckDB %s and newer; %d tables, %d rows); "
        "the original is kept as %s",
        path,
        version,
        STORAGE_COMPATIBILITY,
        STORAGE_COMPATIBILITY.removeprefix("v"),
        len(counts),
        sum(counts.values()),
        backup,
    )
    return backup
