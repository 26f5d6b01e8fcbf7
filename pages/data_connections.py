"""Data Connections: the sources of every meter, their API connections, tests, and one Save for all."""

from __future__ import annotations

import re
import secrets as token_gen
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import streamlit as st

from core.actors import Forbidden, Permission, acting_as
from core.analytics.live import STALE_FACTOR
from core.analytics.poll_status import (
    SOURCE_OF_LINE,
    PollStatus,
    describe,
    newer_than_test,
    poll_statuses,
    unreported,
)
from core.catalog import catalog as cat
from core.catalog import connections as conn
from core.catalog import enphase_auth, push_sources
from core.catalog.enphase_auth import paste_url, redirect_uri, start_url
from core.catalog.field_labels import SOURCE_LABELS, labelled, source_label
from core.catalog.quota_plan import ScopeCheck
from core.catalog.source_drafts import MQTT_DEFAULTS, OPTION_DEFAULTS
from core.models import (
    MQTT_CONNECTION_FIELDS,
    SOURCE_TYPES,
    STREAM_FIELDS,
    Category,
    ConnectionStatus,
    Provider,
    UpdateFrequency,
    every_label,
)
from core.providers.base import ProviderError
from core.providers.enphase.stream_schedule import cost_note as stream_cost_note
from core.providers.mqtt.spec import UNITS as MQTT_UNITS
from core.providers.registry import CREDENTIAL_LABELS, SPECS, credential_names, spec_of
from core.roles import ROLE_LABELS, role_of
from ui.context import (
    can,
    field_error,
    flash,
    get_runtime,
    page_guard,
    role_note,
    run_safely,
    session_actor_now,
    show_flashes,
)
from ui.markdown import escape_markdown
from ui.widgets import choose_site, show_site

TABS = {
    Category.PROD: "Solar (PROD)",
    Category.CONS: "Consumption (CONS)",
    Category.STOR: "Storage (STOR)",
    Category.INJ: "Injection (INJ)",
}
NUMBER_FIELDS = tuple(
    (field, SOURCE_LABELS[field]) for field in ("capacity_kw", "carbon_intensity_g_per_kwh", "cost_per_mwh")
)


# --- draft state: widget values over the stored source -------------------------------------------------------


# A draft's widgets are keyed `dc_<draft key>_<field>`, draft keys being `s<source id>` or `new-<hex>`. Page-level
# keys such as the site picker's `dc_site_id` also start with `dc_s`: only this pattern tells them apart.
_DRAFT_WIDGET_KEY = re.compile(r"dc_(s\d+|new-[0-9a-f]+)_")


def _wkey(draft_key: str, field: str) -> str:
    return f"dc_{draft_key}_{field}"


def _is_draft_widget(key: object) -> bool:
    return _DRAFT_WIDGET_KEY.match(str(key)) is not None


def _provider_field(draft_key: str, provider: str, field: str) -> str:
    return _wkey(draft_key, f"{provider}_{field}")


def _new_entries(site_id: int) -> list[dict]:
    return st.session_state.setdefault("dc_new", {}).setdefault(site_id, [])


def _removed(site_id: int) -> set[int]:
    return st.session_state.setdefault("dc_removed", {}).setdefault(site_id, set())


def _tests() -> dict[str, tuple[str, conn.TestOutcome]]:
    """Each draft's last test this session, with the fingerprint of the settings it tested (`conn.tested_settings`):
    the result belongs to those settings only."""
    return st.session_state.setdefault("dc_tests", {})


def _errors() -> dict[str, dict[str, str]]:
    return st.session_state.setdefault("dc_errors", {})


def _base_drafts(catalog: cat.Catalog, site_id: int) -> list[conn.SourceDraft]:
    """The site's drafts before widget edits: stored sources not marked for removal, then new ones."""
    removed = _removed(site_id)
    drafts = [conn.draft_from_source(s) for s in catalog.sources_of_site(site_id) if s.id not in removed]
    for entry in _new_entries(site_id):
        drafts.append(conn.new_draft(entry["key"], entry["meter_id"], Category(entry["category"])))
    return drafts


