"""Onboard a whole vendor account: list the sites a credential can see, then import the chosen ones in one step.

The credential is a SolarEdge V2 API key, or an Enphase application already authorised on a saved source (its
Client ID, Client Secret, Application API Key and OAuth grant). Listing uses the clients' own `list_sites`, which
pages as the vendor does (SolarEdge: `sites-in-page` up to 1,000 a call; Enphase: 100 systems a call) and counts
every call in the quota ledger it is given, as every other vendor call is counted.

An import is a configuration file built in memory (`import_document`, the format of `core.catalog.config_file`) and
merged by `core.catalog.config_io.import_config`: the page's rules, the quota plan of the whole configuration as it
will be, and one transaction, or nothing written. So `jobs.cli discover` can write the very same document to a file for
`config import`. The credential is given once, by environment variable name (`CREDENTIAL_ENV`): the file never
holds it, and the page passes its value in the import's environment mapping. It is stored once, encrypted: the
first new source holds it and the others share it (`credentials_from` in the file, `ApiSettings.credentials_source_id`
when stored; `core.store.secret_store.SOURCE_CREDENTIALS` reads it for each).

What an imported site gets: a site (name, time zone, coordinates of the zone's principal city:
`core.catalog.zone_coordinates`) and, per channel group the user chose, its meter and sources (`LAYOUT`): PV always;
load and grid meters; battery. Neither vendor's site list says which meters a site has. SolarEdge tells it per site on
request (`check_meters`: its device list, one credit a site, within the per-minute limit); a site so checked gets the
groups its vendor reports, any other the groups the user chose (a source whose device is absent reads nothing, and its
calls still count). Enphase's device list is left out: it would cost one call a system on plans of 1,000 calls a month.

Re-running skips vendor sites already configured: a source of the same provider with the same Site/System ID.
An Enphase owner authorises an application once for all their systems, so imported Enphase sources share the
credentials of the source the account came from, its owner's authorisation included, rather than a copy of them:
Enphase rotates the refresh token at every renewal, so a copy would die at the first renewal of another
(`core.store.oauth_tokens` keeps the one row and renews it under one lock).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import SecretStr, ValidationError

from core.actors import Permission, require
from core.catalog import catalog as cat
from core.catalog import quota_plan
from core.catalog.config_file import FORMAT_VERSION, NAME
from core.catalog.config_io import ImportReport, import_config
from core.catalog.connection_quota import Edited, keys_to_compare, planned_sources, stored_accounts
from core.catalog.zone_coordinates import zone_coordinates
from core.config import Settings
from core.models import Category, Provider, UpdateFrequency, name_key, secret_problem
from core.providers.base import MonitoringProvider, ProviderError, ProviderSite, RateLimited
from core.providers.enphase.client import EnphaseClient
from core.providers.quota import QuotaLedger
from core.providers.registry import spec_of
from core.providers.solaredge_v2.client import SolarEdgeV2Client
from core.store.crypto import SecretBox
from core.store.oauth_tokens import TOKENS_SECRET, StoredTokens
from core.store.secret_store import load_secrets
from core.store.store import Store

PROVIDERS = (Provider.SOLAREDGE, Provider.ENPHASE)
# Stored credential name -> the environment variable a discovered file names for it.
CREDENTIAL_ENV = {
    "api_key": "SOLAREDGE_API_KEY",
    "client_secret": "ENPHASE_CLIENT_SECRET",
    "app_api_key": "ENPHASE_APP_API_KEY",
}
GROUPS = {"pv": "PV", "meters": "Load and grid meters", "battery": "Battery"}
# Per provider: (channel group, meter name, category, ((source name, source type), ...)). Enphase's grid flows come
# from its import/export telemetry (a consumption meter is needed; without one they stay empty, like the load).
LAYOUT: dict[Provider, tuple[tuple[str, str, Category, tuple[tuple[str, str], ...]], ...]] = {
    Provider.SOLAREDGE: (
        ("pv", "Solar", Category.PROD, (("PV", "solar"),)),
        ("meters", "Consumption", Category.CONS, (("Load", "load"), ("Grid import", "grid"))),
        ("meters", "Injection", Category.INJ, (("Grid export", "grid"),)),
        ("battery", "Battery", Category.STOR, (("Battery power", "battery"), ("State of charge", "soc"))),
    ),
    Provider.ENPHASE: (
        ("pv", "Solar", Category.PROD, (("PV", "solar"),)),
        ("meters", "Consumption", Category.CONS, (("Load", "load"), ("Grid import", "grid"))),
        ("meters", "Injection", Category.INJ, (("Grid export", "grid"),)),
        ("battery", "Battery", Category.STOR, (("Battery power", "battery"), ("State of charge", "soc"))),
    ),
}
_REFUSED = re.compile(r"[^\w .,()/&'#+:@-]+")  # what `models.Name` refuses, roughly: made spaces
DEFAULT_TIMEZONE = "UTC"  # a vendor site without a time zone (the Enphase spec shows some)


class AccountImportError(Exception):
    """One message for the user (bad key, unauthorised application, vendor unreachable); nothing was saved."""


@dataclass(frozen=True)
class Account:
    """The credential of a vendor account: `secrets` by stored name; `grant_source` the Enphase source whose OAuth
    grant lists the systems (None for SolarEdge)."""

    provider: Provider
    secrets: Mapping[str, SecretStr] = field(repr=False)
    client_id: str = ""
    system_id: str = ""  # the grant source's own system: the Enphase client needs one
    grant_source: int | None = None

    def environ(self) -> dict[str, str]:
        """The environment an import of a discovered document reads the credential from."""
        return {CREDENTIAL_ENV[name]: value.get_secret_value() for name, value in self.secrets.items()}


def solaredge_account(api_key: str) -> Account:
    """A SolarEdge V2 account from a typed API key, or `AccountImportError` when it cannot be one."""
    key = api_key.strip()
    if not key:
        raise AccountImportError("Enter the SolarEdge V2 API key of the account.")
    if problem := secret_problem(key):
        raise AccountImportError(f"The API key {problem}.")
    return Account(Provider.SOLAREDGE, {"api_key": SecretStr(key)})


def enphase_sources(catalog: cat.Catalog) -> list[tuple[int, str]]:
    """(source id, "Site / Source (Client ID)") of the saved Enphase sources whose application is authorised and
    whose credentials are their own."""
    sites = {s.id: s.name for s in catalog.sites}
    meters = {m.id: m.site_id for m in catalog.meters}
    needed = {"client_secret", "app_api_key", TOKENS_SECRET}
    return [
        (s.id, f"{sites[meters[s.meter_id]]} / {s.name} (Client ID {s.api.client_id})")
        for s in catalog.sources
        if s.api.api_provider is Provider.ENPHASE
        and s.api.client_id
        and needed <= s.secret_names
        and s.api.credentials_source_id is None  # a system sharing another's application is listed through that one
    ]


def enphase_account(store: Store, box: SecretBox, source_id: int) -> Account:
    """The Enphase application of an authorised source (its secrets decrypted here), or `AccountImportError`."""
    catalog = cat.load_catalog(store)
    try:
        source = catalog.source(source_id)
    except cat.NotFound:
        raise AccountImportError(f"There is no source {source_id}: choose an authorised Enphase source.") from None
    if source_id not in {found for found, _ in enphase_sources(catalog)}:
        raise AccountImportError(
            f"{source.name} is not an authorised Enphase source: save its Client ID, Client Secret and Application"
            " API Key and use Authorize with Enphase in Data Connections first."
        )
    secrets = load_secrets(store, box, source_id)
    return Account(
        Provider.ENPHASE,
        {name: secrets[name] for name in ("client_secret", "app_api_key")},
        client_id=source.api.client_id,
        system_id=source.api.system_id,
        grant_source=source_id,
    )


def _client(
    account: Account, settings: Settings, ledger: QuotaLedger, store: Store, box: SecretBox
) -> MonitoringProvider:
    if account.provider is Provider.SOLAREDGE:
        return SolarEdgeV2Client(
            account.secrets["api_key"],
            "",  # the site list names no site
            base_url=settings.solaredge_base_url,
            timeout_s=settings.http_timeout_s,
            ledger=ledger,
        )
    assert account.grant_source is not None
    return EnphaseClient(
        client_id=account.client_id,
        client_secret=account.secrets["client_secret"],
        api_key=account.secrets["app_api_key"],
        system_id=account.system_id,
        token_store=StoredTokens(store, box, account.grant_source),
        base_url=settings.enphase_base_url,
        auth_url=settings.enphase_auth_url,
        timeout_s=settings.http_timeout_s,
        ledger=ledger,
        plan=settings.enphase_plan,
    )


def list_account_sites(
    account: Account, settings: Settings, ledger: QuotaLedger, store: Store, box: SecretBox
) -> list[ProviderSite]:
    """Every site of the account, in the vendor's order; `AccountImportError` with the vendor's reason if not."""
    require(Permission.TEST_CONNECTION)  # it spends the account's calls, as a test does
    try:
        client = _client(account, settings, ledger, store, box)
    except ValueError as exc:  # an Enphase source whose saved settings the client refuses
        raise AccountImportError(f"The Enphase source cannot be used: {exc}.") from None
    try:
        return client.list_sites()
    except ProviderError as exc:
        raise AccountImportError(f"Could not list the sites of this account. {exc}") from None
    finally:
        client.close()


@dataclass(frozen=True)
class MeterCheck:
    """What the vendor reports per site: `groups` by vendor site id ("meters", "battery", or none: PV only);
    `unchecked` the sites a budget left for later, `note` why (with when to try again)."""

    groups: dict[str, frozenset[str]]
    unchecked: list[str]
    note: str | None = None
    retry_at: datetime | None = None


DEVICE_GROUPS = {"METER": "meters", "BATTERY": "battery"}  # SolarEdge device types -> our channel groups


def check_meters(account: Account, site_ids: Sequence[str], settings: Settings, ledger: QuotaLedger) -> MeterCheck:
    """Ask SolarEdge which meters and batteries each site has (one credit a site, counted in `ledger`).

    Stops at the first budget refusal (the Free tier allows 10 calls a minute) and says which sites are left, rather
    than waiting: the caller asks again later. Enphase's site list and plan leave this out (see the module).
    """
    require(Permission.TEST_CONNECTION)
    if account.provider is not Provider.SOLAREDGE:
        raise AccountImportError("Only SolarEdge reports a site's meters here: choose the channels for Enphase.")
    found: dict[str, frozenset[str]] = {}
    for index, site_id in enumerate(site_ids):
        client = SolarEdgeV2Client(
            account.secrets["api_key"],
            site_id,
            base_url=settings.solaredge_base_url,
            timeout_s=settings.http_timeout_s,
            ledger=ledger,
        )
        try:
            types = client.device_types()
        except RateLimited as exc:
            return MeterCheck(found, list(site_ids[index:]), str(exc), exc.retry_at)
        except ProviderError as exc:
            raise AccountImportError(f"Could not check the meters of site {site_id}. {exc}") from None
        finally:
            client.close()
        found[site_id] = frozenset(group for kind, group in DEVICE_GROUPS.items() if kind in types)
    return MeterCheck(found, [])


def configured_ids(catalog: cat.Catalog, provider: Provider) -> set[str]:
    """Site/System IDs of the provider that some saved source already reads: an import skips them."""
    return {s.api.system_id for s in catalog.sources if s.api.api_provider is provider and s.api.system_id}


def import_document(
    account: Account,
    sites: Sequence[ProviderSite],
    groups: frozenset[str],
    frequency: UpdateFrequency,
    catalog: cat.Catalog,
    reported: Mapping[str, frozenset[str]] | None = None,
) -> dict[str, object]:
    """The configuration file (`core.catalog.config_file` format) that creates `sites` but those already configured,
    with the channel groups the vendor `reported` for a site (`check_meters`), else the chosen `groups`. Credentials are
    named by environment variable (`CREDENTIAL_ENV`), never given."""
    present = configured_ids(catalog, account.provider)
    taken = {name_key(s.name) for s in catalog.sites}
    # The account's credentials are stored once: with the source the account came from (Enphase: the application
    # and its owner's authorisation), else with the first new source; every other new source shares them.
    holder = catalog.names_of(account.grant_source) if account.grant_source is not None else None
    credentials = {name: {"env": CREDENTIAL_ENV[name]} for name in account.secrets}
    out = []
    for site in sites:
        if site.id in present:
            continue
        present.add(site.id)
        name = _free_name(site, taken)
        timezone = site.timezone or DEFAULT_TIMEZONE
        latitude, longitude = zone_coordinates(timezone)
        meters = []
        wanted = (reported or {}).get(site.id, groups)
        for group, meter_name, category, sources in LAYOUT[account.provider]:
            if group != "pv" and group not in wanted:
                continue
            rows = []
            for source_name, source_type in sources:
                capacity = site.capacity_kw if category is Category.PROD and site.capacity_kw else 0.0
                api: dict[str, object] = {"enabled": True, "provider": account.provider.value, "system_id": site.id}
                api |= {"client_id": account.client_id, "update_frequency": frequency.value}
                row = {"name": source_name, "source_type": source_type, "capacity_kw": capacity}
                row |= {"carbon_intensity_g_per_kwh": 0.0, "cost_per_mwh": 0.0, "api": api}
                if holder is None:  # this one holds them
                    holder = {"site": name, "meter": meter_name, "source": source_name}
                    rows.append(row | {"credentials": dict(credentials)})
                else:
                    rows.append(row | {"api": api | {"credentials_from": holder}})
            meters.append({"name": meter_name, "category": category.value, "sources": rows})
        out.append({"name": name, "latitude": latitude, "longitude": longitude, "timezone": timezone, "meters": meters})
    return {"version": FORMAT_VERSION, "sites": out}


def _free_name(site: ProviderSite, taken: set[str]) -> str:
    """The vendor's name (characters our names refuse made spaces), or with its id when another site has it (a
    merge by name would join the two), else "Site <id>"."""
    cleaned = " ".join(_REFUSED.sub(" ", site.name).replace("--", "-").split())[:80]
    for candidate in (cleaned, f"{cleaned} ({site.id})", f"Site {site.id}"):
        name = _usable(candidate)
        if name is not None and name_key(name) not in taken:
            taken.add(name_key(name))
            return name
    raise AccountImportError(f"Site {site.id} has no usable name: rename the site it clashes with, then try again.")


def _usable(candidate: str) -> str | None:
    try:
        return NAME.validate_python(candidate)
    except ValidationError:
        return None


def _edited(account: Account, document: Mapping[str, object]) -> list[Edited]:
    name = spec_of(account.provider).account_credential  # the planner names the account by it, as the ledger does
    typed = account.secrets[name].get_secret_value() if name and name in account.secrets else None
    edited = []
    for site in document["sites"]:  # type: ignore[attr-defined]
        for meter in site["meters"]:
            for source in meter["sources"]:
                api = source["api"]
                settings = {
                    "use_api": True,
                    "api_provider": api["provider"],
                    "system_id": api["system_id"],
                    "client_id": api["client_id"],
                    "update_frequency": api["update_frequency"],
                }
                key = f"{site['name']} / {meter['name']} / {source['name']}"
                edited.append(Edited(key, None, Category(meter["category"]), source["source_type"], settings, typed))
    return edited


def quota_checks(
    store: Store, box: SecretBox, catalog: cat.Catalog, account: Account, document: Mapping[str, object], plan: str
) -> list[quota_plan.ScopeCheck]:
    """The budgets the new sources fall in, counted with every saved source that shares them (the plan of Save All
    Connections and of `config import`, which refuses the same figures)."""
    edited = _edited(account, document)
    if not edited:
        return []
    to_read = keys_to_compare(catalog, edited, set())
    accounts: dict[int, str] = {}
    if to_read:
        with store.connect(read_only=True) as con:
            accounts = stored_accounts(con, box, to_read)
    checks = quota_plan.check(planned_sources(catalog, edited, set(), accounts), enphase_plan=plan)
    return [scope for scope in checks if scope.editable]


def import_sites(
    store: Store, box: SecretBox, account: Account, document: Mapping[str, object], *, enphase_plan: str
) -> ImportReport:
    """Create the document's sites, meters and sources in one transaction, or raise `ConfigImportError` (the quota
    plan's refusal among its problems) and write nothing."""
    return import_config(store, box, document, environ=account.environ(), enphase_plan=enphase_plan)
