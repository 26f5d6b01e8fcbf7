"""Import Sites: onboard a whole vendor account in one step (the work is `core.catalog.account_import`'s).

Choose the account (a SolarEdge V2 API key, or the application of an authorised Enphase source), list its sites,
tick the ones to import, choose the channels and an update frequency the account's budget carries, and import:
sites, meters and sources in one transaction, or nothing. Sites already configured are listed apart and skipped.
"""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st

from core.actors import Forbidden, Permission, acting_as
from core.catalog import account_import as ai
from core.catalog import catalog as cat
from core.catalog import quota_plan
from core.catalog.config_io import ConfigImportError
from core.models import Provider, UpdateFrequency
from core.providers.base import ProviderSite
from core.store.crypto import SecretsError
from core.store.store import StoreError
from ui.context import can, get_runtime, page_guard, role_note, session_actor_now
from ui.markdown import escape_markdown

log = logging.getLogger(__name__)
LISTING = "isites_listing"  # (Account, [ProviderSite]) of the last "List sites"
RESULT = "isites_result"  # what the last import created, shown until the next listing
CHOSEN = "isites_chosen"  # the vendor site ids ticked for import
REPORTED = "isites_reported"  # vendor site id -> the channel groups the vendor reports (SolarEdge's device list)
PROVIDER_NAMES = {
    Provider.SOLAREDGE.value: "SolarEdge (V2 API key)",
    Provider.ENPHASE.value: "Enphase (authorised app)",
}


def _list_sites() -> None:
    """Callback of "List sites": the account from the fields, then its sites (one message when that fails)."""
    runtime = get_runtime()
    st.session_state.pop(LISTING, None)
    st.session_state.pop(RESULT, None)
    try:
        if st.session_state.get("isites_provider") == Provider.ENPHASE.value:
            source_id = st.session_state.get("isites_enphase_source")
            if source_id is None:  # clicked before the choice was drawn: the one the box shows first
                authorised = ai.enphase_sources(cat.load_catalog(runtime.store))
                source_id = authorised[0][0] if authorised else None
            if source_id is None:
                raise ai.AccountImportError("Choose an authorised Enphase source.")
            account = ai.enphase_account(runtime.store, runtime.box, int(source_id))
        else:
            account = ai.solaredge_account(st.session_state.get("isites_api_key") or "")
        with acting_as(session_actor_now()):  # a callback runs before the router sets the session's actor
            sites = ai.list_account_sites(account, runtime.settings, runtime.ledger, runtime.store, runtime.box)
    except Exception as exc:  # a callback runs outside `page_guard`: no traceback may reach the page
        st.session_state["isites_error"] = _message(exc)
        return
    st.session_state.pop("isites_error", None)
    st.session_state[LISTING] = (account, sites)
    st.session_state[CHOSEN] = []
    st.session_state[REPORTED] = {}
    st.session_state.pop("isites_meter_note", None)


def _message(exc: Exception) -> str:
    """What a callback's failure tells the user: our own messages as they are, anything else logged."""
    if isinstance(exc, ai.AccountImportError | StoreError | SecretsError | Forbidden):
        return str(exc)
    log.exception("import sites: %s failed", type(exc).__name__)
    return f"Something went wrong ({type(exc).__name__}). Nothing was changed; the details are in the server log."


def _forget() -> None:
    """Another provider, key or application: the listing and its message no longer describe what is on screen.
    (Whichever callback runs first, a listing of the fields as they are now is kept.)"""
    listing = st.session_state.get(LISTING)
    if listing is None or not _describes(listing[0]):
        st.session_state.pop(LISTING, None)
        st.session_state.pop("isites_error", None)


def _describes(account: ai.Account) -> bool:
    state = st.session_state
    if account.provider.value != state.get("isites_provider"):
        return False
    if account.provider is Provider.ENPHASE:
        return account.grant_source == state.get("isites_enphase_source")
    return account.secrets["api_key"].get_secret_value() == str(state.get("isites_api_key") or "").strip()


