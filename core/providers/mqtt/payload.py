"""A device's message to a number (docs/mqtt-devices.md).

A source names where its number is in the payload (the "payload path") and what it measures (the unit):

- an empty path: the whole payload is the number, as text (OpenDTU publishes one value per topic: `123.4`);
- a dotted path into a JSON object: `ENERGY.Power` in a Tasmota `SENSOR` message, `apower` or `aenergy.total` in a
  Shelly Gen2 switch status. A segment that is a whole number indexes a list (`ENERGY.Power.1`: a Tasmota device
  with several channels reports a list). A number sent as a JSON string (`"123.4"`) is taken too.

Units: `W` and `kW` are power samples; `Wh` and `kWh` are cumulative energy counters, which become power between
two readings (`core.minute_average.Counter`). Values leave this module in W or Wh.

Every refusal is a `PayloadError` whose message says what was found instead, in a user's terms, with the payload
cut short: it goes to API Health as the source's last payload error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum

MAX_PAYLOAD_BYTES = 64 * 1024  # device messages are a few hundred bytes; a bigger one is not a reading
_SHOWN_CHARS = 40  # how much of a payload or value an error message quotes


class Unit(StrEnum):
    W = "W"
    KW = "kW"
    WH = "Wh"
    KWH = "kWh"

    @property
    def is_counter(self) -> bool:
        """A cumulative energy counter (Wh, kWh) rather than a power sample."""
        return self in (Unit.WH, Unit.KWH)

    def to_base(self, number: float) -> float:
        """The number in W (power) or Wh (counters)."""
        return number * 1000.0 if self in (Unit.KW, Unit.KWH) else number


class PayloadError(ValueError):
    """A payload that holds no number at the configured path; `str(exc)` is safe to show."""


@dataclass(frozen=True)
class PayloadReading:
    """Where a source's number is in a message and its unit."""

    path: str = ""
    unit: Unit = Unit.W

    def read(self, payload: bytes) -> float:
        """The payload's number in W or Wh (see the module docstring); `PayloadError` when there is none."""
        return self.unit.to_base(read_number(payload, self.path))


def check_path(path: str) -> str | None:
    """Why `path` cannot be a payload path (None when it can): empty, or dot-separated non-empty names."""
    if path.strip() != path:
        return "The payload path must not start or end with spaces."
    if path and any(not part for part in path.split(".")):
        return f"The payload path `{path}` has an empty name between dots (write it like `ENERGY.Power`)."
    return None


def read_number(payload: bytes, path: str) -> float:
    """The finite number at `path` in `payload` (see the module docstring)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"The message is {len(payload):,} bytes, too large to be a reading.")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise PayloadError("The message is not text (not UTF-8).") from None
    if not text:
        raise PayloadError("The message is empty.")
    if not path:
        return _number(text, what="The message", hint=_json_hint(text))
    try:
        document = json.loads(text)
    except ValueError:
        raise PayloadError(f"The message is not JSON, so it has no `{path}`: {_shown(text)}.") from None
    return _number(_walk(document, path), what=f"`{path}`")


def _walk(document: object, path: str) -> object:
    node = document
    walked: list[str] = []
    for part in path.split("."):
        where = f"`{'.'.join(walked)}`" if walked else "the message"
        if isinstance(node, dict):
            if part not in node:
                names = ", ".join(sorted(str(name) for name in node)[:10]) or "nothing"
                raise PayloadError(f"There is no `{part}` in {where} (it has: {names}).")
            node = node[part]
        elif isinstance(node, list) and part.isdigit():
            if int(part) >= len(node):
                raise PayloadError(f"{where} has {len(node)} values, so no value number {part} (counting from 0).")
            node = node[int(part)]
        else:
            hint = " Leave the payload path empty when the whole message is the number." if not walked else ""
            raise PayloadError(
                f"There is no `{part}` in {where}: it is {_shown(json.dumps(node))}, not an object.{hint}"
            )
        walked.append(part)
    return node


def _number(value: object, *, what: str, hint: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PayloadError(f"{what} is {_shown(json.dumps(value))}, not a number.{hint}")
    try:
        number = float(value)
    except ValueError:
        raise PayloadError(f"{what} is {_shown(str(value))}, not a number.{hint}") from None
    if not math.isfinite(number):
        raise PayloadError(f"{what} is {_shown(str(value))}, not a finite number.")
    return number


def _json_hint(text: str) -> str:
    return " It is JSON: give a payload path to the number in it." if text[:1] in "{[" else ""


def _shown(text: str) -> str:
    return repr(text) if len(text) <= _SHOWN_CHARS else repr(text[:_SHOWN_CHARS] + "...")
