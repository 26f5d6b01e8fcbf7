"""Credentials encryption: key sources, rotation, and the DuckDB file never holding a plaintext secret."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from core.catalog import catalog as cat
from core.catalog.connections import SourceDraft, draft_from_source, save_connections
from core.models import Category, MeterIn, SiteIn
from core.store.crypto import ConfiguredBox, SecretBox, SecretsError, generate_key, read_key_file
from core.store.secret_store import load_secrets, rotate_all
from core.store.store import Store


def test_round_trip_and_secretstr_hides_the_value(box: SecretBox) -> None:
    token = box.encrypt("sk-live-123")
    assert "sk-live-123" not in token
    secret = box.decrypt(token)
    assert secret.get_secret_value() == "sk-live-123"
    assert "sk-live-123" not in repr(secret) and "sk-live-123" not in str(secret)


def test_key_file_is_created_once_with_owner_only_mode(tmp_path: Path) -> None:
    key_file = tmp_path / "data" / "secret.key"
    first = ConfiguredBox(None, key_file, credentials_stored=lambda: False).state().keys
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert ConfiguredBox(None, key_file, credentials_stored=lambda: False).state().keys == first
    Fernet(first[0])  # a usable key


def test_key_file_is_created_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    """The mode is set on the open file, not left to the umask (which may also take the owner's bits)."""
    key_file = tmp_path / "secret.key"
    previous = os.umask(0o277)
    try:
        keys = ConfiguredBox(None, key_file, credentials_stored=lambda: False).state().keys
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert read_key_file(key_file) == list(keys)


def test_a_key_file_of_absurd_size_is_refused_unread(tmp_path: Path) -> None:
    key_file = tmp_path / "secret.key"
    key_file.write_text(f"{generate_key()}\n" * 2000)  # 90 KB: no key file is that large
    with pytest.raises(SecretsError) as info:
        read_key_file(key_file)
    assert str(info.value) == f"The key file {key_file} cannot be read (is larger than 64 KB)."


def test_environment_keys_win_over_the_key_file(tmp_path: Path) -> None:
    new, old = generate_key(), generate_key()
    assert ConfiguredBox(f"{new}, {old}", tmp_path / "unused.key", lambda: False).state().keys == (new, old)
    assert not (tmp_path / "unused.key").exists()


def test_malformed_keys_are_reported_without_echoing_them(tmp_path: Path) -> None:
    with pytest.raises(SecretsError) as info:
        ConfiguredBox("not-a-real-key", tmp_path / "k", lambda: False).encrypt("x")
    assert "not a valid Fernet key" in str(info.value)
    assert "not-a-real-key" not in str(info.value)


def test_wrong_key_gives_a_clear_message() -> None:
    token = SecretBox([generate_key()]).encrypt("secret")
    with pytest.raises(SecretsError) as info:
        SecretBox([generate_key()]).decrypt(token)
    assert "cannot be decrypted" in str(info.value)


def _site_with_secret(store: Store, box: SecretBox, secret: str) -> int:
    site = cat.create_site(store, SiteIn(name="Plant", latitude=50, longitude=4, timezone="Europe/Brussels"))
    meter = cat.create_meter(store, site.id, MeterIn(name="PV", category=Category.PROD))
    draft = SourceDraft(
        key="new-1",
        meter_id=meter.id,
        source_id=None,
        values={
            "name": "Roof",
            "source_type": "solar",
            "capacity_kw": "10",
            "carbon_intensity_g_per_kwh": "0",
            "cost_per_mwh": "0",
            "use_api": True,
            "api_provider": "solaredge",
            "system_id": "4711",
            "client_id": "",
            "update_frequency": "1hour",
        },
        secrets={"api_key": secret},
    )
    save_connections(store, box, site.id, [draft], set())
    return cat.load_catalog(store).sources[0].id


def test_rotation_re_encrypts_every_secret(store: Store) -> None:
    old_key, new_key = generate_key(), generate_key()
    source_id = _site_with_secret(store, SecretBox([old_key]), "sk-rotate-me")
    with store.connect(read_only=True) as con:
        before = con.sql("SELECT ciphertext FROM source_secrets").fetchall()[0][0]
    rotating = SecretBox([new_key, old_key])
    assert rotate_all(store, rotating) == 1
    with store.connect(read_only=True) as con:
        after = con.sql("SELECT ciphertext FROM source_secrets").fetchall()[0][0]
    assert after != before
    assert load_secrets(store, SecretBox([new_key]), source_id)["api_key"].get_secret_value() == "sk-rotate-me"
    with pytest.raises(SecretsError):
        load_secrets(store, SecretBox([old_key]), source_id)


def test_rotation_with_an_unknown_key_changes_nothing(store: Store) -> None:
    key = generate_key()
    _site_with_secret(store, SecretBox([key]), "sk-keep")
    with store.connect(read_only=True) as con:
        before = con.sql("SELECT ciphertext FROM source_secrets").fetchall()
    with pytest.raises(SecretsError):
        rotate_all(store, SecretBox([generate_key()]))
    with store.connect(read_only=True) as con:
        assert con.sql("SELECT ciphertext FROM source_secrets").fetchall() == before


def _raw_bytes(store: Store) -> bytes:
    data = store.path.read_bytes()
    wal = store.path.with_name(store.path.name + ".wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


def test_database_file_and_wal_never_contain_a_saved_key(store: Store, box: SecretBox) -> None:
    secret = "sk-PLAINTEXT-must-not-leak-7f3a9c"
    source_id = _site_with_secret(store, box, secret)
    # Before a checkpoint the change may sit in the WAL; after it, in the main file: check both moments.
    assert secret.encode() not in _raw_bytes(store)
    with store.connect() as con:
        con.execute("CHECKPOINT")
    assert secret.encode() not in _raw_bytes(store)
    # Saving again with the masked value keeps the stored secret rather than writing the mask.
    source = cat.load_catalog(store).source(source_id)
    save_connections(store, box, cat.load_catalog(store).sites[0].id, [draft_from_source(source)], set())
    assert load_secrets(store, box, source_id)["api_key"].get_secret_value() == secret
    assert secret.encode() not in _raw_bytes(store)


def test_key_file_lists_keys_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "k"
    keys = [generate_key(), generate_key()]
    path.write_text("\n".join(keys))
    assert read_key_file(path) == keys
