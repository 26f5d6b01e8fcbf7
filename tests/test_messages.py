"""Messages in the user's words: fields named by the labels the pages show, numbers as people write them, nothing
that Streamlit's Markdown would change, and a page icon that comes with the page."""

from __future__ import annotations

import ast
import base64
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from streamlit.commands.page_config import _get_favicon_string
from streamlit.testing.v1 import AppTest

from core.catalog import catalog as cat
from core.catalog import connections
from core.catalog.config_io import ConfigImportError, import_config
from core.catalog.field_labels import SOURCE_LABELS, file_label, labelled, source_label
from core.config import Settings, load_settings
from core.models import ApiSettings, Category, MeterIn, Provider, SiteIn, SourceIn, secret_problem
from core.providers.context import ProviderContext
from core.providers.quota import QuotaLedger
from core.providers.registry import missing_credentials
from core.runtime import open_runtime
from core.store.crypto import SecretBox
from core.store.store import Store
from core.validation import field_errors, readable_number

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
CONTEXT = ProviderContext(Settings(), QuotaLedger())
NOON = datetime(2026, 6, 21, 11, 0, tzinfo=UTC)
# What Streamlit's Markdown rewrites in text (its frontend's typographic replacements): a spaced "--" becomes an em
# dash, a spaced "<=" a "≤", and so on. A message must read the same on the page as in a terminal.
STREAMLIT_REWRITES = re.compile(r"(^|\s)(<->|->|<-|--|>=|<=|~=)(\s|$)")
GOOD_SITE = {"name": "Plant", "latitude": 50.0, "longitude": 4.0, "timezone": "Europe/Brussels"}
GOOD_SOURCE = {
    "name": "Array",
    "source_type": "solar",
    "capacity_kw": 10,
    "carbon_intensity_g_per_kwh": 0,
    "cost_per_mwh": 0,
}


def errors_of(model: type[BaseModel], data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return field_errors(info.value)


# --- numbers and words ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (10_000_000.0, "10,000,000"),
        (2_000.0, "2,000"),
        (0.25, "0.25"),
        (-90, "-90"),
        (-0.0, "0"),
        (1e-9, "0.000000001"),
        (1.5e20, "150,000,000,000,000,000,000"),
        (123_456.789, "123,456.789"),
    ],
)
def test_numbers_are_written_as_people_read_them(value: float, shown: str) -> None:
    assert readable_number(value) == shown


@pytest.mark.parametrize(
    ("model", "data", "field", "message"),
    [
        (SourceIn, GOOD_SOURCE | {"capacity_kw": 10_000_001}, "capacity_kw", "must be at most 10,000,000"),
        (
            SourceIn,
            GOOD_SOURCE | {"carbon_intensity_g_per_kwh": 2_001},
            "carbon_intensity_g_per_kwh",
            "must be at most 2,000",
        ),
        (SourceIn, GOOD_SOURCE | {"cost_per_mwh": 100_001}, "cost_per_mwh", "must be at most 100,000"),
        (SourceIn, GOOD_SOURCE | {"cost_per_mwh": -1}, "cost_per_mwh", "must be at least 0"),
        (SiteIn, GOOD_SITE | {"latitude": -91}, "latitude", "must be at least -90"),
        (SiteIn, GOOD_SITE | {"longitude": 180.5}, "longitude", "must be at most 180"),
    ],
)
def test_bounds_are_said_in_words_with_readable_numbers(
    model: type[BaseModel], data: dict[str, Any], field: str, message: str
) -> None:
    assert errors_of(model, data) == {field: message}


def every_rule_message() -> list[str]:
    """The messages of the field rules, from bad input of every kind."""
    site_cases = [
        {"name": ""},
        {"name": "x" * 2_000},
        {"name": "<b>"},
        {"name": "a -- b"},
        {"name": "tab\x00"},
        {"latitude": 91},
        {"longitude": "east"},
        {"timezone": "Mars/Olympus"},
    ]
    source_cases = [
        {"capacity_kw": 1e12},
        {"capacity_kw": -1},
        {"cost_per_mwh": "inf"},
        {"carbon_intensity_g_per_kwh": ""},
        {"name": "a; b"},
    ]
    messages = [m for case in site_cases for m in errors_of(SiteIn, GOOD_SITE | case).values()]
    messages += [m for case in source_cases for m in errors_of(SourceIn, GOOD_SOURCE | case).values()]
    messages += errors_of(ApiSettings, {"system_id": "1 2"}).values()
    messages += errors_of(MeterIn, {"name": "PV", "category": "SOLAR"}).values()
    for provider in Provider:
        messages += missing_credentials(ApiSettings(use_api=True, api_provider=provider), set()).values()
    messages += [p for p in (secret_problem("a b"), secret_problem("k" * 600)) if p]
    return messages


