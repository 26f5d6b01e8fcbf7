"""How long `config import` holds the database, and what a hostile file costs before it is refused.

(a) A 1,000-site YAML file (each site: a PV meter with two sources and a building meter with one, every tenth PV
    source on SolarEdge with its own key given as {"env": ...}), the shape of an export, imported into a fresh
    database; then again (nothing changes); then with every site, meter and source changed (a site's latitude, a
    meter's name in other letter case, a source's capacity and schedule, every key). Printed: the whole import
    (parse + validate + write), the time the write transaction held the file (lock, connect, fingerprint check,
    writes, commit, close) and the read-only snapshot's. Target: each write transaction under 2 s. Baseline: an
    empty store transaction, the fixed cost of any write.
(b) The same at the limit of `DATACONN_CONFIG_IMPORT_MAX_SITES` (20,000 sites, times `BENCH_SCALE`): into an empty
    database, then every row changed. No target: it shows how the hold grows with the file (about 3 minutes).
(c) A "billion laughs" file (nested YAML aliases: 9^10 strings once expanded) refused by `parse`: time, and peak
    Python memory (tracemalloc). Target: under 1 s, under 5 MB. Then the CLI on the same file in a process of its
    own: its peak resident set against the CLI refusing a tiny malformed file (the interpreter and imports).
"""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb

from core.catalog.config_io import ConfigFileError, dump, import_config, parse
from core.config import Settings
from core.store.crypto import SecretBox, generate_key
from core.store.schema import migrate
from core.store.store import Store

