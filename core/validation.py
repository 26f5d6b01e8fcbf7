"""Messages about bad input: pydantic's errors as short messages keyed by the path of the offending field, and
long lists of problems cut to what a person reads."""

from __future__ import annotations

from collections.abc import Sequence
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


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def message_for(error: Any) -> str:
    """One human message per pydantic error dict."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "greater_than_equal":
        return f"must be >= {_number(ctx['ge'])}"
    if kind == "less_than_equal":
        return f"must be <= {_number(ctx['le'])}"
    if kind == "greater_than":
        return f"must be > {_number(ctx['gt'])}"
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
        return f"must be at most {ctx.get('max_length')} characters"
    message = str(error.get("msg", "is invalid"))
    return message.removeprefix("Value error, ")


def field_errors(exc: ValidationError, prefix: Sequence[str | int] = ()) -> dict[str, str]:
    """{path: message} for every error; the first message per path wins."""
    errors: dict[str, str] = {}
    for error in exc.errors():
        path = format_path([*prefix, *error["loc"]])
        errors.setdefault(path, message_for(error))
    return errors


def and_more(count: int, what: str = "", indent: str = "") -> str:
    """The line standing for the `count` entries left out of a list cut short."""
    return f"{indent}... and {count} more" + (f" {what}" if what else "")


def capped(lines: Sequence[str], limit: int, what: str = "", indent: str = "") -> list[str]:
    """The first `limit` lines, then one counting the rest: a file of a million bad rows prints a screenful."""
    shown = [f"{indent}{line}" for line in lines[:limit]]
    return shown + ([and_more(len(lines) - limit, what, indent)] if len(lines) > limit else [])