def _with_edits(base: conn.SourceDraft, stored_provider: str) -> conn.SourceDraft:
    """Overlay what the user typed (present in session state) on the base draft."""
    state = st.session_state
    values = dict(base.values)
    for field in ("name", "source_type", "capacity_kw", "carbon_intensity_g_per_kwh", "cost_per_mwh"):
        values[field] = state.get(_wkey(base.key, field), values[field])
    values["use_api"] = state.get(_wkey(base.key, "use_api"), values["use_api"])
    values["update_frequency"] = state.get(_wkey(base.key, "update_frequency"), values["update_frequency"])
    provider = state.get(_wkey(base.key, "api_provider"), values["api_provider"])
    values["api_provider"] = provider
    same_provider = provider == stored_provider
    for field in ("system_id", "client_id"):
        default = values[field] if same_provider else ""
        values[field] = state.get(_provider_field(base.key, provider, field), default)
    for field in (*MQTT_CONNECTION_FIELDS, *STREAM_FIELDS):
        default = values[field] if same_provider else OPTION_DEFAULTS[field]
        values[field] = state.get(_provider_field(base.key, provider, field), default)
    secrets = {}
    for name in credential_names(provider):
        default = base.secrets.get(name, "") if same_provider else ""
        secrets[name] = state.get(_provider_field(base.key, provider, name), default)
    draft = conn.SourceDraft(base.key, base.meter_id, base.source_id, values, secrets)
    kept = _tests().get(base.key)
    if kept is not None and kept[0] == conn.tested_settings(draft):  # else the test was of other settings
        draft.test = kept[1]
    return draft


def _current_drafts(catalog: cat.Catalog, site_id: int) -> list[conn.SourceDraft]:
    stored = {f"s{s.id}": s.api.api_provider.value for s in catalog.sources_of_site(site_id)}
    return [_with_edits(d, stored.get(d.key, d.values["api_provider"])) for d in _base_drafts(catalog, site_id)]


# --- callbacks ----------------------------------------------------------------------------------------------


def _add_source(site_id: int, meter: cat.Meter) -> None:
    key = f"new-{token_gen.token_hex(4)}"
    _new_entries(site_id).append({"key": key, "meter_id": meter.id, "category": meter.category.value})


def _remove_source(site_id: int, draft_key: str, source_id: int | None) -> None:
    if source_id is None:
        entries = _new_entries(site_id)
        entries[:] = [e for e in entries if e["key"] != draft_key]
    else:
        _removed(site_id).add(source_id)
    _errors().pop(draft_key, None)


def _undo_remove(site_id: int, source_id: int) -> None:
    _removed(site_id).discard(source_id)


def _test_source(site_id: int, draft_key: str) -> None:
    runtime = get_runtime()
    store, box = runtime.store, runtime.box
    catalog = cat.load_catalog(store)
    draft = next((d for d in _current_drafts(catalog, site_id) if d.key == draft_key), None)
    if draft is None:
        return
    draft.test = None
    outcome = run_safely(conn.test_connection, store, box, site_id, draft, datetime.now(UTC), runtime.providers)
    if outcome is not None:
        _tests()[draft_key] = (conn.tested_settings(draft), outcome)


def _save_all(site_id: int) -> None:
    runtime = get_runtime()
    catalog = cat.load_catalog(runtime.store)
    drafts = _current_drafts(catalog, site_id)
    st.session_state["dc_errors"] = {}
    removed = set(_removed(site_id))
    report = run_safely(
        conn.save_connections,
        runtime.store,
        runtime.box,
        site_id,
        drafts,
        removed,
        errors_key="dc_errors",
        enphase_plan=runtime.settings.enphase_plan,
    )
    if report is None:
        return
    # Saved: forget the drafts so every widget shows the stored values again (secrets masked). The site picker
    # keeps its choice: the user stays on the site just saved and sees what was added.
    for key in [k for k in st.session_state if _is_draft_widget(k)]:
        del st.session_state[key]
    st.session_state["dc_new"].pop(site_id, None)
    st.session_state["dc_removed"].pop(site_id, None)
    st.session_state["dc_tests"] = {}
    st.session_state["dc_errors"] = {}
    flash(
        f"Saved: {report.created} added, {report.updated} updated, {report.removed} removed, "
        f"{report.unchanged} unchanged"
    )
    st.session_state["dc_saved"] = report  # listed above the tabs in the next run (`_saved_summary`)
    # A source just saved as Push gets its token now, shown once in its panel.
    made = run_safely(push_sources.tokens_for_new, runtime.store, runtime.box, site_id, datetime.now(UTC))
    _push_tokens().update(made or {})


def _saved_summary() -> None:
    """Once, after a save: which sources it added, changed and removed, by name."""
    report: conn.SaveReport | None = st.session_state.pop("dc_saved", None)
    if report is None:
        return
    parts = [
        f"{verb} {', '.join(f'**{escape_markdown(name)}**' for name in names)}"
        for verb, names in (("added", report.added), ("changed", report.changed), ("removed", report.removed_names))
        if names
    ]
    if not parts:
        st.info("Saved: nothing had changed.", icon=":material/check_circle:")
        return
    st.success("Saved: " + "; ".join(parts) + ".", icon=":material/check_circle:")


