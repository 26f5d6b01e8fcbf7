"""A database another program holds (issue 11): every page says so at once and renders normally once it is free.

The holder is a real process with the file open read-write (tests/holder.py), as an analyst's `duckdb` session.
The pages run under a lock wait far longer than AppTest's run timeout: a page that waited it out before saying
"held", as pages did, fails its run instead of showing the box. The box's own look at the file, every few seconds,
runs on the browser's timer, so tests/e2e/test_held_database.py shows the recovery without a click; here a rerun
stands for it.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.config import load_settings
from core.store.store import Store, StoreBusy, reads_wait_at_most
from core.store.store_wait import HeldSince, still_held
from tests.crafting import APP, app_store, open_page
from tests.holder import held

LONG_LOCK_WAIT_S = "600"  # much longer than a page run may take (AppTest's 60 s): only a short wait passes
WAITING = re.compile(r"^Waiting for the database: another program holds app\\?\.duckdb since \d\d:\d\d$")
PAGES = {
    "pages/control_room.py": "Control Room",
    "pages/data_connections.py": "Data Connections",
    "pages/live.py": "Live",
    "pages/history.py": "History",
    "pages/kpis.py": "KPIs",
    "pages/alerts.py": "Alerts",
    "pages/api_health.py": "API Health",
    "pages/import_readings.py": "Import Readings",
    "pages/import_sites.py": "Import Sites",
}


@pytest.fixture
def held_env(seeded_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATACONN_LOCK_TIMEOUT_S", LONG_LOCK_WAIT_S)
    return seeded_env


def _waiting_box(app: AppTest) -> str:
    """The one waiting box's label; fails unless the page shows exactly that box and no error."""
    assert not app.exception and not app.error
    labels = [status.label for status in app.status]
    assert len(labels) == 1 and WAITING.match(labels[0]), labels
    assert app.status[0].state == "running"  # a spinner, not the check mark of a finished step
    assert any("Close the other program" in m.value and "nothing to click" in m.value for m in app.markdown)
    return labels[0]


def _renders_normally(app: AppTest, title: str) -> None:
    assert not app.exception and not app.error and not app.status
    assert [t.value for t in app.title] == [title]


@pytest.mark.parametrize("page", list(PAGES))
def test_each_page_says_at_once_that_the_database_is_held_and_renders_once_it_is_free(
    held_env: Path, page: str
) -> None:
    app = open_page(page)
    _renders_normally(app, PAGES[page])
    with held(app_store().path):
        app.run()
        first = _waiting_box(app)
        app.run()  # still held: the same box, with the same "since"
        assert _waiting_box(app) == first
    app.run()
    _renders_normally(app, PAGES[page])


def test_a_dashboard_started_while_the_file_is_held_says_so_and_starts_once_it_is_free(held_env: Path) -> None:
    app = AppTest.from_file(APP, default_timeout=60)
    with held(app_store().path):  # the runtime was never built: it cannot even read the schema's version
        app.run()
        _waiting_box(app)
    app.run()
    _renders_normally(app, "Control Room")


def test_live_shows_its_flow_again_once_the_file_is_free(held_env: Path) -> None:
    app = open_page("pages/live.py")
    assert len(app.metric) == 6
    with held(app_store().path):
        app.run()
        _waiting_box(app)
        assert not app.metric
    app.run()
    _renders_normally(app, "Live")
    assert len(app.metric) == 6 and app.dataframe


@pytest.mark.parametrize("page", list(PAGES))
def test_a_read_only_session_on_the_file_lets_every_page_show(held_env: Path, page: str) -> None:
    """`duckdb -readonly` keeps writers out, not readers: a page has nothing to wait for, and writes nothing on
    its way (a write would wait the whole lock wait here)."""
    app = open_page(page)
    with held(app_store().path, read_only=True):
        app.run()
        _renders_normally(app, PAGES[page])


def test_a_short_read_wait_gives_up_on_reads_but_not_on_writes(app_env: Path) -> None:
    store = Store(load_settings().db_path, lock_timeout_s=60)
    with held(store.path):
        with reads_wait_at_most(0.1), pytest.raises(StoreBusy) as busy, store.connect(read_only=True):
            pass  # without the short wait, it would wait 60 s
        assert busy.value.path == store.path and "more than 0.1 s" in str(busy.value)

    # A write keeps the store's wait: begun while the file is held, it waits until the holder lets go a second
    # later, and lands.
    holding, released = threading.Event(), threading.Event()

    def hold_a_second() -> None:
        with held(store.path):
            holding.set()
            time.sleep(1.0)
        released.set()

    holder = threading.Thread(target=hold_a_second)
    holder.start()
    assert holding.wait(30)
    with reads_wait_at_most(0.1), store.transaction() as con:
        con.execute("CREATE TABLE held_write AS SELECT 42 AS answer")
    holder.join(30)
    assert released.is_set()
    with store.connect(read_only=True) as con:
        assert con.sql("SELECT answer FROM held_write").fetchall() == [(42,)]


def test_still_held_is_one_look_at_the_file(app_env: Path) -> None:
    store = app_store()
    with held(store.path):
        assert still_held(store)
    assert not still_held(store)
    with held(store.path, read_only=True):  # readers get in: not held for a page
        assert not still_held(store)
    assert not still_held(Store(store.path.with_name("absent.duckdb")))  # not "held": the page says what it is


def test_held_since_is_the_first_sighting_of_an_episode() -> None:
    clock = [0.0]
    start = datetime(2026, 12, 3, 9, 40, tzinfo=UTC)
    tracker = HeldSince(forget_after_s=30, now=lambda: start + timedelta(seconds=clock[0]), monotonic=lambda: clock[0])
    assert tracker.since is None
    assert tracker.seen_held() == start
    clock[0] = 25.0
    assert tracker.seen_held() == start  # still the same episode: seen again within 30 s
    clock[0] = 50.0
    assert tracker.seen_held() == start
    tracker.seen_free()
    assert tracker.since is None
    clock[0] = 55.0
    assert tracker.seen_held() == start + timedelta(seconds=55)  # free in between: a new episode
    clock[0] = 100.0  # nobody saw it held for 45 s: nobody was waiting, so a new episode too
    assert tracker.seen_held() == start + timedelta(seconds=100)
