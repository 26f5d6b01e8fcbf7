"""The fleet benchmark: how many vendor sites the REAL collector process keeps current on this machine while an
analyst still gets the file (issue 14; its figures and the ceiling they give are in docs/scaling.md).

Setup: the fake SolarEdge V2 and Enphase servers run in a child process of their own (tests/fakes), behind
`tests.fakes.server.Weather`: every call waits 70-800 ms (uniform), 2 % answer 502 and 1 % answer only after 25 s
(past the collector's 20 s timeout). Their quotas are raised to partner-plan levels (SolarEdge: 1,000 a minute per
key; Enphase: the Megawatt plan), so the fakes never refuse; what the collector would have been refused is
counted instead, against the budgets the collector itself declares (SolarEdge V2: 10 calls a minute and the
monthly credits per key; Enphase: the configured plan). A temporary DuckDB file gets the fleet through the
catalog: half simulator sites (4 sources each), 45 % SolarEdge V2 sites (PV, grid and load; 15 sites per API key,
so a key's 10 calls a minute carry them), 5 % Enphase systems (PV and load, all on one application whose plan
caps the calls a minute), every source polled every 5 minutes. Then `python -m jobs.collector` runs against it.

Full mode (`python -m bench fleet`): 3,334 vendor sites at 5 minutes, the same rate as 10,000 at 15 minutes, 6
minutes of warm-up (every site's first poll reads a day back), then 10 minutes measured. Quick mode
(`--quick`): 300 sites, 2 minutes of warm-up, 5 minutes measured (one period: every site polled again at least
once; shorter would measure only the first round). `--sites`, `--warm-up` and `--minutes` override.

Measured from outside the collector, so the benchmark runs against whatever the collector is:
- polls per minute: poll starts in `collector_runs` (one per vendor site and pass) in the measured window, against
  the polls due (sites / the mean period, 5.5 min: `schedule` draws each period from 5-6 min);
- schedule lateness: for each poll in the window after a site's first, how much longer than the longest period
  the schedule allows (5 + 1 jitter minutes) it started after the site's previous poll (0 when on time); target
  p95 < 60 s. The first round (every site's first poll, which reads a day back, a month for the simulator) is
  reported on its own: when it ended;
- file held: a probe in this process tries the store's sidecar lock (the one every reader and writer takes,
  `core.store.store`) without waiting, every 100 ms; the share of tries that find it taken; target < 10 %;
- analyst read: `core.analytics.live.live_snapshot` (the Live page's data) for one SolarEdge site, every 2 s under
  load, and 40 times once the collector has stopped (idle, same data); p95 ratio target < 2x;
- collector memory: VmRSS and RssAnon of the collector process from /proc every second (start, peak, end);
- calls over budget: the fakes' own counters per key and minute/month against the collector's budgets (target 0);
- readings: duplicates on (source_id, ts, interval_s) (target 0) and gaps, intervals missing inside each source's
  stored span (target 0: a failed poll's data must come with the next one).
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bench.process_stats import sample_memory
from bench.timing import percentiles
from core.catalog import catalog as cat
from core.config import Settings
from core.models import ApiSettings, Category, MeterIn, Provider, SiteIn, SourceIn, UpdateFrequency
from core.providers.enphase.oauth import Tokens
from core.providers.solaredge_v2.spec import CALLS_PER_MINUTE, CREDITS_PER_MONTH
from core.runtime import open_runtime
from core.store.crypto import generate_key
from core.store.oauth_tokens import TOKENS_SECRET, encode_tokens
from core.store.secret_store import put_secrets
from core.store.store import Store, StoreBusy

ROOT = Path(__file__).resolve().parents[1]
PERIOD_MIN = 5
LONGEST_PERIOD_S = (PERIOD_MIN + 1) * 60  # the collector's jitter: 5 to 5 + max(1, 5 // 10) minutes
MEAN_PERIOD_S = (PERIOD_MIN + 0.5) * 60
SITES_PER_KEY = 15
ENPHASE_PLAN = "megawatt"
ENPHASE_PER_MINUTE = 100  # core.providers.enphase.spec.PLANS["megawatt"]
PROBE_EVERY_S = 0.1
READ_EVERY_S = 2.0
IDLE_READS = 40
TARGET_LATENESS_P95_S = 60.0
TARGET_HELD = 0.10
TARGET_READ_RATIO = 2.0
SE_SOURCES = ((Category.PROD, "solar"), (Category.INJ, "grid"), (Category.CONS, "load"))
ENPHASE_SOURCES = ((Category.PROD, "solar"), (Category.CONS, "load"))
SIM_SOURCES = ((Category.PROD, "solar"), (Category.CONS, "load"), (Category.STOR, "battery"), (Category.INJ, "grid"))


@dataclass
class Mix:
    simulator: int
    solaredge: int
    enphase: int

    @classmethod
    def of(cls, sites: int) -> Mix:
        enphase = max(1, sites * 5 // 100)
        solaredge = max(1, sites * 45 // 100)
        return cls(sites - enphase - solaredge, solaredge, enphase)

    @property
    def keys(self) -> int:
        return -(-self.solaredge // SITES_PER_KEY)


# --- the fakes, in a process of their own ---------------------------------------------------------------------


def serve_fakes(conn: multiprocessing.connection.Connection, mix: Mix) -> None:
    """Child process: serve both fakes behind `Weather`, send their URLs, SolarEdge keys and Enphase tokens, then
    wait for "stop" and send back their counters."""
    from tests.fakes import enphase, solaredge_v2
    from tests.fakes.server import Weather, serve, weathered

    se_state = solaredge_v2.FakeState(per_minute_limit=1_000, monthly_credits=10_000_000)
    se_state.sites = solaredge_v2.fleet_sites(mix.solaredge)
    for site in se_state.sites:
        site.has_meter = True  # PV, grid and load: two calls a poll (power, meters telemetry)
    keys = [f"bench-fleet-key-{k:03d}" for k in range(mix.keys)]
    se_state.api_keys = set(keys)
    en_state = enphase.FakeState()
    en_state.set_plan("Megawatt")
    en_state.per_minute_limit, en_state.per_month_limit = 100_000, 100_000_000  # never refuse: count instead
    en_state.systems = enphase.fleet_systems(mix.enphase)
    tokens = en_state.issue_tokens()
    se_weather = Weather(error_rate=0.02, timeout_rate=0.01, seed=1)
    en_weather = Weather(error_rate=0.02, timeout_rate=0.01, seed=2)
    with (
        serve(weathered(solaredge_v2.create_app(se_state), se_weather)) as se_url,
        serve(weathered(enphase.create_app(en_state), en_weather)) as en_url,
    ):
        conn.send(
            {
                "se_url": f"{se_url}/v2",
                "en_url": f"{en_url}/api/v4",
                "en_auth": f"{en_url}/oauth",
                "keys": keys,
                "se_sites": [(s.site_id, s.timezone, s.latitude, s.longitude) for s in se_state.sites],
                "en_systems": [(s.system_id, s.timezone, s.latitude, s.longitude) for s in en_state.systems.values()],
                "client": (en_state.client_id, en_state.client_secret, en_state.api_key),
                "tokens": (tokens["access_token"], tokens["refresh_token"], tokens["expires_in"]),
            }
        )
        conn.recv()  # "stop"
        per_key_minute: dict[str, int] = {}
        for (label, _minute), used in se_state.minute_used.items():
            per_key_minute[label] = max(per_key_minute.get(label, 0), used)
        en_minutes = [used for (period, _), used in en_state.usage.items() if period == "minute"]
        conn.send(
            {
                "se_calls": se_state.calls_total,
                "se_max_minute": max(per_key_minute.values(), default=0),
                "se_over_minute": sum(max(0, used - CALLS_PER_MINUTE) for used in se_state.minute_used.values()),
                "se_max_credits": max(se_state.credits_used.values(), default=0),
                "en_calls": sum(en_state.calls.values()),
                "en_max_minute": max(en_minutes, default=0),
                "en_over_minute": sum(max(0, used - ENPHASE_PER_MINUTE) for used in en_minutes),
                "statuses": dict(se_weather.statuses + en_weather.statuses),
                "injected": dict(se_weather.injected + en_weather.injected),
            }
        )


# --- the fleet in the catalog ---------------------------------------------------------------------------------


@dataclass
class Fleet:
    settings: Settings
    env: dict[str, str]
    first_sources: list[int] = field(default_factory=list)  # one source per vendor site: its polls
    analyst_site: int = 0


def populate(folder: Path, mix: Mix, fakes: dict[str, Any]) -> Fleet:
    """The fleet in a fresh store, written through the catalog in one transaction; secrets stored once per
    account (the other sources borrow them, as Import Sites sets up)."""
    key = generate_key()
    settings = Settings(
        db_path=folder / "fleet.duckdb",
        secret_keys=key,
        seed_demo=False,
        solaredge_base_url=fakes["se_url"],
        enphase_base_url=fakes["en_url"],
        enphase_auth_url=fakes["en_auth"],
        enphase_plan=ENPHASE_PLAN,
    )
    env = {
        "DATACONN_DB_PATH": str(settings.db_path),
        "DATACONN_SECRET_KEYS": key,
        "DATACONN_SEED_DEMO": "false",
        "DATACONN_SOLAREDGE_BASE_URL": fakes["se_url"],
        "DATACONN_ENPHASE_BASE_URL": fakes["en_url"],
        "DATACONN_ENPHASE_AUTH_URL": fakes["en_auth"],
        "DATACONN_ENPHASE_PLAN": ENPHASE_PLAN,
    }
    runtime = open_runtime(settings)
    fleet = Fleet(settings, env)
    secrets: list[tuple[int, str, str]] = []
    client_id, client_secret, app_key = fakes["client"]
    access, refresh, expires_in = fakes["tokens"]
    now = datetime.now(UTC)
    tokens = Tokens(SecretStr(access), SecretStr(refresh), now + timedelta(seconds=expires_in), None)

    def site_with(con: Any, name: str, place: tuple[str, float, float], kinds: Any, api: ApiSettings) -> list[int]:
        zone, lat, lon = place
        site_id = cat.insert_site(con, SiteIn(name=name, latitude=lat, longitude=lon, timezone=zone))
        made = []
        for category, source_type in kinds:
            meter_id = cat.insert_meter(con, site_id, MeterIn(name=f"{category.value} meter", category=category))
            source = SourceIn(
                name=f"{name} {source_type}",
                source_type=source_type,
                capacity_kw=5,
                carbon_intensity_g_per_kwh=0,
                cost_per_mwh=0,
                api=api,
            )
            made.append(cat.insert_source(con, meter_id, source))
        fleet.first_sources.append(made[0])
        return made

    every = UpdateFrequency(f"{PERIOD_MIN}min")
    with runtime.store.transaction() as con:
        for n in range(mix.simulator):
            zone, lat, lon = (("Europe/Brussels", 50.85, 4.35), ("America/Chicago", 41.88, -87.63))[n % 2]
            api = ApiSettings(use_api=True, api_provider=Provider.SIMULATOR, update_frequency=every)
            site_with(con, f"Sim {n:05d}", (zone, lat + n % 40 / 10, lon), SIM_SOURCES, api)
        holders: dict[int, int] = {}
        for n, (site_id, zone, lat, lon) in enumerate(fakes["se_sites"]):
            account = n // SITES_PER_KEY
            api = ApiSettings(
                use_api=True,
                api_provider=Provider.SOLAREDGE,
                system_id=str(site_id),
                update_frequency=every,
                credentials_source_id=holders.get(account),
            )
            made = site_with(con, f"SE {n:05d}", (zone, lat, lon), SE_SOURCES, api)
            if account not in holders:
                holders[account] = made[0]
                secrets.append((made[0], "api_key", fakes["keys"][account]))
                _borrow(con, made[1:], made[0])
            if not fleet.analyst_site:
                fleet.analyst_site = _site_of(con, made[0])
        holder = None
        for n, (system_id, zone, lat, lon) in enumerate(fakes["en_systems"]):
            api = ApiSettings(
                use_api=True,
                api_provider=Provider.ENPHASE,
                system_id=str(system_id),
                client_id=client_id,
                update_frequency=every,
                credentials_source_id=holder,
            )
            made = site_with(con, f"EN {n:05d}", (zone, lat, lon), ENPHASE_SOURCES, api)
            if holder is None:
                holder = made[0]
                secrets += [(holder, "client_secret", client_secret), (holder, "app_api_key", app_key)]
                secrets.append((holder, TOKENS_SECRET, encode_tokens(tokens)))
                _borrow(con, made[1:], holder)
        put_secrets(con, runtime.box, secrets)
    return fleet


def _borrow(con: Any, sources: list[int], holder: int) -> None:
    """The holder's other sources, created before the holder's id was known, borrow its credentials too."""
    for source_id in sources:
        con.execute(
            "UPDATE energy_sources SET metadata = json_merge_patch(metadata, json_object('credentialsSourceId', ?))"
            " WHERE id = ?",
            [holder, source_id],
        )


def _site_of(con: Any, source_id: int) -> int:
    row = con.execute(
        "SELECT m.site_id FROM energy_sources s JOIN meters m ON m.id = s.meter_id WHERE s.id = ?", [source_id]
    ).fetchone()
    return int(row[0])


# --- measuring from outside ------------------------------------------------------------------------------------


def lock_taken(lock_path: Path) -> bool:
    """Whether the store's sidecar lock is held right now (tried without waiting, released at once)."""
    import fcntl

    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the lock if it was taken
    return False


