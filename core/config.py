"""Settings, read once at the edges (CLI, app start) from `DATACONN_*` environment variables and passed in.

Every field here is documented in the README's settings table; a test fails when one is missing there.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
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
    http_timeout_s: float = Field(20.0, gt=0, description="Timeout of one call to a vendor API.")
    retention_raw_days: int = Field(
        400, ge=1, description="Raw readings older than this many days are dropped (after rolling them up)."
    )
    retention_cache_days: int = Field(7, ge=1, description="Cached raw vendor responses are kept this many days.")
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


def load_settings() -> Settings:
    """Read the settings from the environment (and nothing else: no hidden config files)."""
    return Settings()
