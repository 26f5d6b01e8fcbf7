"""`python -m jobs.cli discover`: list a vendor account's sites and write the configuration file that imports them.

The file is `core.catalog.account_import.import_document`, the same the Import Sites page imports, in the format
`config import` takes. It names the credential by environment variable (`SOLAREDGE_API_KEY`; for Enphase
`ENPHASE_CLIENT_SECRET` and `ENPHASE_APP_API_KEY`) and never holds it, the rule of configuration files. The
SolarEdge key is read from that variable too, never from the command line (which other users can see). The
selection is checked against the account's budget first: a file `config import` would refuse is not written.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from core.catalog import account_import as ai
from core.catalog import catalog as cat
from core.catalog import quota_plan
from core.catalog.config_io import dump
from core.models import Provider, UpdateFrequency
from core.providers.base import ProviderSite
from core.runtime import Runtime

FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}
MAX_WAIT_S = 70.0  # a per-minute limit frees up within a minute; a longer wait is the monthly budget


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("provider", choices=[p.value for p in ai.PROVIDERS], help="solaredge (V2) or enphase")
    parser.add_argument(
        "--source", type=int, metavar="ID", help="enphase: the authorised source whose application lists the systems"
    )
    parser.add_argument("--output", type=Path, metavar="FILE", help="write the configuration (.yaml, .yml or .json)")
    parser.add_argument("--site", action="append", default=[], metavar="ID", help="only this vendor site (repeatable)")
    parser.add_argument(
        "--channels",
        default="",
        metavar="LIST",
        help="besides PV, comma list of: meters (load and grid), battery; or 'reported': what SolarEdge reports per"
        " site (one call a site; default: PV only)",
    )
    parser.add_argument(
        "--frequency",
        choices=[f.value for f in UpdateFrequency],
        help="update frequency (default: the fastest the account's budget carries)",
    )


def run(runtime: Runtime, args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """List, select, check, write; `AccountImportError` (or `ValueError` for usage) with one message otherwise."""
    provider = Provider(args.provider)
    fmt = FORMATS.get(args.output.suffix.lower()) if args.output is not None else None
    if args.output is not None and fmt is None:  # before any vendor call
        raise ai.AccountImportError(f"cannot tell the format of {args.output}: name it .yaml, .yml or .json")
    groups = frozenset(g.strip() for g in args.channels.split(",") if g.strip())
    if groups != {"reported"} and (unknown := groups - set(ai.GROUPS)):
        raise ai.AccountImportError(f"unknown channels {', '.join(sorted(unknown))}: use meters, battery or reported")
    account = _account(runtime, provider, args.source, environ)
    sites = ai.list_account_sites(account, runtime.settings, runtime.ledger, runtime.store, runtime.box)
    catalog = cat.load_catalog(runtime.store)
    present = ai.configured_ids(catalog, provider)
    print("\n".join(_table(sites, present)))
    if args.output is None or fmt is None:
        return
    chosen = _chosen(sites, args.site)
    reported = None
    if groups == {"reported"}:
        groups, reported = frozenset(), _reported(runtime, account, [s.id for s in chosen if s.id not in present])
    document = ai.import_document(account, chosen, groups, UpdateFrequency.MIN15, catalog, reported)
    if not document["sites"]:
        raise ai.AccountImportError("Every chosen site is configured already: nothing to write.")
    plan = runtime.settings.enphase_plan
    checks = ai.quota_checks(runtime.store, runtime.box, catalog, account, document, plan)
    frequency = UpdateFrequency(args.frequency) if args.frequency else quota_plan.common_fastest_fit(checks)
    if frequency is None:
        raise ai.AccountImportError(" ".join(scope.message() for scope in checks if not scope.fits))
    document = ai.import_document(account, chosen, groups, frequency, catalog, reported)
    checks = ai.quota_checks(runtime.store, runtime.box, catalog, account, document, plan)
    if refused := [scope.message() for scope in checks if not scope.fits]:
        raise ai.AccountImportError(" ".join(refused) + " Nothing was written.")
    args.output.write_text(dump(document, fmt), encoding="utf-8")
    count = len(document["sites"])  # type: ignore[arg-type]
    variables = " and ".join(ai.CREDENTIAL_ENV[name] for name in account.secrets)
    print(f"Wrote {count} site(s), every {frequency.label}, to {args.output}.", file=sys.stderr)
    for scope in checks:
        print(f"  {scope.summary()}", file=sys.stderr)
    print(f"Import it with `config import {args.output}` with {variables} set.", file=sys.stderr)


def _account(runtime: Runtime, provider: Provider, source: int | None, environ: Mapping[str, str]) -> ai.Account:
    if provider is Provider.ENPHASE:
        if source is None:
            raise ai.AccountImportError("enphase needs --source ID: the authorised source whose application to use")
        return ai.enphase_account(runtime.store, runtime.box, source)
    variable = ai.CREDENTIAL_ENV["api_key"]
    if not environ.get(variable, "").strip():
        raise ai.AccountImportError(f"Set {variable} to the SolarEdge V2 API key of the account.")
    return ai.solaredge_account(environ[variable])


def _reported(runtime: Runtime, account: ai.Account, site_ids: list[str]) -> dict[str, frozenset[str]]:
    """What SolarEdge reports for each site, waiting out its per-minute limit (a command may take minutes; a
    monthly refusal ends it)."""
    found: dict[str, frozenset[str]] = {}
    while site_ids:
        check = ai.check_meters(account, site_ids, runtime.settings, runtime.ledger)
        found |= check.groups
        site_ids = check.unchecked
        if not site_ids:
            break
        wait = (check.retry_at - datetime.now(UTC)).total_seconds() if check.retry_at else None
        if wait is None or wait > MAX_WAIT_S:
            raise ai.AccountImportError(f"{len(site_ids)} site(s) could not be checked: {check.note}")
        print(f"Checked {len(found)} site(s); waiting {max(wait, 0):.0f} s for the per-minute limit.", file=sys.stderr)
        time.sleep(max(wait, 0) + 0.5)
    return found


def _chosen(sites: list[ProviderSite], wanted: list[str]) -> list[ProviderSite]:
    if not wanted:
        return sites
    known = {site.id for site in sites}
    if missing := [w for w in wanted if w not in known]:
        raise ai.AccountImportError(f"the account has no site {', '.join(missing)}")
    return [site for site in sites if site.id in set(wanted)]


def _table(sites: list[ProviderSite], present: set[str]) -> list[str]:
    lines = [f"{len(sites)} site(s); {sum(s.id in present for s in sites)} configured already (skipped)"]
    for s in sites:
        power = f"{s.capacity_kw:g} kW" if s.capacity_kw is not None else "-"
        mark = "configured" if s.id in present else ""
        lines.append(f"  {s.id:<12} {s.name[:40]:<40} {s.timezone or '-':<22} {power:>10}  {s.location or '-'}  {mark}")
    return [line.rstrip() for line in lines]
