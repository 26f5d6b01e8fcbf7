"""The names people see for the fields of sites, meters and sources, and messages that name a field by them.

One home for the labels: the pages show these words beside the fields, and a message about a field names it by
them. A field's own message is phrased to stand right under it, without its name ("must be at most 10,000,000",
`core.validation`, `core.models`); where it stands elsewhere (a page's summary of problems, a connection test's
result, a line of `config import`), `labelled` puts the label in front: "Capacity (kW) must be at most 10,000,000".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from core.models import Provider
from core.providers.registry import CREDENTIAL_LABELS, spec_of

SITE_LABELS: Mapping[str, str] = {
    "name": "Site Name",
    "latitude": "Latitude",
    "longitude": "Longitude",
    "timezone": "Time Zone",
}
METER_LABELS: Mapping[str, str] = {"name": "Meter Name", "category": "Category"}
SOURCE_LABELS: Mapping[str, str] = {
    "name": "Source Name",
    "source_type": "Source Type",
    "capacity_kw": "Capacity (kW)",
    "carbon_intensity_g_per_kwh": "Carbon Intensity (g/kWh)",
    "cost_per_mwh": "Cost (per MWh)",
    "use_api": "Enable API",
    "api_provider": "API Provider",
    "update_frequency": "Update Frequency",
    "system_id": "System ID",  # "Site ID" for SolarEdge: see `source_label`
    "client_id": "Client ID",
    "mqtt_host": "Broker Host",
    "mqtt_port": "Broker Port",
    "mqtt_tls": "TLS",
    "mqtt_user": "Broker User",
    "mqtt_topic": "Topic",
    "mqtt_payload_path": "Payload Path",
    "mqtt_unit": "Unit",
    "stream_on_live": "Stream While Watched",
    "stream_schedule": "Stream Schedule",
    **CREDENTIAL_LABELS,  # credentials by their stored names, as the providers' specs label them
}
# The keys of a configuration file's `api` mapping that differ from the stored names.
_API_FILE_KEYS = {"enabled": "use_api", "provider": "api_provider"}
# A message that reads on after the label ("Capacity (kW) must be ..."); any other gets a colon.
_PREDICATES = ("must ", "is ", "are ", "may ", "needs ", "cannot ", "has ", "matches ")


def source_label(field: str, provider: Provider | str | None = None) -> str | None:
    """The label of a source's field as the page shows it for this provider; None for what is not a field."""
    if field == "system_id" and provider is not None:
        try:
            return spec_of(provider).system_id_label or SOURCE_LABELS[field]
        except ValueError:  # an unknown provider: it has its own message
            pass
    return SOURCE_LABELS.get(field)


def file_label(loc: Sequence[str | int], provider: Provider | str | None = None) -> str | None:
    """The label of the field at `loc` in a configuration file (("sites", 0, "meters", 1, "name") -> "Meter Name");
    None for a key that is no field (an unknown key, `version`, a list)."""
    if not loc or not isinstance(key := loc[-1], str):
        return None
    parent = next((part for part in reversed(loc[:-1]) if isinstance(part, str)), None)
    if parent == "api":
        return source_label(_API_FILE_KEYS.get(key, key), provider)
    if parent == "credentials":
        return CREDENTIAL_LABELS.get(key)
    labels = {"sites": SITE_LABELS, "meters": METER_LABELS, "sources": SOURCE_LABELS}.get(parent or "", {})
    return labels.get(key)


def labelled(message: str, label: str | None) -> str:
    """The message naming its field: "Capacity (kW) must be at least 0", "Site Name: a site named 'X' already
    exists"; as it is without a label."""
    if not label:
        return message
    return f"{label} {message}" if message.startswith(_PREDICATES) else f"{label}: {message}"
