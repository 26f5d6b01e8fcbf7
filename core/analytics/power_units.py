"""One unit per power chart, picked from its data: W, kW or MW, so the axis reads "20" rather than "20k" and Live and
History say the same thing about the same site."""

from __future__ import annotations

from collections.abc import Iterable

SCALES = ((1e6, "MW"), (1e3, "kW"), (1.0, "W"))


def power_scale(values_w: Iterable[float | None]) -> tuple[float, str]:
    """(divisor, unit) for a chart of these powers in W: the largest unit in which the largest magnitude is at least
    1; W for an empty or all-zero chart."""
    peak = max((abs(v) for v in values_w if v is not None), default=0.0)
    return next(((divisor, unit) for divisor, unit in SCALES if peak >= divisor), (1.0, "W"))
