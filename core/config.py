"""Settings, read once at the edges (CLI, app start) from `DATACONN_*` environment variables and passed in.

Every field here is documented in the README's settings table; a test fails when one is missing there.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DATACONN_", extra="ignore")

    db_path: Path = Field(Path("data/dataconn.duckdb"), description="DuckDB file holding configuration and data.")
    secret_keys: str | None = Field(
        None,
        description="Comma-separated Fernet keys, newest first; when unset the key file is used.",
    )
    key_file: Path = Field(Path("data/secret.key"), description="Key file used when DATACONN_SECRET_KEYS is unset.")
    lock_timeout_s: float = Field(
        15.0, gt=0, description="How long a database operation waits for the file before reporting it busy."
    )
    seed_demo: bool = Field(True, description="Seed the 'Demo Rooftop' site on the first start of an empty database.")
    log_level: str = Field("INFO", description="Python logging level for the CLI and collector.")
    solaredge_base_url: str = Field(
        "https://monitoringapi.solaredge.com/v2", description="SolarEdge Monitoring API V2 base URL."
    )
    solaredge_v1_base_url: str = Field(
        "https://monitoringapi.solaredge.com", description="SolarEdge Monitoring API V1 (legacy) base URL."
    )
    enphase_base_url: str = Field("https://api.enphaseenergy.com/api/v4", description="Enphase v4 API base URL.")
    enphase_auth_url: str = Field(
        "https://api.enphaseenergy.com/oauth", description="Enphase OAuth base URL (/authorize and /token under it)."
    )
    enphase_plan: str = Field("watt", description="Enphase API plan of the application: watt, kilowatt or megawatt.")
    currency: str = Field(
        "EUR", description="Currency of the sources' cost per MWh, shown with every cost and price (e.g. EUR, USD)."
    )
    http_timeout_s: float = Field(20.0, gt=0, description="Timeout of one call to a vendor API.")
    http_max_connections_per_host: int = Field(
        64,
        ge=1,
        le=1000,
        description="Most connections open at once to one vendor host (shared by every poll; more calls wait).",
    )
    collector_workers: int = Field(
        64,
        ge=1,
        le=256,
        description="Vendor sites the collector polls at once (threads: polls wait on the network, not the CPU).",
    )
    retention_raw_days: int = Field(
        400, ge=1, description="Raw readings older than this many days are dropped (after rolling them up)."
    )
    retention_cache_days: int = Field(7, ge=1, description="Cached raw vendor responses are kept this many days.")
    quota_queue_wait_s: float = Field(
        15.0,
        ge=0,
        le=3600,
        description="Longest the collector lets a vendor call wait for its turn under a per-minute limit (longer: "
        "refused and retried later).",
    )
    quota_lease_calls: int = Field(
        20,
        ge=1,
        le=1000,
        description="Day/month calls the collector counts in the database at a time (unused ones are given back "
        "every minute).",
    )
    live_refresh_s: int = Field(
        30,
        ge=2,
        le=3600,
        description="Longest time in seconds between two database reads of the Live panel; a new reading of the"
        " shown site is read at once (change marks, checked every 1.5 s).",
    )
    test_cache_ttl_s: int = Field(
        60,
        ge=0,
        le=3600,
        description="A repeated Test Connection of a saved source within this many seconds reuses the last result.",
    )
    public_url: str = Field(
        "http://127.0.0.1:8501",
        description="Address users open the dashboard at; OAuth providers redirect back to it.",
    )
    # The ingest service (jobs.ingest: readings pushed by loggers and webhooks, docs/real-time.md).
    ingest_host: str = Field(
        "127.0.0.1", description="Address the ingest service listens on (127.0.0.1: this machine only)."
    )
    ingest_port: int = Field(8502, ge=1, le=65535, description="Port of the ingest service.")
    ingest_public_url: str = Field(
        "",
        description="Address senders reach the ingest service at, shown with a Push source's endpoint (empty:"
        " http://<ingest host>:<ingest port>).",
    )
    ingest_max_body_kb: int = Field(
        1024, ge=1, le=102_400, description="Largest push request body, in KB (larger: 413)."
    )
    ingest_max_readings: int = Field(
        10_000, ge=1, le=1_000_000, description="Most readings one push request may carry (more: 413)."
    )
    ingest_requests_per_minute: int = Field(
        600, ge=1, le=1_000_000, description="Push requests a token may make in any minute (more: 429, Retry-After)."
    )
    # Sign-in through the organisation's OpenID Connect provider, roles and who may reach the dashboard
    # (docs/access.md). Sign-in is on when the issuer, client id and client secret are all set.
    auth_metadata_url: str = Field(
        "",
        description="Sign-in: the identity provider's discovery document (https://.../.well-known/openid-configuration);"
        " empty: no sign-in (the dashboard then serves 127.0.0.1 only).",
    )
    auth_client_id: str = Field("", description="Sign-in: the client id this dashboard is registered under.")
    auth_client_secret: SecretStr = Field(SecretStr(""), description="Sign-in: the client secret (never logged).")
    auth_cookie_secret: SecretStr = Field(
        SecretStr(""),
        description="Sign-in: a random string of at least 32 characters that signs the identity cookie (empty: one is"
        " made and kept in a private file beside the database).",
    )
    auth_redirect_url: str = Field(
        "",
        description="Sign-in: the address the provider sends users back to, registered with it (empty: the public URL"
        " + /oauth2callback).",
    )
    auth_role_claim: str = Field(
        "",
        description="Roles: the ID token claim that carries a user's groups or roles (e.g. groups, roles); empty: roles"
        " come from the Users page only.",
    )
    auth_admin_values: str = Field("", description="Roles: comma-separated claim values that make a user an admin.")
    auth_editor_values: str = Field("", description="Roles: comma-separated claim values that make a user an editor.")
    auth_viewer_values: str = Field("", description="Roles: comma-separated claim values that make a user a viewer.")
    auth_default_role: str = Field(
        "viewer",
        pattern="^(viewer|editor|none)$",
        description="Roles: the role of a signed-in user whom neither the claim nor the Users page gives one (none: no"
        " access until an admin gives one).",
    )
    allow_unauthenticated_network: bool = Field(
        False,
        description="Let the dashboard serve an address other than 127.0.0.1 without sign-in (a trusted network only:"
        " everyone who reaches it is an admin). Warned about in the log and on every page.",
    )
    frame_ancestors: str = Field(
        "",
        description="Space-separated origins allowed to show the dashboard in a frame (empty: no one; framing is"
        " refused against clickjacking).",
    )
    # CSV import of readings (core.collect.readings_import): bounds that keep impossible times and oversized files out.
    readings_import_earliest: date = Field(
        date(1990, 1, 1),
        ge=date(1900, 1, 1),
        description="Import readings: an interval starting before midnight of this date (file's zone) is refused.",
    )
    readings_import_future_days: int = Field(
        1,
        ge=0,
        le=366,
        description="Import readings: an interval starting more than this many days after now is refused.",
    )
    readings_import_max_mb: int = Field(
        50, ge=1, le=2000, description="Import readings: a CSV file larger than this many MB is refused unread."
    )
    # `config import` (core.catalog.config_file): a 10,000-site fleet exports to ~10 MB of YAML (~17 MB of JSON) with 2
    # meters and 3 sources per site; the defaults leave twice that room, and keep a file's parse in seconds.
    config_import_max_mb: int = Field(
        32, ge=1, le=1000, description="Config import: a file larger than this many MB is refused unread."
    )
    config_import_max_sites: int = Field(
        20_000, ge=1, description="Config import: a file with more sites than this is refused before validation."
    )
    config_import_max_meters: int = Field(
        100_000, ge=1, description="Config import: a file with more meters than this is refused before validation."
    )
    config_import_max_sources: int = Field(
        100_000, ge=1, description="Config import: a file with more sources than this is refused before validation."
    )
    # Alert thresholds (core.analytics.alert_rules; the README's alerts section gives each rule's formula).
    alert_no_data_factor: float = Field(
        2.0,
        gt=0,
        description="No data: a source with the API enabled alerts when its newest reading ended more than this many"
        " update periods ago.",
    )
    alert_zero_w: float = Field(
        10.0,
        ge=0,
        description="PV zero in sun: production at or below this many W counts as zero (and below minus this many W"
        " as negative, for out of bounds).",
    )
    alert_zero_minutes: float = Field(
        30.0, gt=0, description="PV zero in sun: minutes of zero production in daylight before it alerts."
    )
    alert_sun_elevation_deg: float = Field(
        10.0,
        ge=0,
        lt=90,
        description="PV zero in sun: daylight means the sun is more than this many degrees above the horizon.",
    )
    alert_low_yield_share: float = Field(
        0.2,
        gt=0,
        le=1,
        description="Low daily yield: yesterday's PV energy below this share of the clear-sky expectation alerts.",
    )
    alert_performance_ratio: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Low daily yield: share of clear-sky irradiance a healthy PV system turns into energy.",
    )
    alert_max_capacity_factor: float = Field(
        1.2, gt=0, description="Out of bounds: production above this multiple of the source's capacity alerts."
    )
    alert_night_elevation_deg: float = Field(
        -6.0,
        ge=-90,
        le=0,
        description="Out of bounds: night means the sun is below this elevation in degrees (-6: civil twilight ended).",
    )
    alert_night_max_share: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Out of bounds: PV production above this share of capacity at night alerts.",
    )
    alert_soc_stuck_hours: float = Field(
        6.0,
        gt=0,
        description="SoC stuck: hours the state of charge must stay unchanged while the battery power shows flow.",
    )
    alert_soc_stuck_hours_without_power: float = Field(
        24.0,
        gt=0,
        description="SoC stuck: hours unchanged before it alerts on a site without a battery power source.",
    )
    alert_soc_range_pct: float = Field(
        0.5,
        gt=0,
        description="SoC stuck: the state of charge counts as unchanged while it moves less than this many points.",
    )
    alert_soc_flow_share: float = Field(
        0.02,
        ge=0,
        le=1,
        description="SoC stuck: battery power averaging (in absolute value) more than this share of its capacity"
        " is real flow.",
    )


def load_settings() -> Settings:
    """Read the settings from the environment (and nothing else: no hidden config files)."""
    return Settings()


def ingest_url(settings: Settings) -> str:
    """Where senders reach the ingest service."""
    if settings.ingest_public_url.strip():
        return settings.ingest_public_url.strip().rstrip("/")
    host = settings.ingest_host if settings.ingest_host not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{settings.ingest_port}"


def sign_in_configured(settings: Settings) -> bool:
    """Whether the dashboard asks users to sign in (docs/access.md): the provider, client id and secret are set."""
    return bool(
        settings.auth_metadata_url.strip()
        and settings.auth_client_id.strip()
        and settings.auth_client_secret.get_secret_value().strip()
    )
