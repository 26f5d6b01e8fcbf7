"""The layout of a CSV file of readings: its delimiter, its decimal mark, its columns, and the numbers in it.

What people have is rarely `timestamp,value`: a European spreadsheet writes `Zeit;Wert` with `1234,5`, a logger
writes tab-separated `time	energy_wh`. Each part of the layout is either given or detected, by rules simple enough
to state (the README's "Importing readings from CSV" repeats them):

- **Delimiter** (`,` `;` or tab): the one of the three that occurs most often in the header row outside quotes;
  comma when none does (a one-column header) or on a tie.
- **Decimal mark** (`.` or `,`): the first value (in file order) holding a `.` or a `,` that tells decides: its only
  mark, or of the two the one written last (`1.234,5` -> `,`). A value such as `1.234` or `12,500` (one kind of
  mark, each followed by exactly three digits, no leading zero) does not tell: it is 1234 or 1.234. When no value
  tells, the file is refused until the mark is given; a file of whole numbers reads the same either way (`.`).
- **Numbers** are read without thousands separators: with the decimal mark `,`, a value holding a `.`, a space or
  an apostrophe (`1.234`, `1 234,5`) is refused with its row number, never guessed (`1.234` is 1234 in Germany and
  1.234 in England); the same for a `,` with the decimal mark `.`.
- **Columns** are chosen by name, or guessed from the header (`guess_columns`): the time column is one named
  timestamp, time, date, datetime, date_time or ts (case and spaces aside), else the first whose name contains
  "time" or "date"; the value column is one named value, else the first other column whose name has one of the
  words energy, power, value, wh, kwh, w, kw (`energy_wh`, `Power (kW)`, `kWh`).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass

DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}  # the character -> the name a user types or picks
DECIMAL_MARKS = {".": "point", ",": "comma"}
_TIME_NAMES = ("timestamp", "time", "date", "datetime", "date_time", "ts")
_VALUE_WORDS = ("energy", "power", "value", "wh", "kwh", "w", "kw")
_QUOTED = re.compile(r'"[^"]*"')
_WORDS = re.compile(r"[a-z0-9]+")
_NON_FINITE = ("nan", "inf", "infinity")
_GROUPED = re.compile(r"[+-]?[1-9]\d{0,2}(?:(?:\.\d{3})+|(?:,\d{3})+)")  # 1.234, 12,500: thousands or decimals?
_NUMBER = {  # by decimal mark: digits, one optional mark, an optional exponent; no thousands separators
    mark: re.compile(rf"[+-]?(\d+({re.escape(mark)}\d*)?|{re.escape(mark)}\d+)([eE][+-]?\d+)?")
    for mark in DECIMAL_MARKS
}


def by_name(table: dict[str, str], given: str) -> str | None:
    """The character a user named (`semicolon` or `;`), or None when it is not one of `table`'s."""
    if given in table:
        return given
    return next((char for char, name in table.items() if name == given.strip().lower()), None)


def detect_delimiter(header_line: str) -> str:
    """The header row's most frequent delimiter outside quotes; comma when none occurs or on a tie."""
    bare = _QUOTED.sub("", header_line)
    counts = {char: bare.count(char) for char in DELIMITERS}
    best = max(counts.values())
    if best == 0 or list(counts.values()).count(best) > 1:
        return ","
    return next(char for char, count in counts.items() if count == best)


def first_line(text: str) -> str:
    return text.split("\n", 1)[0]


def header_columns(text: str, delimiter: str | None = None) -> list[str]:
    """The names in the header row (stripped), for the page's column drop-downs; [] when it cannot be read."""
    try:
        row = next(csv.reader(io.StringIO(text), delimiter=delimiter or detect_delimiter(first_line(text))), [])
    except csv.Error:
        return []
    return [name.strip() for name in row]


def _normal(name: str) -> str:
    return "_".join(_WORDS.findall(name.lower()))


def guess_columns(names: list[str]) -> tuple[int | None, int | None]:
    """The positions of the time and the value column the module docstring's rule picks, None where none fits."""
    normal = [_normal(name) for name in names]
    time = next((i for i, name in enumerate(normal) if name in _TIME_NAMES), None)
    if time is None:
        time = next((i for i, name in enumerate(normal) if "time" in name or "date" in name), None)
    value = next((i for i, name in enumerate(normal) if name == "value" and i != time), None)
    if value is None:
        value = next(
            (i for i, name in enumerate(normal) if i != time and set(name.split("_")) & set(_VALUE_WORDS)), None
        )
    return time, value


def detect_decimal(values: Iterable[tuple[int, str]]) -> tuple[str | None, int | None, str]:
    """The decimal mark the first telling value shows (the last of the two when it holds both), from (row, value)
    pairs; (None, row, value) naming the first value that does not tell when none does; (".", None, "") for a file
    of whole numbers."""
    undecided: tuple[int | None, str] = (None, "")
    for row, text in values:
        point, comma = text.rfind("."), text.rfind(",")
        if point < 0 and comma < 0:
            continue
        if _GROUPED.fullmatch(text):
            undecided = undecided if undecided[0] is not None else (row, text)
            continue
        return ("." if point > comma else ","), None, ""
    return (None, *undecided) if undecided[0] is not None else (".", None, "")


@dataclass(frozen=True)
class NumberReader:
    """Numbers written with one decimal mark and no thousands separators."""

    decimal: str

    def read(self, text: str) -> tuple[float | None, str | None]:
        """The number (may be inf for a very long one: the caller bounds it), or why `text` is not one."""
        if _NUMBER[self.decimal].fullmatch(text):
            return float(text.replace(",", ".")), None
        if text.lstrip("+-").lower() in _NON_FINITE:
            return None, "is not a finite number"
        other = "," if self.decimal == "." else "."
        if any(char.isdigit() for char in text) and any(mark in text for mark in (other, " ", "\u00a0", "'")):
            problem = (
                f"is not a number with the decimal mark {self.decimal!r}: write it without thousands separators"
                f" (e.g. 1234{self.decimal}5)"
            )
            return None, problem + (f", or choose the decimal mark {other!r}" if other in text else "")
        return None, "is not a number"
