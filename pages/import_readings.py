"""Import Readings: upload a CSV of a source's historical readings (meters without an API, or older history)."""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from core.actors import Permission
from core.catalog import catalog as cat
from core.collect.readings_csv import (
    DECIMAL_MARKS,
    DELIMITERS,
    detect_delimiter,
    first_line,
    guess_columns,
    header_columns,
)
from core.collect.readings_import import (
    UNITS,
    ImportOptions,
    ImportRefused,
    ReadingsFileLimits,
    decode_csv,
    import_readings,
)
from core.models import CATEGORY_LABELS, known_timezones
from ui.context import can, get_runtime, page_guard, role_note
from ui.widgets import choose_site

TIMEZONES = sorted(known_timezones())
INTERVALS = [5, 10, 15, 30, 60]

st.title("Import Readings")
st.caption(
    "Load historical readings of one data source from a CSV file: for meters without an API, or for history from "
    "before a connection existed. The file goes through the collector's own write path, so importing it twice "
    "stores nothing twice."
)

with st.expander("What the file looks like", icon=":material/description:"):
    st.markdown(
        "A header row naming the columns, one with the timestamps and one with the values (other columns are "
        "ignored):\n\n"
        "```\ntimestamp,value\n2026-11-01 00:00,1250\n2026-11-01 00:15,1310\n```\n\n"
        "- **Layout**: the delimiter (comma, semicolon or tab) is detected from the header row and the decimal mark "
        "(`1234.5` or `1234,5`) from the first value that has one; choose them if the guess is wrong. Numbers are "
        "read without thousands separators: `1.234,5` or `1 234` is refused, never guessed.\n"
        "- **Columns**: after the upload, pick the timestamp and the value column. The page proposes a column named "
        "like timestamp, time, date or datetime, and one named value, or with a word energy, power, wh, kwh, w or "
        "kw in its name (`energy_wh`).\n"
        "- **Unit**: `W` or `kW` is the average power over the interval; `Wh` or `kWh` the energy of the interval.\n"
        "- **Time zone**: the zone of timestamps without an offset (default: the site's). A timestamp with an offset "
        "(`2026-03-29T01:30:00+01:00`, `...Z`) keeps it. A local time that a DST change skips or repeats is refused: "
        "give those rows an offset.\n"
        "- **Label**: whether a timestamp names the start or the end of its interval.\n"
        "- **Cumulative counter**: the values are a meter's register (in `Wh` or `kWh`) read at each timestamp; the "
        "difference between consecutive readings is the interval's energy. A rollover (the register wrapping at a "
        "power of ten) is counted, a reset (a drop to near zero) leaves that interval without data, and both are "
        "listed by row; any other drop refuses the file.\n"
        "- **Grid**: every time, as written, must be a multiple of the interval from midnight (10:00, 10:15, ... for "
        "15 minutes). **Snap times to the grid** moves an off-grid time to the nearest grid point instead; two rows "
        "that land in the same interval are refused.\n"
        "- **Bounds**: a value may be at most 1 TW (1e12 W) either way; times before the earliest import date or more "
        "than the allowed days in the future are refused (the operator's `DATACONN_READINGS_IMPORT_*` settings).\n\n"
        "Every row is checked first. Any problem refuses the whole file with row-numbered messages; nothing is written."
    )


def _run_import(source_id: int, data: bytes, options: ImportOptions, dry_run: bool) -> None:
    runtime = get_runtime()
    limits = ReadingsFileLimits.from_settings(runtime.settings)
    try:
        text = decode_csv(data, limits)
    except ImportRefused as exc:  # one problem with the file as a whole
        st.error(f"Nothing was imported: {exc.problems[0]}.", icon=":material/error:")  # our words, no file text
        return
    try:
        report = import_readings(
            runtime.store, source_id, text, options, datetime.now(UTC), dry_run=dry_run, limits=limits
        )
    except ImportRefused as exc:
        st.error("Nothing was imported. Fix these problems and upload the file again:", icon=":material/error:")
        _plain_lines(exc.lines())
        return
    span = f"{report.site_span()}; {report.utc_span()}"
    if dry_run:
        st.info(
            f"The file is valid: {report.rows:,} row(s) {span}. Nothing was written yet.",
            icon=":material/fact_check:",
        )
    else:
        st.success(
            f"Imported {report.written:,} new reading(s) of {report.rows:,} row(s) {span}. Rows already stored as"
            " final are kept.",
            icon=":material/check_circle:",
        )
        st.cache_data.clear()  # the other pages show the new history at once
    _plain_lines(list(report.notes))


def _plain_lines(lines: list[str]) -> None:
    """Messages one a line as plain text: the file's own text (values, column names) shown as written, never read
    as markdown or highlighted as code."""
    if lines:
        st.text("\n".join(lines))


