"""MQTT at fleet scale (issue 15, point 6): 1,000 MQTT topics at one message a second each, followed by the REAL
collector process (`python -m jobs.collector`, its own process) on a temporary DuckDB file. Targets: p95 from
publish to stored under 5 s, every minute of every source stored once, and the collector's memory flat over at
least 10 minutes.

Setup: a real Mosquitto broker on a free loopback port (`tests.mqtt_broker`, the tests' own), 1,000 MQTT sources
written through the catalog (10 sites of 100; every tenth source reads a Tasmota `SENSOR` message at
`ENERGY.Power`, the others a plain number in W), and a publisher in a process of its own (Paho, QoS 0 as devices
send telemetry) publishing one message a second on each source's topic: every second in 20 slices of 50 topics,
so the messages are spread over the second as independent devices' would be. Each source publishes a constant
power of its own (100 W + its number), so each stored minute's value can be checked; the JSON messages carry their
publish time in `Time` as Tasmota's do, and the publisher keeps the send time of each minute's last message.

A stored reading is a 1-minute average (`readings.coverage` the share of the minute covered), written by the
collector within seconds after its minute closes. Measured from outside the collector:
- publish -> stored: for each source and minute, the time its row is first visible in the file minus the minute's
  end (the latest a message belonging to it can be published); the file is read every 0.5 s through short
  read-only connections (`core.store.store.Store`, under the lock every reader takes), so each figure is at most
  0.5 s (plus the read) above the truth. Also from the minute's actual last message of each topic. Target p95 < 5 s;
- rows: 1,000 x the measured (complete) minutes expected, against rows stored: none missing, none twice (the
  natural key keeps a row once, so "twice" is a minute handed over again: a `collector_runs` row of the feed that
  inserted nothing); each value against the power published; coverage p5 (target ~1.0);
- the collector's memory, VmRSS and its private part RssAnon (see `bench.process_stats.memory_mb`), every second: after
  warm-up (baseline), peak, end, growth and trend; target: flat, growth < 10 % (the soak's);
- CPU in cores (user + system time over the measured wall time) of the collector, the broker and the publisher.

Full mode (`python -m bench mqtt`): 2 minutes of warm-up after the subscriptions are made, then 10 whole minutes
measured (~13 minutes in all). Quick mode (`--quick`): 30 s of warm-up, 2 minutes measured (~3.5 minutes).
`--sources`, `--warm-up` (seconds) and `--minutes` override.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bench.process_stats import cpu_s, sample_memory
from bench.timing import percentiles
from core.catalog import catalog as cat
from core.config import Settings
from core.models import ApiSettings, Category, MeterIn, Provider, SiteIn, SourceIn, UpdateFrequency
from core.runtime import open_runtime
from core.store.crypto import generate_key
from core.store.store import Store, StoreError

if TYPE_CHECKING:
    from tests.mqtt_broker import Mosquitto

ROOT = Path(__file__).resolve().parents[1]
SOURCES = 1_000
PER_SITE = 100
JSON_EVERY = 10  # every tenth source is a Tasmota plug (JSON, `ENERGY.Power`)
SLICES = 20  # a second's messages go out in this many slices, spread over the second
POLL_EVERY_S = 0.5
SAMPLE_EVERY_S = 1.0
SUBSCRIBE_TIMEOUT_S = 180.0
TAIL_TIMEOUT_S = 60.0  # how long after the last measured minute's end its rows may take before they count missing
TARGET_P95_S = 5.0
TARGET_GROWTH = 0.10
TARGET_COVERAGE_P5 = 0.99


@dataclass(frozen=True)
class Device:
    source_id: int
    topic: str
    tasmota: bool
    watts: float


def topic_of(n: int, tasmota: bool) -> str:
    return f"tele/plug{n:04d}/SENSOR" if tasmota else f"bench/meter{n:04d}/power"


def payload(device: Device, now: float) -> bytes:
    if not device.tasmota:
        return f"{device.watts:g}".encode()
    stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    energy = {"Total": 12.345, "Today": 0.42, "Power": device.watts, "Voltage": 231, "Current": 0.5, "Factor": 0.9}
    return json.dumps({"Time": stamp, "ENERGY": energy}).encode()


# --- the fleet in the catalog ---------------------------------------------------------------------------------


def populate(folder: Path, port: int, sources: int) -> tuple[Settings, dict[str, str], list[Device]]:
    """`sources` MQTT sources on `PER_SITE`-source sites, all on the broker at `port`, in one transaction."""
    key = generate_key()
    settings = Settings(db_path=folder / "mqtt.duckdb", secret_keys=key, seed_demo=False)
    env = {
        "DATACONN_DB_PATH": str(settings.db_path),
        "DATACONN_SECRET_KEYS": key,
        "DATACONN_SEED_DEMO": "false",
    }
    runtime = open_runtime(settings)
    devices: list[Device] = []
    with runtime.store.transaction() as con:
        meter_id = 0
        for n in range(sources):
            if n % PER_SITE == 0:
                site = cat.insert_site(
                    con, SiteIn(name=f"Plugs {n // PER_SITE:02d}", latitude=50.85, longitude=4.35, timezone="UTC")
                )
                meter_id = cat.insert_meter(con, site, MeterIn(name="Sockets", category=Category.CONS))
            tasmota = n % JSON_EVERY == 0
            topic = topic_of(n, tasmota)
            api = ApiSettings(
                use_api=True,
                api_provider=Provider.MQTT,
                update_frequency=UpdateFrequency.MIN5,
                mqtt_host="127.0.0.1",
                mqtt_port=port,
                mqtt_topic=topic,
                mqtt_payload_path="ENERGY.Power" if tasmota else "",
                mqtt_unit="W",
            )
            source = SourceIn(
                name=f"{'Plug' if tasmota else 'Meter'} {n:04d}",
                source_type="load",
                capacity_kw=3,
                carbon_intensity_g_per_kwh=0,
                cost_per_mwh=0,
                api=api,
            )
            source_id = cat.insert_source(con, meter_id, source)
            devices.append(Device(source_id, topic, tasmota, 100.0 + n))
    runtime.close()
    return settings, env, devices


# --- the publisher, in a process of its own -------------------------------------------------------------------


def publish(conn: multiprocessing.connection.Connection, port: int, devices: list[Device]) -> None:
    """Child process: one message a second per device, the second split in `SLICES`, until "stop"; then send back
    how it kept pace and the send time of each minute's last message per slice."""
    from paho.mqtt.client import Client, MQTTv311
    from paho.mqtt.enums import CallbackAPIVersion

    client = Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-publisher", protocol=MQTTv311)
    client.max_queued_messages_set(0)  # unlimited: QoS 0 messages wait in Paho only if the socket is full
    client.connect("127.0.0.1", port)
    client.loop_start()
    per_slice = math.ceil(len(devices) / SLICES)
    slices = [devices[k * per_slice : (k + 1) * per_slice] for k in range(SLICES)]
    second = math.ceil(time.time())
    lateness: list[float] = []
    last_of_minute: dict[tuple[int, int], float] = {}  # (minute start, slice) -> send time of its last slice
    sent = failed = 0
    started_cpu = time.process_time()
    conn.send("publishing")
    while not conn.poll():
        for k, chunk in enumerate(slices):
            target = second + k / SLICES
            wait = target - time.time()
            if wait > 0:
                time.sleep(wait)
            at = time.time()
            lateness.append(at - target)
            for device in chunk:
                info = client.publish(device.topic, payload(device, at), qos=0)
                sent += 1
                failed += info.rc != 0
            if second % 60 == 59:
                last_of_minute[(second - 59, k)] = at
        second += 1
        if time.time() > second + 5:  # fell behind by seconds: skip ahead rather than burst (counted in lateness)
            second = math.ceil(time.time())
    conn.recv()
    cpu = time.process_time() - started_cpu
    client.disconnect()
    client.loop_stop()
    conn.send({"sent": sent, "failed": failed, "lateness": lateness, "last_of_minute": last_of_minute, "cpu": cpu})


