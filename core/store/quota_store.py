"""Quota counts kept in the database, so a budget holds across restarts and across processes.

The dashboard's Test Connection and the collector spend the same vendor budget. Counting in memory would let each
process (and each restart) start from zero; here every reservation is a read-check-increment in one transaction
under the store's lock, so two processes cannot both take the last call. One short transaction per vendor call
costs ~20 ms, small beside the call itself.

While an outside program holds the file, the collector keeps polling (its readings go to the spool), so calls are
still counted: against the last counts this process saw plus its own calls since, each appended durably to a
journal file that the next reservation with the file free adds to `quota_usage`. A crash between that commit and
the journal's truncation counts those calls twice, which errs on the safe side. A budget this process has never
seen cannot be checked, so such a call is refused until the file is free.

The journal is one JSON line per call, owner-only (0600). A line torn by a crash (no newline yet) was never
acknowledged, so never made: it is ignored, and cut off before the next append so it cannot glue onto the next
line. Any other line that is not a call (foreign bytes, not UTF-8, garbled) is kept byte for byte in the quarantine
(`core.store.quarantine`) when the journal is added up, and the good lines still count: a bad line must not stop the
collector, nor lose the calls around it. Adding up is idempotent: the calls are committed first, then the bad
lines moved aside, then the journal emptied; when the bad lines cannot be moved (the quarantine belongs to root
after a `sudo ... --once`, the disk is full) the journal is rewritten to hold only them (`UnmovedLines`), so the
next flush counts nothing again and only retries the move. Whatever is at the journal's path that is not a file
we wrote (a named pipe, which would block the reader; a folder; a file of absurd size) is moved aside whole and a
new journal started. A failure of the file system there is a `StoreFault` naming the journal, never a traceback.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import json
import os
import stat
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import duckdb

from core.providers.base import QuotaRule, RateLimited
from core.providers.quota import QuotaLedger, period_bounds
from core.store.private_files import PRIVATE_FILE, file_kind, os_error_words, private_dir, size_in_words
from core.store.quarantine import FOLDER, Quarantine
from core.store.store import Store, StoreBusy, StoreFault

_SELECT = "SELECT calls FROM quota_usage WHERE provider = ? AND scope_key = ? AND period = ? AND bucket_start = ?"
_INCREMENT = (
    "INSERT INTO quota_usage (provider, scope_key, period, bucket_start, calls) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (provider, scope_key, period, bucket_start) DO UPDATE SET calls = quota_usage.calls + excluded.calls"
)
BucketKey = tuple[str, str, str, datetime]
DB_WAIT_S = 2.0  # how long a reservation waits for the file before counting offline
OFFLINE_RETRY = timedelta(minutes=5)
# A call is a line of ~75 bytes: 256 MB is 3 million calls, a month of 15-minute polls of 1,000 sources while the
# file stayed held. A larger file is not a journal this module wrote; it is moved aside rather than read whole.
JOURNAL_MAX_BYTES = 256_000_000
_JOURNAL_FLAGS = os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC  # a named pipe must not block the open


class UnmovedLines(StoreFault):
    """Lines of the journal that are not calls could not be moved to the quarantine. The calls were counted and
    the journal now holds only those lines, so nothing is counted twice; the next flush tries the move again."""


class StoredQuotaLedger(QuotaLedger):
    """`QuotaLedger` whose counts live in `quota_usage`; concurrency slots stay per process (they are momentary)."""

    def __init__(
        self,
        store: Store,
        concurrency_wait_s: float = 60.0,
        journal: Path | None = None,
        *,
        db_wait_s: float = DB_WAIT_S,
    ) -> None:
        super().__init__(concurrency_wait_s)
        self.store = store
        self.journal = journal
        self.db_wait_s = db_wait_s  # with a journal: how long to wait for the file before counting offline
        # Beside the spool's own: the journal lives in the spool folder (core.runtime).
        self.quarantine = Quarantine(journal.parent / FOLDER) if journal else None
        self._seen: dict[BucketKey, int] = {}  # the newest count of each bucket this process knows of

    def used(self, provider: str, scope_key: str, period: str, now: datetime) -> int:
        """Calls counted so far; while the file is held, the count this process knows (with a journal)."""
        key: BucketKey = (provider, scope_key, period, period_bounds(period, now)[0])
        try:
            with self.store.connect(read_only=True, timeout_s=self.db_wait_s if self.journal else None) as con:
                return _count(con, key) + self._journalled(key)
        except StoreBusy:
            if self.journal is None:
                raise
            with self._lock:
                return self._seen.get(key, 0)

    def reserve(self, provider: str, scope_keys: Mapping[str, str], rules: Sequence[QuotaRule], now: datetime) -> None:
        counted = [r for r in rules if r.period != "concurrent" and r.scope in scope_keys]
        if not counted:
            return
        try:
            with contextlib.suppress(UnmovedLines):  # the journal holds no call then; the collector's sync says it
                self.flush_journal()
            with self.store.transaction(timeout_s=self.db_wait_s if self.journal else None) as con:
                keys = self._check(provider, scope_keys, counted, now, lambda key: _count(con, key))
                for key in keys:
                    con.execute(_INCREMENT, [*key, 1])
        except StoreBusy:
            if self.journal is None:
                raise
            self._reserve_offline(provider, scope_keys, counted, now)
            return
        with self._lock:
            for key in keys:
                self._seen[key] = self._seen.get(key, 0) + 1

    def _check(
        self,
        provider: str,
        scope_keys: Mapping[str, str],
        counted: Sequence[QuotaRule],
        now: datetime,
        count: Callable[[BucketKey], int],
    ) -> list[BucketKey]:
        """The buckets one more call would count in, or `RateLimited` if one is full (counting nothing)."""
        keys: list[BucketKey] = []
        for rule in counted:
            start, end = period_bounds(rule.period, now)
            key: BucketKey = (provider, scope_keys[rule.scope], rule.period, start)
            calls = count(key)
            self._seen[key] = calls
            if calls >= rule.limit:
                raise RateLimited(
                    f"{provider} allows {rule.limit} calls per {rule.period} per {rule.scope}; "
                    f"that budget is used up until {end:%Y-%m-%d %H:%M} UTC.",
                    retry_at=end,
                )
            keys.append(key)
        return keys

    def _reserve_offline(
        self, provider: str, scope_keys: Mapping[str, str], counted: Sequence[QuotaRule], now: datetime
    ) -> None:
        assert self.journal is not None
        with self._lock:
            buckets: list[BucketKey] = [
                (provider, scope_keys[r.scope], r.period, period_bounds(r.period, now)[0]) for r in counted
            ]
            unknown = [key for key in buckets if key not in self._seen]
            if unknown:
                self._read_counts(unknown)  # a read-only holder (`duckdb -readonly`) still lets us read them
                unknown = [key for key in buckets if key not in self._seen]
            if unknown:
                raise RateLimited(
                    f"{provider}: the call budget cannot be checked while another program holds the database; "
                    "polling resumes when it is free.",
                    retry_at=now + OFFLINE_RETRY,
                )
            keys = self._check(provider, scope_keys, counted, now, lambda key: self._seen[key])
            with self._locked() as handle:
                self._end_last_line(handle)
                handle.seek(0, os.SEEK_END)
                for key in keys:
                    handle.write((json.dumps([key[0], key[1], key[2], key[3].isoformat()]) + "\n").encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            for key in keys:
                self._seen[key] += 1

    def _read_counts(self, keys: list[BucketKey]) -> None:
        with contextlib.suppress(StoreBusy), self.store.connect(read_only=True, timeout_s=self.db_wait_s) as con:
            for key in keys:
                self._seen[key] = _count(con, key) + self._journalled(key)

    def _journal_empty(self) -> bool:
        """Checked without locking: the usual case (the file was never held) costs one stat, not a file lock."""
        if self.journal is None:
            return True
        try:
            return self.journal.stat().st_size == 0
        except FileNotFoundError:
            return True
        except OSError:
            return False  # opening it says what is wrong

    def _journalled(self, key: BucketKey) -> int:
        """Calls of this bucket already in the journal (counted by an earlier run while the file was held)."""
        if self._journal_empty():
            return 0
        with self._locked() as handle:
            calls, _ = _read_journal(handle)
        return sum(1 for call in calls if call == key)

    def flush_journal(self) -> None:
        """Add the calls counted while the file was held to `quota_usage`, then empty the journal.

        Lines that are not calls are moved to the quarantine after the commit (a held file retries the whole
        flush, and must not quarantine twice). `UnmovedLines` when they cannot be: the journal then keeps only
        them, so the calls just counted are never counted again. `StoreBusy` / `StoreFault` when the database or
        the journal cannot be used; nothing has changed then."""
        if self._journal_empty():
            return
        with self._locked() as handle:
            calls, garbled = _read_journal(handle)
            totals = Counter(calls)
            if totals:
                with self.store.transaction(timeout_s=self.db_wait_s) as con:
                    for key, count in totals.items():
                        con.execute(_INCREMENT, [*key, count])
            unmoved: UnmovedLines | None = None
            if garbled:
                counted = (
                    f"the {len(calls)} good line(s) were added to the quota counts"
                    if calls
                    else "the journal's calls had been counted already"
                )
                try:
                    self._quarantine(garbled, counted)
                except OSError as exc:
                    unmoved = self._unmoved(len(garbled), exc)
            _rewrite(handle, b"".join(garbled) if unmoved else b"")
        if unmoved:
            raise unmoved

    def _end_last_line(self, handle: BinaryIO) -> None:
        """Before an append: the new call must start a line of its own. A last line without newline torn by a crash
        was never acknowledged: it is cut off. A foreign one is ended with a newline, so the next flush moves it
        aside with any other line that is not a call (here, with the file held, nothing may fail for it)."""
        handle.seek(0)
        data = handle.read(JOURNAL_MAX_BYTES + 1)
        if not data or data.endswith(b"\n"):
            return
        whole = data.rfind(b"\n") + 1
        if _torn(data[whole:]):
            handle.truncate(whole)
        else:
            handle.seek(0, os.SEEK_END)
            handle.write(b"\n")

    def _quarantine(self, garbled: list[bytes], counted: str) -> None:
        assert self.quarantine is not None and self.journal is not None
        self.quarantine.hold_bytes(
            self.journal.name,
            b"".join(garbled),
            f"{len(garbled)} line(s) of the quota journal {self.journal}",
            f"{len(garbled)} line(s) are not a counted vendor call (not UTF-8, or not the JSON list [provider,"
            f" scope, period, start]); {counted}",
        )

    def _unmoved(self, lines: int, exc: OSError) -> UnmovedLines:
        assert self.quarantine is not None and self.journal is not None
        return UnmovedLines(
            self.journal,
            f"{lines} line(s) that are not vendor calls cannot be moved aside to {self.quarantine.directory}:"
            f" {os_error_words(exc)}",
        )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[BinaryIO]:
        """The journal opened for reading and writing (bytes: a foreign byte must not stop the reading), owner-only,
        under an exclusive flock (the dashboard may share it). What is at its path and is not a journal we wrote
        is moved to the quarantine first and a new journal started. Any failure of the file system is a
        `StoreFault` naming the journal."""
        assert self.journal is not None
        path = self.journal
        try:
            private_dir(path.parent)
            for _ in range(5):  # again when another process moved or replaced the file while we waited for it
                self._set_aside_foreign(path)
                with os.fdopen(_open_journal(path), "r+b") as handle:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                    try:
                        opened = os.fstat(handle.fileno())
                        if not _still_at(path, opened):
                            continue
                        if opened.st_size > JOURNAL_MAX_BYTES:
                            self._hold_journal(path, f"it is larger than {size_in_words(JOURNAL_MAX_BYTES)}")
                            continue
                        yield handle
                        return
                    finally:
                        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        except OSError as exc:
            raise StoreFault(path, os_error_words(exc)) from exc
        raise StoreFault(path, "another program keeps replacing the quota journal")

    def _set_aside_foreign(self, path: Path) -> None:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISREG(info.st_mode):
            self._hold_journal(path, f"it is {file_kind(info.st_mode)}")

    def _hold_journal(self, path: Path, why: str) -> None:
        """Move what is at the journal's path aside whole: the calls in it (if any) are not counted."""
        assert self.quarantine is not None
        try:
            self.quarantine.hold_file(
                path,
                f"the quota journal {path}",
                f"{why}, not a journal this collector wrote; a new journal was started (calls in it, if any, were"
                " not counted)",
            )
        except OSError as exc:
            raise StoreFault(path, f"{why} and cannot be moved aside: {os_error_words(exc)}") from exc


