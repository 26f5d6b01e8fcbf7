"""Control Room: sites (name, location, time zone) and their meters.

The site you work on stays open: each site's expander is keyed and its state is ours (OPEN_SITES), set before the
expander is drawn on every run. Streamlit would otherwise reset it whenever the expander's label changes (a meter
added changes the count in the title, a rename the name), and an unkeyed one whenever the list of sites moves, so
every action used to close every site. Creating a site, saving it, adding or saving a meter keep that site open
and make it the site every page shows (`ui.widgets.show_site`); so does opening a site by hand, and a site stays
open after one of its meters is deleted. A fresh session opens the site the dashboard starts on (the address
bar's `?site=`, else the last site used, else the first with data).
"""

from __future__ import annotations

from typing import TypeVar

import streamlit as st
from pydantic import BaseModel, ValidationError

from core.actors import Permission
from core.catalog import catalog as cat
from core.models import CATEGORY_LABELS, Category, MeterIn, SiteIn, known_timezones
from core.validation import field_errors
from ui.context import can, field_error, flash, get_runtime, page_guard, role_note, run_safely, show_flashes
from ui.markdown import escape_markdown
from ui.widgets import choose_site, current_site, keep_site, show_site

TIMEZONES = sorted(known_timezones())
# Every widget of a collapsed expander is still built and sent, and each site form carries the ~600 zones: past
# this many sites the page shows one site at a time, chosen in a select box, so it stays fast for a fleet.
SITES_SHOWN_AT_ONCE = 10
CATEGORIES = list(Category)
OPEN_SITES = "cr_open_sites"  # session state: ids of the sites whose expander is open
OPENED_CHOICE = "cr_opened_choice"  # session state: the chosen site this page last opened for the analyst

EDIT = Permission.EDIT_CONFIG


def _category_label(category: Category) -> str:
    return f"{category.value} · {CATEGORY_LABELS[category]}"


# --- callbacks (run before the page renders, so messages land next to their fields) ------------------------


def _open_sites() -> set[int]:
    opened: set[int] = st.session_state.setdefault(OPEN_SITES, set())
    return opened


def _expander_key(site_id: int) -> str:
    return f"cr_site{site_id}_open"


def _work_on(site_id: int) -> None:
    """The analyst acts on this site: keep it open, and make it the site every page shows."""
    _open_sites().add(site_id)
    show_site(site_id)


def _toggled(site_id: int) -> None:
    if st.session_state.get(_expander_key(site_id)):
        _work_on(site_id)
    else:
        _open_sites().discard(site_id)


Form = TypeVar("Form", bound=BaseModel)  # the model a form's values are validated into


def _site_form_values(prefix: str) -> dict[str, object]:
    return {
        "name": st.session_state.get(f"{prefix}_name", ""),
        "latitude": st.session_state.get(f"{prefix}_lat", ""),
        "longitude": st.session_state.get(f"{prefix}_lon", ""),
        "timezone": st.session_state.get(f"{prefix}_tz") or "",
    }


def _validated(model: type[Form], values: dict[str, object], errors_key: str) -> Form | None:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        st.session_state[errors_key] = field_errors(exc)
        return None


def _create_site() -> None:
    st.session_state["cr_add_site_errors"] = {}
    site = _validated(SiteIn, _site_form_values("cr_add_site"), "cr_add_site_errors")
    created = site and run_safely(cat.create_site, get_runtime().store, site, errors_key="cr_add_site_errors")
    if site and created:
        for suffix in ("name", "lat", "lon"):
            st.session_state[f"cr_add_site_{suffix}"] = ""
        _work_on(created.id)  # open next, also when the fleet shows one site at a time
        flash(f"Site {escape_markdown(repr(site.name))} created")


def _update_site(site_id: int) -> None:
    prefix = f"cr_site{site_id}"
    st.session_state[f"{prefix}_errors"] = {}
    _work_on(site_id)
    site = _validated(SiteIn, _site_form_values(prefix), f"{prefix}_errors")
    if site and run_safely(cat.update_site, get_runtime().store, site_id, site, errors_key=f"{prefix}_errors"):
        flash(f"Site {escape_markdown(repr(site.name))} saved")


def _meter_form(prefix: str) -> MeterIn | None:
    st.session_state[f"{prefix}_errors"] = {}
    values = {"name": st.session_state.get(f"{prefix}_name", ""), "category": st.session_state.get(f"{prefix}_cat")}
    return _validated(MeterIn, values, f"{prefix}_errors")