def analyst_read(settings: Settings, site_id: int) -> float:
    """Seconds for the Live page's data of one site, through a store of its own as a dashboard process has;
    negative when the read gave up because the file stayed held (`StoreBusy`, after the configured wait)."""
    from core.analytics.live import live_snapshot

    store = Store(settings.db_path, lock_timeout_s=settings.lock_timeout_s)
    started = time.perf_counter()
    try:
        live_snapshot(store, site_id, datetime.now(UTC))
    except StoreBusy:  # the page would say "busy, try again": counted at the time it waited
        return -(time.perf_counter() - started)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench fleet", description="the fleet benchmark")
    parser.add_argument("--quick", action="store_true", help="300 sites, 2 min warm-up, 5 min measured")
    parser.add_argument("--sites", type=int, default=None, help="vendor sites (default 3,334; quick 300)")
    parser.add_argument("--warm-up", type=float, default=None, help="minutes before measuring (6; quick 2)")
    parser.add_argument("--minutes", type=float, default=None, help="minutes measured (10; quick 5)")
    args = parser.parse_args(argv)
    sites = args.sites or (300 if args.quick else 3_334)
    warm_up_s = 60 * (args.warm_up if args.warm_up is not None else (2 if args.quick else 6))
    measure_s = 60 * (args.minutes if args.minutes is not None else (5 if args.quick else 10))
    mix = Mix.of(sites)
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    fakes_process = context.Process(target=serve_fakes, args=(child, mix), daemon=True)
    fakes_process.start()
    try:
        fakes = parent.recv()
        with tempfile.TemporaryDirectory() as tmp:
            run(Path(tmp), mix, fakes, parent, warm_up_s, measure_s)
    finally:
        fakes_process.kill()
        fakes_process.join(timeout=10)


