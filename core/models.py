"""The domain: sites, meters, energy sources and their API connection settings.

Validation lives here so the page, the config import and any future API share the same rules and messages.
Messages are phrased to stand next to the field they concern, without naming it ("must be at least 0");
`core.catalog.field_labels` names the field where a message stands elsewhere.
"""

from __future__ import annotations

import math
import re
import unicodedata
import zoneinfo
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

MAX_NAME_LENGTH = 100
MAX_ID_LENGTH = 64
MAX_CAPACITY_KW = 10_000_000.0  # 10 GW: larger than any single plant; anything above is a unit mistake.
MAX_CARBON_G_PER_KWH = 2_000.0  # lignite is ~1,100 g/kWh; twice that is certainly a typo.
MAX_COST_PER_MWH = 100_000.0
MAX_SECRET_LENGTH = 512


class Category(StrEnum):
    PROD = "PROD"
    CONS = "CONS"
    STOR = "STOR"
    INJ = "INJ"

    @property
    def label(self) -> str:
        return CATEGORY_LABELS[self]


CATEGORY_LABELS = {
    Category.PROD: "Solar / Production",
    Category.CONS: "Consumption",
    Category.STOR: "Storage",
    Category.INJ: "Injection",
}

# Source types per category, as stored codes with their labels. KPI formulas rely on these codes:
# CONS "load" is the building's consumption, CONS "grid" is grid import; STOR "battery" is power (positive when
# discharging), STOR "soc" a state of charge in % (not an energy: KPIs and energy balances leave it out).
SOURCE_TYPES: dict[Category, dict[str, str]] = {
    Category.PROD: {"solar": "Solar", "wind": "Wind", "hydro": "Hydro", "chp": "CHP", "other": "Other"},
    Category.CONS: {"load": "Load (building)", "grid": "Grid import"},
    Category.STOR: {"battery": "Battery power", "soc": "State of charge (%)"},
    Category.INJ: {"grid": "Grid export"},
}


class Provider(StrEnum):
    """The id a source's settings store for its provider. What each provider is and needs (label, ids,
    credentials, budgets, client) is its spec's: `core.providers.registry.spec_of`."""

    SOLAREDGE = "solaredge"  # Monitoring API V2, the live one
    SOLAREDGE_V1 = "solaredge_v1"  # retired by SolarEdge on 2026-11-03; kept for tools that still speak it
    ENPHASE = "enphase"
    SIMULATOR = "simulator"
    PUSH = "push"  # readings sent to the ingest service by a logger or a webhook (docs/real-time.md)
    MQTT = "mqtt"  # a device publishing on an MQTT broker, followed by the collector (docs/mqtt-devices.md)


class UpdateFrequency(StrEnum):
    """How often the collector polls a source. The seed's four come first (the order of every list shown); the
    slower ones read the same 5/15-minute interval history in longer windows, for plans too small for hourly polls
    (fresher data is the only thing they give up: `core.catalog.quota_plan` counts their calls)."""

    MIN5 = "5min"
    MIN15 = "15min"
    MIN30 = "30min"
    HOUR1 = "1hour"
    HOUR2 = "2hour"
    HOUR3 = "3hour"
    HOUR6 = "6hour"
    HOUR12 = "12hour"
    DAY1 = "1day"

    @property
    def minutes(self) -> int:
        return _FREQUENCY_MINUTES[self.value]

    @property
    def label(self) -> str:
        return every_label(self.minutes) if self is not UpdateFrequency.DAY1 else "24 h (daily)"


_FREQUENCY_MINUTES = {
    "5min": 5,
    "15min": 15,
    "30min": 30,
    "1hour": 60,
    "2hour": 120,
    "3hour": 180,
    "6hour": 360,
    "12hour": 720,
    "1day": 1_440,
}


def every_label(minutes: int) -> str:
    """A polling period in the user's words: "15 min", "1 hour", "6 h" (minutes that are not whole hours stay
    minutes)."""
    if minutes == 60:
        return "1 hour"
    if minutes > 60 and minutes % 60 == 0:
        return f"{minutes // 60} h"
    return f"{minutes} min"


class ConnectionStatus(StrEnum):
    UNTESTED = "untested"
    CONNECTED = "connected"
    FAILED = "failed"
    REAUTHORIZE = "reauthorize"  # the OAuth grant is missing or dead: the owner must authorise again


@cache
def known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


_HTML = re.compile(r"<[^>]*>|[<>]")
_SQL = re.compile(r";|--|/\*|\*/")
# Letters, digits and a little punctuation; the fraction slash and the middle dot are what NFKC makes of "½" and
# "Ŀ", which were letters or digits before normalising.
_ALLOWED_NAME = re.compile(r"[\w .,()/&'#+:@\u2044\u00b7-]+")
_ID = re.compile(r"^[A-Za-z0-9_.:-]+$")


