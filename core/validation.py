"""Messages about bad input: pydantic's errors as short messages keyed by the path of the offending field, and
long lists of problems cut to what a person reads.

A field's message is phrased to stand right under the field, so it does not name it ("must be at most 10,000,000");
`core.catalog.field_labels` puts the field's label in front where the message stands elsewhere. Numbers are written as
people read them (`readable_number`), and comparisons in words: the pages show messages as Markdown, and
Streamlit's Markdown turns a spaced "<=", ">=" or "--" into typographic signs.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from pydantic import ValidationError


def format_path(loc: Sequence[str | int]) -> str:
    """('sites', 0, 'meters', 1, 'name') -> 'sites[0].meters[1].name'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def readable_number(value: Any) -> str:
    """A bound as people write it: 10000000.0 -> "10,000,000", 0.25 -> "0.25", -90 -> "-90"; never an exponent.
    Anything but a number is shown as it is."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return str(value)
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not exact.is_finite():
        return str(value)
    return f"{exact.normalize():,f}" if exact else "0"  # not "-0"


def message_for(error: Any) -> str:
    """One human message per pydantic error dict."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "greater_than_equal":
        return f"must be at least {readable_number(ctx['ge'])}"
    if kind == "less_than_equal":
        return f"must be at most {readable_number(ctx['le'])}"
    if kind == "greater_than":
        return f"must be more than {readable_number(ctx['gt'])}"
    if kind == "less_than":
        return f"must be less than {readable_number(ctx['lt'])}"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind == "enum":
        return f"must be one of {ctx.get('expected', '')}"
    if kind in {"bool_parsing", "bool_type"}:
        return "must be true or false"
    if kind in {"string_type"}:
        return "must be text"
    if kind in {"model_type", "model_attributes_type", "dict_type"}:
        return "must be a mapping of fields"
    if kind == "list_type":
        return "must be a list"
    if kind == "string_too_long":
        return f"must be at most {readable_number(ctx.get('max_length'))} characters"
    message = str(error.get("msg", "is invalid"))
    return message.removeprefix("Value error, ")


def located_errors(exc: ValidationError, prefix: Sequence[str | int] = ()) -> list[tuple[list[str | int], str]]:
    """(location, message) for every error, the location as a list of keys and indexes; the first message per
    location wins."""
    errors: dict[str, tuple[list[str | int], str]] = {}
    for error in exc.errors():
        loc = [*prefix, *error["loc"]]
        errors.setdefault(format_path(loc), (loc, message_for(error)))
    return list(errors.values())


def field_errors(exc: ValidationError, prefix: Sequence[str | int] = ()) -> dict[str, str]:
    """{path: message} for every error; the first message per path wins."""
    return {format_path(loc): message for loc, message in located_errors(exc, prefix)}


def and_more(count: int, what: str = "", indent: str = "") -> str:
    """The line standing for the `count` entries left out of a list cut short."""
    return f"{indent}... and {count} more" + (f" {what}" if what else "")


def capped(lines: Sequence[str], limit: int, what: str = "", indent: str = "") -> list[str]:
    """The first `limit` lines, then one counting the rest: a file of a million bad rows prints a screenful."""
    shown = [f"{indent}{line}" for line in lines[:limit]]
    return shown + ([and_more(len(lines) - limit, what, indent)] if len(lines) > limit else [])
