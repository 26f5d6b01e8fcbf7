"""Several Enphase systems of one owner sharing one authorisation: one row of tokens, one lock, handed over when its
holder goes, and named in configuration files (`authorized_through`). Import Sites sets it up and the collector
polls on it: tests/test_account_import.py.

Real DuckDB files and real threads.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from core import catalog as cat
from core.config_export import export_config
from core.config_io import ConfigImportError, import_config
from core.connections import draft_from_source, save_connections
from core.crypto import SecretBox
from core.models import Category, MeterIn, SiteIn, SourceIn
from core.oauth_tokens import StoredTokens
from core.secret_store import put_secret
from core.store import Store
from tests.fakes import enphase


def _enphase_sources(store: Store, count: int) -> list[cat.Source]:
    site = cat.create_site(store, SiteIn(name="Home", latitude=37.7, longitude=-122.4, timezone="America/Los_Angeles"))
    meter = cat.create_meter(store, site.id, MeterIn(name="PV", category=Category.PROD))
    made = []
    with store.transaction() as con:
        for n in range(count):
            api = {"useAPI": True, "apiProvider": "enphase", "systemId": str(698905955 + n)}
            api |= {"clientId": enphase.SANDBOX_CLIENT_ID, "updateFrequency": "6hour"}
            source = SourceIn.model_validate(
                {
                    "name": f"System {n}",
                    "source_type": "solar",
                    "capacity_kw": 5,
                    "carbon_intensity_g_per_kwh": 0,
                    "cost_per_mwh": 0,
                    "api": api,
                }
            )
            made.append(cat.insert_source(con, meter.id, source))
    if count > 1:
        with store.transaction() as con:
            con.execute(
                "UPDATE energy_sources SET metadata = json_merge_patch(metadata, json_object('grantSourceId', ?))"
                " WHERE id <> ?",
                [made[0], made[0]],
            )
    catalog = cat.load_catalog(store)
    return [catalog.source(i) for i in made]


def _tokens(n: int) -> enphase.Tokens:
    now = datetime.now(UTC)
    from pydantic import SecretStr

    return enphase.Tokens(SecretStr(f"access-{n}"), SecretStr(f"refresh-{n}"), now + timedelta(hours=1), None)


def test_a_borrowing_source_reads_and_writes_the_holders_grant(store: Store, box: SecretBox) -> None:
    holder, borrower = _enphase_sources(store, 2)
    assert borrower.api.grant_source_id == holder.id
    with store.connect(read_only=True) as con:
        assert cat.grant_holder(con, borrower.id) == holder.id and cat.grant_holder(con, holder.id) == holder.id
    StoredTokens(store, box, holder.id).save(_tokens(1))
    shared = StoredTokens(store, box, borrower.id)
    loaded = shared.load()
    assert loaded is not None and loaded.access_token.get_secret_value() == "access-1"
    shared.save(_tokens(2))  # a renewal by the borrower lands in the one row
    again = StoredTokens(store, box, holder.id).load()
    assert again is not None and again.refresh_token.get_secret_value() == "refresh-2"
    with store.connect(read_only=True) as con:
        rows = con.sql("SELECT source_id FROM source_secrets WHERE name = 'oauth_tokens'").fetchall()
    assert rows == [(holder.id,)]
    assert StoredTokens(store, box, borrower.id).lock is StoredTokens(store, box, holder.id).lock


def test_deleting_the_holder_hands_the_grant_to_the_first_sharer(store: Store, box: SecretBox) -> None:
    holder, first, second = _enphase_sources(store, 3)
    StoredTokens(store, box, holder.id).save(_tokens(1))
    with store.transaction() as con:
        cat.delete_source(con, holder.id)
    catalog = cat.load_catalog(store)
    assert catalog.source(first.id).api.grant_source_id is None  # the heir holds it now
    assert catalog.source(second.id).api.grant_source_id == first.id
    for source in (first, second):
        loaded = StoredTokens(store, box, source.id).load()
        assert loaded is not None and loaded.refresh_token.get_secret_value() == "refresh-1"
    with store.connect(read_only=True) as con:
        rows = con.sql("SELECT source_id FROM source_secrets WHERE name = 'oauth_tokens'").fetchall()
    assert rows == [(first.id,)]


def test_deleting_every_system_of_a_grant_leaves_nothing_behind(store: Store, box: SecretBox) -> None:
    holder, *_ = _enphase_sources(store, 3)
    StoredTokens(store, box, holder.id).save(_tokens(1))
    site = cat.load_catalog(store).site_of_source(holder.id)
    assert site is not None
    cat.delete_site(store, site.id)
    with store.connect(read_only=True) as con:
        assert con.sql("SELECT count(*) FROM source_secrets").fetchall() == [(0,)]


def test_a_grant_held_on_another_site_survives_deleting_that_site(store: Store, box: SecretBox) -> None:
    holder, sharer = _enphase_sources(store, 2)
    other = cat.create_site(store, SiteIn(name="Other", latitude=0, longitude=0, timezone="UTC"))
    meter = cat.create_meter(store, other.id, MeterIn(name="PV 2", category=Category.PROD))
    with store.transaction() as con:  # the sharer moves to another site's meter
        con.execute("UPDATE energy_sources SET meter_id = ? WHERE id = ?", [meter.id, sharer.id])
    StoredTokens(store, box, holder.id).save(_tokens(1))
    cat.delete_meter(store, holder.meter_id)
    assert cat.load_catalog(store).source(sharer.id).api.grant_source_id is None
    loaded = StoredTokens(store, box, sharer.id).load()
    assert loaded is not None and loaded.access_token.get_secret_value() == "access-1"


def test_saving_in_data_connections_keeps_the_shared_grant(store: Store, box: SecretBox) -> None:
    holder, borrower = _enphase_sources(store, 2)
    with store.transaction() as con:  # the application's own credentials, as Import Sites stores them
        put_secret(con, box, borrower.id, "client_secret", enphase.SANDBOX_CLIENT_SECRET)
        put_secret(con, box, borrower.id, "app_api_key", enphase.SANDBOX_API_KEY)
    borrower = cat.load_catalog(store).source(borrower.id)
    draft = draft_from_source(borrower)
    draft.values["name"] = "System 1 renamed"
    site = cat.load_catalog(store).site_of_source(borrower.id)
    assert site is not None
    save_connections(store, box, site.id, [draft], set())
    assert cat.load_catalog(store).source(borrower.id).api.grant_source_id == holder.id


def test_clients_of_one_grant_take_one_lock(store: Store, box: SecretBox) -> None:
    holder, *borrowers = _enphase_sources(store, 3)
    locks = {id(StoredTokens(store, box, s.id).lock) for s in (holder, *borrowers)}
    assert len(locks) == 1
    held = threading.Event()
    lock = StoredTokens(store, box, borrowers[0].id).lock
    with lock:
        held.set()
        assert not StoredTokens(store, box, holder.id).lock.acquire(blocking=False)


# --- configuration files -----------------------------------------------------------------------------------------


def _source(name: str, system_id: str, **api: object) -> dict[str, object]:
    settings = {"enabled": True, "provider": "enphase", "system_id": system_id, "client_id": enphase.SANDBOX_CLIENT_ID}
    return {
        "name": name,
        "source_type": "solar",
        "capacity_kw": 5,
        "carbon_intensity_g_per_kwh": 0,
        "cost_per_mwh": 0,
        "api": settings | {"update_frequency": "1day"} | api,
        "credentials": {"client_secret": "secret", "app_api_key": "app-key"},
    }


def _file(*sources: dict[str, object]) -> dict[str, object]:
    meters = [{"name": "Solar", "category": "PROD", "sources": list(sources)}]
    return {
        "version": 1,
        "sites": [{"name": "Home", "latitude": 1, "longitude": 2, "timezone": "UTC", "meters": meters}],
    }


HOME = {"site": "Home", "meter": "Solar", "source": "Roof"}


def test_a_file_names_the_shared_grant_and_an_export_imports_back_alike(store: Store, box: SecretBox) -> None:
    data = _file(_source("Roof", "1"), _source("Barn", "2", authorized_through=HOME), _source("Shed", "3"))
    report = import_config(store, box, data, environ={})
    assert report.sources.created == 3
    catalog = cat.load_catalog(store)
    by_name = {s.name: s for s in catalog.sources}
    assert by_name["Barn"].api.grant_source_id == by_name["Roof"].id  # the holder was new: linked once written
    assert by_name["Roof"].api.grant_source_id is None and by_name["Shed"].api.grant_source_id is None

    exported = export_config(store)
    barn = exported["sites"][0]["meters"][0]["sources"][0]
    assert barn["name"] == "Barn" and barn["api"]["authorized_through"] == HOME
    assert "authorized_through" not in exported["sites"][0]["meters"][0]["sources"][1]["api"]
    assert import_config(store, box, exported, environ={}).sources.unchanged == 3  # stored holder: same id

    moved = _file(_source("Roof", "1"), _source("Barn", "2"), _source("Shed", "3", authorized_through=HOME))
    assert import_config(store, box, moved, environ={}).sources.updated == 2
    by_name = {s.name: s for s in cat.load_catalog(store).sources}
    assert by_name["Barn"].api.grant_source_id is None and by_name["Shed"].api.grant_source_id == by_name["Roof"].id


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        (
            [_source("Roof", "1"), _source("Barn", "2", authorized_through=HOME | {"source": "Nope"})],
            "names Home / Solar / Nope, which is neither in the file nor stored",
        ),
        ([_source("Roof", "1", authorized_through=HOME)], "names this source itself"),
        (
            [_source("Roof", "1", client_id="other-app"), _source("Barn", "2", authorized_through=HOME)],
            "which uses another Enphase application: name a source with Client ID",
        ),
        (
            [
                _source("Roof", "1"),
                _source("Barn", "2", authorized_through=HOME),
                _source("Shed", "3", authorized_through=HOME | {"source": "Barn"}),
            ],
            "which uses another source's authorisation itself: name that one",
        ),
        (
            [_source("Roof", "1"), {**_source("Barn", "2", authorized_through=HOME), "credentials": {}}],
            "Client Secret is required",
        ),
    ],
)
def test_a_wrong_shared_grant_is_refused_by_its_path(
    store: Store, box: SecretBox, sources: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(ConfigImportError) as refused:
        import_config(store, box, _file(*sources), environ={})
    assert any(message in error for error in refused.value.errors), refused.value.errors
    assert cat.load_catalog(store).sources == []


def test_only_enphase_sources_share_an_authorisation(store: Store, box: SecretBox) -> None:
    simulated = _source("Barn", "", authorized_through=HOME) | {"credentials": {}}
    simulated["api"] = {"enabled": True, "provider": "simulator", "authorized_through": HOME}
    with pytest.raises(ConfigImportError) as refused:
        import_config(store, box, _file(_source("Roof", "1"), simulated), environ={})
    assert refused.value.errors == [
        "sites[0].meters[0].sources[1].api.authorized_through: is only for Enphase sources, which can share their"
        " owner's authorisation"
    ]
