"""Encryption of stored credentials with MultiFernet.

Keys never live in the DuckDB file: they come from `DATACONN_SECRET_KEYS` (comma-separated, newest first) or from
a git-ignored key file created with mode 0600. The first key encrypts; every key decrypts, which is what lets a
rotation re-encrypt rows while old keys are still configured.

A lost or damaged key must never cost credentials silently, so (`ConfiguredBox`):
- the key file is created only while no credential is stored: a new key cannot read stored ones, and credentials
  saved under it would be lost in turn when the right file is restored;
- a process whose keys are missing or unreadable still runs, with a box that refuses to encrypt and decrypt and
  says why in one line naming the key file and `DATACONN_SECRET_KEYS`: sources without credentials go on being
  collected, and the key file, once restored or fixed, is picked up without a restart;
- nothing here ever overwrites or deletes a key file (only `rotate-keys` rewrites one, keeping the old keys until
  every row is re-encrypted); a key file readable by others is tightened to 0600 when it is read;
- a key file is read within bounds (`core.store.private_files.read_bounded`, at most `KEY_FILE_MAX_BYTES`): a named pipe
  or a device at its path (a symbolic link to /dev/zero) is a one-line problem, never a hang or a full memory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from core.store.private_files import Unreadable, create_private, fsync_dir, os_error_words, read_bounded, tighten

log = logging.getLogger(__name__)

KEYS_ENV = "DATACONN_SECRET_KEYS"
FORGET_COMMAND = "python -m jobs.cli forget-credentials"
KEY_FILE_MAX_BYTES = 64_000  # a key is a 45-byte line: over a thousand keys, where a rotation keeps two or three


class SecretsError(Exception):
    """Keys are missing or malformed, or a stored secret cannot be decrypted; the message is safe to show."""


class _Unusable(Exception):
    """Why a key source gives no usable key: a clause in the operator's words, without the final period."""


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def _sentence(clause: str) -> str:
    return f"{clause[:1].upper()}{clause[1:]}."


def _parse(text: str, origin: str) -> list[str]:
    keys = [k.strip() for k in text.replace("\n", ",").split(",") if k.strip()]
    if not keys:
        raise _Unusable(f"{origin} holds no key")
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except ValueError:
            raise _Unusable(
                f"key {position} in {origin} is not a valid Fernet key (32 url-safe base64-encoded bytes)"
            ) from None
    return keys


def _read(path: Path) -> list[str]:
    origin = f"the key file {path}"
    try:
        data = read_bounded(path, KEY_FILE_MAX_BYTES)
    except FileNotFoundError:
        raise _Unusable(f"{origin} is missing") from None
    except (OSError, Unreadable) as exc:
        words = os_error_words(exc) if isinstance(exc, OSError) else str(exc)
        raise _Unusable(f"{origin} cannot be read ({words})") from None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise _Unusable(f"{origin} holds binary data, not keys") from None
    return _parse(text, origin)


def parse_keys(text: str, origin: str) -> list[str]:
    try:
        return _parse(text, origin)
    except _Unusable as exc:
        raise SecretsError(_sentence(str(exc))) from None


def read_key_file(path: Path) -> list[str]:
    """The keys in `path`; any problem (missing, unreadable, binary, not keys) is one line naming the path."""
    try:
        return _read(path)
    except _Unusable as exc:
        raise SecretsError(_sentence(str(exc))) from None


def write_key_file(path: Path, keys: list[str]) -> None:
    """Replace the key file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp creates it with mode 0600
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write("\n".join(keys) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    # Sync the directory too: after a power cut the rename must not be undone while the database already holds
    # rows encrypted under the new key.
    fsync_dir(path.parent)


def _create_key_file(path: Path) -> None:
    """A key file with one new key, readable by its owner only. Never replaces a file: when another process
    created it first, theirs is the key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if create_private(path, (generate_key() + "\n").encode("ascii")):
        log.info("created the key file %s: back it up apart from the database", path)


# Whether any credential is stored: True, False, or None when the database cannot tell now (held, unreadable).
CredentialsStored = Callable[[], bool | None]