# --- rendering ----------------------------------------------------------------------------------------------


def _init(key: str, value: object) -> None:
    if key not in st.session_state:
        st.session_state[key] = value


def _text_field(label: str, key: str, start: str, **options: Any) -> None:
    """A text box starting at `start` (the stored value, or a new source's default).

    The start goes both into session state (`_init`: it replaces what the browser shows after a save, when the
    box's state was dropped) and into the widget as `value=`: session state reaches the browser only with the run
    that set it, so a rerun arriving while the page was still drawing left the box blank (Carbon Intensity and Cost
    of a just-added source came up empty and Save refused them), while `value=` travels with the widget itself.
    """
    _init(key, start)
    st.text_input(label, value=start, key=key, **options)


def _settings_changed(draft: conn.SourceDraft, stored: cat.Source | None) -> bool:
    """True when the draft has no test of its own (see `_with_edits`) and the saved result, if any, is of other
    settings, while some result exists: this session's test of other settings, or that saved one."""
    if stored is not None and (
        stored.api.last_tested is not None or stored.api.connection_status is not ConnectionStatus.UNTESTED
    ):
        # False when the saved settings are (back) on screen: their result describes them.
        return conn.tested_settings(draft) != conn.tested_settings(conn.draft_from_source(stored))
    return draft.key in _tests()


def _status(
    draft: conn.SourceDraft, stored: cat.Source | None, tz: ZoneInfo, poll: PollStatus | None, category: Category
) -> None:
    """What is known of exactly the settings on screen: this session's test of them; else, for saved settings, the
    newer of the stored test and the collector's last poll; untested, saying why, when they changed."""
    outcome = draft.test
    stale = outcome is None and _settings_changed(draft, stored)
    with st.container(key=f"status-{draft.key}"):
        if not draft.values["use_api"]:
            st.info("**No API**: imported or manual data", icon=":material/upload_file:")
            return
        if outcome is None and not stale and stored is not None and newer_than_test(poll, stored.api.last_tested):
            assert poll is not None
            _poll_line(poll, stored, tz, category)
            return
        _test_line(draft, stored, tz, outcome, stale)


def _poll_line(poll: PollStatus, stored: cat.Source, tz: ZoneInfo, category: Category) -> None:
    role = role_of(category, stored.source_type)
    spec = spec_of(stored.api.api_provider)
    missing = unreported(spec.label, ROLE_LABELS[role]) if role else ""
    line = describe(poll, datetime.now(UTC), tz, role.unit if role else "W", missing, spec.delivery)
    text = f"**{line.headline}** · {escape_markdown(line.text)}"
    if line.kind == "ok":
        st.success(text, icon=":material/check_circle:")
    elif line.kind == "failing":
        st.error(text, icon=":material/error:")
    else:
        st.warning(text, icon=":material/block:")
    st.caption(f"From {SOURCE_OF_LINE[spec.delivery]} · Last tested: {_tested_when(stored.api.last_tested, tz)}")


def _test_line(
    draft: conn.SourceDraft,
    stored: cat.Source | None,
    tz: ZoneInfo,
    outcome: conn.TestOutcome | None,
    stale: bool,
) -> None:
    if outcome is not None:
        status, message, tested = outcome.status, outcome.message, outcome.tested_at
    elif stale:
        status, message, tested = ConnectionStatus.UNTESTED, "", None
    elif stored is not None:
        api = stored.api
        status, tested = api.connection_status, api.last_tested
        message = api.last_error or ""
        if status is ConnectionStatus.CONNECTED and api.last_power_w is not None:
            message = f"current power {api.last_power_w / 1000:,.1f} kW at the last test"
    else:
        status, message, tested = ConnectionStatus.UNTESTED, "", None
    message = escape_markdown(message)
    if status is ConnectionStatus.CONNECTED:
        st.success(f"**Connected** · {message}", icon=":material/check_circle:")
    elif status is ConnectionStatus.FAILED:
        st.error(f"**Failed** · {message}", icon=":material/error:")
    elif status is ConnectionStatus.REAUTHORIZE:
        st.warning(f"**Re-authorise** · {message}", icon=":material/key:")
    elif stale:
        st.info("**Untested** (settings changed since the last test)", icon=":material/radio_button_unchecked:")
    else:
        st.info(f"**Untested** {('· ' + message) if message else ''}", icon=":material/radio_button_unchecked:")
    st.caption(f"Last tested: {_tested_when(tested, tz)}{' with these settings' if stale else ''}")


