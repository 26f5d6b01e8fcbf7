"""What a markdown string shows: the pages escape user text (ui.markdown), so tests compare the text as shown."""

from __future__ import annotations

import re


def shown(markdown: str) -> str:
    """`markdown` without its backslash escapes: "roof\\_a" shows as "roof_a"."""
    return re.sub(r"\\(.)", r"\1", markdown)
