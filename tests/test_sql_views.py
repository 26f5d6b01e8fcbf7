"""The SQL views and the README's example queries, on a real file after a collection pass, read-only."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from core.catalog.demo import seed_demo
from core.collect.collection import collect_once
from core.config import Settings
from core.providers.context import ProviderContext
from core.providers.quota import QuotaLedger
from core.store.crypto import SecretBox
from core.store.store import Store

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_queries() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Views for SQL users", 1)[1].split("\n#", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.DOTALL)


def test_every_readme_example_runs_read_only_and_answers(store: Store, box: SecretBox) -> None:
    seed_demo(store)
    collect_once(store, box, ProviderContext(Settings(), QuotaLedger()), datetime.now(UTC))
    queries = readme_queries()
    assert len(queries) == 6
    con = duckdb.connect(str(store.path), read_only=True)  # as an analyst's session opens it
    try:
        answers = [con.sql(query).fetchall() for query in queries]
    finally:
        con.close()
    daily, hourly, recent, failures, kpis, alerts = answers
    assert daily and hourly and recent and failures == [] and alerts == []
    assert all(0 < coverage <= 100 for *_, coverage in daily)
    assert len(kpis) == 7  # the demo month: the last seven local days
    assert all(0 <= sufficiency <= 100 and pv >= 0 and load > 0 for _, pv, load, sufficiency, _ in kpis)


def test_a_dst_day_is_25_hours_long_in_the_daily_view(store: Store, box: SecretBox) -> None:
    seed_demo(store)  # Brussels: 2026-10-25 has 25 hours
    collect_once(store, box, ProviderContext(Settings(), QuotaLedger()), datetime(2026, 10, 26, 0, tzinfo=UTC))
    with store.connect(read_only=True) as con:
        rows = con.sql(
            "SELECT source, readings, coverage_pct FROM v_energy_daily"
            " WHERE bucket_local = TIMESTAMP '2026-10-25 00:00' ORDER BY source"
        ).fetchall()
        before = con.sql(
            "SELECT DISTINCT readings, coverage_pct FROM v_energy_daily"
            " WHERE bucket_local = TIMESTAMP '2026-10-24 00:00'"
        ).fetchall()
        local = con.sql(
            "SELECT ts, ts_local FROM v_readings WHERE ts = TIMESTAMPTZ '2026-10-25 00:30:00+00' LIMIT 1"
        ).fetchall()
    # The local day runs from 2026-10-24 22:00 UTC to 2026-10-25 23:00 UTC (25 h): 300 five-minute readings fill it
    # (a 24-hour denominator would say 104 %); the day before has 288.
    assert len(rows) == 6 and all(readings == 25 * 12 for _, readings, _ in rows)
    assert all(round(coverage, 6) == 100.0 for *_, coverage in rows)
    assert [(readings, round(coverage, 6)) for readings, coverage in before] == [(24 * 12, 100.0)]
    assert local[0][1] == datetime(2026, 10, 25, 2, 30)  # still summer time (+2) at 00:30 UTC
