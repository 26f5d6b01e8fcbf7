"""Where the sun is: its elevation at a place and instants (pvlib's solar position), for whoever needs day or night
(the alert rules' sun and night checks, an Enphase live stream scheduled for daylight)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pvlib import solarposition


def sun_elevation(latitude: float, longitude: float, times: pd.DatetimeIndex) -> np.ndarray:
    """The sun's elevation above the horizon in degrees (geometric, no refraction) at aware `times`."""
    return np.asarray(solarposition.get_solarposition(times, latitude, longitude)["elevation"], dtype=np.float64)
