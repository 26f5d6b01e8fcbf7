"""Migration 2 (readings and collector state) on real DuckDB files: a v1 file upgrades in place, keeping its data."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from core.catalog import catalog as cat
from core.models import SiteIn
from core.store import schema
from core.store.schema import migrate, schema_version
from core.store.store import Store

V2_TABLES = {"readings", "collector_runs", "source_state", "api_data_cache", "quota_usage"}


def _tables(store: Store) -> set[str]:
    with store.connect(read_only=True) as con:
        return {r[0] for r in con.sql("SELECT table_name FROM duckdb_tables()").fetchall()}


def test_v1_database_migrates_to_v2_keeping_its_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "v1.duckdb")
    with monkeypatch.context() as patch:  # a file written by a version that only knew migration 1
        patch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
        patch.setattr(schema, "LATEST_VERSION", 1)
        assert migrate(store) == [1]
    assert schema_version(store) == 1
    assert not V2_TABLES & _tables(store)
    site = cat.create_site(store, SiteIn(name="Kept", latitude=50.8, longitude=4.4, timezone="Europe/Brussels"))

    assert migrate(store) == list(range(2, schema.LATEST_VERSION + 1))  # every later migration, in order
    assert migrate(store) == []
    assert schema_version(store) == schema.LATEST_VERSION
    assert _tables(store) >= V2_TABLES
    assert [s.name for s in cat.load_catalog(store).sites] == ["Kept"]
    assert cat.load_catalog(store).sites[0].id == site.id
    with store.connect(read_only=True) as con:
        assert con.sql("SELECT version FROM schema_migrations ORDER BY version").fetchall() == [
            (v,) for v in range(1, schema.LATEST_VERSION + 1)
        ]


def test_v2_tables_defaults_and_checks(store: Store) -> None:
    with store.transaction() as con:
        con.execute("INSERT INTO source_state (source_id) VALUES (1)")
        con.execute(
            "INSERT INTO collector_runs (source_id, started_at, outcome) VALUES (1, now(), 'ok'), (1, now(), 'skipped')"
        )
        con.execute("INSERT INTO quota_usage VALUES ('solaredge_v2', 'acct', 'day', '2026-01-01 00:00:00+00', 1)")
    with store.connect(read_only=True) as con:
        assert con.sql("SELECT consecutive_failures, circuit FROM source_state").fetchall() == [(0, "closed")]
        assert con.sql("SELECT id FROM collector_runs ORDER BY id").fetchall() == [(1,), (2,)]
        keys = con.sql(
            "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'readings' "
            "AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')"
        ).fetchall()[0][0]
        indexes = con.sql("SELECT count(*) FROM duckdb_indexes() WHERE table_name = 'readings'").fetchall()[0][0]
    assert (keys, indexes) == (0, 0)  # no index on readings: ingest keeps (source_id, ts) unique
    for sql in (
        "INSERT INTO collector_runs (started_at, outcome) VALUES (now(), 'exploded')",
        "INSERT INTO source_state (source_id, circuit) VALUES (2, 'ajar')",
        "INSERT INTO quota_usage VALUES ('solaredge_v2', 'acct', 'day', '2026-01-01 00:00:00+00', 2)",
    ):
        with pytest.raises(duckdb.ConstraintException), store.transaction() as con:
            con.execute(sql)
