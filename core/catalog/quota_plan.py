"""Quota planner: the vendor calls a polling schedule implies, against each provider's day and month budgets.

Pure: no Streamlit, no database, no network. The Data Connections page shows its figures under each Update
Frequency, and Save All Connections (`core.catalog.connections`) and the config import (`core.catalog.config_io`)
refuse a schedule that does not fit; `core.catalog.connection_quota` builds what both give the planner.

How calls are counted (the collector, `jobs/collector.py` and `core/collect/collection.py`, and the clients):

- The collector polls each *vendor site* (provider + Site/System ID, `core.catalog.vendor_sites.provider_site_key`)
  once per period of the fastest Update Frequency among its enabled sources, so sources sharing a vendor site are
  counted once, at that fastest frequency. The scheduler's jitter only lengthens a period, so a day holds at most
  1,440 / minutes polls (288, 96, 48, 24, 12, 8, 4, 2, 1); a month is counted as 31 days, so a plan that fits fits
  every month.
- One poll is one `history()` over the regular window (`core.cadence.poll_span`: the period, with its jitter,
  plus up to 3 h 30 min re-read). A client cuts it into requests of at most its `max_window` (`split_windows`), so
  a poll makes `windows_per_poll` requests per endpoint: one at every frequency up to 6 h; at 12 h two for
  SolarEdge V2 (12 h a request); daily three for V2 and two for Enphase (1 day a request); always one for V1 (25
  days). So 12 h saves nothing over 6 h on V2 and is never proposed ahead of it. Each request's calls depend on
  the channels the group's sources read (`core.roles.channel_for`): each provider's spec counts them
  (`ProviderSpec.calls_per_window`, beside its client: SolarEdge V2 1 to 3, V1 1, Enphase 1 to 5, the simulator 0).

Budgets are the providers' specs' (`ProviderSpec.budgets`, which the clients' `quota_rules` read too, so they
cannot drift): SolarEdge V2 2,000 credits a month per API key; SolarEdge V1 300 calls a day per site and 300 a day
per API key; Enphase per application and month: Watt 1,000, Kilowatt 50,000, Megawatt 300,000
(`DATACONN_ENPHASE_PLAN`).

The rule, per budget scope:
- "site" rules (V1) count the vendor site's own polls.
- "account" rules add up every vendor site polled with the same credential. The caller names that credential
  by its account fingerprint (`ProviderSpec.account_of`: a truncated SHA-256 of the spec's account credential,
  never the secret), the name the quota ledger and API Health use too: the SolarEdge API key (V2 and V1), the
  Enphase application API key. So sources whose stored or typed credentials are equal share an account whichever
  site they belong to. A vendor site is charged to its first source's credential, as the collector builds its
  client from that source.
- Per-minute limits (SolarEdge V2 10, Enphase 10/50/100) are met by pacing, not planned: a poll costs at most 5
  calls, polls of one key that meet in the same minute are spread by the scheduler's jitter, and a call beyond
  the minute's limit is refused by the ledger with a `retry_at` in the next minute and made then. That moves
  calls in time, it adds none. V1's 3 concurrent calls are a slot limit, not a budget. So only day and month
  budgets refuse a plan.
- Not counted: Test Connection (1 to 3 calls each), a new source's first day of catch-up, backfills and gap
  re-reads. They spend what the plan leaves, and the ledger refuses any call beyond a budget, so they may delay
  data but never break a limit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from core.cadence import poll_span
from core.models import Provider, UpdateFrequency
from core.providers.base import QuotaRule
from core.providers.registry import spec_of

MONTH_DAYS = 31  # the longest month: a plan that fits it fits every month
DEFAULT_ENPHASE_PLAN = "watt"  # the `DATACONN_ENPHASE_PLAN` default, and the smallest plan
MINUTES_PER_DAY = 1_440
FASTEST_FIRST = tuple(sorted(UpdateFrequency, key=lambda f: f.minutes))
SLOWEST = FASTEST_FIRST[-1]


def is_budgeted(provider: Provider) -> bool:
    """Whether the provider's calls count against vendor budgets (its spec names a vendor)."""
    return spec_of(provider).metered


