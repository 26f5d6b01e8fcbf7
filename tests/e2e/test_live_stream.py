"""Live follows an Enphase system's live stream in real Chromium: opening the page makes the collector's stream
feed (run here on the same DuckDB file, as the collector runs it) open the system's stream at the fake Enphase
cloud, the Load tile shows its frames within seconds with no click, and leaving the page closes the stream."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from core.catalog import catalog as cat
from core.catalog import enphase_auth
from core.catalog.connections import new_draft, save_connections
from core.collect.stream_feed import TICK_S, StreamFeed
from core.config import load_settings
from core.models import Category, MeterIn, SiteIn
from core.runtime import open_runtime
from tests.e2e.test_connection_flow import _open
from tests.fakes import enphase
from tests.fakes.server import serve

OPENED_WITHIN_S = 15.0  # Live's first check, the feed's tick, the token, the stream's first frame


@pytest.fixture
def streaming(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """A site whose load source reads an authorised Enphase system set to stream while watched, the collector's
    stream feed ticking on it, and the dashboard."""
    state = enphase.FakeState(systems=enphase.sandbox_systems())
    state.set_plan("Kilowatt")
    with serve(enphase.create_app(state)) as url:
        monkeypatch.setenv("DATACONN_DB_PATH", str(tmp_path / "dataconn.duckdb"))
        monkeypatch.setenv("DATACONN_KEY_FILE", str(tmp_path / "secret.key"))
        monkeypatch.delenv("DATACONN_SECRET_KEYS", raising=False)
        monkeypatch.setenv("DATACONN_SEED_DEMO", "false")
        monkeypatch.setenv("DATACONN_LIVE_REFRESH_S", "3600")
        monkeypatch.setenv("DATACONN_ENPHASE_BASE_URL", f"{url}/api/v4")
        monkeypatch.setenv("DATACONN_ENPHASE_AUTH_URL", f"{url}/oauth")
        monkeypatch.setenv("DATACONN_ENPHASE_PLAN", "kilowatt")
        runtime = open_runtime(load_settings())
        site = cat.create_site(
            runtime.store, SiteIn(name="LA", latitude=34.05, longitude=-118.24, timezone="America/Los_Angeles")
        )
        meter = cat.create_meter(runtime.store, site.id, MeterIn(name="House", category=Category.CONS))
        draft = new_draft("new-load", meter.id, Category.CONS)
        draft.values |= {
            "name": "House load", "source_type": "load", "capacity_kw": "10", "use_api": True,
            "api_provider": "enphase", "client_id": enphase.SANDBOX_CLIENT_ID,
            "system_id": str(enphase.SANDBOX_SYSTEM_ID), "update_frequency": "15min", "stream_on_live": True,
        }  # fmt: skip
        draft.secrets = {"client_secret": enphase.SANDBOX_CLIENT_SECRET, "app_api_key": enphase.SANDBOX_API_KEY}
        save_connections(runtime.store, runtime.box, site.id, [draft], set(), enphase_plan="kilowatt")
        source_id = cat.load_catalog(runtime.store).sources[0].id
        code = state.issue_code(enphase_auth.redirect_uri(runtime.settings))
        enphase_auth.complete(runtime.store, runtime.box, runtime.settings, source_id, code, datetime.now(UTC))

        feed = StreamFeed(runtime.store, runtime.box, runtime.providers)
        feed.sync(cat.load_catalog(runtime.store))
        stop = threading.Event()

        def collector() -> None:  # the collector's scheduler job
            while not stop.wait(TICK_S):
                feed.tick()

        ticking = threading.Thread(target=collector, daemon=True)
        ticking.start()
        try:
            yield {"dashboard": request.getfixturevalue("app_server"), "fake": state, "feed": feed}
        finally:
            stop.set()
            ticking.join(10)
            feed.close()
            runtime.close()


def test_watching_live_streams_the_system_and_leaving_closes_it(page: Page, streaming: dict) -> None:
    fake, feed = streaming["fake"], streaming["feed"]
    time.sleep(2 * TICK_S)
    assert fake.stream_durations == []  # nobody watches: no stream, no call

    _open(page, f"{streaming['dashboard']}/live", "Live")
    opened = time.monotonic()
    load = page.get_by_test_id("stMetric").filter(has_text="Load")
    expect(load).to_contain_text(re.compile(r"\d W|kW"), timeout=OPENED_WITHIN_S * 1000)
    print(f"\nfirst frame shown {time.monotonic() - opened:.1f} s after the page opened")
    assert fake.stream_durations == [300]  # one stream, the longest duration: one call per 5 minutes
    fresh = page.get_by_text(re.compile(r"newest value [0-2] s ago"))
    for _ in range(3):  # it keeps following, with no input: the newest value stays seconds old
        expect(fresh).to_be_visible()
        time.sleep(2)
    sent = {f"{frame['data']['consumption_power'] / 1000:.2f} kW" for frame in fake.stream_sent}
    sent |= {f"{frame['data']['consumption_power']} W" for frame in fake.stream_sent}
    assert any(value in load.inner_text() for value in sent), load.inner_text()  # a frame's own consumption

    page.goto("about:blank")  # nobody watches any more
    stream = next(iter(feed._streams.values()))
    deadline = time.monotonic() + 30
    while stream.running and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not stream.running, "the stream was still open 30 s after the page was left"