SITES = 1000
LIMIT_SITES = Settings.model_fields["config_import_max_sites"].default
HOLD_TARGET_S = 2.0
REPO = Path(__file__).resolve().parents[1]
_PEAK_OF_CHILD = (
    "import resource, subprocess, sys\n"
    "subprocess.run(sys.argv[1:], capture_output=True)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def billion_laughs() -> str:
    """Ten levels of aliases, each a list of nine of the previous: under 1 KB of YAML, 9^10 strings expanded."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]" for n in range(1, 10)]
    return "\n".join(lines) + "\n"


class TimedStore(Store):
    """The store, recording how long each connection held the file (lock taken to connection closed)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.held: list[tuple[bool, float]] = []  # (read-only, seconds)

    @contextlib.contextmanager
    def connect(
        self, *, read_only: bool = False, timeout_s: float | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        started = time.perf_counter()
        with super().connect(read_only=read_only, timeout_s=timeout_s) as con:
            yield con
        self.held.append((read_only, time.perf_counter() - started))


def fleet(sites: int) -> tuple[dict[str, Any], dict[str, str]]:
    """The configuration file's data and the environment holding its keys."""
    environ: dict[str, str] = {}

    def source(name: str, source_type: str, api: dict[str, Any]) -> dict[str, Any]:
        numbers = {"capacity_kw": 25.5, "carbon_intensity_g_per_kwh": 0, "cost_per_mwh": 40}
        return {"name": name, "source_type": source_type} | numbers | {"api": api}

    simulator = {"enabled": True, "provider": "simulator", "update_frequency": "15min"}
    data: list[dict[str, Any]] = []
    for n in range(sites):
        pv = [source("Roof East", "solar", simulator), source("Roof West", "solar", simulator)]
        if n % 10 == 0:
            variable = f"SE_KEY_{n}"
            environ[variable] = f"key-{n:05d}-0123456789abcdef"
            api = {"enabled": True, "provider": "solaredge", "system_id": str(100000 + n)}
            pv[0]["api"] = api | {"update_frequency": "1hour"}
            pv[0]["credentials"] = {"api_key": {"env": variable}}
        load = [source("Load", "load", simulator | {"enabled": False})]
        meters = [
            {"name": "PV", "category": "PROD", "sources": pv},
            {"name": "Building", "category": "CONS", "sources": load},
        ]
        where = {"latitude": 50 + n / 1000, "longitude": 4.35, "timezone": "Europe/Brussels"}
        data.append({"name": f"Site {n:04d}"} | where | {"meters": meters})
    return {"version": 1, "sites": data}, environ


def changed(data: dict[str, Any], environ: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The same fleet with every site, meter and source changed, and every key: each row is an update."""
    data, environ = copy.deepcopy(data), {variable: key + "-new" for variable, key in environ.items()}
    for site in data["sites"]:
        site["latitude"] += 0.5
        for meter in site["meters"]:
            meter["name"] = meter["name"].lower()  # the same meter (names compare ignoring case), renamed
            for source in meter["sources"]:
                source["capacity_kw"] += 1
                source["api"]["update_frequency"] = "1hour"
    return data, environ


def timed_imports(
    tmp: Path, sites: int, cases: list[str], store_name: str
) -> list[tuple[str, float, float, float, str, float]]:
    """(case, seconds in all, seconds the write transaction held the file, seconds of the read-only snapshot,
    what the report counted, baseline seconds), one per case in order, into one fresh database."""
    data, environ = fleet(sites)
    files = {
        "into an empty database": (data, environ),
        "again, nothing changes": (data, environ),
        "again, every site, meter and source changed (and every key)": changed(data, environ),
    }
    store = TimedStore(tmp / store_name)
    migrate(store)
    box = SecretBox([generate_key()])
    baseline: list[float] = []
    for _ in range(5):
        started = time.perf_counter()
        with store.transaction():
            pass
        baseline.append(time.perf_counter() - started)
    base = sorted(baseline)[2]
    results = []
    for case in cases:
        case_data, case_environ = files[case]
        text = dump(case_data, "yaml")
        store.held.clear()
        started = time.perf_counter()
        report = import_config(store, box, parse(text, "yaml"), environ=case_environ)
        total = time.perf_counter() - started
        write = sum(seconds for read_only, seconds in store.held if not read_only)
        snapshot = sum(seconds for read_only, seconds in store.held if read_only)
        counted = f"sites {report.sites}; sources {report.sources}; {report.secrets_set} keys set"
        results.append((case, total, write, snapshot, counted, base))
    return results


def import_figures(tmp: Path) -> None:
    text = dump(fleet(SITES)[0], "yaml")
    print(f"config import: {SITES:,} sites, {len(text) / 1e6:.2f} MB of YAML")
    cases = [
        "into an empty database",
        "again, nothing changes",
        "again, every site, meter and source changed (and every key)",
    ]
    for case, total, write, snapshot, counted, base in timed_imports(tmp, SITES, cases, "import.duckdb"):
        verdict = "meets" if write < HOLD_TARGET_S else "MISSES"
        print(
            f"  {case}: the write transaction held the file {write * 1000:.0f} ms ({write / HOLD_TARGET_S:.2f}x the"
            f" 2 s target, {write / base:.1f}x the baseline of {base * 1000:.0f} ms): {verdict}; {total:.2f} s in all"
            f" (parse, validate, write), the read-only snapshot {snapshot * 1000:.0f} ms ({counted})"
        )
    sites = max(SITES, round(LIMIT_SITES * float(os.environ.get("BENCH_SCALE", "1"))))
    print(f"config import at the limit: {sites:,} sites ({LIMIT_SITES:,} is DATACONN_CONFIG_IMPORT_MAX_SITES)")
    for case, total, write, snapshot, _, _ in timed_imports(tmp, sites, [cases[0], cases[2]], "limit.duckdb"):
        print(
            f"  {case}: the write transaction held the file {write * 1000:.0f} ms; {total:.1f} s in all, the"
            f" read-only snapshot {snapshot * 1000:.0f} ms"
        )


def bomb_figures(tmp: Path) -> None:
    text = billion_laughs()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        parse(text, "yaml")
        raise SystemExit("the alias bomb was parsed: it must be refused")
    except ConfigFileError as exc:
        message = str(exc)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    verdict = "meets" if seconds < 1 and peak < 5e6 else "MISSES"
    print(
        f"alias bomb ({len(text)} bytes, 9^10 strings expanded): refused in {seconds * 1000:.1f} ms, peak Python memory"
        f" {peak / 1e3:.0f} KB (target < 1 s, < 5 MB): {verdict} -- {message}"
    )
    bomb, tiny = tmp / "bomb.yaml", tmp / "tiny.yaml"
    bomb.write_text(text, encoding="utf-8")
    tiny.write_text("version: [\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATACONN_")}
    env |= {"DATACONN_DB_PATH": str(tmp / "cli.duckdb"), "DATACONN_KEY_FILE": str(tmp / "secret.key")}
    env |= {"DATACONN_SEED_DEMO": "false"}
    cli = [sys.executable, "-m", "jobs.cli"]
    subprocess.run([*cli, "init"], env=env, cwd=REPO, check=True, capture_output=True)
    peaks = []
    for path in (tiny, bomb):
        # A wrapper process per run: RUSAGE_CHILDREN is the largest peak among a process's waited-for children.
        run = [sys.executable, "-c", _PEAK_OF_CHILD, *cli, "config", "import", str(path)]
        done = subprocess.run(run, env=env, cwd=REPO, capture_output=True, text=True, check=True)
        peaks.append(int(done.stdout.split()[-1]) / 1024)  # ru_maxrss is in KiB on Linux
    print(f"  the CLI refusing it: peak resident set {peaks[1]:.0f} MiB ({peaks[0]:.0f} MiB for a tiny malformed file)")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bomb_figures(Path(tmp))
        import_figures(Path(tmp))


if __name__ == "__main__":
    main()
