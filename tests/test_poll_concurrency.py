"""Enough polls in flight: a vendor answering in a few hundred ms does not make 20 sites take 20 times as long.

A behaviour check with a wide margin, not a benchmark (bench/ measures): the fake counts the requests in progress
at once (more than the 4 threads the collector used to have), and the whole sync takes less than the same calls
one after another would. Each poll's store work (reading its inputs, reserving quota, writing) still queues on the
one database file and staggers the polls' starts, hence a latency long enough for them to overlap visibly."""

from __future__ import annotations

import time
from pathlib import Path

from core.catalog import catalog as cat
from core.catalog.connections import new_draft, save_connections
from core.config import Settings
from core.models import Category, MeterIn, SiteIn
from core.runtime import open_runtime
from jobs.collector import Collector
from tests.fakes import solaredge_v2
from tests.fakes.server import serve
from tests.providers.test_http_pool import Connections, counting

SITES = 20
WORKERS = 16
LATENCY_S = 0.6  # the slow end of what vendors answer in (bench/ uses 70-800 ms)


def test_twenty_slow_vendor_sites_are_polled_side_by_side(tmp_path: Path) -> None:
    fleet = solaredge_v2.fleet_sites(SITES)
    keys = [f"fleet-key-{n:02d}" for n in range(SITES)]  # one account each: no shared per-minute limit
    state, seen = solaredge_v2.FakeState(sites=fleet, api_keys=set(keys), latency_s=LATENCY_S), Connections()
    with serve(counting(solaredge_v2.create_app(state), seen)) as url:
        settings = Settings(
            db_path=tmp_path / "dataconn.duckdb",
            key_file=tmp_path / "secret.key",
            seed_demo=False,
            solaredge_base_url=f"{url}/v2",
            collector_workers=WORKERS,
        )
        runtime = open_runtime(settings)
        for fake_site, key in zip(fleet, keys, strict=True):
            site = cat.create_site(
                runtime.store,
                SiteIn(
                    name=fake_site.name,
                    latitude=fake_site.latitude,
                    longitude=fake_site.longitude,
                    timezone=fake_site.timezone,
                ),
            )
            meter = cat.create_meter(runtime.store, site.id, MeterIn(name="PV", category=Category.PROD))
            draft = new_draft("new", meter.id, Category.PROD)
            draft.values |= {"name": "Roof", "capacity_kw": "5", "use_api": True, "api_provider": "solaredge"}
            draft.values |= {"update_frequency": "1hour", "system_id": str(fake_site.site_id)}
            draft.secrets = {"api_key": key}
            save_connections(runtime.store, runtime.box, site.id, [draft], set())

        collector = Collector(runtime)
        started = time.monotonic()
        try:
            collector._sync()  # a first sync polls every site
        finally:
            collector.executor.shutdown(wait=True)
            runtime.close()
        elapsed = time.monotonic() - started

    polled = {site for (_, site) in state.calls if site is not None}
    assert polled == {s.site_id for s in fleet}  # every site was read
    one_after_another = state.calls_total * LATENCY_S
    assert state.calls_total >= SITES
    assert seen.most_in_flight >= WORKERS // 2, seen.most_in_flight  # polls overlapped on the network
    # 16 at once: about two rounds of a poll's calls, plus the store work; one at a time: every call's latency.
    assert elapsed < one_after_another, (elapsed, state.calls_total)
    assert seen.distinct() <= settings.http_max_connections_per_host  # on the pool's shared connections