def _tested_when(tested: datetime | None, tz: ZoneInfo) -> str:
    return tested.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z") if tested else "never"


def _credentials(
    draft: conn.SourceDraft,
    provider: Provider,
    errors: dict[str, str],
    stored_provider: str,
    shared_from: str | None = None,
) -> None:
    same = provider.value == stored_provider
    spec = spec_of(provider)
    id_label = spec.system_id_label
    if spec.setup_note:
        st.caption(spec.setup_note)
        if provider is Provider.PUSH:
            _push_panel(draft, saved_as_push=same and draft.source_id is not None)
        return
    if provider is Provider.MQTT:
        _mqtt_fields(draft, errors, same)
    cols = st.columns(2)
    with cols[0]:
        if spec.client_id_label:
            key = _provider_field(draft.key, provider.value, "client_id")
            _text_field(spec.client_id_label, key, draft.values["client_id"] if same else "", max_chars=200)
            field_error(errors, "client_id")
        if id_label:
            key = _provider_field(draft.key, provider.value, "system_id")
            _text_field(id_label, key, draft.values["system_id"] if same else "", max_chars=200)
            field_error(errors, "system_id")
    with cols[1]:
        for credential in spec.credentials:
            name = credential.name
            key = _provider_field(draft.key, provider.value, name)
            _text_field(
                credential.label,
                key,
                draft.secrets.get(name, "") if same else "",
                type="password",
                max_chars=600,
                disabled=not can(Permission.CREDENTIALS),
            )
            # A caption, not `help`: the help icon sits inside the widget, and Shift+Tab onto it would keep the
            # typed value uncommitted (see ui/page.css).
            masked = draft.secrets.get(name) == conn.MASKED  # stored, not retyped
            stored_hint = " The stored value is shown masked; leave it to keep it." if masked else ""
            st.caption(f"Stored encrypted.{stored_hint}")
            field_error(errors, name)
    if shared_from and same:
        st.caption(
            f"Uses the credentials of **{escape_markdown(shared_from)}**, stored once for the account's sources:"
            " change them there. A credential typed here gives this source its own."
        )
    if provider is Provider.ENPHASE:
        _enphase_authorization(draft, same, shared_from)
        _stream_fields(draft, errors, same)


def _mqtt_fields(draft: conn.SourceDraft, errors: dict[str, str], same: bool) -> None:
    """An MQTT source's broker and what it reads there (docs/mqtt-devices.md); the password follows with the
    credentials."""
    start = {f: draft.values[f] if same else MQTT_DEFAULTS[f] for f in MQTT_CONNECTION_FIELDS}

    def key(field: str) -> str:
        return _provider_field(draft.key, Provider.MQTT.value, field)

    host, port, tls = st.columns([3, 1, 1])
    with host:
        _text_field("Broker Host", key("mqtt_host"), str(start["mqtt_host"]), max_chars=253)
        field_error(errors, "mqtt_host")
    with port:
        _init(key("mqtt_port"), int(start["mqtt_port"]))
        st.number_input("Broker Port", min_value=1, max_value=65_535, step=1, key=key("mqtt_port"))
        field_error(errors, "mqtt_port")
    with tls:
        _init(key("mqtt_tls"), bool(start["mqtt_tls"]))
        st.checkbox("TLS", key=key("mqtt_tls"))
    _text_field("Broker User", key("mqtt_user"), str(start["mqtt_user"]), max_chars=256)
    field_error(errors, "mqtt_user")
    topic, path, unit = st.columns([3, 2, 1])
    with topic:
        _text_field("Topic", key("mqtt_topic"), str(start["mqtt_topic"]), max_chars=1024)
        st.caption("Wildcards fill a level: `+` one, `#` the rest (last).")
        field_error(errors, "mqtt_topic")
    with path:
        _text_field("Payload Path", key("mqtt_payload_path"), str(start["mqtt_payload_path"]), max_chars=256)
        st.caption("Empty: the message is the number; `ENERGY.Power` in JSON.")
        field_error(errors, "mqtt_payload_path")
    with unit:
        _init(key("mqtt_unit"), start["mqtt_unit"] if start["mqtt_unit"] in MQTT_UNITS else "W")
        st.selectbox("Unit", MQTT_UNITS, key=key("mqtt_unit"))
        field_error(errors, "mqtt_unit")