FINGERPRINT = b"dataconn settings fingerprint v1"


@dataclass(frozen=True)
class KeyState:
    """The keys a box holds now, or why it holds none. (No repr of the keys: a state may end up in a log.)"""

    keys: tuple[str, ...] = field(repr=False)
    origin: str  # where the keys come from, in the operator's words ("the key file data/secret.key")
    remedy: str  # what the operator does when stored credentials cannot be decrypted with these keys
    problem: str | None = None  # why there is no usable key (a clause); None when `keys` are usable
    missing: bool = False  # the key file is absent while credentials are stored: removing them is a way out
    fernet: MultiFernet | None = field(init=False, repr=False, compare=False)
    fingerprint_key: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fernet", MultiFernet([Fernet(k) for k in self.keys]) if self.keys else None)
        object.__setattr__(self, "fingerprint_key", _derive(self.keys[0], FINGERPRINT) if self.keys else b"")

    @property
    def broken(self) -> bool:
        """Keys are configured but cannot be used (unreadable file, not keys): which credentials they would
        decrypt cannot be known."""
        return self.problem is not None and not self.missing


class SecretBox:
    """Encrypts with the newest key, decrypts with any configured key."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise SecretsError("At least one encryption key is required.")
        self._fixed = KeyState(
            tuple(keys),
            "the configured keys",
            f"Configure the key they were encrypted with, or remove them with `{FORGET_COMMAND}`.",
        )

    def state(self) -> KeyState:
        return self._fixed

    def refresh(self) -> None:
        """Pick up changed keys (a box of fixed keys has none to pick up)."""

    def encrypt(self, plaintext: str) -> str:
        return self._fernet().encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str, *, max_age_s: int | None = None) -> SecretStr:
        """Stored secrets never expire (no `max_age_s`); short-lived tokens such as OAuth states do."""
        fernet = self.state().fernet
        if fernet is None:
            raise SecretsError(self.undecryptable())
        try:
            return SecretStr(fernet.decrypt(token.encode("ascii"), ttl=max_age_s).decode("utf-8"))
        except (InvalidToken, ValueError):
            raise SecretsError(self.undecryptable()) from None

    def fingerprint(self, text: str) -> str:
        """HMAC-SHA256 of `text` (hex) under a key derived from the newest key: equal texts give equal
        fingerprints, and without the key a fingerprint reveals nothing of the text (credentials included).
        A key rotation changes every fingerprint."""
        self._fernet()  # no usable key: refused like encrypting
        return hmac.new(self.state().fingerprint_key, text.encode("utf-8"), hashlib.sha256).hexdigest()

    def rotate(self, token: str) -> str:
        try:
            return self._fernet().rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, ValueError):
            raise SecretsError("A stored credential cannot be decrypted with the configured keys.") from None

    def _fernet(self) -> MultiFernet:
        fernet = self.state().fernet
        if fernet is None:
            raise SecretsError(self.refusal())
        return fernet

    # --- what the operator reads: each one line, naming where the keys come from and what to do ---

    def cause(self) -> str:
        """Why stored credentials do not decrypt, as a clause."""
        state = self.state()
        return state.problem or f"{state.origin} does not hold the key they were encrypted with"

    def undecryptable(self, sources: int | None = None) -> str:
        """Stored credentials (of `sources` sources) cannot be decrypted: why, and what to do."""
        whose = "" if sources is None else f" of {sources} source(s)"
        return f"Stored credentials{whose} cannot be decrypted: {self.cause()}. {self.state().remedy}"

    def refusal(self) -> str:
        """Why nothing can be encrypted now (no usable key), and what to do."""
        state = self.state()
        return f"Credentials cannot be saved or used: {state.problem or 'no usable key'}. {state.remedy}"

    def notice(self, undecryptable_sources: int) -> str | None:
        """The operator's one line about the keys, given how many sources' stored credentials do not decrypt;
        None when all is well."""
        if undecryptable_sources:
            return self.undecryptable(undecryptable_sources)
        state = self.state()
        if state.problem is not None:
            return f"No usable encryption key: {state.problem}. {state.remedy}"
        return None


class ConfiguredBox(SecretBox):
    """The box of a process: keys from `DATACONN_SECRET_KEYS` (malformed ones raise `SecretsError`), else from the
    key file.

    The key file is re-read whenever it changes (checked by `stat` on every use, which costs microseconds), so a
    restored, fixed or rotated key file takes effect without a restart. `refresh` also creates a missing key file,
    but only when `credentials_stored` says no credential is stored (it asks the database, so it is called where a
    read may happen: at start, before a pass, on a page run). Missing or unusable keys leave the box refusing to
    encrypt or decrypt, with the reason (`refusal`, `undecryptable`): never a new key while credentials exist.
    """

    def __init__(self, env_keys: str | None, key_file: Path, credentials_stored: CredentialsStored) -> None:
        self._env = env_keys or None
        self._path = key_file
        self._credentials_stored = credentials_stored
        self._lock = threading.Lock()
        self._signature: object = ()  # of the key file as last read; () = never read
        self._loaded = self._from_env() if self._env else self._from_file()
        self.refresh()

    def state(self) -> KeyState:
        if self._env is None and _signature(self._path) != self._signature:
            with self._lock:
                self._loaded = self._from_file()
        return self._loaded

    def refresh(self) -> None:
        if self._env is not None or os.path.lexists(self._path):
            self.state()
            return
        with self._lock:
            if os.path.lexists(self._path) or self._credentials_stored() is not False:
                return  # stored credentials (or cannot tell yet): no new key; `state` says the file is missing
            try:
                _create_key_file(self._path)
            except OSError as exc:
                problem = f"the key file {self._path} is missing and cannot be created ({os_error_words(exc)})"
                self._loaded = KeyState((), self._origin(), self._fix_file(), problem)
                return
            self._loaded = self._from_file()

    def _origin(self) -> str:
        return KEYS_ENV if self._env else f"the key file {self._path}"

    def _fix_file(self) -> str:
        return (
            f"Restore the key file {self._path} from a backup or fix it (one key per line, readable by this user),"
            f" or set {KEYS_ENV}; it was left as it is."
        )

    def _from_env(self) -> KeyState:
        """The keys of the environment variable; malformed ones are an invalid setting, refused at start like any
        other (`SecretsError`): unlike a file, a process's environment cannot be fixed while it runs."""
        remedy = (
            f"Put the right key in {KEYS_ENV} (or unset it to use the key file {self._path}), or remove the"
            f" credentials that cannot be decrypted with `{FORGET_COMMAND}`."
        )
        return KeyState(tuple(parse_keys(self._env or "", KEYS_ENV)), KEYS_ENV, remedy)

    def _from_file(self) -> KeyState:
        """The key file as it is now (tightened to owner-only first); no file means no key, never a new one."""
        tighten([self._path])  # a key file readable by others (copied in, older version): one INFO line
        self._signature = _signature(self._path)
        remedy = (
            f"Put the right key back in the key file {self._path} (or in {KEYS_ENV}), or remove the credentials"
            f" that cannot be decrypted with `{FORGET_COMMAND}`."
        )
        if self._signature is None:
            problem = f"the key file {self._path} is missing and {KEYS_ENV} is not set"
            return KeyState((), self._origin(), remedy, problem, missing=True)
        try:
            keys = _read(self._path)
        except _Unusable as exc:
            return KeyState((), self._origin(), self._fix_file(), str(exc))
        log.debug("keys loaded from %s", self._path)
        return KeyState(tuple(keys), self._origin(), remedy)


def _signature(path: Path) -> object:
    """What changes when the key file is replaced, rewritten, removed or has its mode changed; None if absent."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return ("error", exc.errno)
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _derive(key: str, purpose: bytes) -> bytes:
    """A separate key for `purpose`, so the encryption key itself is never used for anything else."""
    return hmac.new(base64.urlsafe_b64decode(key.encode("ascii")), purpose, hashlib.sha256).digest()
