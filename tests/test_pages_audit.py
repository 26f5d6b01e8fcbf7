"""The Audit and Users pages through AppTest, on a real database: what the dashboard's own actions recorded, the
filters, and the Users page without sign-in."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from streamlit.testing.v1 import AppTest

from core.catalog import catalog as cat
from core.models import SiteIn
from tests.crafting import app_store, open_page


def table(app: AppTest) -> pl.DataFrame:
    assert app.dataframe, "no table on the page"
    return pl.from_pandas(app.dataframe[0].value)


def test_the_pages_own_changes_appear_with_their_author_and_the_filters_narrow_them(app_env: Path) -> None:
    app = open_page("pages/control_room.py")  # the demo is seeded on the first run, by the installation
    app.text_input(key="cr_add_site_name").input("Depot")
    app.text_input(key="cr_add_site_lat").input("51.2")
    app.text_input(key="cr_add_site_lon").input("4.4")
    app.button[0].click().run()  # the form's Create Site
    assert not app.exception
    assert [s.name for s in cat.load_catalog(app_store()).sites] == ["Demo Rooftop", "Depot"]

    app.switch_page("pages/audit.py").run()
    assert not app.exception
    rows = table(app)
    depot = rows.filter(pl.col("Name") == "Depot")
    assert depot.select("Who", "Action", "Object", "Change").row(0) == ("local user", "create", "site", "site created")
    assert set(rows.filter(pl.col("Via") == "demo seed")["Who"]) == {"operator"}

    app.selectbox(key="audit_actor").set_value("local user").run()
    assert table(app)["Name"].to_list() == ["Depot"]
    app.selectbox(key="audit_actor").set_value("(all)").run()
    app.text_input(key="audit_text").input("rooftop").run()
    assert set(table(app)["Name"]) == {"Demo Rooftop", "Rooftop PV", "Rooftop PV Array"}
    app.text_input(key="audit_text").input("no such thing").run()
    assert not app.dataframe and "No change matches" in app.info[0].value


def test_changes_made_elsewhere_show_on_the_next_run_newest_first(app_env: Path) -> None:
    app = open_page("pages/audit.py")
    store = app_store()
    site = cat.create_site(store, SiteIn(name="Keys", latitude=50, longitude=4, timezone="UTC"))
    cat.delete_site(store, site.id)
    app.run()
    actions = table(app).filter(pl.col("Name") == "Keys")["Action"].to_list()
    assert actions == ["delete", "create"]  # newest first


def test_the_users_page_says_sign_in_is_off(app_env: Path) -> None:
    app = open_page("pages/users.py")
    assert "Sign-in is not configured" in app.info[0].value