def _stream_fields(draft: conn.SourceDraft, errors: dict[str, str], same: bool) -> None:
    """When Enphase's live stream of this source's system is open (docs/real-time.md): while someone watches its site
    on Live, and on a schedule; each stream opened is a call of the plan."""
    runtime = get_runtime()
    start = {f: draft.values[f] if same else OPTION_DEFAULTS[f] for f in STREAM_FIELDS}

    def key(field: str) -> str:
        return _provider_field(draft.key, Provider.ENPHASE.value, field)

    watched, scheduled = st.columns([2, 3])
    with watched:
        _init(key("stream_on_live"), bool(start["stream_on_live"]))
        st.checkbox("Stream While Watched", key=key("stream_on_live"))
        st.caption("Live follows this system second by second while someone watches its site.")
    with scheduled:
        _text_field("Stream Schedule", key("stream_schedule"), str(start["stream_schedule"]), max_chars=40)
        field_error(errors, "stream_schedule")
        st.caption(escape_markdown(stream_cost_note(str(st.session_state.get(key("stream_schedule"), "off")),
                                                    runtime.settings.enphase_plan)))  # fmt: skip


def _push_tokens() -> dict[int, tuple[str, str]]:
    """Tokens made in this session, shown once: {source id: (source name, token)}."""
    return st.session_state.setdefault("dc_push_tokens", {})


def _push_panel(draft: conn.SourceDraft, *, saved_as_push: bool) -> None:
    """A Push source's endpoint, its token (shown once, when made) and the buttons that replace or withdraw it."""
    if not saved_as_push or draft.source_id is None:
        st.caption("Save this source first: its endpoint and token are shown then.")
        return
    runtime = get_runtime()
    source_id = draft.source_id
    st.markdown("Endpoint (`POST`, JSON or CSV; see the README's *Push endpoint*):")
    st.code(push_sources.endpoint_url(runtime.settings, source_id), language=None)
    fresh = _push_tokens().pop(source_id, None)
    if fresh is not None:
        st.warning(
            "Copy this token now: it is shown once and stored only as a hash. The sender sends it as"
            " `Authorization: Bearer <token>`.",
            icon=":material/key:",
        )
        st.code(fresh[1], language=None)
    info = run_safely(push_sources.token_of, runtime.store, source_id)
    if info is None and fresh is None:
        st.caption("No token: requests are refused until one is made.")
    elif info is not None:
        mode = "signed requests (HMAC)" if info.signed else "Bearer token"
        st.caption(f"Token ending in `{info.hint}` ({mode}), made {info.created_at:%Y-%m-%d %H:%M} UTC.")
    signed = st.checkbox(
        "Signed requests (for webhook senders: X-Timestamp and an HMAC-SHA256 X-Signature)",
        key=f"dc_push_signed_{draft.key}",
        value=bool(info and info.signed),
    )
    make, revoke = st.columns(2)
    make.button(
        "Rotate token" if info is not None else "Make token",
        key=f"dc_push_make_{draft.key}",
        icon=":material/autorenew:",
        on_click=_make_push_token,
        args=(source_id, draft.values["name"], signed),
        disabled=not can(Permission.CREDENTIALS),
    )
    if info is not None:
        revoke.button(
            "Revoke token",
            key=f"dc_push_revoke_{draft.key}",
            icon=":material/block:",
            on_click=_revoke_push_token,
            args=(source_id, draft.values["name"]),
            disabled=not can(Permission.CREDENTIALS),
        )


def _make_push_token(source_id: int, name: str, signed: bool) -> None:
    runtime = get_runtime()
    token = run_safely(push_sources.make_token, runtime.store, runtime.box, source_id, datetime.now(UTC), signed=signed)
    if token is not None:
        _push_tokens()[source_id] = (name, token)
        flash(f"New token for {name}: the old one no longer works.")


def _revoke_push_token(source_id: int, name: str) -> None:
    if run_safely(push_sources.revoke_token, get_runtime().store, source_id):
        flash(f"Token of {name} revoked: its requests are refused from now on.")