def _column(where: DeltaGenerator, label: str, names: list[str], guess: int | None, key: str) -> str | None:
    """A drop-down of the header's columns. A new header (another file) sets it to the guess through the session
    state, which the browser shows too: a choice from the previous file must not linger on screen."""
    header_key = f"{key}_header"
    if st.session_state.get(header_key) != names:
        st.session_state[header_key] = names
        st.session_state[key] = None if guess is None else names[guess]
    return where.selectbox(label, names, key=key, placeholder="Choose a column")


def _layout(data: bytes) -> dict[str, str | None]:
    """The file's layout as the user confirms it: delimiter, decimal mark and the two columns (None: detect)."""
    try:
        text = decode_csv(data, ReadingsFileLimits.from_settings(get_runtime().settings))
    except ImportRefused:
        return {}  # Check file and Import say why
    left, right = st.columns(2)
    delimiter = left.selectbox(
        "Delimiter",
        [None, *DELIMITERS],
        format_func=lambda char: (
            f"Detect ({DELIMITERS[detect_delimiter(first_line(text))]})" if char is None else DELIMITERS[char]
        ),
        key="import_delimiter",
    )
    decimal = right.selectbox(
        "Decimal mark",
        [None, *DECIMAL_MARKS],
        format_func=lambda mark: "Detect" if mark is None else f"{DECIMAL_MARKS[mark]} ({mark})",
        key="import_decimal",
    )
    names = header_columns(text, delimiter)
    guess_time, guess_value = guess_columns(names)
    left, right = st.columns(2)
    time_column = _column(left, "Timestamp column", names, guess_time, "import_time_column")
    value_column = _column(right, "Value column", names, guess_value, "import_value_column")
    return {"delimiter": delimiter, "decimal": decimal, "time_column": time_column, "value_column": value_column}


with page_guard():
    catalog = cat.load_catalog(get_runtime().store)
    site = choose_site("import_site", catalog)
    if site is not None:
        sources = [(meter, source) for meter in catalog.meters_of(site.id) for source in catalog.sources_of(meter.id)]
        if not sources:
            st.info("This site has no data source yet: add one on the Data Connections page.", icon=":material/info:")
        else:
            labels = {
                source.id: f"{source.name} · {meter.name} ({CATEGORY_LABELS[meter.category]})"
                + ("" if source.api.use_api else " · no API")
                for meter, source in sources
            }
            source_id = st.selectbox("Data source", list(labels), format_func=labels.__getitem__, key="import_source")
            upload = st.file_uploader(
                "CSV file",
                type=["csv", "tsv", "txt"],
                key="import_file",
                max_upload_size=get_runtime().settings.readings_import_max_mb,  # the browser says the real limit
            )
            layout = _layout(upload.getvalue()) if upload is not None else {}
            counter = st.checkbox(
                "Values are a cumulative meter counter",
                key="import_counter",
                help="A register reading (Wh or kWh) at each timestamp, as a meter's display shows it; the difference"
                " between consecutive readings becomes the interval's energy. Otherwise each value is the average"
                " power (W, kW) or the energy (Wh, kWh) of its interval.",
            )
            left, middle, right, last = st.columns(4)
            unit = left.selectbox("Unit", list(UNITS), key="import_unit")
            zone = middle.selectbox("Time zone", TIMEZONES, index=TIMEZONES.index(site.timezone), key="import_tz")
            minutes = right.selectbox("Interval (minutes)", INTERVALS, index=INTERVALS.index(15), key="import_minutes")
            label = last.radio(
                "Timestamps mark the interval's",
                ["start", "end"],
                horizontal=True,
                key="import_label",
                disabled=counter,
                help="A counter reading is taken at the instant its timestamp names." if counter else None,
            )
            snap = st.checkbox(
                "Snap times to the grid",
                key="import_snap",
                help="Move a time that is off the interval grid (10:07 with 15 minutes) to the nearest grid point"
                " (10:00) instead of refusing the row. Two rows landing in the same interval are still refused.",
            )
            check, write = st.columns(2)
            options = ImportOptions(
                unit=unit,
                timezone=zone,
                interval_minutes=minutes,
                label="start" if counter else label,
                snap=snap,
                counter=counter,
                **layout,
            )
            checking = check.button(
                "Check file", icon=":material/fact_check:", disabled=upload is None, key="import_check"
            )
            importing = write.button(
                "Import",
                type="primary",
                icon=":material/upload:",
                disabled=upload is None or not can(Permission.IMPORT),
                key="import_write",
            )
            role_note(Permission.IMPORT, "Importing readings")
            if upload is not None and (checking or importing):  # both are disabled until a file is chosen
                _run_import(source_id, upload.getvalue(), options, dry_run=checking)