def windows_per_poll(provider: Provider, frequency: UpdateFrequency | int) -> int:
    """Requests per endpoint of one regular poll: its window (`poll_span`) cut at the client's `max_window`."""
    minutes = frequency if isinstance(frequency, int) else frequency.minutes
    spec = spec_of(provider)
    if spec.max_window is None:
        return 1
    return math.ceil((poll_span(minutes) + spec.window_alignment) / spec.max_window)


def calls_per_poll(provider: Provider, channels: Iterable[str]) -> int:
    """Vendor calls of one request window of a poll (`windows_per_poll` of them) of a vendor site whose sources read
    `channels` (the spec's `calls_per_window`)."""
    return spec_of(provider).calls_per_window(frozenset(channels))


def budget_rules(provider: Provider, enphase_plan: str = DEFAULT_ENPHASE_PLAN) -> tuple[QuotaRule, ...]:
    """The day and month budgets of a provider, as its spec declares them (minute and concurrency left out)."""
    return spec_of(provider).budgets(enphase_plan)


def provider_label(provider: Provider, enphase_plan: str = DEFAULT_ENPHASE_PLAN) -> str:
    """ "SolarEdge (V2)", "Enphase (Watt plan)": the name quota figures use."""
    return spec_of(provider).budget_label(enphase_plan)


# --- the plan ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedSource:
    """One enabled source as the planner sees it.

    `key` is the caller's name for it (returned in `ScopeCheck.members`); `vendor_site` its Site/System ID;
    `account` the fingerprint of its credential (see the module docstring); `channel` what it reads
    (`channel_for`). `editable` sources are the ones the user is changing now: suggestions change only them.
    """

    key: str
    provider: Provider
    vendor_site: str
    account: str
    channel: str
    frequency: UpdateFrequency
    editable: bool = True
    stream_calls_per_day: int = 0  # its live-stream schedule's calls (core.providers.enphase.stream_schedule)


