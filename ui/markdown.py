"""Text from users and vendors inside Streamlit's markdown (titles, alerts, captions), shown as typed."""

from __future__ import annotations

import re

# Every character CommonMark lets a backslash escape that Streamlit's markdown would otherwise act on: emphasis,
# code, links, headings, lists, tables, HTML, and `$` (Streamlit renders $...$ as LaTeX) and `:` (":material/x:"
# and ":emoji:" shortcodes).
_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def escape_markdown(text: str) -> str:
    """`text` as literal characters in markdown: "roof_a_b" stays "roof_a_b", not "roof" + italic "a" + "b"."""
    return _SPECIAL.sub(r"\\\1", text)