def test_no_rule_message_is_changed_by_markdown_or_written_as_a_machine_would() -> None:
    messages = every_rule_message()
    assert len(messages) > 20
    for message in messages:
        assert not STREAMLIT_REWRITES.search(message), message
        assert not re.search(r"\de[+-]\d", message), message  # no exponent notation
        assert not any(sign in message for sign in "≤≥"), message
        assert not re.search(r"[a-z]_[a-z]", message), message  # no internal names such as capacity_kw


def test_field_messages_stand_under_their_field_without_naming_it() -> None:
    enphase = missing_credentials(ApiSettings(use_api=True, api_provider=Provider.ENPHASE), set())
    assert enphase == dict.fromkeys(
        ("system_id", "client_id", "client_secret", "app_api_key"), "is required for Enphase"
    )
    assert errors_of(SiteIn, GOOD_SITE | {"name": "Robert'); DROP TABLE sites;--"}) == {
        "name": "must not contain SQL syntax (;, --, /*, */)"
    }


# --- labels --------------------------------------------------------------------------------------------------------


def test_a_message_elsewhere_names_its_field_by_the_pages_label() -> None:
    assert labelled("must be at most 10,000,000", SOURCE_LABELS["capacity_kw"]) == (
        "Capacity (kW) must be at most 10,000,000"
    )
    assert labelled("a site named 'X' already exists", "Site Name") == "Site Name: a site named 'X' already exists"
    assert labelled("this meter was deleted meanwhile", None) == "this meter was deleted meanwhile"
    assert source_label("system_id", Provider.SOLAREDGE) == "Site ID"
    assert source_label("system_id", "enphase") == "System ID"
    assert source_label("system_id", "no-such-vendor") == "System ID"
    assert source_label("app_api_key") == "Application API Key"
    assert source_label("meter") is None


@pytest.mark.parametrize(
    ("loc", "provider", "label"),
    [
        (["sites", 0, "timezone"], None, "Time Zone"),
        (["sites", 0, "meters", 1, "name"], None, "Meter Name"),
        (["sites", 0, "meters", 1, "sources", 2, "name"], None, "Source Name"),
        (["sites", 0, "meters", 1, "sources", 2, "cost_per_mwh"], None, "Cost (per MWh)"),
        (["sites", 0, "meters", 1, "sources", 2, "api", "provider"], None, "API Provider"),
        (["sites", 0, "meters", 1, "sources", 2, "api", "enabled"], None, "Enable API"),
        (["sites", 0, "meters", 1, "sources", 2, "api", "system_id"], Provider.SOLAREDGE, "Site ID"),
        (["sites", 0, "meters", 1, "sources", 2, "credentials", "client_secret"], None, "Client Secret"),
        (["sites", 0, "colour"], None, None),
        (["version"], None, None),
        ([], None, None),
    ],
)
def test_a_configuration_files_keys_have_the_pages_labels(loc: list[str | int], provider: Any, label: Any) -> None:
    assert file_label(loc, provider) == label


def test_config_import_lines_give_the_path_and_the_label(store: Store, box: SecretBox) -> None:
    source = GOOD_SOURCE | {"capacity_kw": 20_000_000, "api": {"enabled": True, "provider": "solaredge"}}
    site = GOOD_SITE | {"meters": [{"name": "PV", "category": "PROD", "sources": [source]}]}
    with pytest.raises(ConfigImportError) as caught:
        import_config(store, box, {"version": 1, "sites": [site]}, environ={})
    assert caught.value.errors == [
        "sites[0].meters[0].sources[0].capacity_kw: Capacity (kW) must be at most 10,000,000",
    ]
    source = GOOD_SOURCE | {"api": {"enabled": True, "provider": "solaredge", "update_frequency": "1hour"}}
    site = GOOD_SITE | {"meters": [{"name": "PV", "category": "PROD", "sources": [source]}]}
    with pytest.raises(ConfigImportError) as caught:
        import_config(store, box, {"version": 1, "sites": [site]}, environ={})
    assert caught.value.errors == [
        "sites[0].meters[0].sources[0].api.system_id: Site ID is required for SolarEdge",
        "sites[0].meters[0].sources[0].credentials.api_key: API Key is required for SolarEdge",
    ]


