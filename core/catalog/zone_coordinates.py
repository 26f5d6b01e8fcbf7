"""A site's approximate coordinates from its IANA time zone, for vendors whose site lists carry no coordinates.

SolarEdge V2 and Enphase list a site's address and time zone but not its latitude and longitude, which a site needs
(the night check of the alert rules uses the sun's elevation). The time zone database names each zone's principal
city with its coordinates (`zone1970.tab`, shipped by the `tzdata` package): a site imported from an account starts
there, and the summary of the import says so, so the user can correct it in Control Room.
"""

from __future__ import annotations

import importlib.resources
import re
from functools import cache

_COORDINATES = re.compile(r"^([+-])(\d{2})(\d{2})(\d{2})?([+-])(\d{3})(\d{2})(\d{2})?$")
UNKNOWN = (0.0, 0.0)  # a zone without a principal city (UTC, Etc/GMT+1): the user sets the coordinates


def _degrees(sign: str, degrees: str, minutes: str, seconds: str | None) -> float:
    value = int(degrees) + int(minutes) / 60 + int(seconds or 0) / 3600
    return round(-value if sign == "-" else value, 4)


@cache
def _table() -> dict[str, tuple[float, float]]:
    """Zone name -> (latitude, longitude) of its principal city; empty when the table cannot be read."""
    try:
        text = importlib.resources.files("tzdata").joinpath("zoneinfo", "zone1970.tab").read_text(encoding="utf-8")
    except (ModuleNotFoundError, OSError):
        return {}
    found: dict[str, tuple[float, float]] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        fields = line.split("\t")
        match = _COORDINATES.match(fields[1]) if len(fields) > 2 else None
        if match:
            lat_sign, lat_d, lat_m, lat_s, lon_sign, lon_d, lon_m, lon_s = match.groups()
            found[fields[2]] = (_degrees(lat_sign, lat_d, lat_m, lat_s), _degrees(lon_sign, lon_d, lon_m, lon_s))
    return found


def zone_coordinates(timezone: str) -> tuple[float, float]:
    """(latitude, longitude) of the zone's principal city, or `UNKNOWN` (0, 0)."""
    return _table().get(timezone, UNKNOWN)
