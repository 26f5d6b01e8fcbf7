"""Who pays for each poll: provider accounts as the collector and the vendors' budgets see them, and how much of
each budget is used.

- An account is what a vendor budget is counted against (`core.catalog.quota_plan`): the SolarEdge API key or the
  Enphase application. It is named by its provider spec's account fingerprint (`ProviderSpec.account_of`), which
  the clients use as `quota_usage.scope_key` and the planner as its account name (never by the key itself, which
  never leaves this module).
- As in the collector (`core.collect.collection._client_for`), a vendor site is polled with its FIRST source's
  credentials, so every source of that vendor site belongs to that source's account, and an Enphase site's OAuth
  grant is the one stored with that source.
- Usage comes from `quota_usage`, in the ledger's UTC buckets (`core.providers.quota.period_bounds`): "today" is the
  UTC day and "this month" the UTC calendar month, as the ledger counts them. A provider without a day budget
  (SolarEdge V2, Enphase) shows today's calls as the sum of its minute buckets; one without a month budget
  (SolarEdge V1) shows the month's calls as the sum of its day buckets. Budgets are the specs' (`ProviderSpec.
  budgets`, through `quota_plan.budget_rules`); the simulator has none.
- Queues (calls waiting for their turn under a per-minute limit, and how long they waited) come from
  `request_queues`, which the collector fills from its memory every few seconds (`core.store.quota_store`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb
from pydantic import SecretStr

from core.catalog import catalog as cat
from core.catalog import quota_plan
from core.catalog.vendor_sites import provider_site_key
from core.models import Provider, Site, Source
from core.providers.answers import scrub
from core.providers.enphase.oauth import Tokens
from core.providers.http import REDACTED
from core.providers.quota import period_bounds
from core.providers.registry import spec_of
from core.store.oauth_tokens import TOKENS_SECRET, decode_tokens
from core.store.store import ts_literal

SIMULATOR_ACCOUNT = "simulator"
MIN_SECRET_LENGTH = 4  # shorter values would blank ordinary words out of messages

Usage = dict[tuple[str, str, str], tuple[int, int]]  # (vendor, scope key, period) -> (calls today, calls this month)
# (vendor, scope key) -> (calls waiting for their turn now, p95 of the waits of the last 15 minutes in s or None)
Queues = dict[tuple[str, str], tuple[int, float | None]]
# The collector writes its queue figures every few seconds while calls wait, and at its every-minute sync; older
# figures are a stopped collector's, and say nothing about now.
QUEUES_FRESH = timedelta(minutes=3)


@dataclass
class Account:
    """One budget scope: a provider account, all simulated sites, or a vendor site whose credentials are missing."""

    id: str
    provider: Provider
    scope_key: str | None  # `quota_usage.scope_key`; None when unknown (no or unreadable credentials)
    problem: str | None = None
    vendor_sites: list[str] = field(default_factory=list)
    client_ids: list[str] = field(default_factory=list)
    grants: dict[str, Tokens | None] = field(default_factory=dict)  # Enphase: the OAuth grant of each vendor site

    @property
    def metered(self) -> bool:
        return spec_of(self.provider).metered


@dataclass(frozen=True)
class Member:
    """An enabled source as the collector polls it."""

    site: Site
    group: str  # its vendor site, "provider/system id" (`provider_site_key`)
    account: str  # `Account.id`
    frequency_min: int  # the vendor site's polling period: its sources' fastest Update Frequency


def ledger_scope(provider: Provider, secrets: Mapping[str, SecretStr]) -> str | None:
    """The `quota_usage.scope_key` of the account these credentials belong to: the spec's account fingerprint, as
    the provider's client computes it. None without the account credential or for a provider without budgets."""
    return spec_of(provider).account_of(secrets)


def accounts_of(
    catalog: cat.Catalog, secrets: Mapping[int, Mapping[str, SecretStr]], unreadable: Mapping[int, str]
) -> tuple[dict[int, Member], dict[str, Account]]:
    """Each enabled source's vendor site and account (by source id), and the accounts (by id, in catalog order)."""
    groups: dict[str, list[Source]] = {}
    sites: dict[int, Site] = {}
    for source in catalog.sources:
        if source.api.use_api and spec_of(source.api.api_provider).polled:  # a pushed source spends no budget
            sites[source.id] = catalog.site(catalog.meter(source.meter_id).site_id)
            groups.setdefault("/".join(provider_site_key(source, sites[source.id].id)), []).append(source)
    members: dict[int, Member] = {}
    accounts: dict[str, Account] = {}
    for group, sources in groups.items():
        first = sources[0]  # whose credentials the collector polls with
        found = _account_of(group, first, secrets.get(first.id, {}), unreadable.get(first.id))
        account = accounts.setdefault(found.id, found)
        account.vendor_sites.append(first.api.system_id or "-")
        if first.api.client_id and first.api.client_id not in account.client_ids:
            account.client_ids.append(first.api.client_id)
        if spec_of(first.api.api_provider).obtained_secrets:
            account.grants[group] = stored_grant(secrets.get(first.id, {}))  # its own or the one it shares
        minutes = min(s.api.update_frequency.minutes for s in sources)
        for source in sources:
            members[source.id] = Member(sites[source.id], group, account.id, minutes)
    return members, accounts


