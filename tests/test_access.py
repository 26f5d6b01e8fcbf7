"""Roles checked where the file is written, and the audit log written in the change's own transaction: against real
DuckDB files, through the same functions the pages, the API and the CLI call."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from core.actors import Actor, ActorKind, Forbidden, Role, acting_as
from core.analytics import alerts
from core.catalog import catalog as cat
from core.catalog import users
from core.catalog.connections import draft_from_source, new_draft, save_connections
from core.catalog.users import NoRole, RoleMapping, UserRefused
from core.config import Settings
from core.models import Category, MeterIn, SiteIn
from core.store.audit_log import AuditFilter, read
from core.store.crypto import SecretBox
from core.store.secret_store import rotate_all
from core.store.store import Store

NOW = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
VIEWER = Actor(ActorKind.USER, "vera@example.com", Role.VIEWER, "sub-vera")
EDITOR = Actor(ActorKind.USER, "ed@example.com", Role.EDITOR, "sub-ed")
ADMIN = Actor(ActorKind.USER, "ada@example.com", Role.ADMIN, "sub-ada")
BRUSSELS = SiteIn(name="Plant", latitude=50.85, longitude=4.35, timezone="Europe/Brussels")


def audit(store: Store) -> list[dict[str, object]]:
    with store.connect(read_only=True) as con:
        frame = read(con, AuditFilter(NOW - timedelta(days=3650), datetime.now(UTC) + timedelta(days=1)))
    return list(reversed(frame.to_dicts()))  # oldest first


def counts(store: Store) -> tuple[int, int, int]:
    catalog = cat.load_catalog(store)
    return len(catalog.sites), len(catalog.meters), len(catalog.sources)


def solar(meter: cat.Meter, key: str = "new-a", **values: object):  # type: ignore[no-untyped-def]
    draft = new_draft(key, meter.id, meter.category)
    draft.values |= {"name": "Roof", "capacity_kw": "50", "carbon_intensity_g_per_kwh": "0"}
    draft.values |= {"use_api": True, "api_provider": "solaredge", "system_id": "77", "update_frequency": "1hour"}
    draft.values |= values
    return draft


def test_a_change_is_recorded_with_who_made_it_and_what_changed(store: Store) -> None:
    with acting_as(EDITOR):
        site = cat.create_site(store, BRUSSELS)
        cat.update_site(store, site.id, BRUSSELS.model_copy(update={"name": "Plant North", "latitude": 50.9}))
    created, updated = audit(store)
    assert (created["actor"], created["action"], created["object_type"], created["object_name"]) == (
        "ed@example.com",
        "create",
        "site",
        "Plant",
    )
    assert updated["fields"] == ["name", "latitude"]
    assert json.loads(str(updated["before"])) == {"name": "Plant", "latitude": 50.85}
    assert json.loads(str(updated["after"])) == {"name": "Plant North", "latitude": 50.9}
    assert "Site Name 'Plant' -> 'Plant North'" in str(updated["summary"])


def test_a_viewer_is_refused_and_nothing_changes(store: Store) -> None:
    site = cat.create_site(store, BRUSSELS)
    before = audit(store)
    with acting_as(VIEWER), pytest.raises(Forbidden) as refused:
        cat.create_meter(store, site.id, MeterIn(name="PV", category=Category.PROD))
    assert "viewer" in str(refused.value) and "editor role" in str(refused.value)
    assert counts(store) == (1, 0, 0)
    assert audit(store) == before


def test_an_editor_cannot_enter_a_key_or_delete_but_an_admin_can_and_the_log_never_holds_the_key(
    store: Store, box: SecretBox
) -> None:
    site = cat.create_site(store, BRUSSELS)
    meter = cat.create_meter(store, site.id, MeterIn(name="PV", category=Category.PROD))
    draft = solar(meter)
    draft.secrets = {"api_key": "sk-very-secret-1234"}
    with acting_as(EDITOR), pytest.raises(Forbidden) as refused:
        save_connections(store, box, site.id, [draft], set())
    assert "enter, replace or forget credentials" in str(refused.value)
    assert counts(store) == (1, 1, 0)  # the source was not saved either: all or nothing

    with acting_as(ADMIN):
        save_connections(store, box, site.id, [draft], set())
    (source,) = cat.load_catalog(store).sources
    kinds = [(row["object_type"], row["summary"]) for row in audit(store)[-2:]]
    assert kinds == [("source", "source created"), ("credential", "API Key entered")]

    edited = draft_from_source(source)
    edited.values["capacity_kw"] = "60"
    with acting_as(EDITOR):  # an edit that leaves the key alone is an editor's to make
        save_connections(store, box, site.id, [edited], set())
    assert audit(store)[-1]["summary"] == "Capacity (kW) 50.0 -> 60.0"

    edited.secrets = {"api_key": "sk-second-5678"}
    with acting_as(EDITOR), pytest.raises(Forbidden):
        save_connections(store, box, site.id, [edited], set())
    with acting_as(EDITOR), pytest.raises(Forbidden):
        save_connections(store, box, site.id, [], {source.id})
    assert counts(store) == (1, 1, 1)
    with acting_as(ADMIN):
        save_connections(store, box, site.id, [edited], set())
        cat.delete_site(store, site.id)
    log = audit(store)
    assert [(r["action"], r["object_type"]) for r in log[-4:]] == [
        ("update", "credential"),
        ("delete", "site"),
        ("delete", "meter"),
        ("delete", "source"),
    ]
    with store.connect(read_only=True) as con:
        dumped = str(con.sql("SELECT * FROM audit_log").fetchall())
    assert "sk-very-secret" not in dumped and "sk-second" not in dumped and "(secret)" in dumped


def test_acknowledging_an_alert_needs_an_editor_and_is_recorded(store: Store) -> None:
    site = cat.create_site(store, BRUSSELS)
    with store.transaction() as con:
        con.execute(
            "INSERT INTO alerts (id, rule, source_id, site_id, severity, status, message, opened_at, last_seen_at)"
            " VALUES (1, 'no_data', 9, ?, 'warning', 'open', 'No reading for 2 h', ?, ?)",
            [site.id, NOW, NOW],
        )
    with acting_as(VIEWER), pytest.raises(Forbidden):
        alerts.acknowledge(store, [1], NOW)
    with acting_as(EDITOR):
        assert alerts.acknowledge(store, [1], NOW) == 1
    last = audit(store)[-1]
    assert (last["actor"], last["action"], last["object_type"], last["object_id"]) == (
        "ed@example.com",
        "acknowledge",
        "alert",
        1,
    )


def test_key_rotation_is_an_admins_and_is_recorded(store: Store, box: SecretBox) -> None:
    with acting_as(EDITOR), pytest.raises(Forbidden):
        rotate_all(store, box)
    rotate_all(store, box)  # the operator at the command line
    assert audit(store)[-1]["actor"] == "operator" and audit(store)[-1]["action"] == "rotate keys"


def mapping(**settings: object) -> RoleMapping:
    return RoleMapping.from_settings(Settings(**settings))  # type: ignore[arg-type]


def test_the_first_user_is_admin_later_ones_get_the_default_and_an_admin_gives_roles(store: Store) -> None:
    plain = mapping()
    ada = users.sign_in(store, {"sub": "a", "email": "ada@example.com"}, plain, NOW)
    bob = users.sign_in(store, {"sub": "b", "email": "bob@example.com"}, plain, NOW)
    assert (ada.role, bob.role) == (Role.ADMIN, Role.VIEWER)
    with acting_as(bob), pytest.raises(Forbidden):
        users.set_role(store, "b", Role.ADMIN, NOW, mapping=plain)
    with acting_as(ada):
        users.set_role(store, "b", Role.EDITOR, NOW, mapping=plain)
        with pytest.raises(UserRefused, match="only admin"):
            users.set_role(store, "a", Role.VIEWER, NOW, mapping=plain)
    assert users.sign_in(store, {"sub": "b", "email": "bob@example.com"}, plain, NOW).role is Role.EDITOR
    summaries = [r["summary"] for r in audit(store)]
    assert summaries == [
        "first sign-in, role admin (first user)",
        "first sign-in, role viewer (default)",
        "role viewer -> editor",
    ]
    with pytest.raises(NoRole, match="ask an admin"):
        users.sign_in(store, {"sub": "c"}, mapping(auth_default_role="none"), NOW)


def test_a_role_claim_decides_and_the_users_page_cannot_override_it(store: Store) -> None:
    claims = mapping(auth_role_claim="groups", auth_admin_values="ops", auth_editor_values="analysts,energy")
    users.sign_in(store, {"sub": "a", "groups": ["ops"]}, claims, NOW)
    carl = users.sign_in(store, {"sub": "c", "groups": ["staff", "energy"]}, claims, NOW)
    assert carl.role is Role.EDITOR
    admin = users.sign_in(store, {"sub": "a", "groups": ["ops"]}, claims, NOW)
    with acting_as(admin), pytest.raises(UserRefused, match="'groups' claim"):
        users.set_role(store, "c", Role.VIEWER, NOW, mapping=claims)
    assert users.sign_in(store, {"sub": "c", "groups": "staff"}, claims, NOW).role is Role.VIEWER  # default
