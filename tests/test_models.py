"""Validation rules and their messages: the same ones guard the page and the config import."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from core.models import ApiSettings, Category, MeterIn, Provider, SiteIn, SourceIn
from core.providers.registry import missing_credentials
from core.validation import field_errors

GOOD_SITE = {"name": "Plant A", "latitude": 50.85, "longitude": 4.35, "timezone": "Europe/Brussels"}
GOOD_SOURCE = {
    "name": "Main Solar Array",
    "source_type": "solar",
    "capacity_kw": "500",
    "carbon_intensity_g_per_kwh": 0,
    "cost_per_mwh": 0,
}


def errors_of(model: type, data: dict) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return field_errors(info.value)


def test_valid_site_is_normalised() -> None:
    site = SiteIn.model_validate(GOOD_SITE | {"name": "  Plant   A ", "latitude": "50,85"})
    assert site.name == "Plant A"
    assert site.latitude == 50.85


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "", "must not be empty"),
        ("name", "   ", "must not be empty"),
        ("name", "x" * 101, "must be at most 100 characters (got 101)"),
        ("name", "<script>alert(1)</script>", "must not contain HTML (< or >)"),
        ("name", "Robert'); DROP TABLE sites;--", "must not contain SQL syntax (;, --, /*, */)"),
        ("name", "tab\x00null", "may contain letters, digits, spaces and - _ . , ( ) / & ' # + : @ only"),
        ("latitude", 91, "must be at most 90"),
        ("latitude", -90.5, "must be at least -90"),
        ("longitude", 180.01, "must be at most 180"),
        ("latitude", "north", "must be a number (got 'north')"),
        ("latitude", "nan", "must be a finite number"),
        ("longitude", math.inf, "must be a finite number"),
        ("latitude", "", "is required"),
        ("timezone", "Mars/Olympus", "must be an IANA name such as Europe/Brussels, not 'Mars/Olympus'"),
    ],
)
def test_site_rejects_bad_input_with_specific_message(field: str, value: object, message: str) -> None:
    assert errors_of(SiteIn, GOOD_SITE | {field: value}) == {field: message}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("capacity_kw", -1, "must be at least 0"),
        ("capacity_kw", "abc", "must be a number (got 'abc')"),
        ("capacity_kw", "inf", "must be a finite number"),
        ("capacity_kw", float("nan"), "must be a finite number"),
        ("capacity_kw", 10_000_001, "must be at most 10,000,000"),
        ("carbon_intensity_g_per_kwh", -0.1, "must be at least 0"),
        ("carbon_intensity_g_per_kwh", 5000, "must be at most 2,000"),
        ("cost_per_mwh", "-3", "must be at least 0"),
        ("cost_per_mwh", True, "must be a number"),
    ],
)
def test_source_numbers_are_checked(field: str, value: object, message: str) -> None:
    assert errors_of(SourceIn, GOOD_SOURCE | {field: value}) == {field: message}


def test_ten_gigawatts_is_the_largest_capacity() -> None:
    assert SourceIn.model_validate(GOOD_SOURCE | {"capacity_kw": 10_000_000}).capacity_kw == 10_000_000


def test_meter_category_must_be_known() -> None:
    assert MeterIn.model_validate({"name": "PV", "category": "PROD"}).category is Category.PROD
    assert errors_of(MeterIn, {"name": "PV", "category": "SOLAR"}) == {
        "category": "must be one of 'PROD', 'CONS', 'STOR' or 'INJ'"
    }


def test_api_settings_use_the_original_spec_json_keys() -> None:
    api = ApiSettings(use_api=True, api_provider=Provider.SOLAREDGE, system_id="123")
    metadata = api.to_metadata()
    assert metadata["useAPI"] is True
    assert metadata["apiProvider"] == "solaredge"
    assert metadata["systemId"] == "123"
    assert metadata["updateFrequency"] == "15min"
    assert metadata["connectionStatus"] == "untested"
    assert metadata["lastTested"] is None
    assert ApiSettings.model_validate(metadata) == api


def test_system_id_rejects_odd_characters() -> None:
    with pytest.raises(ValidationError) as info:
        ApiSettings(system_id="12; DROP")
    assert field_errors(info.value) == {"system_id": "may contain letters, digits and - _ . : only"}


def test_missing_credentials_depend_on_provider() -> None:
    solaredge = ApiSettings(use_api=True, api_provider=Provider.SOLAREDGE)
    assert missing_credentials(solaredge, set()) == {
        "system_id": "is required for SolarEdge",
        "api_key": "is required for SolarEdge",
    }
    enphase = ApiSettings(use_api=True, api_provider=Provider.ENPHASE, system_id="42")
    assert missing_credentials(enphase, {"client_secret"}) == {
        "client_id": "is required for Enphase",
        "app_api_key": "is required for Enphase",
    }
    assert missing_credentials(ApiSettings(use_api=True, api_provider=Provider.SIMULATOR), set()) == {}
    assert missing_credentials(ApiSettings(use_api=False, api_provider=Provider.SOLAREDGE), set()) == {}
