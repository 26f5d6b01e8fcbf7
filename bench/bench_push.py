"""The push endpoint under load (issue 15): the real ingest service (`python -m jobs.ingest`, its own process) on a
temporary DuckDB file, and senders in this process posting 100-reading JSON bodies as fast as it answers.

Setup: `SOURCES` Push sources with their tokens (the rate limit raised out of the way); `SENDERS` threads, each
with its own keep-alive client, post to the sources in turn for `SECONDS`, each request a new 100 minutes of
1-minute readings of its source (so every request stores 100 new rows). Reported:
- sustained requests/s and readings/s (answers 200 or 202 over the wall time);
- the answer's latency p50/p95 (an answer means stored or durable in the spool: the figure from request to
  stored, the issue's "p95 from request to stored");
- rows in the file at the end against rows acknowledged (target: equal; nothing lost, nothing twice);
- the service's resident memory at the end.
Also Live's change check: `core.analytics.live.change_mark` for a site of 6 sources while nothing changes (target
under 5 ms, issue 15's point 6).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.timing import measure, percentiles
from core.analytics.live import change_mark
from core.catalog import catalog as cat
from core.catalog.push_sources import make_token
from core.config import Settings
from core.models import ApiSettings, Category, MeterIn, Provider, SiteIn, SourceIn, UpdateFrequency
from core.runtime import open_runtime
from core.store.change_marks import ChangeMarks

ROOT = Path(__file__).resolve().parents[1]
SOURCES = 20
SENDERS = int(os.environ.get("BENCH_PUSH_SENDERS", "32"))
SECONDS = float(os.environ.get("BENCH_PUSH_SECONDS", "30"))
PER_REQUEST = 100
PORT = 8651
TARGET_CHECK_MS = 5.0


def _fleet(settings: Settings) -> list[tuple[int, str]]:
    runtime = open_runtime(settings)
    site = cat.create_site(runtime.store, SiteIn(name="Loggers", latitude=48.1, longitude=11.6, timezone="UTC"))
    meter = cat.create_meter(runtime.store, site.id, MeterIn(name="Main", category=Category.CONS))
    api = ApiSettings(use_api=True, api_provider=Provider.PUSH, update_frequency=UpdateFrequency.MIN5)
    made = []
    now = datetime.now(UTC)
    for n in range(SOURCES):
        source = SourceIn(
            name=f"Logger {n}",
            source_type="load",
            capacity_kw=10,
            carbon_intensity_g_per_kwh=0,
            cost_per_mwh=0,
            api=api,
        )
        with runtime.store.transaction() as con:
            source_id = cat.insert_source(con, meter.id, source)
        made.append((source_id, make_token(runtime.store, runtime.box, source_id, now)))
    return made


def _body(sent: int) -> bytes:
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=PER_REQUEST * sent)
    rows = ",".join(
        f'{{"ts":"{(start + timedelta(minutes=i)).isoformat()}","value":{1000 + i},"interval_s":60}}'
        for i in range(PER_REQUEST)
    )
    return f'{{"readings":[{rows}]}}'.encode()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        env = os.environ | {
            "DATACONN_DB_PATH": f"{folder}/bench.duckdb",
            "DATACONN_KEY_FILE": f"{folder}/secret.key",
            "DATACONN_SEED_DEMO": "false",
            "DATACONN_INGEST_PORT": str(PORT),
            "DATACONN_INGEST_REQUESTS_PER_MINUTE": "1000000",
            "DATACONN_LOG_LEVEL": "WARNING",
        }
        settings = Settings(db_path=Path(env["DATACONN_DB_PATH"]), key_file=Path(env["DATACONN_KEY_FILE"]))
        sources = _fleet(settings.model_copy(update={"seed_demo": False}))
        service = subprocess.Popen([sys.executable, "-m", "jobs.ingest"], cwd=ROOT, env=env)
        url = f"http://127.0.0.1:{PORT}"
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            latencies: list[float] = []
            outcomes: dict[int, int] = {}
            lock = threading.Lock()
            counter = iter(range(10**9))
            stop_at = time.monotonic() + SECONDS

            def sender() -> None:
                with httpx.Client(timeout=60) as client:
                    while time.monotonic() < stop_at:
                        with lock:
                            sent = next(counter)
                        source_id, token = sources[sent % SOURCES]
                        body = _body(sent // SOURCES)
                        started = time.perf_counter()
                        answer = client.post(
                            f"{url}/api/v1/sources/{source_id}/readings",
                            content=body,
                            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                        )
                        with lock:
                            latencies.append((time.perf_counter() - started) * 1000)
                            outcomes[answer.status_code] = outcomes.get(answer.status_code, 0) + 1

            began = time.monotonic()
            threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.monotonic() - began
            rss = _rss_mb(service.pid)
        finally:
            service.terminate()
            service.wait(timeout=30)
        accepted = outcomes.get(200, 0) + outcomes.get(202, 0)
        p50, p95 = percentiles(latencies)
        runtime = open_runtime(settings.model_copy(update={"seed_demo": False}), prepare=False)
        with runtime.store.connect(read_only=True) as con:
            rows = con.sql("SELECT count(*), count(DISTINCT (source_id, ts)) FROM readings").fetchall()[0]
        print(
            f"push endpoint: {SENDERS} senders, {SOURCES} sources, {PER_REQUEST}-reading JSON bodies, {wall:.0f} s:"
            f" {accepted / wall:,.0f} requests/s, {accepted * PER_REQUEST / wall:,.0f} readings/s;"
            f" answer p50 {p50:.0f} ms, p95 {p95:.0f} ms; answers {dict(sorted(outcomes.items()))};"
            f" rows stored {rows[0]:,} (distinct {rows[1]:,}) vs acknowledged {accepted * PER_REQUEST:,};"
            f" service RSS at the end {rss:.0f} MB"
        )
        marks = ChangeMarks(runtime.store.path)
        ids = [s for s, _ in sources[:6]]
        marks.mark(ids)
        check_p50, check_p95 = measure(lambda: change_mark(runtime.store, ids), 2_000)
        verdict = "meets" if check_p95 < TARGET_CHECK_MS else "MISSES"
        print(
            f"Live's change check, 6 sources, nothing changed: p50 {check_p50 * 1000:.0f} us, p95"
            f" {check_p95 * 1000:.0f} us (target < {TARGET_CHECK_MS:g} ms: {verdict})"
        )


if __name__ == "__main__":
    main()