def _enphase_authorization(draft: conn.SourceDraft, saved_as_enphase: bool, shared_from: str | None) -> None:
    """The owner's consent: a link to Enphase that comes back to this page, or a pasted code. A source that shares
    another's credentials (`shared_from`, set up by Import Sites) uses that source's authorisation: authorising it
    renews the shared one."""
    runtime = get_runtime()
    stored_client_id = draft.values.get("client_id", "") if saved_as_enphase else ""
    if shared_from and saved_as_enphase:
        st.caption(
            f"Authorised through **{escape_markdown(shared_from)}**: the owner's authorisation, shared by the systems"
            " that use its credentials. Authorising again here renews it for all of them."
        )
    with st.expander("Authorize with Enphase", icon=":material/key:"):
        if draft.source_id is None or not stored_client_id or "client_secret" not in draft.secrets:
            st.caption("Save this source with its Client ID and Client Secret first; then authorise it here.")
            return
        st.caption(f"Register this redirect URI in the Enphase developer portal: `{redirect_uri(runtime.settings)}`")
        url = start_url(runtime.settings, runtime.box, draft.source_id, stored_client_id)
        st.link_button(
            "Authorize with Enphase", url, icon=":material/open_in_new:", disabled=not can(Permission.CREDENTIALS)
        )
        st.caption(
            "Or, when your Enphase app keeps Enphase's default redirect, get a code from Enphase, paste it below and "
            "complete the authorization."
        )
        st.link_button(
            "Get a code from Enphase",
            paste_url(runtime.settings, stored_client_id),
            icon=":material/open_in_new:",
        )
        code_key = _provider_field(draft.key, "enphase", "authorization_code")
        st.text_input("Authorization Code", key=code_key, type="password")
        st.button(
            "Complete Authorization",
            key=f"dc_complete_{draft.key}",
            on_click=_complete_authorization,
            args=(draft.source_id,),
            kwargs={"code_key": code_key},
            disabled=not can(Permission.CREDENTIALS),
        )


def _complete_authorization(source_id: int, *, code: str | None = None, code_key: str | None = None) -> None:
    """Exchange a code for tokens: `code` as Enphase returned it to this page, or the one pasted into the text box
    whose session-state key is `code_key` (keyword-only: a key passed as the code would be sent to Enphase).
    Messages go to a toast (the page may have come back from Enphase)."""
    runtime = get_runtime()
    code = code if code is not None else str(st.session_state.get(code_key or "", "")).strip()
    if not code:
        flash("Paste the authorization code first.", ":material/error:")
        return
    try:
        with acting_as(session_actor_now()):  # a callback runs before the router sets the session's actor
            name = enphase_auth.complete(
                runtime.store,
                runtime.box,
                runtime.settings,
                source_id,
                code,
                datetime.now(UTC),
                pasted=code_key is not None,
            )
    except Forbidden as exc:
        flash(str(exc), ":material/lock:")
        return
    except ProviderError as exc:
        flash(str(exc), ":material/error:")
        return
    if code_key:
        st.session_state[code_key] = ""
    _tests().clear()
    flash(f"Enphase authorised {name}: use Test Connection to check it.")


def _handle_oauth_return() -> None:
    """Enphase sent the owner back with ?code=&state= (or ?error=): finish, then clean the address bar."""
    params = st.query_params
    if "error" in params and "state" in params:
        flash(f"Enphase authorization was not granted ({params['error'][:40]}).", ":material/error:")
    elif "code" in params and "state" in params:
        try:
            source_id = enphase_auth.source_of_state(get_runtime().box, params["state"])
        except ProviderError as exc:
            flash(str(exc), ":material/error:")
        else:
            _complete_authorization(source_id, code=params["code"])
            site = cat.load_catalog(get_runtime().store).site_of_source(source_id)
            if site is not None:
                show_site(site.id)
    else:
        return
    st.query_params.clear()


def _quota_lines(scopes: list[ScopeCheck], errors: dict[str, str]) -> None:
    """Under Update Frequency: the calls this schedule costs in each vendor budget the source shares, or why it
    cannot fit and which frequency would (the same figures Save All Connections refuses on)."""
    for scope in scopes:
        if scope.fits or "update_frequency" in errors:  # a refused save already says why, just above
            st.caption(scope.summary())
        else:
            st.error(scope.message(), icon=":material/speed:")


# What the Update Frequency of a source nobody polls stands for, by how its readings arrive (its spec's `delivery`).
_EXPECTED = {
    "push": "the cadence its sender is expected to keep",
    "subscribe": "how often readings of its device are expected (stored each minute while it publishes)",
}


def _span(minutes: float) -> str:
    return every_label(int(minutes)) if float(minutes).is_integer() else f"{minutes:g} min"


def _cadence_note(provider: Provider, frequency: str) -> None:
    """Under Update Frequency, for a Push or MQTT source: nothing polls it, so the frequency is the cadence its
    readings are expected at, which Live's staleness and the no-data alert judge it by (said with their limits)."""
    expected = _EXPECTED.get(spec_of(provider).delivery)
    if expected is None:
        return
    minutes = UpdateFrequency(frequency).minutes
    factor = get_runtime().settings.alert_no_data_factor
    stale, late = STALE_FACTOR * minutes, factor * minutes
    if stale == late:
        judged = (
            f"Live shows the source stale, and the No data alert fires, once no reading has arrived for {_span(late)}"
            f" ({factor:g} x this)."
        )
    else:
        judged = (
            f"Live shows the source stale after {_span(stale)} without a reading ({STALE_FACTOR} x this); the No data"
            f" alert fires after {_span(late)} ({factor:g} x this)."
        )
    st.caption(f"Not a poll interval: {expected}. {judged}")


