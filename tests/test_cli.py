"""The operator CLI, run as a real subprocess against temporary files: exit codes, messages, key rotation."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from core.store.crypto import SecretBox, SecretsError, generate_key, read_key_file
from core.store.schema import LATEST_VERSION
from core.store.store import Store
from tests.crafting import saved_solaredge_source
from tests.processes import cli

REPO = Path(__file__).resolve().parents[1]
SECRET = "cli-secret-Value-0042"


def init(env: dict[str, str]) -> None:
    result = cli(env, "init")
    assert result.returncode == 0, result.stderr


def add_secret_source(env: dict[str, str], box: SecretBox, name: str = "Plant") -> int:
    return saved_solaredge_source(Store(env["DATACONN_DB_PATH"]), box, name, SECRET)


def ciphertexts(env: dict[str, str]) -> list[str]:
    with Store(env["DATACONN_DB_PATH"]).connect(read_only=True) as con:
        return [r[0] for r in con.sql("SELECT ciphertext FROM source_secrets ORDER BY source_id").fetchall()]


def test_init_then_export_yaml_and_json(tmp_path: Path, env: dict[str, str]) -> None:
    env["DATACONN_SEED_DEMO"] = "true"
    result = cli(env, "init")
    assert result.returncode == 0, result.stderr
    assert f"schema version {LATEST_VERSION}" in result.stdout and env["DATACONN_DB_PATH"] in result.stdout

    as_yaml = cli(env, "config", "export")
    assert as_yaml.returncode == 0, as_yaml.stderr
    data = yaml.safe_load(as_yaml.stdout)
    assert data["version"] == 1 and [s["name"] for s in data["sites"]] == ["Demo Rooftop"]

    assert json.loads(cli(env, "config", "export", "--format", "json").stdout) == data
    target = tmp_path / "out" / "fleet.json"
    target.parent.mkdir()
    written = cli(env, "config", "export", "--output", str(target))
    assert written.returncode == 0 and written.stdout == ""
    assert json.loads(target.read_text()) == data
    assert cli(env, "config", "export", "--output", str(tmp_path / "fleet.txt")).returncode == 2


def test_commands_refuse_an_uninitialised_database(env: dict[str, str]) -> None:
    result = cli(env, "config", "export")
    assert result.returncode == 1
    assert "run `python -m jobs.cli init` first" in result.stderr and "Traceback" not in result.stderr
    assert not Path(env["DATACONN_DB_PATH"]).exists()


def test_import_reports_changes_and_dry_run(tmp_path: Path, env: dict[str, str]) -> None:
    init(env)
    file = tmp_path / "fleet.yml"
    source = {"name": "Array", "source_type": "solar", "capacity_kw": 3, "carbon_intensity_g_per_kwh": 0}
    api = {"enabled": True, "provider": "solaredge", "system_id": "55", "update_frequency": "1hour"}
    source |= {"cost_per_mwh": 0, "api": api}  # hourly: within the V2 monthly credits
    source["credentials"] = {"api_key": {"env": "FLEET_SE_KEY"}}
    site = {"name": "North", "latitude": 1, "longitude": 2, "timezone": "UTC"}
    file.write_text(
        yaml.safe_dump(
            {"version": 1, "sites": [site | {"meters": [{"name": "PV", "category": "PROD", "sources": [source]}]}]}
        )
    )
    env["FLEET_SE_KEY"] = SECRET

    dry = cli(env, "config", "import", str(file), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "Dry run" in dry.stdout and "sources: 1 created" in dry.stdout
    assert ciphertexts(env) == []
    done = cli(env, "config", "import", str(file))
    assert done.returncode == 0, done.stderr
    assert "sites:   1 created" in done.stdout and "secrets: 1 set" in done.stdout
    assert SECRET not in done.stdout + done.stderr
    again = cli(env, "config", "import", str(file))
    assert "sources: 0 created, 0 updated, 1 unchanged" in again.stdout and "secrets: 0 set" in again.stdout


def test_import_with_errors_prints_paths_and_imports_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    init(env)
    file = tmp_path / "bad.yaml"
    file.write_text(
        "version: 1\nsites:\n  - name: Good\n    latitude: 1\n    longitude: 1\n    timezone: UTC\n"
        "  - name: Bad\n    latitude: 1\n    longitude: 1\n    timezone: Mars/Olympus\n"
    )
    result = cli(env, "config", "import", str(file))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "sites[1].timezone: Time Zone must be an IANA name such as Europe/Brussels, not 'Mars/Olympus'",
        "Nothing was imported.",
    ]
    assert "Traceback" not in result.stderr
    assert yaml.safe_load(cli(env, "config", "export").stdout)["sites"] == []

    file.write_text("version: 1\nsites: [\n")
    broken = cli(env, "config", "import", str(file))
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    assert broken.stderr.strip().startswith(f"{file}: invalid YAML at line 3")
    missing = cli(env, "config", "import", str(tmp_path / "nowhere.json"))
    assert (missing.returncode, missing.stderr) == (1, f"{tmp_path / 'nowhere.json'}: no such file\n")
    assert cli(env, "config", "import", str(tmp_path / "fleet.toml")).returncode == 2


def test_rotate_keys_with_a_key_file(env: dict[str, str]) -> None:
    init(env)
    key_file = Path(env["DATACONN_KEY_FILE"])
    (old_key,) = read_key_file(key_file)
    add_secret_source(env, SecretBox([old_key]))
    (before,) = ciphertexts(env)

    result = cli(env, "rotate-keys")
    assert result.returncode == 0, result.stderr
    assert "Re-encrypted 1 secret(s)" in result.stdout
    (after,) = ciphertexts(env)
    keys = read_key_file(key_file)
    assert after != before and len(keys) == 1 and keys[0] != old_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert SecretBox(keys).decrypt(after).get_secret_value() == SECRET
    with pytest.raises(SecretsError):
        SecretBox([old_key]).decrypt(after)

    kept = cli(env, "rotate-keys", "--keep-old")
    assert kept.returncode == 0, kept.stderr
    newest, previous = read_key_file(key_file)
    assert previous == keys[0]
    assert SecretBox([newest]).decrypt(ciphertexts(env)[0]).get_secret_value() == SECRET


def test_failed_rotation_keeps_the_old_keys(env: dict[str, str]) -> None:
    init(env)
    key_file = Path(env["DATACONN_KEY_FILE"])
    (old_key,) = read_key_file(key_file)
    add_secret_source(env, SecretBox([old_key]))
    add_secret_source(env, SecretBox([generate_key()]), name="Orphan")  # no configured key can read this one
    before = ciphertexts(env)

    result = cli(env, "rotate-keys")
    assert result.returncode == 1
    assert "cannot be decrypted" in result.stderr and "keeps the old keys" in result.stderr
    assert "Traceback" not in result.stderr
    assert ciphertexts(env) == before
    keys = read_key_file(key_file)
    assert old_key in keys
    assert SecretBox(keys).decrypt(before[0]).get_secret_value() == SECRET


def test_rotate_keys_with_environment_keys(env: dict[str, str]) -> None:
    old_key, new_key = generate_key(), generate_key()
    env["DATACONN_SECRET_KEYS"] = old_key
    init(env)
    add_secret_source(env, SecretBox([old_key]))
    (before,) = ciphertexts(env)

    env["DATACONN_SECRET_KEYS"] = f"{new_key},{old_key}"
    result = cli(env, "rotate-keys")
    assert result.returncode == 0, result.stderr
    assert "Re-encrypted 1 secret(s)" in result.stdout and "remove the other keys" in result.stdout
    (after,) = ciphertexts(env)
    assert after != before
    assert SecretBox([new_key]).decrypt(after).get_secret_value() == SECRET
    with pytest.raises(SecretsError):
        SecretBox([old_key]).decrypt(after)
    assert not Path(env["DATACONN_KEY_FILE"]).exists()


def test_generate_key_and_usage_errors(env: dict[str, str]) -> None:
    result = cli(env, "generate-key")
    assert result.returncode == 0
    Fernet(result.stdout.strip())
    assert cli(env).returncode == 2
    assert cli(env, "config").returncode == 2
    assert cli(env, "frobnicate").returncode == 2
    for command in ("init", "config", "rotate-keys", "generate-key"):
        assert command in cli(env, "--help").stdout


def test_invalid_settings_are_one_line_errors(env: dict[str, str]) -> None:
    env["DATACONN_LOCK_TIMEOUT_S"] = "0"
    result = cli(env, "init")
    assert result.returncode == 1
    assert result.stderr.strip() == "invalid setting DATACONN_LOCK_TIMEOUT_S: must be more than 0"
    env["DATACONN_LOCK_TIMEOUT_S"] = "5"
    env["DATACONN_SECRET_KEYS"] = "not-a-key"
    bad_key = cli(env, "init")
    assert bad_key.returncode == 1 and "not a valid Fernet key" in bad_key.stderr
    assert "Traceback" not in bad_key.stderr
