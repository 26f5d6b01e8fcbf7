"""The API Health page through AppTest, on the seeded demo plus a SolarEdge V2 and a V1 source with stored keys."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from core.catalog import catalog as cat
from core.config import load_settings
from core.models import ApiSettings, Category, MeterIn, Provider, SourceIn, UpdateFrequency
from core.runtime import open_runtime
from core.store.secret_store import put_secret

APP = str(Path(__file__).resolve().parents[1] / "app.py")
V2_KEY = "page-v2-key-7Hq2ZpX9"
V1_KEY = "PAGEV1KEY55501234ABCD"


def _source(name: str, provider: Provider, system_id: str) -> SourceIn:
    settings = ApiSettings(
        use_api=True, api_provider=provider, system_id=system_id, update_frequency=UpdateFrequency.HOUR1
    )
    return SourceIn(
        name=name, source_type="solar", capacity_kw=20, carbon_intensity_g_per_kwh=0, cost_per_mwh=0, api=settings
    )


@pytest.fixture
def at(seeded_env: Path) -> AppTest:
    """The demo site gains a V2 and a V1 source. The V2 vendor echoed its key into an error (as a careless server
    might) and the V1 source stopped with a reason naming its key: neither may reach the page."""
    runtime = open_runtime(load_settings(), prepare=False)
    now = datetime.now(UTC)
    with runtime.store.transaction() as con:
        site = cat.read_catalog(con).sites[0]
        meter = cat.insert_meter(con, site.id, MeterIn(name="SolarEdge PV", category=Category.PROD))
        v2 = cat.insert_source(con, meter, _source("Roof V2", Provider.SOLAREDGE, "3066774"))
        v1 = cat.insert_source(con, meter, _source("Roof V1", Provider.SOLAREDGE_V1, "1234567"))
        put_secret(con, runtime.box, v2, "api_key", V2_KEY)
        put_secret(con, runtime.box, v1, "api_key", V1_KEY)
        con.execute(
            "INSERT INTO collector_runs (source_id, provider, started_at, duration_ms, outcome, http_status, error)"
            " VALUES (?, 'solaredge', ?, 120, 'auth_error', 401, ?)",
            [v2, now - timedelta(minutes=5), f"rejected {V2_KEY} at https://x.example/?api_key={V2_KEY}"],
        )
        con.execute(
            "INSERT INTO source_state (source_id, consecutive_failures, circuit, stopped_reason, updated_at)"
            " VALUES (?, 1, 'closed', ?, now())",
            [v1, f"SolarEdge V1 says the key {V1_KEY} is invalid"],
        )
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("pages/api_health.py").run()
    assert not app.exception
    return app


def _nodes(node: Any) -> Iterator[Any]:
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _nodes(child)


def _chart(app: AppTest) -> dict[str, Any]:
    (chart,) = app.get("plotly_chart")
    return json.loads(chart.proto.spec)


def test_renders_the_account_and_source_tables_and_the_heatmap(at: AppTest) -> None:
    assert at.title[0].value == "API Health"
    assert not at.error
    accounts, sources = (frame.value for frame in at.dataframe)
    by_account = accounts.set_index("Account")
    assert list(by_account.index) == ["Simulator (built-in)", "SolarEdge (V2) account 1", "SolarEdge V1 account 1"]
    assert by_account.loc["Simulator (built-in)", "Quota today (UTC)"] == "no limit"
    assert by_account.loc["Simulator (built-in)", "Quota this month"] == "no limit"
    assert by_account.loc["Simulator (built-in)", "Sources"] == 6
    assert by_account.loc["SolarEdge (V2) account 1", "Quota this month"] == "0 / 2,000 (0%)"
    assert by_account.loc["SolarEdge V1 account 1", "Quota today (UTC)"] == "0 / 300 (0%)"

    by_source = sources.set_index("Source")
    assert by_source.loc["Rooftop PV Array", "Status"] == "OK"
    assert by_source.loc["Rooftop PV Array", "Token expiry"] == "n/a"
    assert by_source.loc["Roof V1", "Status"] == "Stopped"
    assert (
        by_source.loc["Roof V1", "Next poll"]
        == "stopped until its settings change: SolarEdge V1 says the key *** is invalid"
    )
    assert (
        by_source.loc["Roof V2", "Last error"] == "auth_error, HTTP 401: rejected *** at https://x.example/?api_key=***"
    )

    spec = _chart(at)
    heat = spec["data"][0]
    assert heat["type"] == "heatmap"
    assert len(heat["y"]) == 8  # the six demo sources and the two SolarEdge ones
    assert len(heat["x"]) == 31
    assert len(at.get("download_button")) == 6  # CSV and Parquet under each table and the heatmap


def test_fewer_days_redraw_the_heatmap(at: AppTest) -> None:
    at.select_slider(key="ah_days").set_value(7).run()
    assert not at.exception
    assert len(_chart(at)["data"][0]["x"]) == 7


def test_no_key_appears_anywhere_on_the_page(at: AppTest) -> None:
    shown = b"".join(node.proto.SerializeToString() for node in _nodes(at._tree) if getattr(node, "proto", None))
    values = "".join(frame.value.to_csv() for frame in at.dataframe)
    assert b"rejected *** at" in shown and b"Roof V1" in shown  # the tables' cells are in what is searched
    for key in (V2_KEY, V1_KEY):
        assert key.encode() not in shown
        assert key not in values


def test_a_push_source_shows_its_requests_not_a_poll_schedule(app_env: Path) -> None:
    from core.collect.push_activity import PushActivity

    runtime = open_runtime(load_settings())
    push = ApiSettings(use_api=True, api_provider=Provider.PUSH, update_frequency=UpdateFrequency.MIN5)
    with runtime.store.transaction() as con:
        site = cat.read_catalog(con).sites[0]
        meter = cat.insert_meter(con, site.id, MeterIn(name="Logger", category=Category.CONS))
        source = SourceIn(
            name="Logger load",
            source_type="load",
            capacity_kw=5,
            carbon_intensity_g_per_kwh=0,
            cost_per_mwh=0,
            api=push,
        )
        source_id = cat.insert_source(con, meter, source)
    activity = PushActivity()
    now = datetime.now(UTC)
    activity.accepted(source_id, 100, now)
    activity.refused(source_id, 429, "More than 600 requests a minute with this token.", now)
    assert activity.publish(runtime.store, force=True)

    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("pages/api_health.py").run()
    assert not app.exception
    _, sources, pushed = (frame.value for frame in app.dataframe)
    sources, pushed = sources.set_index("Source"), pushed.set_index("Source")
    assert sources.loc["Logger load", "Status"] == "First poll pending"
    assert sources.loc["Logger load", "Next poll"] == "waiting for its sender's first request"
    assert pushed.loc["Logger load", "Readings (15 min)"] == "100"
    assert pushed.loc["Logger load", "Refused (15 min)"] == "1"
    assert pushed.loc["Logger load", "Last refused"].endswith("429: More than 600 requests a minute with this token.")
    assert pushed.loc["Logger load", "Ingest service"] == "running"


def test_an_enphase_source_set_to_stream_shows_its_streams_state_and_why(app_env: Path) -> None:
    from core.collect.stream_feed import StreamFeed

    runtime = open_runtime(load_settings())
    enphase = ApiSettings(
        use_api=True, api_provider=Provider.ENPHASE, system_id="42", client_id="app", stream_schedule="always"
    )
    with runtime.store.transaction() as con:
        site = cat.read_catalog(con).sites[0]
        meter = cat.insert_meter(con, site.id, MeterIn(name="Roof 2", category=Category.PROD))
        source = SourceIn(
            name="Enphase roof", source_type="solar", capacity_kw=5, carbon_intensity_g_per_kwh=0, cost_per_mwh=0,
            api=enphase,
        )  # fmt: skip
        cat.insert_source(con, meter, source)
    # The real feed: the owner never authorised the application, so the stream is refused before any call.
    feed = StreamFeed(runtime.store, runtime.box, runtime.providers)
    feed.sync(cat.load_catalog(runtime.store))
    feed.tick()
    for stream in feed._streams.values():
        stream.join(10)
    feed.close()

    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("pages/api_health.py").run()
    assert not app.exception
    assert "Live streams" in [h.value for h in app.subheader]
    streams = app.dataframe[-1].value.set_index("Source")
    assert streams.loc["Enphase roof", "Stream"].startswith("refused: Not authorised yet: use Authorize with Enphase")
    assert streams.loc["Enphase roof", "Streams opened"] == "0"
