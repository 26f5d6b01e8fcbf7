"""Crafted data for tests: a site with its meters and sources, and readings written with their rollups refreshed;
and a page of the app opened in AppTest on the database the test environment points at.

Every test that needs hand-made data builds it here, through the same code paths the app uses
(core.catalog.catalog inserts, core.store.readings_store.ingest, core.store.rollups.refresh), so the tests differ only
in their data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from core.catalog import catalog as cat
from core.catalog.connections import new_draft, save_connections
from core.config import load_settings
from core.models import ApiSettings, Category, MeterIn, Provider, SiteIn, SourceIn, UpdateFrequency
from core.runtime import open_runtime
from core.store import rollups
from core.store.crypto import SecretBox
from core.store.readings_store import ingest
from core.store.secret_store import put_secret
from core.store.store import Store

if TYPE_CHECKING:
    from streamlit.testing.v1 import AppTest

BRUSSELS = "Europe/Brussels"
APP = str(Path(__file__).resolve().parents[1] / "app.py")


def simulator_api(every: UpdateFrequency = UpdateFrequency.MIN15, *, use_api: bool = True) -> ApiSettings:
    """The API settings of a source the simulator feeds every `every`."""
    return ApiSettings(use_api=use_api, api_provider=Provider.SIMULATOR, update_frequency=every)


@dataclass(frozen=True)
class SourceSpec:
    """One source of a crafted site; unnamed, it is called "<CATEGORY> <type>" (e.g. "CONS grid")."""

    category: Category
    source_type: str
    name: str = ""
    capacity_kw: float = 10.0
    intensity: float = 0.0  # g/kWh
    price: float = 0.0  # per MWh
    api: ApiSettings = field(default_factory=ApiSettings)  # no API unless given

    @property
    def label(self) -> str:
        return self.name or f"{self.category.value} {self.source_type}"


def craft_site(
    store: Store,
    sources: Iterable[SourceSpec],
    *,
    name: str = "Plant",
    timezone: str = BRUSSELS,
    latitude: float = 50.85,
    longitude: float = 4.35,
    meter_names: Mapping[Category, str] | None = None,
) -> tuple[int, dict[str, int]]:
    """A site with one meter per category of its sources (named "<CATEGORY> meter" unless `meter_names` says
    otherwise), in one transaction; returns the site id and the source ids by source name."""
    ids: dict[str, int] = {}
    with store.transaction() as con:
        site_id = cat.insert_site(con, SiteIn(name=name, latitude=latitude, longitude=longitude, timezone=timezone))
        meters: dict[Category, int] = {}
        for spec in sources:
            if spec.category not in meters:
                meter_name = (meter_names or {}).get(spec.category, f"{spec.category.value} meter")
                meters[spec.category] = cat.insert_meter(con, site_id, MeterIn(name=meter_name, category=spec.category))
            source = SourceIn(
                name=spec.label,
                source_type=spec.source_type,
                capacity_kw=spec.capacity_kw,
                carbon_intensity_g_per_kwh=spec.intensity,
                cost_per_mwh=spec.price,
                api=spec.api,
            )
            ids[spec.label] = cat.insert_source(con, meters[spec.category], source)
    return site_id, ids


def saved_solaredge_source(
    store: Store,
    box: SecretBox,
    site_name: str,
    api_key: str,
    *,
    system_id: str = "1",
    every: UpdateFrequency = UpdateFrequency.MIN15,
) -> int:
    """A site with one SolarEdge (V2) PV source, "Roof" on the meter "PV", polled `every`, whose API key is stored
    encrypted with `box` as Save stores it; returns the source id."""
    api = ApiSettings(use_api=True, api_provider=Provider.SOLAREDGE, system_id=system_id, update_frequency=every)
    roof = SourceSpec(Category.PROD, "solar", "Roof", capacity_kw=5, api=api)
    _, ids = craft_site(store, [roof], name=site_name, meter_names={Category.PROD: "PV"})
    with store.transaction() as con:
        put_secret(con, box, ids["Roof"], "api_key", api_key)
    return ids["Roof"]


def saved_enphase_source(store: Store, box: SecretBox) -> cat.Source:
    """A site in Los Angeles with one Enphase PV source, "Enphase Roof", on the fake Enphase's sandbox application
    and system, polled hourly (within the Watt plan's 1,000 calls a month), saved as Data Connections saves it and
    not authorised yet."""
    from tests.fakes import enphase  # here, so tests that need no Enphase do not load the fake server

    site = cat.create_site(store, SiteIn(name="LA", latitude=34.05, longitude=-118.24, timezone="America/Los_Angeles"))
    meter = cat.create_meter(store, site.id, MeterIn(name="PV", category=Category.PROD))
    draft = new_draft("new-e", meter.id, Category.PROD)
    draft.values |= {
        "name": "Enphase Roof",
        "capacity_kw": "7",
        "use_api": True,
        "api_provider": "enphase",
        "client_id": enphase.SANDBOX_CLIENT_ID,
        "system_id": str(enphase.SANDBOX_SYSTEM_ID),
        "update_frequency": "1hour",
    }
    draft.secrets = {"client_secret": enphase.SANDBOX_CLIENT_SECRET, "app_api_key": enphase.SANDBOX_API_KEY}
    save_connections(store, box, site.id, [draft], set())
    catalog = cat.load_catalog(store)
    return next(s for s in catalog.sources if catalog.meter(s.meter_id).site_id == site.id)


def readings_frame(
    source_id: int, start: datetime, values: list[float | None], step_s: int = 900, *, skip_none: bool = False
) -> pl.DataFrame:
    """Final readings every `step_s` from `start`, in the shape `ingest` takes. A None is a row without a value (the
    vendor's "no data"), or no row at all (a gap) with `skip_none`."""
    rows = [(start + timedelta(seconds=step_s * i), v) for i, v in enumerate(values) if not (skip_none and v is None)]
    return pl.DataFrame(
        {
            "source_id": [source_id] * len(rows),
            "ts": [ts for ts, _ in rows],
            "interval_s": [step_s] * len(rows),
            "value": [v for _, v in rows],
            "is_final": [True] * len(rows),
        },
        schema={"source_id": pl.Int64, "ts": pl.Datetime("us", "UTC"), "interval_s": pl.Int32, "value": pl.Float64,
                "is_final": pl.Boolean},
    )  # fmt: skip


def write_readings(
    store: Store,
    source_id: int,
    start: datetime,
    values: list[float | None],
    step_s: int = 900,
    *,
    received_at: datetime | None = None,
    skip_none: bool = False,
) -> None:
    """`readings_frame` stored at `received_at` (by default when the last interval ends) with the rollups of its
    whole span refreshed, in one transaction as the collector writes."""
    end = start + timedelta(seconds=step_s * len(values))
    with store.transaction() as con:
        ingest(con, readings_frame(source_id, start, values, step_s, skip_none=skip_none), received_at or end)
        rollups.refresh(con, [source_id], start, end)


# --- pages ---------------------------------------------------------------------------------------------------


def app_store() -> Store:
    """The store of the database the test environment (`app_env`, `seeded_env`) points the app at."""
    return open_runtime(load_settings(), prepare=False).store


def open_page(page: str) -> AppTest:
    """The app run once, then switched to `page` (e.g. "pages/live.py"), which must render without an exception."""
    from streamlit.testing.v1 import AppTest  # here, so tests of core alone do not load Streamlit

    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page(page).run()
    assert not app.exception
    return app
