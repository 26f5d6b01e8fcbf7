"""Cumulative meter counters (register readings in Wh or kWh) turned into the energy of each interval.

A counter reading is the meter's register at an instant; the energy of the interval from one reading to the next is
their difference. Readings exactly one interval apart give that interval's energy; across a longer gap (a missing
or empty reading) the energy is known only in total, so those intervals get no data and the gap is reported.

A counter that goes down is never turned into negative energy. The drop from a reading `before` to `after` is:

- a **rollover** when the counter wrapped at the power of ten above `before` (`wrap`, e.g. 100,000 for a 5-digit
  register at 99,998.7) and the wrapped difference `wrap - before + after` is at most 1 % of `wrap`: that difference
  is the interval's energy;
- else a **reset** when `after` is near zero, at most 1 % of `before` (a meter replaced or cleared): the interval's
  energy is unknown and stored as no data;
- else a problem with the row: the file is refused, since no rule says what such a drop means.

Rollovers, resets and gaps are reported by row number (the row of the later reading) in the import's summary.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

_ROLLOVER_SHARE = 0.01  # of the wrap: a wrapped difference larger than this is no rollover
_RESET_SHARE = 0.01  # of the reading before: a reading after a reset is this near zero


@dataclass(frozen=True)
class CounterReading:
    row: int  # the file's line
    instant: datetime  # UTC
    value: float  # in the file's unit, never negative
    text: str  # as written, for messages


@dataclass(frozen=True)
class IntervalEnergy:
    row: int  # the row of the reading that closes the interval
    start: datetime
    energy: float | None  # in the file's unit; None: unknown (a reset)


def interval_energies(
    readings: list[CounterReading],
    interval: timedelta,
    unit: str,
    problem: Callable[[str], None],
    note: Callable[[str], None],
) -> list[IntervalEnergy]:
    """The energy of every interval that two consecutive readings bound, in time order. A drop that is neither a
    rollover nor a reset goes to `problem`; rollovers, resets and gaps go to `note`, each naming its row."""
    ordered = sorted(readings, key=lambda reading: reading.instant)
    energies = []
    for before, after in itertools.pairwise(ordered):
        span = after.instant - before.instant
        if span != interval:
            missing = span // interval - 1
            counted = after.value - before.value
            across = (
                f"the {counted:g} {unit} counted across them are not stored"
                if counted >= 0
                else f"the counter falls across them (from {before.text} to {after.text}): nothing is stored"
            )
            note(f"row {after.row}: {missing} interval(s) without a reading since row {before.row}: {across}")
            continue
        energy: float | None = after.value - before.value
        if after.value < before.value:
            wrap = 10.0 ** (math.floor(math.log10(before.value)) + 1)
            wrapped = wrap - before.value + after.value
            if wrapped <= wrap * _ROLLOVER_SHARE:
                energy = wrapped
                note(
                    f"row {after.row}: the counter rolled over at {wrap:,.0f} {unit} (from {before.text} to"
                    f" {after.text}): {wrapped:g} {unit} counted"
                )
            elif after.value <= before.value * _RESET_SHARE:
                energy = None
                note(
                    f"row {after.row}: the counter was reset (from {before.text} to {after.text}): that interval's"
                    " energy is unknown and stored as no data"
                )
            else:
                problem(
                    f"row {after.row}: the counter falls from {before.text} (row {before.row}) to {after.text}:"
                    " neither a reset to near zero nor a rollover at a power of ten; fix the reading"
                )
                continue
        energies.append(IntervalEnergy(after.row, before.instant, energy))
    return energies
