"""Which site the dashboard opens on: the last site used, else the first site with data, else the first site.

The last site used is one row of `app_state` (LAST_SITE_KEY), so it outlives the browser session: a reload or a
new tab opens where the analyst left off, whatever page they start on. It is written only when it changed, so
picking the same site again, or every rerun of a page, costs one read at most and no write. A link names a site
by its id or by its name (`find_site`), so `?site=` works with either.

"With data" reads the daily rollup (`readings_daily`, kept by `core.store.rollups`), which has a row per source and day
where raw readings may have thousands: an empty site the user just created is not where a fresh session starts
when another site has something to show.
"""

from __future__ import annotations

import duckdb

from core.catalog.catalog import Catalog
from core.models import Site, name_key
from core.store.store import Store

LAST_SITE_KEY = "last_site_id"  # in `app_state`: the id of the site last chosen in the dashboard

_SITES_WITH_DATA_SQL = """
    SELECT DISTINCT m.site_id
    FROM meters m JOIN energy_sources e ON e.meter_id = m.id
    WHERE EXISTS (SELECT 1 FROM readings_daily d WHERE d.source_id = e.id AND d.readings > 0)
"""


def _last_site_id(con: duckdb.DuckDBPyConnection) -> int | None:
    rows = con.execute("SELECT value FROM app_state WHERE key = ?", [LAST_SITE_KEY]).fetchall()
    value = rows[0][0] if rows else ""
    return int(value) if value.isdecimal() else None


def _sites_with_data(con: duckdb.DuckDBPyConnection) -> set[int]:
    return {int(row[0]) for row in con.execute(_SITES_WITH_DATA_SQL).fetchall()}


def last_site_id(store: Store, *, timeout_s: float | None = None) -> int | None:
    """The id of the site last chosen, or None when none was (or the stored value is not an id)."""
    with store.connect(read_only=True, timeout_s=timeout_s) as con:
        return _last_site_id(con)


def remember_site(store: Store, site_id: int, *, timeout_s: float | None = None) -> bool:
    """Store `site_id` as the last site used; True when this wrote it, False when it was stored already.

    The check reads first, so choosing the stored site again writes nothing (no write transaction, no WAL growth).
    Raises `StoreError` (`StoreBusy` when the file is held) like every store operation; the caller decides whether
    that matters.
    """
    if last_site_id(store, timeout_s=timeout_s) == site_id:
        return False
    with store.transaction(timeout_s=timeout_s) as con:
        con.execute(
            "INSERT INTO app_state (key, value, updated_at) VALUES (?, ?, now())"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            [LAST_SITE_KEY, str(int(site_id))],
        )
    return True


def sites_with_data(store: Store, *, timeout_s: float | None = None) -> set[int]:
    """Ids of the sites that have at least one stored reading (one non-empty day in the daily rollup)."""
    with store.connect(read_only=True, timeout_s=timeout_s) as con:
        return _sites_with_data(con)


def default_site(store: Store, catalog: Catalog, *, timeout_s: float | None = None) -> Site | None:
    """The site a session starts on: the last one used if it still exists, else the first site (in the catalog's
    order, by name) that has data, else the first site; None when there is no site."""
    if not catalog.sites:
        return None
    by_id = {site.id: site for site in catalog.sites}
    with store.connect(read_only=True, timeout_s=timeout_s) as con:  # one open of the file for both reads
        last = _last_site_id(con)
        if last in by_id:
            return by_id[last]
        with_data = _sites_with_data(con)
    return next((site for site in catalog.sites if site.id in with_data), catalog.sites[0])


def find_site(catalog: Catalog, text: str) -> Site | None:
    """The site a link's `?site=` names: by id (digits), else by name as people read it (`name_key`: case and
    Unicode forms do not matter). None when no site matches: the caller falls back to its default."""
    text = text.strip()
    if text.isdecimal():
        site = next((s for s in catalog.sites if s.id == int(text)), None)
        if site is not None:
            return site
    key = name_key(text) if text else None
    return next((s for s in catalog.sites if key is not None and name_key(s.name) == key), None)
