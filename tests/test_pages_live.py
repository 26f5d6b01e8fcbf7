"""The Live page through AppTest on a real seeded database: flow tiles, the source table and stale marking."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from core.config import load_settings
from core.models import ApiSettings, Category, Provider, UpdateFrequency
from core.runtime import open_runtime
from core.store.change_marks import ChangeMarks
from core.store.readings_store import ingest, to_batch
from tests.crafting import SourceSpec, app_store, craft_site, open_page
from tests.markdown_text import shown
from tests.seeding import seed_history

FLOW_LABELS = ["PV production", "Grid import", "Grid export", "Load", "Battery", "State of charge"]
DEMO_SOURCES = [
    "Rooftop PV Array",
    "Building Load",
    "Grid Import",
    "Battery",
    "Battery State of Charge",
    "Grid Export",
]


def open_live() -> AppTest:
    app = open_page("pages/live.py")
    assert not app.error
    return app


def test_the_live_page_shows_the_flow_and_every_source(seeded_env: Path) -> None:
    app = open_live()
    metrics = {m.label: m for m in app.metric}
    assert list(metrics) == FLOW_LABELS
    assert all(m.value != "-" for m in metrics.values())  # just seeded: every source is current
    assert metrics["State of charge"].value.endswith(" %")
    assert metrics["Battery"].delta in {"discharging", "charging", "idle"}
    table = app.dataframe[0].value
    assert sorted(table["Source"]) == sorted(DEMO_SOURCES)
    assert set(table["Status"]) == {"current"}
    assert set(table["Category"]) == {"PROD", "CONS", "STOR", "INJ"}
    assert "As of (Europe/Brussels)" in table.columns
    updated = [c.value for c in app.caption if c.value.startswith("Updated at ")]
    assert len(updated) == 1 and "(Europe/Brussels) · newest value " in updated[0]
    assert app.toggle(key="live_auto_refresh").value is True
    app.toggle(key="live_auto_refresh").set_value(False).run()  # paused: the panel stays, without the timer
    assert not app.exception and len(app.metric) == len(FLOW_LABELS)
    assert not app.info and len(app.get("plotly_chart")) == 1  # the recent-power chart has data


def test_stale_sources_are_marked_and_left_out_of_the_flow(app_env: Path) -> None:
    seed_history(datetime.now(UTC) - timedelta(hours=2))  # nothing newer than two hours: 4 x the 15-min cadence
    app = open_live()
    table = app.dataframe[0].value
    assert set(table["Status"]) == {"stale"}
    assert all(age.startswith(("1 h", "2 h")) for age in table["Age"])
    assert [m.value for m in app.metric] == ["-"] * len(FLOW_LABELS)  # stale values are never shown as current
    captions = [shown(c.value) for c in app.caption]
    assert any(c.startswith("Rooftop PV Array is stale: last reading ") for c in captions)
    assert len(app.get("plotly_chart")) == 1  # the last 6 hours still hold the two hours before the stop


def test_a_site_without_sources_says_so(seeded_env: Path) -> None:
    empty, _ = craft_site(app_store(), [], name="Empty Yard", latitude=51.0, longitude=4.0)
    app = open_live()
    app.selectbox(key="live_site").set_value(empty).run()
    assert not app.exception
    assert [m.value for m in app.metric] == ["-"] * len(FLOW_LABELS)
    assert any("no data sources yet" in i.value for i in app.info)


def test_a_new_reading_shows_at_the_next_check_and_nothing_is_read_while_nothing_changed(
    app_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATACONN_SEED_DEMO", "false")
    monkeypatch.setenv("DATACONN_LIVE_REFRESH_S", "3600")  # no timed reload during the test: only marks count
    store = open_runtime(load_settings()).store  # a new database: created and migrated
    push = ApiSettings(use_api=True, api_provider=Provider.PUSH, update_frequency=UpdateFrequency.MIN5)
    _, ids = craft_site(store, [SourceSpec(Category.CONS, "load", name="Logger load", api=push)], name="Logger")
    source_id = ids["Logger load"]
    minute = datetime.now(UTC).replace(second=0, microsecond=0)

    def store_reading(value: float, *, mark: bool) -> None:
        batch = to_batch(
            source_id,
            pl.DataFrame({"ts": [minute], "interval_s": [60], "value": [value]}),
            datetime.now(UTC),
            final_before=minute,
        )
        with store.transaction() as con:
            ingest(con, batch, datetime.now(UTC))
        if mark:
            ChangeMarks(store.path).mark([source_id])

    store_reading(1_000.0, mark=True)
    app = open_live()
    app.run()  # the first run learns which sources to watch; from the second on, only their marks decide
    assert [m.value for m in app.metric][3] == "1.00 kW"
    store_reading(2_000.0, mark=False)  # written, but nobody said so: the snapshot is not read again
    app.run()
    assert [m.value for m in app.metric][3] == "1.00 kW"
    ChangeMarks(store.path).mark([source_id])  # what every writer does after its commit
    app.run()
    assert [m.value for m in app.metric][3] == "2.00 kW"
    assert any("newest value " in c.value and " s ago" in c.value for c in app.caption)


def test_a_live_stream_frame_shows_without_a_database_read_and_watching_leaves_marks(
    app_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.store.change_marks import WatchMarks
    from core.store.stream_now import StreamNow

    monkeypatch.setenv("DATACONN_SEED_DEMO", "false")
    monkeypatch.setenv("DATACONN_LIVE_REFRESH_S", "3600")
    store = open_runtime(load_settings()).store
    enphase = ApiSettings(use_api=True, api_provider=Provider.ENPHASE, system_id="123", stream_on_live=True)
    _, ids = craft_site(store, [SourceSpec(Category.PROD, "solar", name="Roof", api=enphase)], name="Streamed")
    roof = ids["Roof"]
    app = open_live()
    app.run()  # the second run knows the site's sources: it marks them watched
    watched_at = WatchMarks(store.path).newest([roof])
    assert watched_at is not None
    assert app.metric[0].value == "-"  # nothing yet
    StreamNow(store.path).write({roof: (datetime.now(UTC), 4_200.0)})  # what the collector's stream does
    app.run()
    assert app.metric[0].value == "4.20 kW"
    assert "current, live stream" in app.dataframe[0].value["Status"].to_list()
    app.toggle(key="live_auto_refresh").set_value(False).run()  # not following: nobody is watching any more
    before = WatchMarks(store.path).newest([roof])
    app.run()
    assert WatchMarks(store.path).newest([roof]) == before