def _create_meter(site_id: int) -> None:
    prefix = f"cr_add_meter{site_id}"
    _work_on(site_id)
    meter = _meter_form(prefix)
    if meter and run_safely(cat.create_meter, get_runtime().store, site_id, meter, errors_key=f"{prefix}_errors"):
        st.session_state[f"{prefix}_name"] = ""
        flash(f"Meter {escape_markdown(repr(meter.name))} added")


def _update_meter(meter_id: int, site_id: int) -> None:
    prefix = f"cr_meter{meter_id}"
    _work_on(site_id)
    meter = _meter_form(prefix)
    if meter and run_safely(cat.update_meter, get_runtime().store, meter_id, meter, errors_key=f"{prefix}_errors"):
        flash(f"Meter {escape_markdown(repr(meter.name))} saved")


def _ask_delete(kind: str, row_id: int) -> None:
    st.session_state["cr_pending_delete"] = (kind, row_id)


def _cancel_delete() -> None:
    st.session_state.pop("cr_pending_delete", None)


def _confirm_delete(kind: str, row_id: int, name: str) -> None:
    st.session_state.pop("cr_pending_delete", None)
    action = cat.delete_site if kind == "site" else cat.delete_meter
    run_safely(action, get_runtime().store, row_id)
    flash(f"{kind.capitalize()} {name!r} deleted", ":material/delete:")


# --- rendering ---------------------------------------------------------------------------------------------


def _confirm_box(kind: str, row_id: int, name: str, catalog: cat.Catalog) -> None:
    if st.session_state.get("cr_pending_delete") != (kind, row_id):
        return
    meters, sources = cat.dependents(catalog, **{f"{kind}_id": row_id})
    takes = []
    if kind == "site":
        takes.append(f"{meters} meter(s)")
    takes.append(f"{sources} data source(s) with their stored credentials")
    readings = cat.readings_count(get_runtime().store, **{f"{kind}_id": row_id})
    takes.append(f"{readings:,} stored reading(s) with their rollups, runs and alerts")
    st.warning(
        f"Delete {kind} **{escape_markdown(name)}** together with {', '.join(takes[:-1])} and {takes[-1]}?"
        " This cannot be undone."
    )
    yes, no = st.columns(2)
    yes.button(
        "Yes, delete",
        key=f"cr_confirm_{kind}{row_id}",
        type="primary",
        on_click=_confirm_delete,
        args=(kind, row_id, name),
    )
    no.button("Cancel", key=f"cr_cancel_{kind}{row_id}", on_click=_cancel_delete)


def _site_fields(prefix: str, errors: dict[str, str]) -> None:
    st.text_input("Site Name", key=f"{prefix}_name", max_chars=200)
    field_error(errors, "name")
    lat, lon = st.columns(2)
    with lat:
        st.text_input("Latitude", key=f"{prefix}_lat", help="Decimal degrees, -90 to 90 (north positive)")
        field_error(errors, "latitude")
    with lon:
        st.text_input("Longitude", key=f"{prefix}_lon", help="Decimal degrees, -180 to 180 (east positive)")
        field_error(errors, "longitude")
    st.selectbox(
        "Time Zone",
        TIMEZONES,
        key=f"{prefix}_tz",
        accept_new_options=True,
        help="IANA time zone of the site, used to read vendor times and to show local time",
    )
    field_error(errors, "timezone")
    field_error(errors, "_form")


def _init(key: str, value: object) -> None:
    if key not in st.session_state:
        st.session_state[key] = value


def render_add_site(first: bool) -> None:
    """The new-site form; open when there is no site yet (it is all a newcomer can do here)."""
    with st.expander("Add a site", icon=":material/add_location_alt:", expanded=first):
        _init("cr_add_site_tz", "Europe/Brussels")
        errors = st.session_state.get("cr_add_site_errors", {})
        with st.form("cr_add_site_form", border=False):
            _site_fields("cr_add_site", errors)
            st.form_submit_button("Create Site", type="primary", on_click=_create_site, disabled=not can(EDIT))


