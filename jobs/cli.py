"""Operator command line: initialise the database, export/import configuration, rotate encryption keys.

Run `python -m jobs.cli --help`. A problem the user can fix is printed as a plain message on stderr with exit code 1
and never as a traceback (a traceback is noise to an operator and may carry values that belong in a debug log
only); a usage error exits with 2. Settings come from `DATACONN_*` environment variables, as for the app.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from core.catalog import api_tokens, config_io, push_sources
from core.catalog import catalog as cat
from core.catalog.account_import import AccountImportError
from core.catalog.catalog import InvalidInput
from core.collect import readings_csv, readings_import
from core.config import Settings, ingest_url, load_settings
from core.runtime import Runtime, open_runtime
from core.store import file_format
from core.store.crypto import SecretBox, SecretsError, generate_key, parse_keys, read_key_file, write_key_file
from core.store.private_files import NotAFile, TooLarge, private_umask, read_bounded, unreadable_input
from core.store.schema import LATEST_VERSION, schema_version
from core.store.secret_store import LostCredential, forget_undecryptable, rotate_all
from core.store.store import Store, StoreError
from core.validation import capped, field_errors
from jobs import discover

log = logging.getLogger("jobs.cli")
EXTENSIONS = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}


DEBUG_HINT = "run it again with DATACONN_LOG_LEVEL=DEBUG for the details, and report them"


class CliError(Exception):
    """A message for the user; exit code 1."""


def settings_from_env(log_format: str = "%(levelname)s %(name)s: %(message)s") -> Settings:
    """Settings from the environment, with logging to stderr at their level (stdout stays clean for exports).
    The collector shares it (with timestamps in its log lines)."""
    try:
        settings = load_settings()
    except ValidationError as exc:
        problems = [f"DATACONN_{path.upper()}: {message}" for path, message in field_errors(exc).items()]
        raise CliError("invalid setting " + "; ".join(problems)) from None
    level = logging.getLevelNamesMapping().get(settings.log_level.upper())
    if level is None:
        raise CliError(f"invalid setting DATACONN_LOG_LEVEL: {settings.log_level[:20]!r} is not a logging level")
    logging.basicConfig(level=level, stream=sys.stderr, format=log_format)
    return settings


def _store(settings: Settings) -> Store:
    """The store of an initialised database; only `init` creates or migrates one, never as a side effect."""
    store = Store(settings.db_path, lock_timeout_s=settings.lock_timeout_s)
    version = schema_version(store)
    if version < LATEST_VERSION:
        raise CliError(
            f"The database {settings.db_path} is not initialised or not up to date (schema version {version},"
            f" this program needs {LATEST_VERSION}): run `python -m jobs.cli init` first."
        )
    return store


def _runtime(settings: Settings) -> Runtime:
    """Store and secret box of an initialised database."""
    _store(settings)
    return open_runtime(settings, prepare=False)


def cmd_init(args: argparse.Namespace) -> None:
    settings = settings_from_env()
    # Before anything writes: a file in a newer storage format than analysts' DuckDB reads is converted once. A copy
    # that cannot be made (a full disk) leaves the file as it was, which this program still reads and writes: the
    # dashboard and the collector start anyway, and the next `init` tries again.
    try:
        file_format.convert_if_newer(Store(settings.db_path, lock_timeout_s=settings.lock_timeout_s))
    except file_format.ConversionFailed as exc:
        print(f"{exc}; it stays in use as it is (DuckDB 1.5 tools cannot open it until `init` converts it)",
              file=sys.stderr)  # fmt: skip
    runtime = open_runtime(settings)
    print(f"Database {settings.db_path} is at schema version {schema_version(runtime.store)}.")


def cmd_export(args: argparse.Namespace) -> None:
    data = config_io.export_config(_store(settings_from_env()))  # needs no key: exports hold no secrets
    text = config_io.dump(data, args.format)
    if args.output is None:
        sys.stdout.write(text)
        return
    args.output.write_text(text, encoding="utf-8")
    print(f"Exported {len(data['sites'])} site(s) to {args.output} (credentials are never exported).", file=sys.stderr)


def cmd_import(args: argparse.Namespace) -> None:
    runtime = _runtime(settings_from_env())
    limits = config_io.ConfigFileLimits.from_settings(runtime.settings)
    try:
        data = config_io.parse(config_io.read_text(args.file, limits), args.format)
    except config_io.ConfigFileError as exc:
        raise CliError(f"{args.file}: {exc}") from None
    report = config_io.import_config(
        runtime.store,
        runtime.box,
        data,
        dry_run=args.dry_run,
        enphase_plan=runtime.settings.enphase_plan,
        limits=limits,
    )
    print("\n".join(report.lines()))


def cmd_rotate_keys(args: argparse.Namespace) -> None:
    settings = settings_from_env()
    store = _runtime(settings).store
    if settings.secret_keys:
        keys = parse_keys(settings.secret_keys, "DATACONN_SECRET_KEYS")
        count = rotate_all(store, SecretBox(keys))
        print(f"Re-encrypted {count} secret(s) under the first key of DATACONN_SECRET_KEYS.")
        if len(keys) > 1:
            print(
                "You can now remove the other keys from DATACONN_SECRET_KEYS, then restart the app and the collector"
                " (they read the variable only when they start)."
            )
        else:
            print(
                "DATACONN_SECRET_KEYS holds one key: to rotate, set it to 'NEW,OLD' (see generate-key), restart the"
                " app and the collector, and rerun."
            )
        return
    path = settings.key_file
    old = read_key_file(path)
    new = generate_key()
    # New key first, old keys kept: whatever happens next, every stored secret stays readable. If re-encryption
    # fails the file keeps [new, *old]: restoring [*old] could strand a secret another process encrypted meanwhile.
    write_key_file(path, [new, *old])
    try:
        count = rotate_all(store, SecretBox([new, *old]))
    except SecretsError as exc:
        raise CliError(f"{exc} Nothing was re-encrypted; {path} keeps the old keys (after a new one).") from None
    if not args.keep_old:
        # Under the store's lock no other process of ours writes a secret between this check and the new file.
        with store.transaction() as con:
            tokens = [row[0] for row in con.sql("SELECT ciphertext FROM source_secrets").fetchall()]
            try:
                for token in tokens:
                    SecretBox([new]).decrypt(token)
            except SecretsError:
                raise CliError(
                    f"A secret was saved under an old key during the rotation, so {path} keeps the old keys:"
                    " run rotate-keys again."
                ) from None
            write_key_file(path, [new])
    print(f"Re-encrypted {count} secret(s) under a new key in {path}.")
    print(
        "The old key(s) were kept after the new one; run again without --keep-old to drop them."
        if args.keep_old
        else "The old key(s) were removed."
    )
    print("The app and the collector read the rewritten key file at their next use of a key: no restart is needed.")


def _read_readings_csv(path: Path, limits: readings_import.ReadingsFileLimits) -> str:
    """The CSV's text, or a message saying why it cannot be read. A regular file only, read to at most one byte
    past the size limit: a huge file is refused unread, a named pipe or a device (endless, or blocking) never read."""
    try:
        data = read_bounded(path, limits.max_bytes)
    except TooLarge:
        raise readings_import.too_large(limits) from None
    except (OSError, NotAFile) as exc:
        raise CliError(f"{path}: {unreadable_input(exc, 'a CSV file')}") from None
    return readings_import.decode_csv(data, limits)


def cmd_import_readings(args: argparse.Namespace) -> None:
    settings = settings_from_env()
    store = _store(settings)
    limits = readings_import.ReadingsFileLimits.from_settings(settings)
    text = _read_readings_csv(args.file, limits)
    options = readings_import.ImportOptions(
        args.unit,
        args.timezone,
        args.interval_minutes,
        args.label,
        args.snap,
        delimiter=args.delimiter and readings_csv.by_name(readings_csv.DELIMITERS, args.delimiter),
        decimal=args.decimal and readings_csv.by_name(readings_csv.DECIMAL_MARKS, args.decimal),
        time_column=args.time_column,
        value_column=args.value_column,
        counter=args.counter,
    )
    try:
        report = readings_import.import_readings(
            store, args.source, text, options, datetime.now(UTC), dry_run=args.dry_run, limits=limits
        )
    except cat.NotFound:
        raise CliError(
            f"no source with id {args.source}: see `SELECT source_id, site, source FROM v_sources`"
        ) from None
    verb = "would write" if args.dry_run else "wrote"
    print(
        f"{args.file.name}: {report.rows} row(s) {report.utc_span()}; {verb}"
        f" {report.written if not args.dry_run else report.rows} reading(s)"
        + ("" if args.dry_run else " (rows already stored as final are kept)")
    )
    print(f"  {report.site_span()}")
    for note in report.notes:
        print(f"  {note}")


def cmd_discover(args: argparse.Namespace) -> None:
    runtime = _runtime(settings_from_env())
    if logging.getLogger().level > logging.DEBUG:  # httpx's line per request would bury the one-line answer
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        with runtime:  # its vendor connections closed when the listing is done
            discover.run(runtime, args, os.environ)
    except AccountImportError as exc:
        raise CliError(str(exc)) from None


def cmd_push_token(args: argparse.Namespace) -> None:
    runtime = _runtime(settings_from_env())
    try:
        if args.revoke:
            gone = push_sources.revoke_token(runtime.store, args.source)
            print("Token revoked: requests with it are refused." if gone else "That source had no token.")
            return
        token = push_sources.make_token(runtime.store, runtime.box, args.source, datetime.now(UTC), signed=args.signed)
    except push_sources.NotAPushSource as exc:
        raise CliError(str(exc)) from None
    print(f"Endpoint: POST {push_sources.endpoint_url(runtime.settings, args.source)}", file=sys.stderr)
    mode = "signs each request with it (X-Timestamp, X-Signature)" if args.signed else "sends it as a Bearer token"
    print(f"Token (shown once; any older one no longer works; the sender {mode}):", file=sys.stderr)
    print(token)


def cmd_api_token(args: argparse.Namespace) -> None:
    """Personal API tokens for scripts (the API Tokens page's, docs/access.md): the operator acts as admin."""
    runtime = _runtime(settings_from_env())
    now = datetime.now(UTC)
    try:
        if args.token_command == "create":
            days = None if args.expires_days == 0 else args.expires_days
            made = api_tokens.issue(runtime.store, args.name, now, expires_in_days=days, owner=args.owner)
            print(f"API: {ingest_url(runtime.settings)}/api/v1 (Authorization: Bearer <token>)", file=sys.stderr)
            print(f"Token {made.info.id} of {made.info.owner} (shown once):", file=sys.stderr)
            print(made.token)
        elif args.token_command == "revoke":
            gone = api_tokens.revoke(runtime.store, args.id, now)
            print(f"Token {gone.id} ({gone.name}, ...{gone.hint}) of {gone.owner} revoked: its requests are refused.")
        else:
            for token in api_tokens.list_tokens(runtime.store, everyone=True):
                expires = f"{token.expires_at:%Y-%m-%d}" if token.expires_at else "never"
                used = f"{token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "never"
                print(
                    f"{token.id}\t{token.name}\t...{token.hint}\t{token.owner}\t{token.state(now)}\texpires {expires}"
                    f"\tlast used {used}"
                )
    except api_tokens.TokenRefused as exc:
        raise CliError(str(exc)) from None


def cmd_generate_key(args: argparse.Namespace) -> None:
    print(generate_key())


LISTED_AT_MOST = 20  # credentials named one per line; past that, a count


def cmd_forget_credentials(args: argparse.Namespace) -> None:
    settings = settings_from_env()
    runtime = _runtime(settings)
    key_file_there = settings.key_file.exists()
    cause = runtime.box.cause()
    lost = forget_undecryptable(runtime.store, runtime.box, dry_run=not args.yes)
    if not lost:
        print("Every stored credential can be decrypted with the configured keys: nothing to remove.")
        return
    sources = len({credential.source_id for credential in lost})
    verb = "Removed" if args.yes else "Would remove"
    print(f"{verb} {len(lost)} stored credential(s) of {sources} source(s) that cannot be decrypted ({cause}):")
    print("\n".join(_listed(lost)))
    if not args.yes:
        print("Nothing was removed: run again with --yes to remove them.")
        return
    runtime.box.refresh()  # with no credential left, a missing key file is created now
    if not key_file_there and settings.key_file.exists():
        print(f"Created a new key file {settings.key_file}: back it up apart from the database.")
    print("Type those credentials again on the Data Connections page (or with `config import`).")


def _listed(lost: list[LostCredential]) -> list[str]:
    return capped([credential.line() for credential in lost], LISTED_AT_MOST, indent="  ")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jobs.cli", description="Energy Data Connections operator tools.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(group: argparse._SubParsersAction, name: str, text: str, handler: Callable) -> argparse.ArgumentParser:
        sub = group.add_parser(name, help=text, description=text)
        sub.set_defaults(handler=handler)
        return sub

    command(commands, "init", "Create or migrate the database (and seed the demo if configured).", cmd_init)
    config = commands.add_parser("config", help="Export or import sites, meters and sources as YAML or JSON.")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    export = command(config_commands, "export", "Write the configuration (without credentials).", cmd_export)
    export.add_argument("--format", choices=config_io.FORMATS, help="yaml or json (default: from --output, else yaml)")
    export.add_argument("--output", type=Path, metavar="FILE", help="write to FILE instead of stdout")
    imp = command(config_commands, "import", "Merge a configuration file into the database.", cmd_import)
    imp.add_argument("file", type=Path, metavar="FILE", help="a .yaml, .yml or .json file")
    imp.add_argument("--dry-run", action="store_true", help="validate and report the changes without writing")
    rotate = command(commands, "rotate-keys", "Re-encrypt every stored credential under a new key.", cmd_rotate_keys)
    rotate.add_argument("--keep-old", action="store_true", help="keep the old keys in the key file after the new one")
    command(commands, "generate-key", "Print a new key for DATACONN_SECRET_KEYS.", cmd_generate_key)
    forget = command(
        commands,
        "forget-credentials",
        "List, then with --yes remove, the stored credentials the configured keys cannot decrypt.",
        cmd_forget_credentials,
    )
    forget.add_argument("--yes", action="store_true", help="remove them (without it, only list them)")
    readings = command(
        commands, "import-readings", "Import a source's historical readings from a CSV file.", cmd_import_readings
    )
    readings.add_argument("source", type=int, metavar="SOURCE", help="the source id (see v_sources)")
    readings.add_argument("file", type=Path, metavar="FILE", help="CSV with a header row naming its columns")
    readings.add_argument("--unit", default="W", choices=list(readings_import.UNITS), help="of the values (default W)")
    readings.add_argument(
        "--counter", action="store_true", help="values are a cumulative meter counter (with --unit Wh or kWh)"
    )
    readings.add_argument("--time-column", help="name of the timestamp column (default: guessed from the header)")
    readings.add_argument("--value-column", help="name of the value column (default: guessed from the header)")
    readings.add_argument(
        "--delimiter", choices=["comma", "semicolon", "tab", ",", ";"], help="(default: detected from the header)"
    )
    readings.add_argument("--decimal", choices=["point", "comma", ".", ","], help="mark (default: detected)")
    readings.add_argument("--timezone", help="zone of timestamps without an offset (default: the site's)")
    readings.add_argument("--interval-minutes", type=int, default=15, help="interval length (default 15)")
    readings.add_argument("--label", default="start", choices=["start", "end"], help="a timestamp names the interval's")
    readings.add_argument(
        "--snap", action="store_true", help="move a time off the interval grid to the nearest grid point"
    )
    readings.add_argument("--dry-run", action="store_true", help="check the file and report without writing")
    token = command(
        commands,
        "push-token",
        "Make (or with --revoke, withdraw) the token a Push (HTTP) source's sender uses; printed once.",
        cmd_push_token,
    )
    token.add_argument("source", type=int, metavar="SOURCE", help="the Push source's id (see v_sources)")
    token.add_argument("--signed", action="store_true", help="requests must also carry an HMAC signature")
    token.add_argument("--revoke", action="store_true", help="withdraw the token: its requests are refused")
    api_token = commands.add_parser("api-token", help="Make, revoke or list personal tokens for the HTTP API.")
    token_commands = api_token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = command(token_commands, "create", "Make a token (printed once).", cmd_api_token)
    create.add_argument("--name", required=True, help="what the token is for, as the API Tokens page lists it")
    create.add_argument(
        "--owner",
        default=api_tokens.LOCAL_OWNER,
        help="the subject of the user it acts as (their current role); default 'local': the local user, an admin,"
        " valid only while sign-in is not configured",
    )
    create.add_argument("--expires-days", type=int, default=90, help="days until it expires; 0: never (default 90)")
    revoke = command(token_commands, "revoke", "Revoke a token: its requests are refused.", cmd_api_token)
    revoke.add_argument("id", type=int, metavar="ID", help="the token's id (see `api-token list`)")
    command(token_commands, "list", "List every token (never the token itself).", cmd_api_token)
    discover.add_arguments(
        command(commands, "discover", "List a vendor account's sites and write a file that imports them.", cmd_discover)
    )
    return parser


def _resolve_format(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The format given, else the one the file name says; an unknown extension is a usage error."""
    if args.handler is cmd_export and args.format is None:
        args.format = EXTENSIONS.get(args.output.suffix.lower()) if args.output else "yaml"
        if args.format is None:
            parser.error(f"cannot tell the format of {args.output}: use --format yaml or --format json")
    if args.handler is cmd_import:
        args.format = EXTENSIONS.get(args.file.suffix.lower())
        if args.format is None:
            parser.error(f"cannot tell the format of {args.file}: name it .yaml, .yml or .json")


def _fail(*lines: str) -> int:
    for line in lines:
        print(line, file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    private_umask()
    parser = build_parser()
    args = parser.parse_args(argv)
    _resolve_format(parser, args)
    try:
        args.handler(args)
    except config_io.ConfigImportError as exc:
        return _fail(*exc.errors, "Nothing was imported.")
    except readings_import.ImportRefused as exc:
        return _fail(str(exc))
    except InvalidInput as exc:
        return _fail(*(f"{path}: {message}" for path, message in exc.errors.items()))
    except (CliError, config_io.ConfigFileError, StoreError, SecretsError) as exc:
        return _fail(str(exc))
    except OSError as exc:  # a file the user named (an --output folder, say): the system's own words
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{exc.strerror or type(exc).__name__}")
    except Exception:  # the CLI boundary: a bug of ours, never a traceback on the terminal
        log.debug("command failed", exc_info=True)
        return _fail(f"{args.command}: stopped on a problem it cannot explain; {DEBUG_HINT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
