"""Enphase's telemetry endpoints as data (paths, native intervals, the spans each `granularity` covers, the channels
each serves): what the client calls and what the spec counts, from one table. The facts: docs/enphase-v4.md."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

MICRO_INTERVAL = timedelta(minutes=5)  # microinverter production
METER_INTERVAL = timedelta(minutes=15)  # meters and batteries


@dataclass(frozen=True)
class Endpoint:
    """A telemetry endpoint as data: its path, native interval and the `granularity` values it accepts.

    `end_at = min(now, start + granularity)` (spec), so a granularity's span is the longest window one call covers.
    """

    path: str
    interval: timedelta
    granularities: tuple[tuple[str, timedelta], ...]

    @property
    def max_window(self) -> timedelta:
        return max(span for _, span in self.granularities)

    def granularity_for(self, window: timedelta) -> str:
        """The smallest granularity that covers `window` (fewer wasted intervals, same single call)."""
        return next((name for name, span in self.granularities if span >= window), self.granularities[-1][0])


_QUARTER, _DAY, _WEEK = timedelta(minutes=15), timedelta(days=1), timedelta(days=7)
ENDPOINTS: dict[str, Endpoint] = {
    # 15mins -> at most 3 five-minute intervals, day -> at most 288 (docs/enphase-v4.md)
    "production_micro": Endpoint("telemetry/production_micro", MICRO_INTERVAL, (("15mins", _QUARTER), ("day", _DAY))),
    # 15mins -> 1, day -> 96, week -> 672 fifteen-minute intervals
    "production_meter": Endpoint(
        "telemetry/production_meter", METER_INTERVAL, (("15mins", _QUARTER), ("day", _DAY), ("week", _WEEK))
    ),
    "consumption_meter": Endpoint(
        "telemetry/consumption_meter", METER_INTERVAL, (("15mins", _QUARTER), ("day", _DAY), ("week", _WEEK))
    ),
    "battery": Endpoint("telemetry/battery", METER_INTERVAL, (("15mins", _QUARTER), ("day", _DAY), ("week", _WEEK))),
    # Grid import/export (docs/enphase-v4.md): the spec documents 15mins -> 1 and day -> 96 intervals only, so
    # no `week` here; their 1-day span equals production_micro's, so windows stay as they were.
    "energy_import": Endpoint("energy_import_telemetry", METER_INTERVAL, (("15mins", _QUARTER), ("day", _DAY))),
    "energy_export": Endpoint("energy_export_telemetry", METER_INTERVAL, (("15mins", _QUARTER), ("day", _DAY))),
}
# PV from the microinverters works on every system; a production meter is optional hardware. Grid import/export
# need a consumption meter (CT): without one they answer empty intervals, which is "no data", not an error.
DEFAULT_ENDPOINTS = ("production_micro", "consumption_meter", "battery", "energy_import", "energy_export")
# The channels each endpoint's parser yields (`parse.TELEMETRY_PARSERS`): a client given `channels` calls only the
# endpoints that serve one of them, so grid endpoints cost nothing unless a source reads a grid channel.
ENDPOINT_CHANNELS: dict[str, frozenset[str]] = {
    "production_micro": frozenset({"pv_w"}),
    "production_meter": frozenset({"pv_w"}),
    "consumption_meter": frozenset({"load_w"}),
    "battery": frozenset({"battery_w", "soc_pct"}),
    "energy_import": frozenset({"grid_import_w"}),
    "energy_export": frozenset({"grid_export_w"}),
}