def _account_fields(catalog: cat.Catalog) -> None:
    provider = st.radio(
        "Provider",
        list(PROVIDER_NAMES),
        format_func=PROVIDER_NAMES.__getitem__,
        horizontal=True,
        key="isites_provider",
        on_change=_forget,
    )
    if provider == Provider.SOLAREDGE.value:
        st.text_input("SolarEdge V2 API Key", type="password", max_chars=600, key="isites_api_key", on_change=_forget)
        # A caption, not `help`: see ui/page.css (a help icon inside a password box loses the typed value on Tab).
        st.caption(
            "The account's API key from the SolarEdge Developer Platform. It is stored encrypted with each imported"
            " source and never shown again."
        )
        ready = True
    else:
        options = dict(ai.enphase_sources(catalog))
        if not options:
            st.info(
                "No authorised Enphase source yet: add one in Data Connections with the application's Client ID,"
                " Client Secret and Application API Key, and use Authorize with Enphase.",
                icon=":material/info:",
            )
            st.page_link("pages/data_connections.py", label="Open Data Connections", icon=":material/cable:")
            ready = False
        else:
            st.selectbox(
                "Authorised Enphase application",
                list(options),
                format_func=options.__getitem__,
                key="isites_enphase_source",
                on_change=_forget,
            )
            st.caption(
                "Its application lists the systems its owner authorised; imported systems share its authorisation."
            )
            ready = True
    st.button(
        "List sites",
        icon=":material/travel_explore:",
        disabled=not ready or not can(Permission.TEST_CONNECTION),
        on_click=_list_sites,
        key="isites_list",
    )
    role_note(Permission.TEST_CONNECTION, "Listing an account's sites")


def _meters_text(groups: frozenset[str] | None) -> str:
    if groups is None:
        return "not checked"
    return ", ".join(ai.GROUPS[g] for g in ai.GROUPS if g in groups) or "none (PV only)"


def _table(sites: list[ProviderSite]) -> list[ProviderSite]:
    """The sites as the vendor lists them, and the ones ticked for import."""
    reported = st.session_state.get(REPORTED, {})
    rows = [
        {
            "Site ID": s.id,
            "Name": s.name,
            "Location": s.location or "",
            "Time zone": s.timezone or "",
            "Peak power (kW)": s.capacity_kw,
            "Meters reported": _meters_text(reported.get(s.id)),
        }
        for s in sites
    ]
    st.dataframe(rows, hide_index=True, width="stretch")
    labels = {s.id: f"{s.name} ({s.id})" for s in sites}
    # Values of an earlier listing are not options of this one: the widget would refuse them.
    st.session_state[CHOSEN] = [v for v in st.session_state.get(CHOSEN, []) if v in labels]
    left, right = st.columns(2)
    left.button("Select all", key="isites_select_all", on_click=_choose, args=(list(labels),))
    right.button("Clear", key="isites_clear", on_click=_choose, args=([],))
    chosen = st.multiselect("Sites to import", list(labels), format_func=labels.__getitem__, key=CHOSEN)
    return [s for s in sites if s.id in set(chosen)]


def _choose(ids: list[str]) -> None:
    st.session_state[CHOSEN] = ids


def _check_meters(account: ai.Account) -> None:
    """Callback of "Check meters": the chosen sites not checked yet, as far as the key's budget allows now."""
    runtime = get_runtime()
    reported = st.session_state.setdefault(REPORTED, {})
    wanted = [site_id for site_id in st.session_state.get(CHOSEN, []) if site_id not in reported]
    try:
        with acting_as(session_actor_now()):
            found = ai.check_meters(account, wanted, runtime.settings, runtime.ledger)
    except Exception as exc:  # a callback runs outside `page_guard`: no traceback may reach the page
        st.session_state["isites_meter_note"] = _message(exc)
        return
    reported.update(found.groups)
    st.session_state["isites_meter_note"] = (
        f"{len(found.unchecked)} site(s) not checked yet: {found.note} Check again then." if found.unchecked else None
    )


def _use_frequency(frequency: UpdateFrequency) -> None:
    st.session_state["isites_frequency"] = frequency


def _quota(checks: list[Any]) -> bool:
    """Show the budget check of the selection; whether it fits."""
    fits = True
    for scope in checks:
        if scope.fits:
            st.success(scope.summary(), icon=":material/check_circle:")
        else:
            fits = False
            st.error(scope.message(), icon=":material/block:")
    return fits


def _import(account: ai.Account, document: dict[str, object]) -> None:
    runtime = get_runtime()
    try:
        report = ai.import_sites(
            runtime.store, runtime.box, account, document, enphase_plan=runtime.settings.enphase_plan
        )
    except ConfigImportError as exc:
        st.error("Nothing was imported:\n" + "\n".join(f"- {escape_markdown(e)}" for e in exc.errors))
        return
    names = [str(site["name"]) for site in document["sites"]]  # type: ignore[attr-defined]
    st.session_state[RESULT] = (account.provider, report, names)
    st.session_state.pop(LISTING, None)
    st.cache_data.clear()
    st.rerun()