def normal_name(value: str) -> str:
    """A name as people read it: Unicode NFKC (fullwidth letters are their ASCII twins, "e" + a combining acute is
    "é"), runs of whitespace as one space, trimmed. Names are stored in this form."""
    return " ".join(unicodedata.normalize("NFKC", value).split())


def name_key(value: str) -> str:
    """What two names are compared by: the normal form, case-folded (Unicode's NFKC_Casefold, near enough). Applied
    to both sides, so that rows stored before names were normalised still compare equal."""
    return unicodedata.normalize("NFKC", normal_name(value).casefold())


def _allowed_name(value: str) -> bool:
    """Allowed characters only; combining marks (accents, vowel signs) belong to what they follow, so not first."""
    if _ALLOWED_NAME.fullmatch(value):  # nearly every name: one regex match, no per-character loop
        return True
    return all(
        _ALLOWED_NAME.fullmatch(ch) or (i and unicodedata.category(ch).startswith("M")) for i, ch in enumerate(value)
    )


def _clean_name(value: str) -> str:
    value = normal_name(value)
    if not value:
        raise ValueError("must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"must be at most {MAX_NAME_LENGTH} characters (got {len(value):,})")
    if _HTML.search(value):
        raise ValueError("must not contain HTML (< or >)")
    if _SQL.search(value):
        # No spaced "--": Streamlit's Markdown shows one as an em dash.
        raise ValueError("must not contain SQL syntax (;, --, /*, */)")
    if not _allowed_name(value):
        raise ValueError("may contain letters, digits, spaces and - _ . , ( ) / & ' # + : @ only")
    return value


def _to_number(value: Any) -> Any:
    """Accept numbers typed as text ("500", "1 200,5") but reject anything that is not a finite number."""
    if isinstance(value, bool):
        raise ValueError("must be a number")
    if isinstance(value, str):
        text = value.strip().replace(" ", "").replace("\u00a0", "")
        if not text:
            raise ValueError("is required")
        if text.count(",") == 1 and "." not in text:
            text = text.replace(",", ".")
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"must be a number (got {value.strip()[:20]!r})") from None
    if isinstance(value, int | float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError("must be a finite number")
        return float(value)
    if value is None:
        raise ValueError("is required")
    raise ValueError("must be a number")


def _check_timezone(value: str) -> str:
    value = value.strip()
    if value not in known_timezones():
        raise ValueError(f"must be an IANA name such as Europe/Brussels, not {value[:40]!r}")
    return value


def _clean_id(value: str) -> str:
    value = value.strip()
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"must be at most {MAX_ID_LENGTH} characters")
    if value and not _ID.match(value):
        raise ValueError("may contain letters, digits and - _ . : only")
    return value


