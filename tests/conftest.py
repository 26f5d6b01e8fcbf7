"""Shared fixtures: real temporary DuckDB files and real keys, never mocks of our own modules."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.store.crypto import SecretBox, generate_key
from core.store.schema import migrate
from core.store.store import Store
from tests.processes import operator_env

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_page_caches() -> Iterator[None]:
    """Pages cache their reads by site id for up to a minute (`st.cache_data`), in the process. Each test makes its
    own database, where the same ids name other sites: a report cached by an earlier test must not answer."""
    if "streamlit" in sys.modules:
        import streamlit as st

        st.cache_data.clear()
    yield


@pytest.fixture
def store(tmp_path: Path) -> Store:
    db = Store(tmp_path / "dataconn.duckdb", lock_timeout_s=10)
    migrate(db)
    return db


@pytest.fixture
def box() -> SecretBox:
    return SecretBox([generate_key()])


@pytest.fixture
def app_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the settings at a fresh database and key file, as a user's environment would."""
    monkeypatch.setenv("DATACONN_DB_PATH", str(tmp_path / "app.duckdb"))
    monkeypatch.setenv("DATACONN_KEY_FILE", str(tmp_path / "secret.key"))
    monkeypatch.delenv("DATACONN_SECRET_KEYS", raising=False)
    monkeypatch.setenv("DATACONN_SEED_DEMO", "true")
    return tmp_path


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An operator's environment for our commands in processes of their own (`tests.processes.cli`): a database
    and a key file not created yet, no demo, and no other `DATACONN_*` setting of the test run."""
    return operator_env(tmp_path / "db" / "dataconn.duckdb", tmp_path / "keys" / "secret.key")


@pytest.fixture
def seeded_env(app_env: Path) -> Path:
    """`app_env` after a first collection pass: the demo site with a month of history up to now."""
    from tests.seeding import seed_history

    seed_history()
    return app_env