def _result() -> None:
    provider, report, names = st.session_state[RESULT]
    st.success(
        f"Imported {report.sites.created} site(s) with {report.meters.created} meter(s) and"
        f" {report.sources.created} source(s).",
        icon=":material/check_circle:",
    )
    st.markdown("\n".join(f"- {escape_markdown(name)}" for name in names[:50]))
    if len(names) > 50:
        st.caption(f"and {len(names) - 50} more")
    note = "Coordinates start at the time zone's main city: correct them in the Control Room."
    if provider is Provider.ENPHASE:
        note += " The Enphase systems use the authorisation of the source you listed them with: none needs its own."
    st.caption(note)
    left, right = st.columns(2)
    with left:
        st.page_link("pages/control_room.py", label="Open the Control Room", icon=":material/domain:")
    with right:
        st.page_link("pages/data_connections.py", label="Open Data Connections", icon=":material/cable:")


def _selection(account: ai.Account, sites: list[ProviderSite], catalog: cat.Catalog) -> None:
    present = ai.configured_ids(catalog, account.provider)
    new = [s for s in sites if s.id not in present]
    st.subheader(f"{len(sites)} site(s) in this account")
    if len(new) < len(sites):
        st.caption(f"{len(sites) - len(new)} of them are configured already and are skipped.")
    if not new:
        st.info("Every site of this account is configured already.", icon=":material/info:")
        return
    chosen = _table(new)
    reported = st.session_state.get(REPORTED, {})
    if account.provider is Provider.SOLAREDGE:
        unchecked = sum(s.id not in reported for s in chosen)
        st.button(
            f"Check meters of {unchecked} chosen site(s)",
            icon=":material/electric_meter:",
            disabled=unchecked == 0,
            on_click=_check_meters,
            args=(account,),
            key="isites_check_meters",
        )
        st.caption(
            "Asks SolarEdge which meters and batteries each chosen site has: one call a site, within the key's"
            " budget (the Free tier allows 10 calls a minute). Checked sites get exactly the channels reported."
        )
        if note := st.session_state.get("isites_meter_note"):
            st.warning(escape_markdown(note), icon=":material/schedule:")
    groups = {name: label for name, label in ai.GROUPS.items() if name != "pv"}
    picked = st.multiselect(
        "Channels besides PV", list(groups), format_func=groups.__getitem__, default=[], key="isites_groups"
    )
    st.caption(
        "For sites whose meters were not checked: the vendors' site lists do not say which meters a site has. Each"
        " channel costs calls; a site without the device reports nothing on it."
    )
    frequencies = list(UpdateFrequency)
    frequency = st.selectbox(
        "Update frequency",
        frequencies,
        index=frequencies.index(UpdateFrequency.HOUR1),
        format_func=lambda f: f"every {f.label}",
        key="isites_frequency",
    )
    runtime = get_runtime()
    document = ai.import_document(account, chosen, frozenset(picked), frequency, catalog, reported)
    fits = True
    if chosen:
        checks = ai.quota_checks(runtime.store, runtime.box, catalog, account, document, runtime.settings.enphase_plan)
        fits = _quota(checks)
        best = quota_plan.common_fastest_fit(checks)
        if best is not None and best != frequency:
            st.caption(f"Fastest frequency this budget carries for the selection: every {best.label}.")
            st.button(
                f"Use every {best.label}",
                key="isites_use_fastest",
                icon=":material/speed:",
                on_click=_use_frequency,
                args=(best,),
            )
    count = len(document["sites"])  # type: ignore[arg-type]
    role_note(Permission.IMPORT, "Importing sites")
    if st.button(
        f"Import {count} site(s)",
        type="primary",
        icon=":material/download:",
        disabled=count == 0 or not fits or not can(Permission.IMPORT),
        key="isites_import",
    ):
        _import(account, document)


with page_guard():
    st.title("Import Sites")
    st.caption(
        "Onboard a whole vendor account: list its sites, pick the ones to add and how often to read them. Sites,"
        " meters and sources are created together, or nothing is; sites already configured are skipped."
    )
    catalog = cat.load_catalog(get_runtime().store)
    _account_fields(catalog)
    if error := st.session_state.get("isites_error"):
        st.error(escape_markdown(error), icon=":material/error:")
    if RESULT in st.session_state:
        _result()
    if LISTING in st.session_state:
        account, sites = st.session_state[LISTING]
        _selection(account, sites, catalog)