def render_source(
    site_id: int,
    draft: conn.SourceDraft,
    category: Category,
    stored: cat.Source | None,
    tz,
    quota: list[ScopeCheck] | None = None,
    poll: PollStatus | None = None,
    shared_from: str | None = None,
) -> None:
    """`shared_from`: "Site / Meter / Source" whose credentials this source uses, if it shares another's."""
    errors = _errors().get(draft.key, {})
    stored_provider = stored.api.api_provider.value if stored else draft.values["api_provider"]
    _init(_wkey(draft.key, "source_type"), draft.values["source_type"])
    _init(_wkey(draft.key, "use_api"), draft.values["use_api"])
    _init(_wkey(draft.key, "api_provider"), draft.values["api_provider"])
    _init(_wkey(draft.key, "update_frequency"), draft.values["update_frequency"])
    with st.container(border=True, key=f"source-{draft.key}"):
        title = draft.values["name"] or "New data source"
        head, remove = st.columns([5, 1], vertical_alignment="center")
        head.markdown(f"**{escape_markdown(title)}**" + ("" if stored else " · _not saved yet_"))
        remove.button(
            "Remove",
            key=f"dc_remove_{draft.key}",
            icon=":material/delete:",
            on_click=_remove_source,
            args=(site_id, draft.key, draft.source_id),
            disabled=not can(Permission.DELETE if stored else Permission.EDIT_CONFIG),
        )
        name_col, type_col = st.columns([3, 2])
        with name_col:
            _text_field("Source Name", _wkey(draft.key, "name"), draft.values["name"], max_chars=200)
            field_error(errors, "name")
        with type_col:
            types = SOURCE_TYPES[category]
            st.selectbox("Source Type", list(types), key=_wkey(draft.key, "source_type"), format_func=types.__getitem__)
            field_error(errors, "source_type")
        for column, (field, label) in zip(st.columns(3), NUMBER_FIELDS, strict=True):
            with column:
                _text_field(label, _wkey(draft.key, field), draft.values[field], max_chars=40)
                field_error(errors, field)
        st.toggle("Enable API", key=_wkey(draft.key, "use_api"))
        if st.session_state[_wkey(draft.key, "use_api")]:
            provider_col, frequency_col = st.columns(2)
            with provider_col:
                st.selectbox(
                    "API Provider",
                    [p.value for p in SPECS],
                    key=_wkey(draft.key, "api_provider"),
                    format_func=lambda code: spec_of(code).label,
                )
                field_error(errors, "api_provider")
            provider = Provider(st.session_state[_wkey(draft.key, "api_provider")])
            with frequency_col:
                st.selectbox(
                    "Update Frequency",
                    [f.value for f in UpdateFrequency],
                    key=_wkey(draft.key, "update_frequency"),
                    format_func=lambda code: UpdateFrequency(code).label,
                )
                field_error(errors, "update_frequency")
                _quota_lines(quota or [], errors)
                _cadence_note(provider, st.session_state[_wkey(draft.key, "update_frequency")])
            _credentials(draft, provider, errors, stored_provider, shared_from)
            st.button(
                "Test Connection",
                key=f"dc_test_{draft.key}",
                icon=":material/network_check:",
                on_click=_test_source,
                args=(site_id, draft.key),
                disabled=not can(Permission.TEST_CONNECTION),
            )
        _status(draft, stored, tz, poll, category)
        for field, message in errors.items():
            shown = {"name", "source_type", "api_provider", "update_frequency", "system_id", "client_id"}
            shown |= {f for f, _ in NUMBER_FIELDS} | set(CREDENTIAL_LABELS) | set(MQTT_CONNECTION_FIELDS)
            if field not in shown:
                st.error(labelled(message, source_label(field)))