def render_meter(meter: cat.Meter, catalog: cat.Catalog) -> None:
    prefix = f"cr_meter{meter.id}"
    _init(f"{prefix}_name", meter.name)
    _init(f"{prefix}_cat", meter.category)
    errors = st.session_state.get(f"{prefix}_errors", {})
    sources = len(catalog.sources_of(meter.id))
    with st.container(border=True, key=f"meter-{meter.id}"):
        name_col, cat_col, actions = st.columns([3, 2, 2], vertical_alignment="bottom")
        with name_col:
            st.text_input("Meter Name", key=f"{prefix}_name", max_chars=200)
        with cat_col:
            st.selectbox("Category", CATEGORIES, key=f"{prefix}_cat", format_func=_category_label)
        with actions:
            save, delete = st.columns(2)
            save.button(
                "Save",
                key=f"{prefix}_save",
                on_click=_update_meter,
                args=(meter.id, meter.site_id),
                disabled=not can(EDIT),
            )
            delete.button(
                "Delete",
                key=f"{prefix}_delete",
                on_click=_ask_delete,
                args=("meter", meter.id),
                disabled=not can(Permission.DELETE),
            )
        field_error(errors, "name")
        field_error(errors, "category")
        field_error(errors, "_form")
        st.caption(f"{sources} data source(s)")
        _confirm_box("meter", meter.id, meter.name, catalog)


def render_site(site: cat.Site, catalog: cat.Catalog) -> None:
    prefix = f"cr_site{site.id}"
    _init(f"{prefix}_name", site.name)
    _init(f"{prefix}_lat", f"{site.latitude:g}")
    _init(f"{prefix}_lon", f"{site.longitude:g}")
    _init(f"{prefix}_tz", site.timezone)
    meters = catalog.meters_of(site.id)
    title = f"**{escape_markdown(site.name)}** · {site.timezone} · {len(meters)} meter(s)"
    key = _expander_key(site.id)
    st.session_state[key] = site.id in _open_sites()  # ours, not reset by a new title (see the module docstring)
    with st.expander(title, icon=":material/home_work:", key=key, on_change=_toggled, args=(site.id,)):
        errors = st.session_state.get(f"{prefix}_errors", {})
        with st.form(f"{prefix}_form", border=False):
            _site_fields(prefix, errors)
            st.form_submit_button("Save Site", on_click=_update_site, args=(site.id,), disabled=not can(EDIT))
        st.button(
            "Delete Site",
            key=f"{prefix}_delete",
            on_click=_ask_delete,
            args=("site", site.id),
            disabled=not can(Permission.DELETE),
        )
        _confirm_box("site", site.id, site.name, catalog)

        st.markdown("##### Meters")
        if not meters:
            st.caption("No meters yet.")
        for meter in meters:
            render_meter(meter, catalog)
        add_prefix = f"cr_add_meter{site.id}"
        add_errors = st.session_state.get(f"{add_prefix}_errors", {})
        with st.form(f"{add_prefix}_form", border=True):
            name_col, cat_col = st.columns([3, 2])
            with name_col:
                st.text_input("New Meter Name", key=f"{add_prefix}_name", max_chars=200)
                field_error(add_errors, "name")
            with cat_col:
                st.selectbox("Meter Category", CATEGORIES, key=f"{add_prefix}_cat", format_func=_category_label)
                field_error(add_errors, "category")
            field_error(add_errors, "_form")
            st.form_submit_button("Add Meter", on_click=_create_meter, args=(site.id,), disabled=not can(EDIT))


def _open_the_chosen_site(site: cat.Site | None) -> None:
    """Open the site the dashboard chose (a fresh session, a link, another page's picker) once per change of that
    choice: the analyst may close it afterwards and it stays closed."""
    if site is not None and st.session_state.get(OPENED_CHOICE) != site.id:
        _open_sites().add(site.id)
        st.session_state[OPENED_CHOICE] = site.id


def main() -> None:
    st.title("Control Room")
    st.caption("Sites, their location and time zone, and the meters that measure them.")
    show_flashes()
    with page_guard():
        catalog = cat.load_catalog(get_runtime().store)
        role_note(EDIT, "Changing sites and meters")
        render_add_site(first=not catalog.sites)
        if not catalog.sites:
            st.info("No sites yet: add one above.")
            return
        if len(catalog.sites) > SITES_SHOWN_AT_ONCE:
            st.caption(f"{len(catalog.sites)} sites: pick the one to see and edit.")
            chosen = choose_site("cr_site_pick", catalog)
            _open_the_chosen_site(chosen)
            if chosen is not None:
                render_site(catalog.site(chosen.id), catalog)
            return
        chosen = current_site(catalog)
        _open_the_chosen_site(chosen)
        for site in catalog.sites:
            render_site(site, catalog)
        if chosen is not None:
            keep_site(chosen.id)


main()