def test_a_refused_name_reads_alone_under_its_field_and_labelled_elsewhere(store: Store) -> None:
    site = cat.create_site(store, SiteIn(**GOOD_SITE))
    with pytest.raises(cat.InvalidInput) as caught:
        cat.create_site(store, SiteIn(**GOOD_SITE | {"name": "PLANT"}))
    assert caught.value.errors == {"name": "a site named 'PLANT' already exists"}
    assert str(caught.value) == "Site Name: a site named 'PLANT' already exists"
    cat.create_meter(store, site.id, MeterIn(name="PV", category=Category.PROD))
    with pytest.raises(cat.InvalidInput) as caught:
        cat.create_meter(store, site.id, MeterIn(name="pv", category=Category.CONS))
    assert str(caught.value) == "Meter Name: this site already has a meter named 'pv'"


@pytest.mark.parametrize(
    ("values", "result"),
    [
        ({"name": ""}, "Source Name must not be empty"),
        ({"capacity_kw": "20000000"}, "Capacity (kW) must be at most 10,000,000"),
        ({"api_provider": "solaredge", "update_frequency": "1hour"}, "Site ID is required for SolarEdge"),
        ({"api_provider": "enphase", "system_id": "42"}, "Client ID is required for Enphase"),
    ],
)
def test_a_connection_test_names_the_field_that_stops_it(
    store: Store, box: SecretBox, values: dict[str, str], result: str
) -> None:
    site = cat.create_site(store, SiteIn(**GOOD_SITE))
    meter = cat.create_meter(store, site.id, MeterIn(name="PV", category=Category.PROD))
    draft = connections.new_draft("new-a", meter.id, meter.category)
    draft.values |= {"name": "Array", "capacity_kw": "500", "use_api": True, "api_provider": "simulator"} | values
    outcome = connections.test_connection(store, box, site.id, draft, NOON, CONTEXT)
    assert outcome.message == result


def test_data_connections_shows_the_message_under_the_field_and_the_label_in_the_summary(app_env: Path) -> None:
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("pages/data_connections.py").run()
    source = cat.load_catalog(open_runtime(load_settings(), prepare=False).store).sources[0]
    app.text_input(key=f"dc_s{source.id}_capacity_kw").input("20000000")
    app.button(key="dc_save_all").click().run()
    assert not app.exception
    messages = [e.value for e in app.error]
    assert "must be at most 10,000,000" in messages  # under the field: the field is right there
    summary = re.sub(r"\\(.)", r"\1", next(m for m in messages if "nothing was saved" in m))  # as shown
    assert f"**{source.name}** · Capacity (kW) must be at most 10,000,000" in summary
    assert "capacity_kw" not in summary


# --- the page icon ---------------------------------------------------------------------------------------------------


def test_the_page_icon_is_a_file_of_ours_sent_with_the_page() -> None:
    calls = [
        node
        for node in ast.walk(ast.parse((REPO / "app.py").read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "set_page_config"
    ]
    (icon,) = [keyword.value for call in calls for keyword in call.keywords if keyword.arg == "page_icon"]
    assert ast.unparse(icon) == "Path(__file__).parent / 'ui' / 'icon.svg'"  # not ":material/...": fetched online
    path = REPO / "ui" / "icon.svg"
    svg = ET.parse(path).getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    assert not [e for e in svg.iter() if any("href" in name for name in e.attrib)]  # nothing it would load
    favicon = _get_favicon_string(path)
    prefix = "data:image/svg+xml;base64,"
    assert favicon.startswith(prefix)  # inline: the browser asks no server for it
    assert base64.b64decode(favicon.removeprefix(prefix)).decode() == path.read_text()