def run(
    folder: Path,
    mix: Mix,
    fakes: dict[str, Any],
    conn: multiprocessing.connection.Connection,
    warm_up_s: float,
    measure_s: float,
) -> None:
    started = time.perf_counter()
    fleet = populate(folder, mix, fakes)
    sites = mix.simulator + mix.solaredge + mix.enphase
    print(
        f"fleet: {sites:,} vendor sites every {PERIOD_MIN} min ({sites * 15 // PERIOD_MIN:,} at 15 min): "
        f"{mix.simulator:,} simulator x4 sources, {mix.solaredge:,} SolarEdge V2 x3 on {mix.keys} keys, "
        f"{mix.enphase:,} Enphase x2 on one {ENPHASE_PLAN} application; set up in {time.perf_counter() - started:.0f} s"
    )
    lock_path = Store(fleet.settings.db_path).lock_path
    log_path = folder / "collector.log"
    with open(log_path, "w") as log:
        collector = subprocess.Popen(
            [sys.executable, "-m", "jobs.collector"],
            cwd=ROOT,
            env=os.environ | fleet.env,
            stderr=log,
            stdout=subprocess.DEVNULL,
        )
    t0 = datetime.now(UTC)
    t0_mono = time.monotonic()
    stop = threading.Event()
    memory: list[tuple[float, float, float]] = []
    sampler = threading.Thread(
        target=sample_memory,
        args=(collector.pid, stop, memory),
        kwargs={"clock": time.monotonic},
        daemon=True,
    )
    sampler.start()
    probes = held = 0
    loaded_reads: list[float] = []
    try:
        while (elapsed := time.monotonic() - t0_mono) < warm_up_s + measure_s:
            if collector.poll() is not None:
                raise RuntimeError(f"the collector exited with {collector.returncode}; see its log")
            if elapsed >= warm_up_s:
                probes += 1
                held += lock_taken(lock_path)
                if probes % int(READ_EVERY_S / PROBE_EVERY_S) == 0:
                    loaded_reads.append(analyst_read(fleet.settings, fleet.analyst_site))
            time.sleep(PROBE_EVERY_S)
    finally:
        window = (t0 + timedelta(seconds=warm_up_s), datetime.now(UTC))
        collector.send_signal(signal.SIGTERM)
        try:
            collector.wait(timeout=120)
        except subprocess.TimeoutExpired:
            collector.kill()
            collector.wait()
        stop.set()
        conn.send("stop")
    counters = conn.recv()
    idle_reads = [analyst_read(fleet.settings, fleet.analyst_site) for _ in range(IDLE_READS)]
    report(
        fleet,
        sites,
        window,
        t0,
        probes,
        held,
        loaded_reads,
        idle_reads,
        memory,
        t0_mono + warm_up_s,
        counters,
        log_path,
    )