def _open_journal(path: Path) -> int:
    try:
        fd = os.open(path, _JOURNAL_FLAGS | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return os.open(path, _JOURNAL_FLAGS)
    os.fchmod(fd, PRIVATE_FILE)  # the umask may have taken the owner's bits too
    return fd


def _still_at(path: Path, opened: os.stat_result) -> bool:
    """Whether the file we opened (and now hold the lock of) is still the regular file at `path`."""
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(opened.st_mode) and (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)


def _rewrite(handle: BinaryIO, kept: bytes) -> None:
    """Make the journal hold `kept` (a part of what it held) and nothing else, durably. In place: the bytes go
    where bytes were, so even a full disk lets this through."""
    handle.seek(0)
    handle.write(kept)
    handle.truncate()
    handle.flush()
    os.fsync(handle.fileno())


def _read_journal(handle: BinaryIO) -> tuple[list[BucketKey], list[bytes]]:
    """The calls in the journal, and its lines that are not calls, byte for byte. A last line without its newline
    that reads as the start of a call was torn by a crash: that call was never acknowledged, so never made."""
    handle.seek(0)
    *lines, tail = handle.read(JOURNAL_MAX_BYTES + 1).split(b"\n")
    calls: list[BucketKey] = []
    garbled: list[bytes] = []
    for line in lines:
        key = _journal_key(line)
        if key is not None:
            calls.append(key)
        elif line.strip():
            garbled.append(line + b"\n")
    if tail and not _torn(tail):
        garbled.append(tail)
    return calls, garbled


def _torn(tail: bytes) -> bool:
    """Whether a last line without newline is the start of one this module writes: `["` then printable UTF-8 (JSON
    escapes control characters), maybe cut inside its last character. Anything else is foreign and quarantined."""
    if not b'["'.startswith(tail[:2]):
        return False
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(tail, final=False)
    except UnicodeDecodeError:
        return False
    return all(char >= " " for char in text)


def _journal_key(line: bytes) -> BucketKey | None:
    """The bucket of one journal line; None when the line is not one this module wrote."""
    try:
        provider, scope, period, start = json.loads(line.decode("utf-8"))
        moment = datetime.fromisoformat(start)
    except (ValueError, TypeError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    if not all(isinstance(part, str) for part in (provider, scope, period)) or moment.tzinfo is None:
        return None
    return (provider, scope, period, moment)


def _count(con: duckdb.DuckDBPyConnection, key: BucketKey) -> int:
    rows = con.execute(_SELECT, list(key)).fetchall()
    return int(rows[0][0]) if rows else 0
