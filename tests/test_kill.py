"""`kill -9` at random moments, some while an outside program holds the file: nothing acknowledged is lost,
nothing is duplicated, and what is stored is what the vendor served.

The collector runs as a real process (`python -m jobs.collector --once`) against the SolarEdge V1 fake on
loopback. "Acknowledged" means committed to the file or written whole to the spool; after every kill both are
snapshotted, and the final table must contain every snapshotted final reading, unchanged.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from pydantic import SecretStr

from core.catalog import catalog as cat
from core.catalog.connections import new_draft, save_connections
from core.config import load_settings
from core.models import Category, MeterIn, SiteIn
from core.providers.quota import QuotaLedger
from core.providers.solaredge_v1.client import SolarEdgeV1Client
from core.runtime import open_runtime
from core.store.spool import Spool
from core.store.store import Store
from tests.fakes import solaredge_v1
from tests.fakes.server import serve
from tests.holder import held

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 12
Key = tuple[int, datetime]


def final_readings(store: Store) -> dict[Key, float | None]:
    with store.connect(read_only=True) as con:
        rows = con.sql("SELECT source_id, ts, value FROM readings WHERE is_final").fetchall()
    return {(int(s), ts): v for s, ts, v in rows}


def spooled_finals(spool: Spool) -> dict[Key, float | None]:
    found: dict[Key, float | None] = {}
    for name in spool.pending():
        frame = spool.read(name).readings.filter(pl.col("is_final"))
        found |= {(s, ts): v for s, ts, v in frame.select("source_id", "ts", "value").iter_rows()}
    return found


def collector(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.collector", "--once"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.timeout(600)
def test_random_kills_lose_and_duplicate_nothing(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATACONN_SEED_DEMO", "false")
    monkeypatch.setenv("DATACONN_LOCK_TIMEOUT_S", "2")
    state = solaredge_v1.sandbox_state()
    with serve(solaredge_v1.create_app(state)) as url:
        monkeypatch.setenv("DATACONN_SOLAREDGE_V1_BASE_URL", url)
        runtime = open_runtime(load_settings())
        store = runtime.store
        site = cat.create_site(
            store, SiteIn(name="Brussels", latitude=50.85, longitude=4.35, timezone="Europe/Brussels")
        )
        meter = cat.create_meter(store, site.id, MeterIn(name="PV", category=Category.PROD))
        draft = new_draft("pv", meter.id, Category.PROD)
        draft.values |= {"name": "Roof", "capacity_kw": "8", "use_api": True, "api_provider": "solaredge_v1"}
        draft.values |= {"system_id": solaredge_v1.SANDBOX_SITE_ID}
        draft.secrets = {"api_key": solaredge_v1.SANDBOX_API_KEY}
        save_connections(store, runtime.box, site.id, [draft], set())
        spool = Spool.beside(store.path)
        env = os.environ.copy()

        started = time.monotonic()
        first = collector(env)
        assert first.wait(timeout=120) == 0, first.stderr.read() if first.stderr else ""
        typical_s = time.monotonic() - started
        acknowledged = final_readings(store)
        assert acknowledged, "the first pass stored nothing"

        rng = random.Random(20261127)
        kills = spooled_rounds = 0
        for round_no in range(ROUNDS):
            hold = round_no % 3 == 1  # every third round an analyst's read-only session holds the file
            process = collector(env)
            if hold:
                with held(store.path, read_only=True):
                    if round_no == 1:  # once, let the pass finish: it must spool (it waits ~4 s for the file)
                        process.wait(timeout=120)
                    time.sleep(rng.uniform(0, typical_s + 4))
                    killed = process.poll() is None
                    if killed:
                        process.kill()
                    process.wait(timeout=60)
                    spooled_rounds += bool(spool.pending())
            else:
                time.sleep(rng.uniform(0, typical_s))
                killed = process.poll() is None
                if killed:
                    process.kill()
                process.wait(timeout=60)
            kills += killed
            acknowledged |= final_readings(store) | spooled_finals(spool)

        last = collector(env)
        assert last.wait(timeout=120) == 0, last.stderr.read() if last.stderr else ""
        stored = final_readings(store)
        with store.connect(read_only=True) as con:
            duplicates = con.sql(
                "SELECT count(*) FROM (SELECT source_id, ts FROM readings GROUP BY ALL HAVING count(*) > 1)"
            ).fetchall()[0][0]
            first_ts, last_ts, rows = con.sql("SELECT min(ts), max(ts), count(*) FROM readings").fetchall()[0]

        # What the vendor serves for the same range, asked directly.
        client = SolarEdgeV1Client(
            SecretStr(solaredge_v1.SANDBOX_API_KEY),
            solaredge_v1.SANDBOX_SITE_ID,
            base_url=url,
            ledger=QuotaLedger(),
            timezone="Europe/Brussels",
        )
        served = client.history(first_ts, last_ts + timedelta(minutes=15))
        client.close()
        calls = state.calls_served

    assert kills >= ROUNDS // 2, f"only {kills} rounds were killed mid-run: the test did not test"
    assert spooled_rounds >= 1, "no round spooled: the held-file path was not exercised"
    assert spool.pending() == []
    assert duplicates == 0
    assert rows == int((last_ts - first_ts) / timedelta(minutes=15)) + 1  # no hole from first to last
    lost = {key: value for key, value in acknowledged.items() if stored.get(key, "missing") != value}
    assert lost == {}, f"{len(lost)} acknowledged readings lost or changed"
    vendor = {
        ts.astimezone(UTC): v for ts, v in served.filter(pl.col("channel") == "pv_w").select("ts", "value").iter_rows()
    }
    mine = {ts: v for (_, ts), v in stored.items()}
    assert mine and all(vendor.get(ts, "absent") == v for ts, v in mine.items())
    assert sum(calls.values()) <= 300  # the daily budget held across every kill
    assert datetime.now(UTC) - last_ts < timedelta(hours=1)