Name = Annotated[str, AfterValidator(_clean_name)]
Number = Annotated[float, BeforeValidator(_to_number)]
Timezone = Annotated[str, AfterValidator(_check_timezone)]
Identifier = Annotated[str, AfterValidator(_clean_id)]
# An MQTT source's settings (ApiSettings.mqtt_*): their meaning is checked by the MQTT spec; here only their size.
MqttHost = Annotated[str, AfterValidator(str.strip), Field(max_length=253)]  # a DNS name's limit
MqttPort = Annotated[int, Field(ge=1, le=65_535)]
MqttText = Annotated[str, Field(max_length=1_024)]
StreamText = Annotated[str, AfterValidator(str.strip), Field(max_length=40)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SiteIn(_Model):
    """A site as entered by a user or an import file."""

    name: Name
    latitude: Annotated[Number, Field(ge=-90, le=90)]
    longitude: Annotated[Number, Field(ge=-180, le=180)]
    timezone: Timezone


class Site(SiteIn):
    id: int


class MeterIn(_Model):
    name: Name
    category: Category


class Meter(MeterIn):
    id: int
    site_id: int


class ApiSettings(_Model):
    """The non-secret part of a source's API connection; stored as the `metadata` JSON column.

    JSON keys follow the original spec (useAPI, apiProvider, ...) so analysts' SQL reads the same names.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    use_api: bool = Field(False, alias="useAPI")
    api_provider: Provider = Field(Provider.SIMULATOR, alias="apiProvider")
    system_id: Identifier = Field("", alias="systemId")
    client_id: Identifier = Field("", alias="clientId")
    update_frequency: UpdateFrequency = Field(UpdateFrequency.MIN15, alias="updateFrequency")
    connection_status: ConnectionStatus = Field(ConnectionStatus.UNTESTED, alias="connectionStatus")
    last_tested: datetime | None = Field(None, alias="lastTested")
    last_error: str | None = Field(None, alias="lastError", max_length=500)
    last_power_w: float | None = Field(None, alias="lastPowerW")
    # The source whose credentials this one uses, stored once for an account's sources (Import Sites sets it): a
    # SolarEdge key, or an Enphase application with its owner's authorisation; None: its own. Read through
    # `core.store.secret_store.SOURCE_CREDENTIALS`; renewed Enphase tokens are written to the holder
    # (`core.store.oauth_tokens`).
    credentials_source_id: int | None = Field(None, alias="credentialsSourceId")
    # An MQTT source's broker and what it reads (docs/mqtt-devices.md); its password is a credential
    # (`mqtt_password`). Checked in a user's terms by `mqtt_problems`, for MQTT sources only: other providers keep
    # the defaults, and metadata written before these fields existed loads with them.
    mqtt_host: MqttHost = Field("", alias="mqttHost")
    mqtt_port: MqttPort = Field(1883, alias="mqttPort")
    mqtt_tls: bool = Field(False, alias="mqttTls")
    mqtt_user: MqttText = Field("", alias="mqttUser")
    mqtt_topic: MqttText = Field("", alias="mqttTopic")
    mqtt_payload_path: MqttText = Field("", alias="mqttPayloadPath")
    mqtt_unit: MqttText = Field("W", alias="mqttUnit")
    # An Enphase source's live status stream (docs/real-time.md, "The Enphase live stream"): whether Live may open
    # it while someone watches the site, and when the collector keeps it open ("off", "daylight", "always" or
    # "HH:MM-HH:MM" in the site's time). Both off by default: every stream opened is a call of the plan. Checked in
    # a user's terms by the Enphase spec (`core.providers.enphase.stream_schedule`); other providers keep the defaults.
    stream_on_live: bool = Field(False, alias="streamOnLive")
    stream_schedule: StreamText = Field("off", alias="streamSchedule")

    def to_metadata(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> ApiSettings:
        """As stored. Keys this version does not know (written by a newer one) are left out rather than refused:
        one unknown key must not make the whole configuration unreadable."""
        known = {field.alias or name for name, field in cls.model_fields.items()}
        return cls.model_validate({key: value for key, value in metadata.items() if key in known})

    def with_test_result_of(self, stored: ApiSettings, *, credentials_changed: bool) -> ApiSettings:
        """A connection test applies only to the settings it tested: these settings with `stored`'s test result
        (status, time, error, power) when the API switch, provider, ids and credentials are those `stored` was
        tested with; otherwise as they are (untested, unless they carry a new test). The update frequency and the
        source's other fields do not matter to a test. Used by Save All Connections and the config import."""
        tested = ("use_api", "api_provider", "system_id", "client_id", "credentials_source_id", *MQTT_CONNECTION_FIELDS)
        if credentials_changed or any(getattr(self, name) != getattr(stored, name) for name in tested):
            return self
        return self.model_copy(update=stored.model_dump(include=set(TEST_RESULT_FIELDS)))


TEST_RESULT_FIELDS = ("connection_status", "last_tested", "last_error", "last_power_w")
# What a connection test of an MQTT source depends on: changing one makes the source untested again.
MQTT_CONNECTION_FIELDS = (
    "mqtt_host",
    "mqtt_port",
    "mqtt_tls",
    "mqtt_user",
    "mqtt_topic",
    "mqtt_payload_path",
    "mqtt_unit",
)
# When an Enphase source's live stream is open: not part of a connection test.
STREAM_FIELDS = ("stream_on_live", "stream_schedule")


class SourceIn(_Model):
    name: Name
    source_type: str
    capacity_kw: Annotated[Number, Field(ge=0, le=MAX_CAPACITY_KW)]
    carbon_intensity_g_per_kwh: Annotated[Number, Field(ge=0, le=MAX_CARBON_G_PER_KWH)]
    cost_per_mwh: Annotated[Number, Field(ge=0, le=MAX_COST_PER_MWH)]
    api: ApiSettings = Field(default_factory=ApiSettings)


class Source(SourceIn):
    id: int
    meter_id: int
    secret_names: frozenset[str] = frozenset()


def check_source_type(category: Category, source_type: str) -> str | None:
    """Return an error message when `source_type` does not belong to `category`."""
    allowed = SOURCE_TYPES[category]
    if source_type not in allowed:
        return f"must be one of {', '.join(allowed)} for a {category.value} meter"
    return None


def secret_problem(value: str) -> str | None:
    """Why a typed credential cannot be right, or None. API keys and tokens never contain whitespace."""
    if len(value) > MAX_SECRET_LENGTH:
        return f"must be at most {MAX_SECRET_LENGTH} characters"
    if any(ch.isspace() for ch in value):
        return "must not contain spaces or line breaks"
    return None
