"""The short-lived reuse of Test Connection results, kept in `api_data_cache` beside the archived exchanges.

A Test Connection of a saved source leaves a row with endpoint `test_connection` whose body is JSON:
`{"status", "message", "power_w", "tested_at", "fingerprint"}`. The fingerprint is an HMAC (`SecretBox.fingerprint`)
of the tested settings and credentials, so a repeated click with the same settings within the TTL is answered from
that row without a vendor call, and the row reveals no credential. The exchanges the test made are archived with it
(`core.store.exchange_archive`).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from core.catalog.source_drafts import TestOutcome
from core.models import ConnectionStatus
from core.providers.exchange import Exchange
from core.store.exchange_archive import INSERT_ROW, write_exchanges
from core.store.store import Store

TEST_ENDPOINT = "test_connection"


def cached_test(store: Store, source_id: int, fingerprint: str, now: datetime, ttl_s: float) -> TestOutcome | None:
    """The newest Test Connection outcome of `source_id` tested less than `ttl_s` seconds before `now` with the
    same settings fingerprint, or None (always None when `ttl_s` <= 0)."""
    if ttl_s <= 0:
        return None
    now = now.astimezone(UTC)
    with store.connect(read_only=True) as con:
        rows = con.execute(
            "SELECT body FROM api_data_cache WHERE source_id = ? AND endpoint = ? AND fetched_at > ?"
            " AND fetched_at <= ? ORDER BY fetched_at DESC",
            [source_id, TEST_ENDPOINT, now - timedelta(seconds=ttl_s), now],
        ).fetchall()
    for (body,) in rows:
        found = _decode(body, fingerprint)
        if found is not None:
            return found
    return None


def store_test(
    store: Store, source_id: int, fingerprint: str, outcome: TestOutcome, exchanges: Sequence[Exchange] = ()
) -> None:
    """Keep a Test Connection outcome for `cached_test`, with the exchanges the test made, in one transaction."""
    body = json.dumps(
        {
            "status": outcome.status.value,
            "message": outcome.message,
            "power_w": outcome.power_w,
            "tested_at": outcome.tested_at.astimezone(UTC).isoformat(),
            "fingerprint": fingerprint,
        }
    )
    with store.transaction() as con:
        write_exchanges(con, source_id, exchanges)
        con.execute(INSERT_ROW, [source_id, TEST_ENDPOINT, outcome.tested_at.astimezone(UTC), None, body])


def _decode(body: str | None, fingerprint: str) -> TestOutcome | None:
    """The outcome in a cache row if it parses and its fingerprint matches (compared in constant time)."""
    try:
        data = json.loads(body or "")
        stored = data["fingerprint"]
        if not isinstance(stored, str) or not hmac.compare_digest(stored, fingerprint):
            return None
        power = data.get("power_w")
        return TestOutcome(
            status=ConnectionStatus(data["status"]),
            message=str(data["message"]),
            tested_at=datetime.fromisoformat(data["tested_at"]).astimezone(UTC),
            power_w=float(power) if isinstance(power, int | float) else None,
        )
    except (ValueError, KeyError, TypeError):
        return None
