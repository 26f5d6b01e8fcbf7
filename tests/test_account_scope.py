"""One rule names the vendor account a credential belongs to (`core.providers.quota.account_scope`): the clients'
ledgers, the planner and API Health agree, whatever spaces surround a typed key (issue 13: it was written six
times with three rules, and V1 did not strip)."""

from __future__ import annotations

from pydantic import SecretStr

from core.analytics.api_accounts import ledger_scope
from core.catalog.quota_plan import account_fingerprint
from core.models import Provider
from core.providers.quota import account_scope
from core.providers.solaredge_v1.client import account_key
from core.providers.solaredge_v2.client import SolarEdgeV2Client

KEY = "L4QLVQ1LOKCQX2193VSEICXW61NP6B1O"


def test_every_part_names_an_account_alike() -> None:
    expected = account_scope(KEY)
    assert len(expected) == 16 and KEY not in expected
    assert account_fingerprint(f" {KEY}\n") == expected
    assert account_key(SecretStr(f"{KEY} ")) == expected  # V1
    for provider, name in ((Provider.SOLAREDGE, "api_key"), (Provider.SOLAREDGE_V1, "api_key")):
        assert ledger_scope(provider, {name: SecretStr(f" {KEY}")}) == expected
    assert ledger_scope(Provider.ENPHASE, {"app_api_key": SecretStr(KEY)}) == expected
    client = SolarEdgeV2Client(SecretStr(f" {KEY} "), "3066774")
    try:
        assert client._scope["account"] == expected  # what its ledger counts against
    finally:
        client.close()
