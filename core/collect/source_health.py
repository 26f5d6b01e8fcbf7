"""A source's health between polls: whether it sits a pass out, its backoff and circuit breaker, and the log
lines that mark a change of health. The state itself is kept in `source_state` (`core.store.source_state`).

Rules, each for a reason:
- auth errors and retired APIs stop the vendor site until its configuration changes (retrying cannot help); stored
  credentials that our keys cannot decrypt do not (restoring the key cures them: `core.collect.collection`; the stops
  that older versions recorded for them were cleared by schema migration 8);
- a rate limit waits until the vendor's `retry_at`;
- other failures back off exponentially with jitter, and `CIRCUIT_THRESHOLD` of them in a row open the circuit
  for `CIRCUIT_OPEN`, after which one probe poll decides (half-open).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from core.collect.poll_result import GroupResult
from core.models import Source
from core.store.source_state import SourceState

log = logging.getLogger("core.collect.collection")  # one logger name for everything a pass logs

GroupKey = tuple[str, str]  # (provider, vendor site id): see core.catalog.vendor_sites.provider_site_key


def sits_out(sources: list[Source], states: dict[int, SourceState], now: datetime) -> str | None:
    """Why this group is not polled now, or None. Every source of a vendor site shares the site's fate."""
    known = [states[s.id] for s in sources if s.id in states]
    if known and all(state.stopped for state in known):
        return "stopped until its settings change"
    waits = [state.retry_at for state in known if state.retry_at is not None and state.retry_at > now]
    if waits:
        return f"rate limited until {max(waits):%Y-%m-%d %H:%M} UTC"
    pauses = [state.next_due_at for state in known if state.next_due_at is not None and state.next_due_at > now]
    if pauses:
        open_circuit = any(state.circuit == "open" for state in known)
        return f"{'circuit open' if open_circuit else 'backing off'} until {max(pauses):%Y-%m-%d %H:%M:%S} UTC"
    return None


TRANSIENT = {"connection_error", "bad_response"}

BACKOFF_BASE = timedelta(minutes=1)

BACKOFF_MAX = timedelta(minutes=30)

CIRCUIT_THRESHOLD = 5  # consecutive transient failures that open the circuit

CIRCUIT_OPEN = timedelta(minutes=30)  # then one probe poll (half-open): success closes it, failure re-opens it


# A vendor site polled less often than this waits for its next slot after a failure only once its circuit opens:
# before that, its backoff times bring retries forward (`early_retry`). Hourly and faster sites are back soon anyway.
EARLY_RETRY_SLOWER_THAN = timedelta(hours=1)


RETRIED_EARLY = TRANSIENT | {"rate_limited"}  # the failures `early_retry` may bring a slow site's next poll forward for


def early_retry(period: timedelta, result: GroupResult, states: dict[int, SourceState]) -> datetime | None:
    """When to poll a slow vendor site again ahead of its next slot, after `result`: at its backoff time, while
    its circuit is closed (at most `CIRCUIT_THRESHOLD - 1` extra polls per failure episode, so a vendor outage
    costs a bounded number of calls), or, refused by a rate limit that ends before the next slot (a per-minute
    budget spent by sites polled together), when the limit ends; None for a success, a stop, a longer rate limit,
    an open circuit, or a site polled at least hourly."""
    if period <= EARLY_RETRY_SLOWER_THAN:
        return None
    if result.outcome == "rate_limited":  # the retry time the vendor (a 429) or our own ledger gave
        ends = result.retry_at
        return ends if ends is not None and ends - result.started_at < period else None
    if result.outcome not in TRANSIENT:
        return None
    known = [states[i] for i in result.source_ids if i in states]
    if not known or any(state.circuit != "closed" for state in known):
        return None
    due = [state.next_due_at for state in known if state.next_due_at is not None]
    return max(due) if due else None


def next_health(outcome: str, failures_before: int, now: datetime, jitter: float) -> tuple[int, str, datetime | None]:
    """(consecutive failures, circuit, next due) after a poll. `jitter` in [0.8, 1.2] spreads retries of many
    sites that failed together (a vendor outage) so they do not all come back in the same second."""
    if outcome == "ok":
        return 0, "closed", None
    failures = failures_before + 1
    if outcome not in TRANSIENT:
        return failures, "closed", None  # rate limits and stops have their own waits
    if failures >= CIRCUIT_THRESHOLD:
        return failures, "open", now + CIRCUIT_OPEN * jitter
    backoff = min(BACKOFF_BASE * 2 ** (failures - 1), BACKOFF_MAX)
    return failures, "closed", now + backoff * jitter


def log_transition(key: GroupKey, result: GroupResult, states: list[SourceState | None]) -> None:
    """Log changes of health, not every failure: the first failure at WARNING, the recovery at INFO."""
    failures_before = max((state.failures for state in states if state is not None), default=0)
    if result.outcome != "ok" and failures_before == 0:
        log.warning("%s/%s is failing (%s): %s", *key, result.outcome, result.error)
    elif result.outcome == "ok" and failures_before:
        log.info("%s/%s recovered after %d failed poll(s)", *key, failures_before)
