"""Import Readings: upload a CSV of a source's historical readings (meters without an API, or older history)."""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from core import catalog as cat
from core.models import CATEGORY_LABELS, known_timezones
from core.readings_import import UNITS, ImportOptions, ImportRefused, ReadingsFileLimits, decode_csv, import_readings
from ui.context import get_runtime, page_guard
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
        "A header row with a `timestamp` and a `value` column (other columns are ignored):\n\n"
        "```\ntimestamp,value\n2026-11-01 00:00,1250\n2026-11-01 00:15,1310\n```\n\n"
        "- **Unit**: `W` or `kW` is the average power over the interval; `Wh` or `kWh` the energy of the interval.\n"
        "- **Time zone**: the zone of timestamps without an offset (default: the site's). A timestamp with an offset "
        "(`2026-03-29T01:30:00+01:00`, `...Z`) keeps it. A local time that a DST change skips or repeats is refused: "
        "give those rows an offset.\n"
        "- **Label**: whether a timestamp names the start or the end of its interval.\n"
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
        st.error(f"Nothing was imported: {exc.problems[0]}.", icon=":material/error:")
        return
    try:
        report = import_readings(
            runtime.store, source_id, text, options, datetime.now(UTC), dry_run=dry_run, limits=limits
        )
    except ImportRefused as exc:
        st.error("Nothing was imported. Fix these problems and upload the file again:", icon=":material/error:")
        st.code("\n".join(exc.lines()))
        return
    span = f"from {report.first:%Y-%m-%d %H:%M} to {report.last:%Y-%m-%d %H:%M} UTC"
    if dry_run:
        st.info(
            f"The file is valid: {report.rows:,} row(s) {span}. Nothing was written yet.", icon=":material/fact_check:"
        )
    else:
        st.success(
            f"Imported {report.written:,} new reading(s) of {report.rows:,} row(s) {span}"
            " (rows already stored as final are kept).",
            icon=":material/check_circle:",
        )
        st.cache_data.clear()  # the other pages show the new history at once


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
            left, middle, right, last = st.columns(4)
            unit = left.selectbox("Unit", list(UNITS), key="import_unit")
            zone = middle.selectbox("Time zone", TIMEZONES, index=TIMEZONES.index(site.timezone), key="import_tz")
            minutes = right.selectbox("Interval (minutes)", INTERVALS, index=INTERVALS.index(15), key="import_minutes")
            label = last.radio("Timestamps mark the interval's", ["start", "end"], horizontal=True, key="import_label")
            snap = st.checkbox(
                "Snap times to the grid",
                key="import_snap",
                help="Move a time that is off the interval grid (10:07 with 15 minutes) to the nearest grid point"
                " (10:00) instead of refusing the row. Two rows landing in the same interval are still refused.",
            )
            upload = st.file_uploader(
                "CSV file",
                type=["csv", "txt"],
                key="import_file",
                max_upload_size=get_runtime().settings.readings_import_max_mb,  # the browser says the real limit
            )
            check, write = st.columns(2)
            options = ImportOptions(unit=unit, timezone=zone, interval_minutes=minutes, label=label, snap=snap)
            if check.button("Check file", icon=":material/fact_check:", disabled=upload is None, key="import_check"):
                _run_import(source_id, upload.getvalue(), options, dry_run=True)
            if write.button(
                "Import", type="primary", icon=":material/upload:", disabled=upload is None, key="import_write"
            ):
                _run_import(source_id, upload.getvalue(), options, dry_run=False)