def _account_of(group: str, first: Source, secrets: Mapping[str, SecretStr], unreadable: str | None) -> Account:
    provider = first.api.api_provider
    if not spec_of(provider).metered:
        return Account(SIMULATOR_ACCOUNT, provider, None)
    if unreadable is not None:
        return Account(f"?{group}", provider, None, "stored credentials cannot be decrypted")
    scope = ledger_scope(provider, secrets)
    if scope is None:
        return Account(f"?{group}", provider, None, "no API key stored")
    return Account(f"{provider.value}:{scope}", provider, scope)


def stored_grant(secrets: Mapping[str, SecretStr]) -> Tokens | None:
    """The Enphase OAuth grant stored with a source, or None (not authorised, or a row the client cannot use)."""
    stored = secrets.get(TOKENS_SECRET)
    if stored is None:
        return None
    try:
        return decode_tokens(stored.get_secret_value())
    except (ValueError, KeyError, TypeError):
        return None


def account_labels(accounts: Mapping[str, Account], enphase_plan: str) -> dict[str, str]:
    """Account id -> "SolarEdge (V2) account 2", "Enphase (Watt plan) app <Client ID>": never a key or its
    fingerprint. SolarEdge accounts are numbered per provider in catalog order."""
    numbers: dict[Provider, int] = {}
    labels = {}
    for account in accounts.values():
        numbers[account.provider] = numbers.get(account.provider, 0) + 1
        if not account.metered:
            labels[account.id] = "Simulator (built-in)"
            continue
        name = quota_plan.provider_label(account.provider, enphase_plan)
        if account.problem:
            labels[account.id] = f"{name}: {account.problem} (site {', '.join(account.vendor_sites)})"
        elif spec_of(account.provider).shares_by_application and account.client_ids:
            labels[account.id] = f"{name} app {', '.join(account.client_ids)}"
        else:
            labels[account.id] = f"{name} account {numbers[account.provider]}"
    return labels


def read_usage(con: duckdb.DuckDBPyConnection, now: datetime) -> Usage:
    """(vendor, scope key, period) -> (calls today, calls this month), in the ledger's UTC buckets."""
    day_start, _ = period_bounds("day", now)
    month_start, month_end = period_bounds("month", now)
    rows = con.sql(
        "SELECT provider, scope_key, period, coalesce(sum(calls) FILTER (WHERE bucket_start >= "
        f"{ts_literal(day_start)}), 0), sum(calls) FROM quota_usage WHERE bucket_start >= {ts_literal(month_start)}"
        f" AND bucket_start < {ts_literal(month_end)} GROUP BY ALL"
    ).fetchall()
    return {(str(p), str(s), str(period)): (int(today), int(month)) for p, s, period, today, month in rows}


def read_queues(con: duckdb.DuckDBPyConnection, now: datetime) -> Queues:
    """The collector's per-account request queues (`request_queues`, written by `core.store.quota_store`), where
    fresh."""
    rows = con.execute(
        "SELECT provider, scope_key, queued, wait_p95_s FROM request_queues WHERE updated_at >= ?",
        [now - QUEUES_FRESH],
    ).fetchall()
    return {(str(p), str(s)): (int(queued), None if p95 is None else float(p95)) for p, s, queued, p95 in rows}


def queue(account: Account | None, queues: Queues) -> tuple[int | None, float | None]:
    """(calls queued now, wait p95 in s) of an account; (None, None) when the collector published none lately (not
    paced: the simulator, an unknown account, no per-minute limit, no collector running)."""
    if account is None or account.scope_key is None:
        return None, None
    return queues.get((spec_of(account.provider).vendor or "", account.scope_key), (None, None))


def quota(
    account: Account | None, usage: Usage, enphase_plan: str
) -> tuple[int | None, int | None, int | None, int | None]:
    """(calls today, budget today, calls this month, budget this month) of an account. Calls are None when the
    account is unknown or has no budget (simulator); a budget is None where the provider has no rule for the
    period (V2 and Enphase count months, V1 days)."""
    if account is None or account.scope_key is None:
        return None, None, None, None
    budget = {
        r.period: r.limit for r in quota_plan.budget_rules(account.provider, enphase_plan) if r.scope == "account"
    }
    vendor = spec_of(account.provider).vendor or ""

    def calls(period: str) -> tuple[int, int]:
        return usage.get((vendor, account.scope_key or "", period), (0, 0))

    today = calls("day")[0] if "day" in budget else calls("minute")[0]
    month = calls("month")[1] if "month" in budget else calls("day")[1]
    return today, budget.get("day"), month, budget.get("month")


def scrubber(secrets: Mapping[int, Mapping[str, SecretStr]]) -> Callable[[str], str]:
    """A function that blanks every decrypted value (and the tokens inside a stored grant) out of a message, then
    applies the providers' redaction (URL credentials, Authorization values, JSON tokens). One regular expression
    for all values, longest first, so hundreds of keys cost one pass per message."""
    found: set[str] = set()
    for values in secrets.values():
        for name, value in values.items():
            found.add(value.get_secret_value())
            if name == TOKENS_SECRET and (grant := stored_grant(values)) is not None:
                found |= {grant.access_token.get_secret_value(), grant.refresh_token.get_secret_value()}
    literals = sorted((t for t in found if len(t) >= MIN_SECRET_LENGTH), key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(t) for t in literals)) if literals else None
    return lambda text: scrub(pattern.sub(REDACTED, text) if pattern else text)
