"""Several Enphase systems of one owner sharing one authorisation: one row of tokens, one lock, handed over when its
holder goes, and named in configuration files (`credentials_from`). Import Sites sets it up and the collector
polls on it: tests/test_account_import.py.

Real DuckDB files and real threads.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from core.catalog import catalog as cat
from core.catalog.config_export import export_config
from core.catalog.config_io import ConfigImportError, import_config
from core.catalog.connections import draft_from_source, save_connections
from core.catalog.source_drafts import SourceDraft
from core.models import Category, MeterIn, SiteIn, SourceIn
from core.store.crypto import SecretBox
from core.store.oauth_tokens import StoredTokens
from core.store.secret_store import credentials_holder, load_secrets, put_secret
from core.store.store import Store
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
                "UPDATE energy_sources SET metadata = json_merge_patch(metadata, json_object('credentialsSourceId', ?))"
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
    assert borrower.api.credentials_source_id == holder.id
    with store.connect(read_only=True) as con:
        assert credentials_holder(con, borrower.id) == holder.id and credentials_holder(con, holder.id) == holder.id
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
    assert catalog.source(first.id).api.credentials_source_id is None  # the heir holds it now
    assert catalog.source(second.id).api.credentials_source_id == first.id
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
    assert cat.load_catalog(store).source(sharer.id).api.credentials_source_id is None
    loaded = StoredTokens(store, box, sharer.id).load()
    assert loaded is not None and loaded.access_token.get_secret_value() == "access-1"


def _application(store: Store, box: SecretBox, holder: cat.Source) -> None:
    with store.transaction() as con:  # the application's credentials, on the source that holds them
        put_secret(con, box, holder.id, "client_secret", enphase.SANDBOX_CLIENT_SECRET)
        put_secret(con, box, holder.id, "app_api_key", enphase.SANDBOX_API_KEY)


def _save(store: Store, box: SecretBox, draft: SourceDraft) -> cat.Source:
    assert draft.source_id is not None
    site = cat.load_catalog(store).site_of_source(draft.source_id)
    assert site is not None
    save_connections(store, box, site.id, [draft], set())
    return cat.load_catalog(store).source(draft.source_id)


def test_a_source_sharing_credentials_reads_its_holders_and_has_none_of_its_own(store: Store, box: SecretBox) -> None:
    holder, borrower = _enphase_sources(store, 2)
    _application(store, box, holder)
    StoredTokens(store, box, holder.id).save(_tokens(1))
    borrower = cat.load_catalog(store).source(borrower.id)
    assert borrower.secret_names == {"client_secret", "app_api_key", "oauth_tokens"}  # the holder's, by reference
    assert load_secrets(store, box, borrower.id)["app_api_key"].get_secret_value() == enphase.SANDBOX_API_KEY
    with store.connect(read_only=True) as con:
        assert con.sql(f"SELECT count(*) FROM source_secrets WHERE source_id = {borrower.id}").fetchall() == [(0,)]


def test_saving_in_data_connections_keeps_the_shared_credentials(store: Store, box: SecretBox) -> None:
    holder, borrower = _enphase_sources(store, 2)
    _application(store, box, holder)
    draft = draft_from_source(cat.load_catalog(store).source(borrower.id))
    draft.values["name"] = "System 1 renamed"
    saved = _save(store, box, draft)
    assert saved.name == "System 1 renamed" and saved.api.credentials_source_id == holder.id


def test_typing_a_credential_gives_the_source_its_own_with_a_copy_of_the_rest(store: Store, box: SecretBox) -> None:
    holder, borrower, other = _enphase_sources(store, 3)
    _application(store, box, holder)
    StoredTokens(store, box, holder.id).save(_tokens(1))
    draft = draft_from_source(cat.load_catalog(store).source(borrower.id))
    draft.secrets["client_secret"] = "a-rotated-client-secret"
    saved = _save(store, box, draft)
    assert saved.api.credentials_source_id is None
    assert saved.secret_names == {"client_secret", "app_api_key"}  # its own now; the owner authorises it anew
    own = load_secrets(store, box, borrower.id)
    assert own["client_secret"].get_secret_value() == "a-rotated-client-secret"
    assert own["app_api_key"].get_secret_value() == enphase.SANDBOX_API_KEY
    held = load_secrets(store, box, holder.id)
    assert held["client_secret"].get_secret_value() == enphase.SANDBOX_CLIENT_SECRET  # the others are untouched
    assert cat.load_catalog(store).source(other.id).api.credentials_source_id == holder.id


def test_removing_the_holder_while_saving_a_sharer_keeps_the_sharer_on_the_handed_over_credentials(
    store: Store, box: SecretBox
) -> None:
    holder, first, second = _enphase_sources(store, 3)
    _application(store, box, holder)
    draft = draft_from_source(cat.load_catalog(store).source(second.id))
    draft.values["name"] = "Renamed"
    site = cat.load_catalog(store).site_of_source(holder.id)
    assert site is not None
    save_connections(
        store, box, site.id, [draft_from_source(cat.load_catalog(store).source(first.id)), draft], {holder.id}
    )
    catalog = cat.load_catalog(store)
    assert catalog.source(first.id).api.credentials_source_id is None  # the heir
    assert catalog.source(second.id).api.credentials_source_id == first.id
    assert load_secrets(store, box, second.id)["client_secret"].get_secret_value() == enphase.SANDBOX_CLIENT_SECRET


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

APP = {"client_secret": "secret", "app_api_key": "app-key"}


def _source(name: str, system_id: str, credentials: dict[str, str] | None = None, **api: object) -> dict[str, object]:
    """An Enphase source; with `credentials_from` it gives no credentials of its own (unless told)."""
    settings = {"enabled": True, "provider": "enphase", "system_id": system_id, "client_id": enphase.SANDBOX_CLIENT_ID}
    if credentials is None:
        credentials = {} if "credentials_from" in api else APP
    return {
        "name": name,
        "source_type": "solar",
        "capacity_kw": 5,
        "carbon_intensity_g_per_kwh": 0,
        "cost_per_mwh": 0,
        "api": settings | {"update_frequency": "1day"} | api,
        "credentials": credentials,
    }


def _file(*sources: dict[str, object]) -> dict[str, object]:
    meters = [{"name": "Solar", "category": "PROD", "sources": list(sources)}]
    return {
        "version": 1,
        "sites": [{"name": "Home", "latitude": 1, "longitude": 2, "timezone": "UTC", "meters": meters}],
    }


HOME = {"site": "Home", "meter": "Solar", "source": "Roof"}


def test_a_file_names_shared_credentials_stored_once_and_an_export_imports_back_alike(
    store: Store, box: SecretBox
) -> None:
    data = _file(_source("Roof", "1"), _source("Barn", "2", credentials_from=HOME), _source("Shed", "3"))
    report = import_config(store, box, data, environ={})
    assert report.sources.created == 3 and report.secrets_set == 4  # Roof's two and Shed's two, none for Barn
    catalog = cat.load_catalog(store)
    by_name = {s.name: s for s in catalog.sources}
    assert by_name["Barn"].api.credentials_source_id == by_name["Roof"].id  # the holder was new: linked once written
    assert by_name["Roof"].api.credentials_source_id is None and by_name["Shed"].api.credentials_source_id is None
    assert by_name["Barn"].secret_names == {"client_secret", "app_api_key"}

    exported = export_config(store)
    barn = exported["sites"][0]["meters"][0]["sources"][0]
    assert barn["name"] == "Barn" and barn["api"]["credentials_from"] == HOME
    assert "credentials_from" not in exported["sites"][0]["meters"][0]["sources"][1]["api"]
    assert import_config(store, box, exported, environ={}).sources.unchanged == 3  # stored holder: same id

    # Barn stops sharing without giving credentials: it keeps a copy of Roof's; Shed starts sharing Roof's.
    moved = _file(_source("Roof", "1"), _source("Barn", "2", {}), _source("Shed", "3", credentials_from=HOME))
    assert import_config(store, box, moved, environ={}).sources.updated == 2
    by_name = {s.name: s for s in cat.load_catalog(store).sources}
    assert by_name["Barn"].api.credentials_source_id is None
    assert by_name["Shed"].api.credentials_source_id == by_name["Roof"].id
    with store.connect(read_only=True) as con:
        own = con.sql(f"SELECT name FROM source_secrets WHERE source_id = {by_name['Barn'].id} ORDER BY 1").fetchall()
    assert own == [("app_api_key",), ("client_secret",)]
    with store.connect(read_only=True) as con:
        assert con.sql(f"SELECT count(*) FROM source_secrets WHERE source_id = {by_name['Shed'].id}").fetchall() == [
            (0,)
        ]


def test_solaredge_sources_of_one_account_share_the_key_typed_once(store: Store, box: SecretBox) -> None:
    def solaredge(name: str, site_id: str, **extra: object) -> dict[str, object]:
        api = {"enabled": True, "provider": "solaredge", "system_id": site_id, "update_frequency": "1day"}
        credentials = {} if extra else {"api_key": {"env": "SE_KEY"}}
        return _source(name, site_id, credentials) | {"api": api | extra}

    data = _file(solaredge("Roof", "11"), solaredge("Barn", "12", credentials_from=HOME))
    import_config(store, box, data, environ={"SE_KEY": "K" * 32})
    with store.connect(read_only=True) as con:
        assert con.sql("SELECT count(*) FROM source_secrets WHERE name = 'api_key'").fetchall() == [(1,)]
    barn = next(s for s in cat.load_catalog(store).sources if s.name == "Barn")
    assert load_secrets(store, box, barn.id)["api_key"].get_secret_value() == "K" * 32


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        (
            [_source("Roof", "1"), _source("Barn", "2", credentials_from=HOME | {"source": "Nope"})],
            "names Home / Solar / Nope, which is neither in the file nor stored",
        ),
        ([_source("Roof", "1", credentials_from=HOME)], "names this source itself"),
        (
            [_source("Roof", "1", client_id="other-app"), _source("Barn", "2", credentials_from=HOME)],
            "which uses another Enphase application: name one with Client ID",
        ),
        (
            [
                _source("Roof", "1"),
                _source("Barn", "2", credentials_from=HOME),
                _source("Shed", "3", credentials_from=HOME | {"source": "Barn"}),
            ],
            "which uses another source's credentials itself: name that one",
        ),
        (
            [_source("Roof", "1", {"client_secret": "secret"}), _source("Barn", "2", credentials_from=HOME)],
            "sources[0].credentials.app_api_key: Application API Key is required for Enphase",
        ),
        (
            [_source("Roof", "1"), _source("Barn", "2", APP, credentials_from=HOME)],
            "sources[1].credentials: must be left out: this source uses the credentials of Home / Solar / Roof",
        ),
    ],
)
def test_wrong_shared_credentials_are_refused_by_their_path(
    store: Store, box: SecretBox, sources: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(ConfigImportError) as refused:
        import_config(store, box, _file(*sources), environ={})
    assert any(message in error for error in refused.value.errors), refused.value.errors
    assert cat.load_catalog(store).sources == []


def test_only_vendor_sources_share_credentials(store: Store, box: SecretBox) -> None:
    simulated = _source("Barn", "", credentials_from=HOME)
    simulated["api"] = {"enabled": True, "provider": "simulator", "credentials_from": HOME}
    with pytest.raises(ConfigImportError) as refused:
        import_config(store, box, _file(_source("Roof", "1"), simulated), environ={})
    assert refused.value.errors == [
        "sites[0].meters[0].sources[1].api.credentials_from: is only for vendor sources: Simulator has no credentials"
        " to share"
    ]


def test_a_metadata_key_of_a_newer_version_does_not_make_the_configuration_unreadable(store: Store) -> None:
    (source,) = _enphase_sources(store, 1)
    with store.transaction() as con:
        con.execute("UPDATE energy_sources SET metadata = json_merge_patch(metadata, '{\"futureKey\": 1}')")
    assert cat.load_catalog(store).source(source.id).api == source.api
