"""The stored configuration as a configuration import sees it: read once, in one short read-only connection, and
looked up by the names a file gives.

Both the validation of a file (`core.catalog.config_validation`) and the plan of its writes
(`core.catalog.config_plan`) work from this snapshot, outside the write transaction, so that the database is held only
for the writes (`core.catalog.config_io`).

Names are compared as people read them (`models.name_key`). Rows stored by an older version, before names were
compared that way, may hold two names that now read the same ("Demo Rooftop", and the same in fullwidth letters).
A file's row that matches both cannot say which one it means, and picking one would update a row the operator
did not choose: the lookup raises `AmbiguousName` with every match, and validation refuses the row naming them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import duckdb

from core import models as m
from core.catalog import catalog as cat
from core.models import name_key
from core.store.secret_store import SOURCE_CREDENTIALS

Stored = TypeVar("Stored", m.Site, m.Meter, m.Source)


@dataclass(frozen=True)
class Snapshot:
    """The stored configuration that validation and the plan see, read in one short read-only connection."""

    catalog: cat.Catalog
    # ciphertext by (source id, secret name), shared credentials under each source using them; decrypted where needed
    secrets: dict[tuple[int, str], str]
    fingerprint: tuple[Any, ...]  # `catalog.fingerprint`: the write transaction checks it is still the same


def read_snapshot(con: duckdb.DuckDBPyConnection) -> Snapshot:
    rows = con.sql(f"SELECT source_id, name, ciphertext FROM {SOURCE_CREDENTIALS}").fetchall()  # shared ones too
    secrets = {(int(source_id), str(name)): str(token) for source_id, name, token in rows}
    return Snapshot(cat.read_catalog(con), secrets, cat.fingerprint(con))


class AmbiguousName(Exception):
    """A name matches several stored rows (lookalikes stored by an older version); `rows` are all of them."""

    def __init__(self, rows: Sequence[m.Site | m.Meter | m.Source]) -> None:
        super().__init__(", ".join(f"{row.name!r} (id {row.id})" for row in rows))
        self.rows = rows


class StoredNames:
    """Stored rows by natural key, names as compared: site name; (site id, meter name); (meter id, source name).

    Each lookup returns the one stored row a name matches, None when there is none (a new row), or raises
    `AmbiguousName` when there are several."""

    def __init__(self, catalog: cat.Catalog) -> None:
        self._sites = _grouped(catalog.sites, lambda s: name_key(s.name))
        self._meters = _grouped(catalog.meters, lambda x: (x.site_id, name_key(x.name)))
        self._sources = _grouped(catalog.sources, lambda s: (s.meter_id, name_key(s.name)))

    def site(self, name: str) -> m.Site | None:
        return _one(self._sites.get(name_key(name), []))

    def meter(self, site_id: int, name: str) -> m.Meter | None:
        return _one(self._meters.get((site_id, name_key(name)), []))

    def source(self, meter_id: int, name: str) -> m.Source | None:
        return _one(self._sources.get((meter_id, name_key(name)), []))


def _grouped(rows: Iterable[Stored], key: Callable[[Stored], Hashable]) -> dict[Hashable, list[Stored]]:
    groups: dict[Hashable, list[Stored]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return dict(groups)


def _one(rows: list[Stored]) -> Stored | None:
    if len(rows) > 1:
        raise AmbiguousName(sorted(rows, key=lambda row: row.id))
    return rows[0] if rows else None
