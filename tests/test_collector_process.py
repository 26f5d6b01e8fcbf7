"""The collector process's scheduling: one job per vendor site, kept in step with the configuration."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.catalog import catalog as cat
from core.catalog.connections import draft_from_source, new_draft, save_connections
from core.config import load_settings
from core.models import Category, MeterIn, SiteIn
from core.runtime import open_runtime
from jobs.collector import Collector
from tests.fakes import solaredge_v1
from tests.fakes.server import serve
from tests.processes import run_module

ROOT = Path(__file__).resolve().parents[1]


def test_jobs_follow_the_configuration(app_env: Path) -> None:
    runtime = open_runtime(load_settings())
    collector = Collector(runtime)
    collector.sync()
    collector.executor.shutdown(wait=True)  # the first poll of each new site runs at once
    assert collector.intervals == {("simulator", "site:1"): 15}
    assert [sorted(job.tags) for job in collector.scheduler.jobs] == [["simulator:site:1"]]
    with runtime.store.connect(read_only=True) as con:
        assert con.sql("SELECT count(DISTINCT source_id) FROM readings").fetchall()[0][0] == 6

    catalog = cat.load_catalog(runtime.store)
    site_id = catalog.sites[0].id
    drafts = [draft_from_source(s) for s in catalog.sources]
    drafts[0].values["update_frequency"] = "5min"  # the fastest source sets the group's pace
    save_connections(runtime.store, runtime.box, site_id, drafts, set())
    collector.sync()
    assert collector.intervals == {("simulator", "site:1"): 5}
    assert len(collector.scheduler.jobs) == 1

    for draft in drafts:
        draft.values["use_api"] = False
    save_connections(runtime.store, runtime.box, site_id, drafts, set())
    collector.sync()
    assert collector.intervals == {} and collector.scheduler.jobs == []


def test_process_polls_then_stops_cleanly_on_sigterm(app_env: Path) -> None:
    runtime = open_runtime(load_settings())  # migrate and seed first, as `make run` does with `jobs.cli init`
    with runtime.store.connect(read_only=True) as con:
        assert con.sql("SELECT count(*) FROM collector_runs").fetchall() == [(0,)]
        readings_before = con.sql("SELECT count(*) FROM readings").fetchall()[0][0]
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.collector"],
        cwd=ROOT,
        env=os.environ.copy(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The first poll of each site runs as soon as the process starts: stop once its runs are in the file.
        polls: list[tuple[str, int]] = []
        deadline = time.monotonic() + 60
        while not polls and time.monotonic() < deadline and process.poll() is None:
            with runtime.store.connect(read_only=True) as con:
                polls = con.sql("SELECT outcome, rows_written FROM collector_runs").fetchall()
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert polls and all(outcome == "ok" for outcome, _ in polls), (polls, stderr)
    with runtime.store.connect(read_only=True) as con:
        written = con.sql("SELECT coalesce(sum(rows_written), 0) FROM collector_runs").fetchall()[0][0]
        readings_after = con.sql("SELECT count(*) FROM readings").fetchall()[0][0]
    assert written > 0 and readings_after > readings_before, (written, readings_before, readings_after)
    assert process.returncode == 0
    assert "stopping: finishing the polls in hand" in stderr
    assert "Traceback" not in stderr


def test_one_info_line_per_pass_and_no_request_lines(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATACONN_SEED_DEMO", "false")
    with serve(solaredge_v1.create_app(solaredge_v1.sandbox_state())) as url:
        monkeypatch.setenv("DATACONN_SOLAREDGE_V1_BASE_URL", url)
        runtime = open_runtime(load_settings())
        site = cat.create_site(
            runtime.store, SiteIn(name="B", latitude=50.8, longitude=4.3, timezone="Europe/Brussels")
        )
        meter = cat.create_meter(runtime.store, site.id, MeterIn(name="PV", category=Category.PROD))
        draft = new_draft("pv", meter.id, Category.PROD)
        draft.values |= {"name": "Roof", "capacity_kw": "8", "use_api": True, "api_provider": "solaredge_v1"}
        draft.values["system_id"] = solaredge_v1.SANDBOX_SITE_ID
        draft.secrets = {"api_key": solaredge_v1.SANDBOX_API_KEY}
        save_connections(runtime.store, runtime.box, site.id, [draft], set())
        result = run_module("jobs.collector", "--once")
    assert result.returncode == 0, result.stderr
    info = [line for line in result.stderr.splitlines() if " INFO " in line]
    assert len(info) == 1 and "collection pass: 1 vendor site(s): 1 ok" in info[0], result.stderr
    assert "HTTP Request" not in result.stderr and solaredge_v1.SANDBOX_API_KEY not in result.stderr