# --- measuring from outside -----------------------------------------------------------------------------------


class Visibility:
    """When each (source, minute) row is first seen in the file, read every `POLL_EVERY_S`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seen: dict[tuple[int, int], float] = {}  # (source id, minute start epoch s) -> first seen
        self.per_minute: dict[int, int] = {}  # minute start -> rows seen
        self.reads: list[float] = []  # how long each read took (lock, connect, query, close)
        self.busy = 0
        self._since = 0  # only minutes from here on are asked for (older ones are complete)

    def poll(self) -> None:
        started = time.time()
        try:
            with self.store.connect(read_only=True, timeout_s=5) as con:
                rows = con.execute(
                    "SELECT source_id, epoch(ts)::BIGINT FROM readings WHERE ts >= to_timestamp(?)", [self._since]
                ).fetchall()
        except StoreError:
            self.busy += 1
            return
        now = time.time()
        self.reads.append(now - started)
        for source_id, minute in rows:
            key = (int(source_id), int(minute))
            if key not in self.seen:
                self.seen[key] = now
                self.per_minute[key[1]] = self.per_minute.get(key[1], 0) + 1
        # Ask again from the oldest of the last two minutes seen: rows of the minute before may still come.
        if rows:
            self._since = max(self._since, max(minute for _, minute in rows) - 60)

    def count(self, minute: int) -> int:
        return self.per_minute.get(minute, 0)


def message_rates(store: Store) -> list[int]:
    """Messages each source got in the last minute, as the collector last wrote them to `mqtt_status`."""
    with store.connect(read_only=True, timeout_s=10) as con:
        return [int(n) for (n,) in con.sql("SELECT messages_per_minute FROM mqtt_status").fetchall()]


def subscribed(store: Store) -> int:
    """MQTT sources the collector reports subscribed in `mqtt_status` (0 while it has not written it)."""
    try:
        with store.connect(read_only=True, timeout_s=5) as con:
            return int(con.sql("SELECT count(*) FROM mqtt_status WHERE subscribed").fetchall()[0][0])
    except StoreError:
        return 0
    except Exception:  # the table not created yet (migrations run by the collector)
        return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench mqtt", description="the MQTT benchmark")
    parser.add_argument("--quick", action="store_true", help="30 s warm-up, 2 minutes measured")
    parser.add_argument("--sources", type=int, default=SOURCES, help=f"MQTT sources (default {SOURCES:,})")
    parser.add_argument("--warm-up", type=float, default=None, help="seconds before measuring (120; quick 30)")
    parser.add_argument("--minutes", type=int, default=None, help="whole minutes measured (10; quick 2)")
    args = parser.parse_args(argv)
    warm_up_s = args.warm_up if args.warm_up is not None else (30.0 if args.quick else 120.0)
    minutes = args.minutes or (2 if args.quick else 10)
    began = time.monotonic()
    from tests.mqtt_broker import running_mosquitto

    with tempfile.TemporaryDirectory() as tmp, running_mosquitto(Path(tmp) / "broker") as broker:
        run(Path(tmp), broker, args.sources, warm_up_s, minutes, began)


def run(folder: Path, broker: Mosquitto, sources: int, warm_up_s: float, minutes: int, began: float) -> None:
    settings, env, devices = populate(folder, broker.port, sources)
    tasmota = sum(d.tasmota for d in devices)
    print(
        f"mqtt: {sources:,} MQTT sources on one Mosquitto broker ({sources - tasmota:,} plain numbers in W, "
        f"{tasmota:,} Tasmota JSON at ENERGY.Power), one message a second each ({sources:,} messages/s, QoS 0, "
        f"spread over each second); set up in {time.monotonic() - began:.0f} s"
    )
    store = Store(settings.db_path, lock_timeout_s=10)
    log_path = folder / "collector.log"
    with open(log_path, "w") as log:
        collector = subprocess.Popen(
            [sys.executable, "-m", "jobs.collector"],
            cwd=ROOT,
            env=os.environ | env,
            stderr=log,
            stdout=subprocess.DEVNULL,
        )
    started = time.monotonic()
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    publisher = context.Process(target=publish, args=(child, broker.port, devices), daemon=True)
    stop = threading.Event()
    memory: list[tuple[float, float, float]] = []
    sampler = threading.Thread(
        target=sample_memory,
        args=(collector.pid, stop, memory),
        kwargs={"clock": time.time, "every_s": SAMPLE_EVERY_S},
        daemon=True,
    )
    sampler.start()
    visibility = Visibility(store)
    stopped_s = float("nan")
    try:
        while (ready := subscribed(store)) < sources:
            if collector.poll() is not None:
                raise RuntimeError(f"the collector exited with {collector.returncode}:\n{log_path.read_text()[-2000:]}")
            if time.monotonic() - started > SUBSCRIBE_TIMEOUT_S:
                raise RuntimeError(f"only {ready} of {sources} topics subscribed after {SUBSCRIBE_TIMEOUT_S:.0f} s")
            time.sleep(POLL_EVERY_S)
        subscribed_s = time.monotonic() - started
        publisher.start()
        parent.recv()  # "publishing"
        warm_end = time.time() + warm_up_s
        first = math.ceil(warm_end / 60) * 60  # the first whole minute after the warm-up
        last_end = first + 60 * minutes
        expected = {minute: sources for minute in range(first, last_end, 60)}
        cpu_start: tuple[float, float, float, float] | None = None
        while True:
            if collector.poll() is not None:
                raise RuntimeError(f"the collector exited with {collector.returncode}; see its log")
            now = time.time()
            if cpu_start is None and now >= warm_end:
                cpu_start = (now, cpu_s(collector.pid), cpu_s(broker.pid), cpu_s(publisher.pid))
            visibility.poll()
            done = all(visibility.count(m) >= n for m, n in expected.items())
            if now >= last_end and (done or now > last_end + TAIL_TIMEOUT_S):
                break
            time.sleep(max(0.0, POLL_EVERY_S - (time.time() - now)))
        assert cpu_start is not None
        end = time.time()
        cpu_end = (end, cpu_s(collector.pid), cpu_s(broker.pid), cpu_s(publisher.pid))
        rates = message_rates(store)  # before anything stops: messages per source in the last minute
        broker_exit = broker.exited()
    finally:
        if publisher.is_alive():
            parent.send("stop")
        stop_at = time.monotonic()
        collector.send_signal(signal.SIGTERM)
        try:
            collector.wait(timeout=120)
        except subprocess.TimeoutExpired:
            collector.kill()
            collector.wait()
        stopped_s = time.monotonic() - stop_at
        stop.set()
    sent = parent.recv()
    publisher.join(timeout=30)
    if broker_exit is not None:  # the run means nothing then: say why
        print(f"mqtt: the broker ended during the run (exit status {broker_exit}); its log ends with:")
        print(broker.log.read_text()[-1500:])
    report(
        settings.db_path,
        devices,
        visibility,
        expected,
        sent,
        rates,
        memory,
        cpu_start,
        cpu_end,
        warm_end,
        subscribed_s,
        collector.returncode,
        stopped_s,
        log_path,
        time.monotonic() - began,
    )


# --- the figures ------------------------------------------------------------------------------------------------


def report(
    db_path: Path,
    devices: list[Device],
    visibility: Visibility,
    expected: dict[int, int],
    sent: dict[str, object],
    rates: list[int],
    memory: list[tuple[float, float, float]],
    cpu_start: tuple[float, float, float, float],
    cpu_end: tuple[float, float, float, float],
    warm_end: float,
    subscribed_s: float,
    returncode: int | None,
    stopped_s: float,
    log_path: Path,
    total_s: float,
) -> None:
    import duckdb

    first, last_end = min(expected), max(expected) + 60
    watts = {d.source_id: d.watts for d in devices}
    slice_of = {d.source_id: n * SLICES // len(devices) for n, d in enumerate(devices)}
    con = duckdb.connect(str(db_path), read_only=True)
    rows = con.execute(
        "SELECT source_id, epoch(ts)::BIGINT, value, coverage, interval_s FROM readings"
        " WHERE ts >= to_timestamp(?) AND ts < to_timestamp(?)",
        [first, last_end],
    ).fetchall()
    runs_total, runs_empty, written = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE rows_written = 0), coalesce(sum(rows_written), 0)"
        " FROM collector_runs WHERE provider = 'mqtt'"
    ).fetchone()
    runs_window = con.execute(  # the runs written during the measured minutes (each a minute after its own)
        "SELECT count(*) FROM collector_runs WHERE provider = 'mqtt' AND started_at >= to_timestamp(?)"
        " AND started_at < to_timestamp(?)",
        [first, last_end],
    ).fetchone()[0]
    stored_total = con.execute("SELECT count(*) FROM readings").fetchone()[0]
    con.close()

    wall_min = (cpu_end[0] - warm_end) / 60
    print(
        f"mqtt: the collector subscribed to every topic {subscribed_s:.0f} s after its start; warm-up until "
        f"{datetime.fromtimestamp(warm_end, UTC):%H:%M:%S} UTC, then {len(expected)} whole minutes measured "
        f"({datetime.fromtimestamp(first, UTC):%H:%M}-{datetime.fromtimestamp(last_end, UTC):%H:%M} UTC), "
        f"{wall_min:.1f} min of wall time after the warm-up, {total_s / 60:.1f} min in all"
    )
    lateness = [max(0.0, x) * 1000 for x in sent["lateness"]]  # type: ignore[attr-defined]
    late50, late95 = percentiles(lateness)
    print(
        f"mqtt: publisher: {sent['sent']:,} messages ({sent['failed']} refused by Paho), each slice of "
        f"{math.ceil(len(devices) / SLICES)} sent p50 {late50:.1f} ms, p95 {late95:.1f} ms, max {max(lateness):.0f} ms"
        f" after its time; the collector counted per source {min(rates, default=0)}-{max(rates, default=0)} messages "
        f"in the last minute (median {statistics.median(rates) if rates else 0:g}; 60 expected)"
    )

    # publish -> stored
    latencies, from_last = [], []
    last_of_minute: dict[tuple[int, int], float] = sent["last_of_minute"]  # type: ignore[assignment]
    per_minute: dict[int, float] = {}
    for (source_id, minute), seen in visibility.seen.items():
        if minute not in expected:
            continue
        latencies.append(seen - (minute + 60))
        per_minute[minute] = max(per_minute.get(minute, 0.0), seen - (minute + 60))
        last = last_of_minute.get((minute, slice_of[source_id]))
        if last is not None:
            from_last.append(seen - last)
    if latencies:
        p50, p95 = percentiles(latencies)
        l50, l95 = percentiles(from_last) if from_last else (float("nan"), float("nan"))
        reads50, reads95 = percentiles(visibility.reads)
        print(
            f"mqtt: publish -> stored (a minute's row first seen in the file - the minute's end) over "
            f"{len(latencies):,} rows: p50 {p50:.1f} s, p95 {p95:.1f} s, max {max(latencies):.1f} s "
            f"(target p95 < {TARGET_P95_S:g} s): {'meets' if p95 < TARGET_P95_S else 'MISSES'}; from each topic's "
            f"last message of the minute p50 {l50:.1f} s, p95 {l95:.1f} s; the file read every "
            f"{POLL_EVERY_S:g} s (read p50 {reads50 * 1000:.0f} ms, p95 {reads95 * 1000:.0f} ms, "
            f"{visibility.busy} gave up)"
        )
        print(
            "mqtt: last row of each minute seen at +s after its end: "
            + ", ".join(f"{datetime.fromtimestamp(m, UTC):%H:%M} {s:.1f}" for m, s in sorted(per_minute.items()))
        )
    else:
        print("mqtt: publish -> stored: no row of the measured minutes was seen: MISSES")

    # rows
    want = sum(expected.values())
    keys = {(s, m) for s, m, *_ in rows}
    missing = want - len(keys & {(d.source_id, m) for d in devices for m in expected})
    twice = len(rows) - len(keys)
    wrong = sum(1 for s, _, value, _, _ in rows if value is None or abs(value - watts[s]) > 1e-6)
    coverage = sorted(c if c is not None else 0.0 for *_, c, _ in rows)
    cover5 = coverage[int(0.05 * (len(coverage) - 1))] if coverage else float("nan")
    fine = missing == 0 and twice == 0 and runs_empty == 0 and wrong == 0 and cover5 >= TARGET_COVERAGE_P5
    print(
        f"mqtt: rows of the measured minutes: {len(rows):,} stored vs {want:,} expected ({len(devices):,} sources x "
        f"{len(expected)} minutes): {missing} missing, {twice} twice; minutes handed over again (feed runs that "
        f"inserted nothing) {runs_empty} of {runs_total:,}; values not the power published {wrong}; coverage p5 "
        f"{cover5:.3f}, min {coverage[0] if coverage else float('nan'):.3f} (target: none missing or twice, coverage "
        f"p5 >= {TARGET_COVERAGE_P5:g}): {'meets' if fine else 'MISSES'}; in the whole file {stored_total:,} rows = "
        f"{written:,} inserted by the feed's runs"
    )

    # memory
    measured = [m for m in memory if warm_end <= m[0] <= cpu_end[0]] or memory  # the stop is not measured
    if measured:
        start, finish = measured[0], measured[-1]
        peak_rss, peak_private = max(m[1] for m in measured), max(m[2] for m in measured)
        growth_private, growth_rss = finish[2] / start[2] - 1, finish[1] / start[1] - 1
        trend = statistics.linear_regression([m[0] for m in measured], [m[2] for m in measured]).slope * 600
        flat = max(growth_private, growth_rss) < TARGET_GROWTH
        print(
            f"mqtt: collector private memory (RssAnon) after warm-up {start[2]:.0f} MB, peak {peak_private:.0f} MB, "
            f"end {finish[2]:.0f} MB ({growth_private:+.1%}, trend {trend:+.1f} MB per 10 min); resident set (VmRSS) "
            f"{start[1]:.0f}, peak {peak_rss:.0f}, end {finish[1]:.0f} MB ({growth_rss:+.1%}); peak during warm-up "
            f"{max(m[2] for m in memory):.0f} MB private; {len(measured):,} samples (target flat, growth < "
            f"{TARGET_GROWTH:.0%}): {'meets' if flat else 'MISSES'}"
        )

    # CPU
    wall = cpu_end[0] - cpu_start[0]
    cores = [(cpu_end[i] - cpu_start[i]) / wall for i in (1, 2, 3)]
    print(
        f"mqtt: CPU over the {wall / 60:.1f} measured minutes: collector {cores[0]:.2f} cores, broker {cores[1]:.2f}, "
        f"publisher {cores[2]:.2f} (of the machine's {os.cpu_count()})"
    )
    print(
        f"mqtt: collector_runs: {runs_window:,} rows written by the feed during the {len(expected)} measured minutes "
        f"(one per source and minute), {runs_window / (last_end - first) * 86400 / 1e6:.2f} M a day at this rate"
    )

    lines = log_path.read_text().splitlines()
    errors = [line for line in lines if " ERROR " in line or "Traceback" in line]
    warnings = [line for line in lines if " WARNING " in line]
    print(
        f"mqtt: collector stopped {stopped_s:.1f} s after SIGTERM with exit code {returncode}; its log: "
        f"{len(lines):,} lines, {len(warnings):,} warnings, {len(errors):,} errors"
        + (f"; first error: {errors[0][:200]}" if errors else "")
        + (f"; first warning: {warnings[0][:200]}" if warnings else "")
    )
    if os.environ.get("BENCH_MQTT_LOG"):  # keep the collector's log for a closer look
        Path(os.environ["BENCH_MQTT_LOG"]).write_text("\n".join(lines))


if __name__ == "__main__":
    main()
