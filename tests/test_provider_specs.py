"""Each provider is declared once, in its spec beside its client (`core.providers.spec`), and the registry holds
them all: what the rest of the program reads about a provider comes from there (issue 13, point 1). The budgets
and calls a spec declares are checked against the real clients and the fake vendors in test_quota_plan.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from core.config import Settings
from core.models import ApiSettings, Provider
from core.providers.registry import SPECS, credentials_still_apply, missing_credentials, spec_of
from core.providers.spec import ProviderSpec
from core.roles import Role

ROOT = Path(__file__).resolve().parents[1]
CHANNELS = frozenset(role.channel for role in Role)


def test_every_provider_id_has_exactly_one_spec() -> None:
    assert list(SPECS) == list(Provider)
    assert all(spec.provider is provider for provider, spec in SPECS.items())
    with pytest.raises(ValueError):
        spec_of("solaredge_v3")


def test_each_vendor_url_setting_belongs_to_one_provider() -> None:
    url_settings = [name for name in Settings.model_fields if name.endswith(("_base_url", "_auth_url"))]
    claimed = [name for spec in SPECS.values() for name in spec.base_url_settings]
    assert sorted(claimed) == sorted(url_settings)


def test_a_metered_provider_names_its_account_by_one_of_its_credentials() -> None:
    for spec in SPECS.values():
        names = {c.name for c in spec.credentials}
        if spec.metered:
            assert spec.account_credential in names, spec.provider
            assert spec.budgets("watt"), spec.provider
            assert 1 <= spec.calls_per_window(CHANNELS) <= 5, spec.provider
        else:
            assert spec.account_credential is None and spec.budgets("watt") == ()


def test_the_simulator_declares_only_what_every_provider_must() -> None:
    """Adding a provider is writing its module and registering it: the simulator's spec shows the minimum."""
    simulator = SPECS[Provider.SIMULATOR]
    defaults = {f.name: f.default for f in dataclasses.fields(ProviderSpec) if f.default is not dataclasses.MISSING}
    changed = {name for name, default in defaults.items() if getattr(simulator, name) != default}
    assert changed == {"setup_note"}  # besides provider, label and factory, which have no default
    assert not simulator.metered and not simulator.needs_system_id


# Import Sites lists the sites of a SolarEdge key or an authorised Enphase application, and asks SolarEdge for a
# site's devices: calls only those two vendors' clients have, made from the one module that imports them.
ACCOUNT_LISTINGS = "core/catalog/account_import.py"


def test_no_module_outside_a_provider_package_names_a_vendor_client() -> None:
    """The planner, API Health, the pages and the config file read specs, never a vendor client's constants."""
    vendor_modules = ("solaredge_v2.client", "solaredge_v1.client", "enphase.client", "simulator.client")
    offenders = []
    for folder in ("core/catalog", "core/analytics", "core/collect", "core/store", "pages", "ui", "jobs"):
        for path in (ROOT / folder).rglob("*.py"):
            if str(path.relative_to(ROOT)) == ACCOUNT_LISTINGS:
                continue
            text = path.read_text()
            offenders += [f"{path.relative_to(ROOT)}: {m}" for m in vendor_modules if f"core.providers.{m}" in text]
    assert offenders == []


def test_required_fields_follow_the_spec() -> None:
    enphase = ApiSettings(use_api=True, api_provider=Provider.ENPHASE)
    assert missing_credentials(enphase, {"client_secret"}) == {
        "system_id": "is required for Enphase",
        "client_id": "is required for Enphase",
        "app_api_key": "is required for Enphase",
    }
    stored = ApiSettings(use_api=True, api_provider=Provider.ENPHASE, client_id="app-1")
    assert credentials_still_apply(Provider.ENPHASE, "app-1", stored)
    assert not credentials_still_apply(Provider.ENPHASE, "app-2", stored)  # another application's credentials
    assert not credentials_still_apply(Provider.SOLAREDGE, "app-1", stored)
    solaredge = ApiSettings(use_api=True, api_provider=Provider.SOLAREDGE, client_id="x")
    assert credentials_still_apply(Provider.SOLAREDGE, "y", solaredge)  # no application: the Client ID is moot
