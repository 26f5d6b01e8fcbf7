"""`python -m jobs.sql` (`make sql`): a read-only SQL session on the database, safe beside the collector.

Beside the `duckdb` CLI (which reads the file: `core.store.file_format`): a CLI session holds the file for as long as it
stays open, so the collector spools meanwhile. Here every statement opens the file read-only through the store
(waiting its turn like any other reader) and closes it again. Floats are printed to three decimals (three
significant digits below 1), integers and decimals as they are; numbers are aligned right.

Statements end with `;` and may span lines. `.tables` lists tables and views, `.quit` (or Ctrl+D) leaves.
`-c "SQL"` runs statements and exits (exit code 1 on an error).
"""

from __future__ import annotations

import argparse
import math
import sys
from decimal import Decimal

import duckdb

from core.store.private_files import private_umask
from core.store.store import Store, StoreError
from jobs.cli import CliError, settings_from_env

TABLES = "SELECT table_name, table_type FROM information_schema.tables ORDER BY table_type, table_name"


def run_statement(store: Store, sql: str) -> str:
    """The statement's result as a table of text, or its error, in one short read-only connection."""
    try:
        with store.connect(read_only=True) as con:
            relation = con.sql(sql)
            if relation is None:
                return "OK"
            columns = relation.columns
            rows = relation.fetchall()
    except duckdb.Error as exc:
        return f"Error: {str(exc).splitlines()[0]}"
    return _table(columns, rows)


def cell(value: object) -> str:
    """A value as the session prints it: a float rounded to what a reader compares (a power of 1234.5678 W is
    1234.568; a ratio of 0.000123456 is 0.000123), without trailing zeros."""
    if value is None:
        return "NULL"
    if isinstance(value, float) and math.isfinite(value):
        text = f"{value:.3f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"
        if "e" not in text and "." in text:
            text = text.rstrip("0").rstrip(".")
        return "0" if text == "-0" else text
    return str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _table(columns: list[str], rows: list[tuple]) -> str:
    cells = [[cell(v) for v in row] for row in rows]
    numeric = [bool(rows) and all(_is_number(row[i]) or row[i] is None for row in rows) for i in range(len(columns))]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def aligned(text: str, i: int) -> str:
        return text.rjust(widths[i]) if numeric[i] else text.ljust(widths[i])

    line = "  ".join(aligned(c, i) for i, c in enumerate(columns))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(aligned(v, i) for i, v in enumerate(row)) for row in cells]
    return "\n".join([line, rule, *body, f"({len(rows)} row{'s' if len(rows) != 1 else ''})"])


def statements(text: str) -> list[str]:
    """The statements of `text`, split by DuckDB's own parser (quotes and comments included); a syntax error
    raises `duckdb.Error`."""
    return [s.query.strip().rstrip(";").strip() for s in duckdb.extract_statements(text)]


def _run_all(store: Store, text: str) -> list[str]:
    try:
        return [run_statement(store, sql) for sql in statements(text)]
    except duckdb.Error as exc:  # a syntax error found while splitting
        return [f"Error: {str(exc).splitlines()[0]}"]


def interactive(store: Store) -> int:
    print(f"Read-only SQL on {store.path.name}. End statements with ';'. .tables lists tables, .quit leaves.")
    buffer = ""
    while True:
        try:
            line = input("sql> " if not buffer else "...> ")
        except EOFError:
            print()
            return 0
        if not buffer and line.strip() in (".quit", ".exit"):
            return 0
        if not buffer and line.strip() == ".tables":
            print(run_statement(store, TABLES))
            continue
        buffer += line + "\n"
        if buffer.rstrip().endswith(";"):
            for result in _run_all(store, buffer):
                print(result)
            buffer = ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.sql", description=__doc__.split("\n")[0])
    parser.add_argument("-c", dest="command", metavar="SQL", help="run these statements and exit")
    args = parser.parse_args(argv)
    private_umask()
    try:
        settings = settings_from_env()
        store = Store(settings.db_path, lock_timeout_s=settings.lock_timeout_s)
        if not store.exists():
            raise CliError(f"no database at {settings.db_path}: run `python -m jobs.cli init` first")
        if args.command is None:
            return interactive(store)
        results = _run_all(store, args.command)
        for result in results:
            print(result)
        return 1 if any(result.startswith("Error: ") for result in results) else 0
    except (CliError, StoreError) as exc:
        print(f"sql: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
