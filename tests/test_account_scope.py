"""One rule names the vendor account a credential belongs to: each provider's spec says which credential
(`ProviderSpec.account_of`), and the clients' ledgers, the planner and API Health all name the account by it,
whatever spaces surround a typed key (issue 13: it was written six times with three rules, V1 did not strip, and
the planner named Enphase accounts by the Client ID while the ledger used the application API key)."""

from __future__ import annotations

from pydantic import SecretStr

from core.analytics.api_accounts import ledger_scope
from core.catalog.connection_quota import account
from core.models import Provider
from core.providers.quota import account_scope
from core.providers.registry import SPECS, spec_of
from core.providers.solaredge_v1.client import account_key
from core.providers.solaredge_v2.client import SolarEdgeV2Client

KEY = "L4QLVQ1LOKCQX2193VSEICXW61NP6B1O"


def test_every_metered_provider_names_its_account_by_one_credential() -> None:
    expected = account_scope(KEY)
    assert len(expected) == 16 and KEY not in expected
    metered = [spec for spec in SPECS.values() if spec.metered]
    assert {spec.provider for spec in metered} == {Provider.SOLAREDGE, Provider.SOLAREDGE_V1, Provider.ENPHASE}
    for spec in metered:
        name = spec.account_credential
        assert name in {c.name for c in spec.credentials}, spec.provider
        secrets = {name: SecretStr(f" {KEY}\n")}
        assert spec.account_of(secrets) == expected
        assert ledger_scope(spec.provider, secrets) == expected  # API Health
        assert account({"api_provider": spec.provider.value}, f" {KEY} ", None) == expected  # the planner, typed
    assert spec_of(Provider.SIMULATOR).account_of({}) is None


def test_the_clients_ledgers_count_under_the_same_name() -> None:
    expected = account_scope(KEY)
    assert account_key(SecretStr(f"{KEY} ")) == expected  # V1
    client = SolarEdgeV2Client(SecretStr(f" {KEY} "), "3066774")
    try:
        assert client._scope["account"] == expected  # what its ledger counts against
    finally:
        client.close()


def test_a_cleared_credential_is_an_account_of_its_own() -> None:
    assert account({"api_provider": "solaredge"}, "", "stored-fingerprint") is None
    assert account({"api_provider": "solaredge"}, None, "stored-fingerprint") == "stored-fingerprint"