def render_meter(
    site_id: int,
    meter: cat.Meter,
    drafts,
    catalog: cat.Catalog,
    tz: ZoneInfo,
    quota: dict[str, list[ScopeCheck]] | None = None,
    polls: dict[int, PollStatus] | None = None,
) -> None:
    st.subheader(escape_markdown(meter.name), divider="gray")
    mine = [d for d in drafts if d.meter_id == meter.id]
    if not mine:
        st.caption("No data sources yet.")
    for draft in mine:
        stored = catalog.source(draft.source_id) if draft.source_id is not None else None
        poll = (polls or {}).get(draft.source_id) if draft.source_id is not None else None
        shared = _shared_from(catalog, stored)
        render_source(site_id, draft, meter.category, stored, tz, (quota or {}).get(draft.key), poll, shared)
    for source in catalog.sources_of(meter.id):
        if source.id in _removed(site_id):
            note, undo = st.columns([5, 1], vertical_alignment="center")
            readings = cat.readings_count(get_runtime().store, source_id=source.id)
            note.warning(
                f"**{escape_markdown(source.name)}** will be removed when you save, with its {readings:,} stored"
                " reading(s), rollups, runs and alerts.",
                icon=":material/delete:",
            )
            undo.button("Undo", key=f"dc_undo_{source.id}", on_click=_undo_remove, args=(site_id, source.id))
    st.button(
        "Add Data Source",
        key=f"dc_add_{meter.id}",
        icon=":material/add:",
        on_click=_add_source,
        args=(site_id, meter),
        disabled=not can(Permission.EDIT_CONFIG),
    )


def _shared_from(catalog: cat.Catalog, stored: cat.Source | None) -> str | None:
    """The source whose credentials `stored` uses, by its names, if it shares those of one that still exists."""
    holder = stored.api.credentials_source_id if stored else None
    try:
        return " / ".join(catalog.names_of(holder).values()) if holder is not None else None
    except cat.NotFound:  # deleted by an older version, which did not hand the grant over
        return None


def _error_summary(drafts: list[conn.SourceDraft]) -> None:
    errors = _errors()
    if not errors:
        return
    count = sum(len(v) for v in errors.values())
    names = {d.key: d.values.get("name") or "New data source" for d in drafts}
    providers = {d.key: d.values.get("api_provider") for d in drafts}  # names the ID field ("Site ID")
    lines = [
        f"- **{escape_markdown(names.get(key, key))}** · "
        + escape_markdown(labelled(msg, source_label(field, providers.get(key))))
        for key, fields in errors.items()
        for field, msg in fields.items()
    ]
    st.error(f"{count} problem(s) to fix before saving; nothing was saved.\n" + "\n".join(lines))


def main() -> None:
    st.title("Data Connections")
    st.caption("Attach data sources to meters, connect them to monitoring APIs, test, and save everything at once.")
    with page_guard():
        _handle_oauth_return()
        show_flashes()
        runtime = get_runtime()
        catalog = cat.load_catalog(runtime.store)
        if not catalog.sites:
            st.info("No sites yet: create one in the Control Room first.")
            st.page_link("pages/control_room.py", label="Open the Control Room", icon=":material/domain:")
            return
        site = choose_site("dc_site_id", catalog)  # the shared choice: this session's, ?site=, the last used
        if site is None:  # not reached: an empty catalog returned above
            return
        site_id = site.id
        tz = ZoneInfo(site.timezone)
        drafts = _current_drafts(catalog, site_id)
        quota = conn.quota_checks(
            runtime.store, runtime.box, catalog, drafts, _removed(site_id), enphase_plan=runtime.settings.enphase_plan
        )
        polls = poll_statuses(runtime.store, [s.id for s in catalog.sources_of_site(site_id)], datetime.now(UTC))
        role_note(Permission.EDIT_CONFIG, "Changing data sources")
        role_note(Permission.CREDENTIALS, "Entering or replacing credentials, tokens and authorisations")
        # Always drawn, even empty: a message that comes and goes in the page's own list of elements would shift
        # everything after it, and Streamlit then redraws those afresh, closing the open expanders below.
        with st.container(key="dc_messages"):
            _saved_summary()
            _error_summary(drafts)
        # Keyed, so the tab you work in stays selected across the reruns of Test, Save and every edit.
        tabs = st.tabs(list(TABS.values()), key="dc_tab", on_change="rerun")
        for category, tab in zip(TABS, tabs, strict=True):
            with tab:
                meters = catalog.meters_of(site_id, category)
                if not meters:
                    st.info(f"This site has no {category.value} meter yet: add one in the Control Room.")
                for meter in meters:
                    render_meter(site_id, meter, drafts, catalog, tz, quota, polls)
        st.divider()
        _error_summary(drafts)
        st.button(
            "Save All Connections",
            type="primary",
            icon=":material/save:",
            key="dc_save_all",
            on_click=_save_all,
            args=(site_id,),
            disabled=not can(Permission.EDIT_CONFIG),
        )


main()
