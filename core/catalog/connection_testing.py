"""Test Connection: one draft's connection tried against its vendor, and the short-lived reuse of the outcome.

The test asks only for the endpoints of the channel the source reads (`channel_for`), as the collector does. For a
saved vendor source, a repeat within `settings.test_cache_ttl_s` with the same settings and credentials returns the
stored outcome and calls nobody (`core.catalog.connection_test_cache`).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from zoneinfo import ZoneInfo

import duckdb
from pydantic import SecretStr

from core.actors import Permission, require
from core.catalog import catalog as cat
from core.catalog import push_sources
from core.catalog.connection_test_cache import cached_test, store_test
from core.catalog.field_labels import labelled, source_label
from core.catalog.source_drafts import SourceDraft, TestOutcome, ValidDraft, validate_draft
from core.models import Category, ConnectionStatus, Provider
from core.providers.base import NeedsReauthorization, ProviderError, RecordsExchanges
from core.providers.context import ProviderContext
from core.providers.exchange import Exchange
from core.providers.mqtt.payload import Unit
from core.providers.mqtt.probe import probe
from core.providers.mqtt.source import broker_of, subscription_of
from core.providers.mqtt.spec import PASSWORD as MQTT_PASSWORD
from core.providers.registry import build_client, spec_of
from core.providers.spec import ConnectionRequest
from core.roles import channel_for
from core.store.crypto import SecretBox
from core.store.exchange_archive import write_exchanges
from core.store.secret_store import load_secrets
from core.store.store import Store, StoreError

log = logging.getLogger(__name__)


def _pv_capacity(catalog: cat.Catalog, site_id: int, draft: SourceDraft, category: Category) -> float:
    """The simulator needs the site's PV size; a PROD draft brings its own, others use the stored PROD sources."""
    if category is Category.PROD:
        try:
            return max(float(str(draft.values.get("capacity_kw") or 0).replace(",", ".")), 0.0)
        except ValueError:
            return 0.0
    meters = catalog.meters_of(site_id, Category.PROD)
    return sum(s.capacity_kw for m in meters for s in catalog.sources_of(m.id)) or 10.0


def test_connection(
    store: Store, box: SecretBox, site_id: int, draft: SourceDraft, now: datetime, context: ProviderContext
) -> TestOutcome:
    """Test the connection the draft describes (typed secrets, else the stored ones). Never raises, except
    `Forbidden` for a role that may not test (a test spends the vendor's calls).

    The client is asked for the draft's channel only, so it calls only the endpoints serving it. For a saved vendor
    source, a repeat within `settings.test_cache_ttl_s` with the same settings and credentials (same fingerprint)
    returns the stored outcome and calls nobody; otherwise the vendor is called and the outcome (unless it is
    "re-authorise") is stored with the exchanges the test made, in `api_data_cache`.
    """
    require(Permission.TEST_CONNECTION)
    catalog = cat.load_catalog(store)
    site = catalog.site(site_id)
    meter = catalog.meter(draft.meter_id)
    stored = catalog.source(draft.source_id) if draft.source_id is not None else None
    valid, errors = validate_draft(draft, meter.category, stored)
    relevant = {k: v for k, v in errors.items() if k not in {"name"} or valid is None}
    if not draft.values.get("use_api"):
        return TestOutcome(ConnectionStatus.UNTESTED, "Enable API to test this connection.", now)
    delivery = spec_of(str(draft.values.get("api_provider"))).delivery
    if delivery == "push":
        return _pushed_outcome(store, draft, now, context)
    if relevant:
        field_name, message = next(iter(relevant.items()))
        label = source_label(field_name, str(draft.values.get("api_provider")))
        return TestOutcome(ConnectionStatus.FAILED, labelled(message, label), now)
    assert valid is not None
    if delivery == "subscribe":
        return _subscribed_outcome(store, box, draft, valid, now)
    secrets: dict[str, SecretStr] = {}
    if draft.source_id is not None:
        secrets = load_secrets(store, box, draft.source_id)
    secrets |= {name: SecretStr(value) for name, value in valid.secrets_to_set.items()}
    channel = channel_for(meter.category, valid.source.source_type)
    assert channel is not None  # validate_draft refused a type no role covers (core.models.check_source_type)
    request = ConnectionRequest(
        provider=valid.source.api.api_provider,
        site=site,
        pv_capacity_kw=_pv_capacity(catalog, site_id, draft, meter.category),
        system_id=valid.source.api.system_id,
        client_id=valid.source.api.client_id,
        secrets=secrets,
        source_id=draft.source_id,
        channels=frozenset({channel}),
    )
    fingerprint = None
    if draft.source_id is not None and spec_of(request.provider).metered:  # one without budgets costs nothing
        fingerprint = _settings_fingerprint(box, request, context)
        reused = _reuse(store, draft.source_id, fingerprint, now, context.settings.test_cache_ttl_s, site.timezone)
        if reused is not None:
            return reused
    outcome, exchanges = _call_vendor(request, context, channel, now)
    _keep(store, draft.source_id, fingerprint, outcome, exchanges)
    return outcome