def report(
    fleet: Fleet,
    sites: int,
    window: tuple[datetime, datetime],
    t0: datetime,
    probes: int,
    held: int,
    loaded_reads: list[float],
    idle_reads: list[float],
    memory: list[tuple[float, float, float]],
    measured_from: float,
    counters: dict[str, Any],
    log_path: Path,
) -> None:
    import duckdb

    con = duckdb.connect(str(fleet.settings.db_path), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    firsts = ",".join(str(i) for i in fleet.first_sources)
    polls = con.execute(
        f"SELECT source_id, started_at, outcome FROM collector_runs WHERE source_id IN ({firsts}) ORDER BY 1, 2"
    ).fetchall()
    outcomes: dict[str, int] = {}
    lateness: list[float] = []
    in_window = 0
    first_round: dict[int, datetime] = {}
    previous: dict[int, datetime] = {}
    for source_id, when, outcome in polls:
        when = when.astimezone(UTC)
        first_round.setdefault(source_id, when)
        if window[0] <= when <= window[1]:
            in_window += 1
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            before = previous.get(source_id)
            if before is not None:  # a site's first poll belongs to the first round, reported on its own
                lateness.append(max(0.0, (when - before).total_seconds() - LONGEST_PERIOD_S))
        previous[source_id] = when
    duplicates = con.execute(
        "SELECT count(*) FROM (SELECT source_id, ts, interval_s FROM readings GROUP BY ALL HAVING count(*) > 1)"
    ).fetchone()[0]
    # Our side of the per-minute budget: the most SolarEdge calls one key SENT in any 60 s (api_data_cache's
    # fetched_at is taken just before the request goes out, after its turn), to tell our pacing from the fake's
    # count, which happens when its event loop gets to a call.
    sent_per_key = con.execute(
        """WITH calls AS (
               SELECT coalesce(TRY_CAST(json_extract_string(s.metadata, '$.credentialsSourceId') AS BIGINT), s.id)
                          AS key_holder, c.fetched_at
               FROM api_data_cache c JOIN energy_sources s ON s.id = c.source_id
               WHERE json_extract_string(s.metadata, '$.apiProvider') = 'solaredge'),
           windows AS (
               SELECT count(*) OVER (PARTITION BY key_holder ORDER BY fetched_at
                                     RANGE BETWEEN CURRENT ROW AND INTERVAL 59999 MILLISECONDS FOLLOWING) AS n
               FROM calls)
           SELECT coalesce(max(n), 0) FROM windows"""
    ).fetchone()[0]
    gaps, rows = con.execute(
        """SELECT coalesce(sum(expected - n), 0)::BIGINT, coalesce(sum(n), 0)::BIGINT FROM (
               SELECT source_id, interval_s, count(DISTINCT ts) AS n,
                      epoch(max(ts) - min(ts)) // interval_s + 1 AS expected
               FROM readings GROUP BY source_id, interval_s)"""
    ).fetchone()
    con.close()
    minutes = (window[1] - window[0]).total_seconds() / 60
    due = sites * 60 / MEAN_PERIOD_S
    never = len(fleet.first_sources) - len(first_round)
    round_s = (max(first_round.values()) - t0).total_seconds() if first_round else float("nan")
    print(
        f"fleet: polls {in_window / minutes:.0f}/min completed vs {due:.0f}/min due "
        f"({in_window / minutes / due:.2f}x) over {minutes:.1f} min after warm-up; outcomes {outcomes}; "
        f"first round: {len(first_round):,} sites polled once by {round_s:.0f} s"
        + (f", {never:,} never polled" if never else "")
    )
    if lateness:
        p50, p95 = percentiles(lateness)
        verdict = "meets" if p95 < TARGET_LATENESS_P95_S else "MISSES"
        print(
            f"fleet: schedule lateness p50 {p50:.0f} s, p95 {p95:.0f} s, max {max(lateness):.0f} s "
            f"(target p95 < {TARGET_LATENESS_P95_S:.0f} s): {verdict}"
        )
    else:
        print("fleet: schedule lateness: no poll in the measured window: MISSES")
    share = held / probes if probes else float("nan")
    print(
        f"fleet: file held by the collector {share:.1%} of {probes:,} probes every {PROBE_EVERY_S * 1000:.0f} ms "
        f"(target < {TARGET_HELD:.0%}): {'meets' if share < TARGET_HELD else 'MISSES'}"
    )
    if loaded_reads:
        idle50, idle95 = percentiles([abs(s) * 1000 for s in idle_reads])
        load50, load95 = percentiles([abs(s) * 1000 for s in loaded_reads])
        busy = sum(1 for s in loaded_reads if s < 0)
        ratio = load95 / idle95
        print(
            f"fleet: analyst's Live read of one site p50/p95 {load50:.0f}/{load95:.0f} ms under load "
            f"({len(loaded_reads)} reads, {busy} gave up: file busy) vs {idle50:.0f}/{idle95:.0f} ms idle: "
            f"p95 {ratio:.1f}x "
            f"(target < {TARGET_READ_RATIO:.0f}x): {'meets' if ratio < TARGET_READ_RATIO else 'MISSES'}"
        )
    if memory:
        # "start" is the first sample of the measured window: before it the process is still importing.
        measured = [m for m in memory if m[0] >= measured_from] or memory
        start, end = measured[0], measured[-1]
        print(
            f"fleet: collector private memory (RssAnon) after warm-up {start[2]:.0f} MB, peak "
            f"{max(m[2] for m in measured):.0f} MB, end {end[2]:.0f} MB ({end[2] / start[2] - 1:+.0%}); resident set "
            f"(VmRSS) {start[1]:.0f}, peak {max(m[1] for m in measured):.0f}, end {end[1]:.0f} MB; peak during "
            f"warm-up {max(m[2] for m in memory):.0f} MB private"
        )
    print(
        f"fleet: SolarEdge calls one key sent in any 60 s (our send times): at most {sent_per_key} (budget"
        f" {CALLS_PER_MINUTE}); the fake's busiest minute below counts them when it handles them"
    )
    over = counters["se_over_minute"] + counters["en_over_minute"]
    over_month = max(0, counters["se_max_credits"] - CREDITS_PER_MONTH)
    print(
        f"fleet: vendor calls served: SolarEdge {counters['se_calls']:,}, Enphase {counters['en_calls']:,}; "
        f"busiest minute per key: SolarEdge {counters['se_max_minute']} (budget {CALLS_PER_MINUTE}), Enphase "
        f"{counters['en_max_minute']} (budget {ENPHASE_PER_MINUTE}); most credits on one key "
        f"{counters['se_max_credits']:,} (budget {CREDITS_PER_MONTH:,} a month); calls over a budget "
        f"{over + over_month} (target 0): {'meets' if over + over_month == 0 else 'MISSES'}; "
        f"answers {dict(sorted(counters['statuses'].items()))}, injected {counters['injected']}"
    )
    print(
        f"fleet: readings {rows:,}: duplicates {duplicates}, gaps {gaps} (target 0 and 0): "
        f"{'meets' if duplicates == 0 and gaps == 0 else 'MISSES'}"
    )
    lines = log_path.read_text().splitlines()
    errors = [line for line in lines if " ERROR " in line or "Traceback" in line]
    warnings = [line for line in lines if " WARNING " in line]
    print(f"fleet: collector log: {len(lines):,} lines, {len(warnings):,} warnings, {len(errors):,} errors")
    if os.environ.get("BENCH_FLEET_LOG"):  # keep the collector's log for a closer look
        Path(os.environ["BENCH_FLEET_LOG"]).write_text("\n".join(lines))
    if errors:
        print(f"fleet: the collector logged {len(errors)} error line(s), first: {errors[0][:200]}")


if __name__ == "__main__":
    main()
