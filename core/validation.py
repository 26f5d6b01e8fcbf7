"""Turn pydantic's errors into short messages keyed by the path of the offending field."""

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