def _pushed_outcome(store: Store, draft: SourceDraft, now: datetime, context: ProviderContext) -> TestOutcome:
    """A pushed source has nobody to call: its test says whether readings arrive."""
    if draft.source_id is None or cat.load_catalog(store).source(draft.source_id).api.api_provider is not Provider.PUSH:
        return TestOutcome(
            ConnectionStatus.UNTESTED, "Save this source as Push (HTTP) first: its endpoint and token come then.", now
        )
    endpoint = push_sources.endpoint_url(context.settings, draft.source_id)
    newest = push_sources.last_received(store, draft.source_id, now)
    if newest is None:
        waiting = f"No readings received yet: the sender posts them to {endpoint}."
        return TestOutcome(ConnectionStatus.UNTESTED, waiting, now)
    age = max(0, int((now - newest).total_seconds()))
    return TestOutcome(ConnectionStatus.CONNECTED, f"Receiving: the newest reading was stored {_ago(age)} ago.", now)


def _subscribed_outcome(
    store: Store, box: SecretBox, draft: SourceDraft, valid: ValidDraft, now: datetime
) -> TestOutcome:
    """An MQTT source: connect to its broker as the collector would and wait a few seconds for a message."""
    password = valid.secrets_to_set.get(MQTT_PASSWORD)
    if password is None and draft.source_id is not None and MQTT_PASSWORD not in valid.secrets_to_delete:
        stored = load_secrets(store, box, draft.source_id).get(MQTT_PASSWORD)
        password = stored.get_secret_value() if stored is not None else None
    api = valid.source.api
    result = probe(broker_of(api, password or ""), subscription_of(draft.key, api))
    status = ConnectionStatus.CONNECTED if result.connected else ConnectionStatus.FAILED
    power = result.value if result.value is not None and not Unit(api.mqtt_unit).is_counter else None
    return TestOutcome(status, result.message, now, power_w=power)


def _ago(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def _call_vendor(
    request: ConnectionRequest, context: ProviderContext, channel: str, now: datetime
) -> tuple[TestOutcome, list[Exchange]]:
    """The test itself, and the exchanges the client recorded (also when it failed)."""
    exchanges: list[Exchange] = []
    try:
        client = build_client(request, context)
        try:
            info = client.test_connection(now)
            power = info.current_power_w if channel == "pv_w" else client.current_power(now).get(channel)
        finally:
            if isinstance(client, RecordsExchanges):  # vendor clients only; the simulator calls nobody
                exchanges = client.exchanges()
            client.close()
    except NeedsReauthorization as exc:
        return TestOutcome(ConnectionStatus.REAUTHORIZE, str(exc), now), exchanges
    except ProviderError as exc:
        return TestOutcome(ConnectionStatus.FAILED, str(exc), now), exchanges
    message = f"Connected to {info.site_name}: current power {_kw(power)}"
    return TestOutcome(ConnectionStatus.CONNECTED, message, now, power_w=power), exchanges


def _settings_fingerprint(box: SecretBox, request: ConnectionRequest, context: ProviderContext) -> str:
    """What a test result depends on, as an HMAC: provider, ids, every credential, the channels asked for (they
    decide which endpoints are called), the site's time zone (the clients read the vendors' local times with it)
    and the provider's vendor URLs (its spec's `base_url_settings`)."""
    settings = context.settings
    text = json.dumps(
        {
            "provider": request.provider.value,
            "system_id": request.system_id,
            "client_id": request.client_id,
            "channels": sorted(request.channels or ()),
            "timezone": request.site.timezone,
            "secrets": {name: value.get_secret_value() for name, value in request.secrets.items()},
            "urls": [getattr(settings, name) for name in spec_of(request.provider).base_url_settings],
        },
        sort_keys=True,
    )
    return box.fingerprint(text)


def _reuse(
    store: Store, source_id: int, fingerprint: str, now: datetime, ttl_s: int, timezone: str
) -> TestOutcome | None:
    """The cached outcome of an identical test made less than `ttl_s` ago, marked as such; None to call the vendor."""
    try:
        hit = cached_test(store, source_id, fingerprint, now, ttl_s)
    except (StoreError, duckdb.Error) as exc:
        log.warning("Test Connection cache not readable, calling the vendor (%s)", type(exc).__name__)
        return None
    if hit is None:
        return None
    local = hit.tested_at.astimezone(ZoneInfo(timezone))
    message = f"{hit.message} (cached result from {local:%H:%M:%S}; no new API call)"
    return TestOutcome(hit.status, message, hit.tested_at, hit.power_w)


def _keep(
    store: Store, source_id: int | None, fingerprint: str | None, outcome: TestOutcome, exchanges: list[Exchange]
) -> None:
    """Store the exchanges, and the outcome for `_reuse` (not "re-authorise": the owner may approve any moment)."""
    try:
        if source_id is not None and fingerprint is not None and outcome.status is not ConnectionStatus.REAUTHORIZE:
            store_test(store, source_id, fingerprint, outcome, exchanges)
        elif exchanges:
            with store.transaction() as con:
                write_exchanges(con, source_id, exchanges)
    except (StoreError, duckdb.Error) as exc:
        log.warning("Test Connection result not stored (%s)", type(exc).__name__)


def _kw(power_w: float | None) -> str:
    return "unknown" if power_w is None else f"{power_w / 1000:,.1f} kW"
