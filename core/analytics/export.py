"""Chart and table data as downloadable files: CSV for spreadsheets, Parquet for notebooks and DuckDB."""

from __future__ import annotations

import io

import polars as pl

FORMATS = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


def to_bytes(frame: pl.DataFrame, file_format: str) -> bytes:
    """The frame as a CSV (ISO-8601 times with their offset) or Parquet file."""
    if file_format not in FORMATS:
        raise ValueError(f"unknown export format {file_format!r}: choose one of {', '.join(FORMATS)}")
    buffer = io.BytesIO()
    if file_format == "csv":
        frame.write_csv(buffer)
    else:
        frame.write_parquet(buffer)
    return buffer.getvalue()