@dataclass
class _Group:
    """The sources of one vendor site: one poll serves them all."""

    members: list[PlannedSource] = field(default_factory=list)

    def calls_per_day(self, choice: UpdateFrequency | None) -> int:
        provider, minutes = self.members[0].provider, self.minutes(choice)
        per_window = calls_per_poll(provider, {m.channel for m in self.members})
        polls = per_window * windows_per_poll(provider, minutes) * (MINUTES_PER_DAY // minutes)
        return polls + self.stream_calls_per_day()

    def stream_calls_per_day(self) -> int:
        """One stream serves the vendor site's sources: the longest of their schedules counts (an approximation
        when two sources of one system have different partial schedules)."""
        return max((m.stream_calls_per_day for m in self.members), default=0)

    def minutes(self, choice: UpdateFrequency | None) -> int:
        """The fastest frequency of its sources, with `choice` in place of the editable sources' own."""
        return min(choice.minutes if choice and m.editable else m.frequency.minutes for m in self.members)


@dataclass(frozen=True)
class ScopeCheck:
    """One budget scope (an account, or a V1 site) under the plan: its calls, its budget, and what would fit.

    `fastest_fit` is the fastest frequency that fits when every editable source of the scope takes it (None: not
    even daily fits), `at_fastest_fit` its (calls/day, calls/month); `at_slowest` the (calls/day, calls/month) at
    the slowest frequency (daily); `others` what sources the user is not editing need, per day.
    """

    provider: Provider
    scope: Literal["account", "site"]
    scope_id: str  # the account fingerprint or the vendor site id
    enphase_plan: str
    members: tuple[str, ...]
    editable: tuple[str, ...]
    vendor_sites: int
    frequencies: tuple[UpdateFrequency, ...]  # each vendor site's polling frequency, in the plan as it stands
    calls_per_day: int
    calls_per_month: int
    budget_per_day: int | None
    budget_per_month: int | None
    fastest_fit: UpdateFrequency | None
    at_slowest: tuple[int, int]
    others_per_day: int
    at_fastest_fit: tuple[int, int] | None = None
    stream_per_day: int = 0  # calls/day its live-stream schedules take whatever the frequency

    @property
    def fits(self) -> bool:
        return self._fits(self.calls_per_day, self.calls_per_month)

    def _fits(self, day: int, month: int) -> bool:
        return (self.budget_per_day is None or day <= self.budget_per_day) and (
            self.budget_per_month is None or month <= self.budget_per_month
        )

    def _binding(self, day: int, month: int) -> tuple[str, int, int]:
        """(period, calls, budget) of the rule this plan uses most of."""
        rules = []
        if self.budget_per_day is not None:
            rules.append(("day", day, self.budget_per_day))
        if self.budget_per_month is not None:
            rules.append(("month", month, self.budget_per_month))
        return max(rules, key=lambda rule: rule[1] / max(rule[2], 1))

    @property
    def label(self) -> str:
        """ "SolarEdge (V2) account", "SolarEdge V1 site 1234567": never the account's fingerprint."""
        name = provider_label(self.provider, self.enphase_plan)
        if self.scope == "site":
            return f"{name} site {self.scope_id}"
        return f"{name} account" + (f" ({self.vendor_sites} sites)" if self.vendor_sites > 1 else "")

    @property
    def percent(self) -> int:
        _, calls, budget = self._binding(self.calls_per_day, self.calls_per_month)
        return round(100 * calls / max(budget, 1))

    def summary(self) -> str:
        """One caption line: "SolarEdge (V2) account: 24 calls/day, 744/month of 2,000 (37%)"."""
        period, _, budget = self._binding(self.calls_per_day, self.calls_per_month)
        if period == "day":
            return f"{self.label}: {self.calls_per_day:,} calls/day of {budget:,} ({self.percent}%)"
        return (
            f"{self.label}: {self.calls_per_day:,} calls/day, {self.calls_per_month:,}/month of {budget:,} "
            f"({self.percent}%)"
        )

    def proposal(self) -> str | None:
        """The fastest frequency that fits, with its figures: "every 2 h fits: 1,116 calls/month of 2,000" (None when
        not even daily fits)."""
        if self.fastest_fit is None or self.at_fastest_fit is None:
            return None
        period, calls, budget = self._binding(*self.at_fastest_fit)
        return f"every {self.fastest_fit.label} fits: {calls:,} calls/{period} of {budget:,}"

    def message(self) -> str:
        """Why the plan does not fit and which frequency would, e.g. "SolarEdge (V2) allows 2,000 calls a month for
        this API key; every 1 hour needs 2,232; every 2 h fits: 1,116 calls/month of 2,000."."""
        period, calls, budget = self._binding(self.calls_per_day, self.calls_per_month)
        name = provider_label(self.provider, self.enphase_plan)
        if self.scope == "site":
            whose = f"for site {self.scope_id}"
        else:
            whose = f"for this {spec_of(self.provider).account_noun}"
            whose += f", shared by {self.vendor_sites} sites" if self.vendor_sites > 1 else ""
        schedule = f"every {self.frequencies[0].label}" if len(set(self.frequencies)) == 1 else "this schedule"
        text = f"{name} allows {budget:,} calls a {period} {whose}; {schedule} needs {calls:,}"
        proposal = self.proposal()
        if proposal is not None:
            return f"{text}; {proposal}."
        if self.at_slowest != (self.calls_per_day, self.calls_per_month):
            period, calls, budget = self._binding(*self.at_slowest)
            unit = spec_of(self.provider).budget_unit
            text += f". Even {SLOWEST.label} needs {calls:,} calls a {period} against {budget:,} {unit}"
        if self.others_per_day:
            others = self.others_per_day * (MONTH_DAYS if period == "month" else 1)
            text += f", {others:,} of them for sources of other sites"
        if self.stream_per_day:
            streams = self.stream_per_day * (MONTH_DAYS if period == "month" else 1)
            text += f" ({streams:,} of them for live-stream schedules: set one to off or to fewer hours)"
        return f"{text}: read fewer channels, use {spec_of(self.provider).budget_remedy}, or disable a source."


def check(sources: Sequence[PlannedSource], *, enphase_plan: str = DEFAULT_ENPHASE_PLAN) -> list[ScopeCheck]:
    """Every budget scope the sources fall in, with its figures (simulator sources and unknown providers ignored).

    Sources of one vendor site form one group, polled at their fastest frequency; groups add up per account.
    """
    groups: dict[tuple[Provider, str], _Group] = {}
    for source in sources:
        if is_budgeted(source.provider):
            groups.setdefault((source.provider, source.vendor_site), _Group()).members.append(source)
    scopes: dict[tuple[Provider, Literal["account", "site"], str], list[_Group]] = {}
    for (provider, vendor_site), group in groups.items():
        for scope in dict.fromkeys(rule.scope for rule in budget_rules(provider, enphase_plan)):
            scope_id = group.members[0].account if scope == "account" else vendor_site
            scopes.setdefault((provider, scope, scope_id), []).append(group)
    return [
        _check_scope(provider, scope, scope_id, members, enphase_plan)
        for (provider, scope, scope_id), members in scopes.items()
    ]


def _check_scope(
    provider: Provider, scope: Literal["account", "site"], scope_id: str, groups: list[_Group], enphase_plan: str
) -> ScopeCheck:
    rules = [rule for rule in budget_rules(provider, enphase_plan) if rule.scope == scope]
    limits = {period: next((r.limit for r in rules if r.period == period), None) for period in ("day", "month")}

    def totals(choice: UpdateFrequency | None) -> tuple[int, int]:
        day = sum(group.calls_per_day(choice) for group in groups)
        return day, day * MONTH_DAYS

    def fits(day: int, month: int) -> bool:
        return all((day if rule.period == "day" else month) <= rule.limit for rule in rules)

    day, month = totals(None)
    members = [m for group in groups for m in group.members]
    by_minutes = {f.minutes: f for f in UpdateFrequency}
    fastest_fit = next((f for f in FASTEST_FIRST if fits(*totals(f))), None)
    return ScopeCheck(
        provider=provider,
        scope=scope,
        scope_id=scope_id,
        enphase_plan=enphase_plan.strip().lower(),
        members=tuple(m.key for m in members),
        editable=tuple(m.key for m in members if m.editable),
        vendor_sites=len(groups),
        frequencies=tuple(by_minutes[group.minutes(None)] for group in groups),
        calls_per_day=day,
        calls_per_month=month,
        budget_per_day=limits["day"],
        budget_per_month=limits["month"],
        fastest_fit=fastest_fit,
        at_slowest=totals(SLOWEST),
        others_per_day=sum(g.calls_per_day(None) for g in groups if not any(m.editable for m in g.members)),
        at_fastest_fit=totals(fastest_fit) if fastest_fit is not None else None,
        stream_per_day=sum(group.stream_calls_per_day() for group in groups),
    )


def fastest_fitting(
    sources: Sequence[PlannedSource], *, enphase_plan: str = DEFAULT_ENPHASE_PLAN
) -> UpdateFrequency | None:
    """The fastest frequency at which every budget fits when all the editable sources take it (the sources of a
    vendor site are polled together, so that is every channel of the site); None when not even daily fits."""
    return common_fastest_fit(check(sources, enphase_plan=enphase_plan))


def common_fastest_fit(checks: Iterable[ScopeCheck]) -> UpdateFrequency | None:
    """The fastest frequency that fits every one of these budgets (`check`'s answer) when the editable sources take
    it; None when one of them fits at no frequency.

    Each budget's calls never grow as the frequency slows, so the slowest of the budgets' own fastest fits fits
    them all. Budgets without an editable source are left out: no choice of frequency changes them.
    """
    fits = [scope.fastest_fit for scope in checks if scope.editable]
    if any(fit is None for fit in fits):
        return None
    return max((fit for fit in fits if fit is not None), key=lambda f: f.minutes, default=FASTEST_FIRST[0])


def by_member(checks: Iterable[ScopeCheck]) -> dict[str, list[ScopeCheck]]:
    """The scopes each source falls in, by its key (a V1 source is in its site's and its account's)."""
    found: dict[str, list[ScopeCheck]] = {}
    for scope in checks:
        for key in scope.members:
            found.setdefault(key, []).append(scope)
    return found


def refusals(checks: Iterable[ScopeCheck]) -> dict[str, str]:
    """Editable source key -> why its schedule is refused, for every scope that does not fit."""
    found: dict[str, list[str]] = {}
    for scope in checks:
        if not scope.fits:
            for key in scope.editable:
                found.setdefault(key, []).append(scope.message())
    return {key: " ".join(dict.fromkeys(messages)) for key, messages in found.items()}
