"""The collector process's scheduling: one job per vendor site, kept in step with the configuration."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core import catalog as cat
from core.config import load_settings
from core.connections import draft_from_source, save_connections
from core.runtime import open_runtime
from jobs.collector import Collector

ROOT = Path(__file__).resolve().parents[1]


def test_jobs_follow_the_configuration(app_env: Path) -> None:
    runtime = open_runtime(load_settings())
    collector = Collector(runtime)
    collector.sync()
    collector.executor.shutdown(wait=True)  # the first poll of each new site runs at once
    assert collector.intervals == {("simulator", "site:1"): 15}
    assert [sorted(job.tags) for job in collector.scheduler.jobs] == [["simulator:site:1"]]
    with runtime.store.connect(read_only=True) as con:
        assert con.sql("SELECT count(DISTINCT source_id) FROM readings").fetchall()[0][0] == 5

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
    open_runtime(load_settings())  # migrate and seed first, as `make run` does with `jobs.cli init`
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.collector"],
        cwd=ROOT,
        env=os.environ.copy(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        runtime = open_runtime(load_settings(), prepare=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with runtime.store.connect(read_only=True) as con:
                if con.sql("SELECT count(*) FROM collector_runs").fetchall()[0][0]:
                    break
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0
    assert "stopping: finishing the polls in hand" in stderr
    assert "Traceback" not in stderr
