"""Quota counts kept in the database, so a budget holds across restarts and across processes.

The dashboard's Test Connection and the collector spend the same vendor budget. Counting in memory would let each
process (and each restart) start from zero; here every reservation is a read-check-increment in one transaction
under the store's lock, so two processes cannot both take the last call. One short transaction per vendor call
costs ~20 ms, small beside the call itself, but at fleet scale (dozens of calls a second) it would hold the shared
file most of the time. So the collector leases (`lease_calls` above 1): where it has no calls of a day or month
bucket left, one transaction counts a block of them (at most `lease_calls`, 1/`LEASE_SHARE` of the budget and the
room left), and the calls are then handed out from memory; what is left of every lease is given back at the next
`flush_journal` (the collector's every-minute sync) and at `close`. The file therefore always holds at least the
calls made, another process (the dashboard's Test Connection) never sees room that is not there, and a crash leaves
a lease counted, which errs on the safe side. Per-minute calls are paced in memory (`core.providers.quota`); they are
added to their minute buckets (API Health's calls today) with the next lease or sync. The dashboard counts one call
per transaction, as before.

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
import math
import os
import stat
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import duckdb

from core.providers.base import QuotaRule, RateLimited
from core.providers.quota import PACED_PERIOD, Clock, QuotaLedger, budget_used_up, period_bounds
from core.store.private_files import PRIVATE_FILE, file_kind, os_error_words, private_dir, size_in_words
from core.store.quarantine import FOLDER, Quarantine
from core.store.store import Store, StoreBusy, StoreFault, StoreUnavailable

_SELECT = "SELECT calls FROM quota_usage WHERE provider = ? AND scope_key = ? AND period = ? AND bucket_start = ?"
_INCREMENT = (
    "INSERT INTO quota_usage (provider, scope_key, period, bucket_start, calls) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (provider, scope_key, period, bucket_start) DO UPDATE SET calls = quota_usage.calls + excluded.calls"
)
BucketKey = tuple[str, str, str, datetime]
# Queue figures for API Health, one row per account, replaced in place (see `request_queues` in core.store.schema).
_PUBLISH = (
    "INSERT OR REPLACE INTO request_queues (provider, scope_key, queued, calls, wait_p50_s, wait_p95_s, updated_at)"
    " VALUES "
)
PUBLISH_CHUNK = 500
REPUBLISH_S = 60.0
QueueRow = tuple[str, str, int, int, float | None, float | None]
PUBLISH_EVERY_S = 5.0  # a page refreshed by hand needs no fresher figures; one short transaction per 5 s costs ~0.4 %
PUBLISH_WAIT_S = 0.2  # publishing never makes a vendor call wait on a held file
LEASE_SHARE = 50  # a lease is at most 1/50 of a budget: 20 of Enphase Watt's 1,000 a month, 6 of V1's 300 a day
DB_WAIT_S = 2.0  # how long a reservation waits for the file before counting offline
OFFLINE_RETRY = timedelta(minutes=5)
# A call is a line of ~75 bytes: 256 MB is 3 million calls, a month of 15-minute polls of 1,000 sources while the
# file stayed held. A larger file is not a journal this module wrote; it is moved aside rather than read whole.
JOURNAL_MAX_BYTES = 256_000_000
_JOURNAL_FLAGS = os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC  # a named pipe must not block the open


@dataclass
class Lease:
    """Calls of one bucket already counted in `quota_usage` by this process and not yet made."""

    left: int


class UnmovedLines(StoreFault):
    """Lines of the journal that are not calls could not be moved to the quarantine. The calls were counted and
    the journal now holds only those lines, so nothing is counted twice; the next flush tries the move again."""


class StoredQuotaLedger(QuotaLedger):
    """`QuotaLedger` whose counts live in `quota_usage`; concurrency slots and per-minute queues stay per process
    (they are momentary). With `lease_calls` above 1 (the collector), day and month calls are leased in blocks: see
    the module docstring."""

    def __init__(
        self,
        store: Store,
        concurrency_wait_s: float = 60.0,
        journal: Path | None = None,
        *,
        db_wait_s: float = DB_WAIT_S,
        queue_wait_s: float = 0.0,
        lease_calls: int = 1,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(concurrency_wait_s, queue_wait_s=queue_wait_s, clock=clock)
        self.store = store
        self.journal = journal
        self.db_wait_s = db_wait_s  # with a journal: how long to wait for the file before counting offline
        self.lease_calls = max(1, lease_calls)
        # Beside the spool's own: the journal lives in the spool folder (core.runtime).
        self.quarantine = Quarantine(journal.parent / FOLDER) if journal else None
        self._seen: dict[BucketKey, int] = {}  # the newest count of each bucket this process knows of
        self._leases: dict[BucketKey, Lease] = {}  # blocks counted in the file with calls still to hand out
        self._tallies: Counter[BucketKey] = Counter()  # paced minute calls made, not yet added to `quota_usage`
        self._counting = threading.Lock()  # one lease transaction of this process at a time
        self._published = -math.inf  # clock time queue figures were last written
        self._written: dict[tuple[str, str], tuple[QueueRow, float]] = {}  # each account's row as last written, when

    def used(self, provider: str, scope_key: str, period: str, now: datetime) -> int:
        """Calls counted so far; while the file is held, the count this process knows (with a journal). This
        process's leased calls not yet made do not count here (other processes see them as used)."""
        key: BucketKey = (provider, scope_key, period, period_bounds(period, now)[0])
        try:
            with self.store.connect(read_only=True, timeout_s=self.db_wait_s if self.journal else None) as con:
                counted = _count(con, key) + self._journalled(key)
        except StoreBusy:
            if self.journal is None:
                raise
            with self._lock:
                counted = self._seen.get(key, 0)
        with self._lock:
            lease = self._leases.get(key)
            return counted - (lease.left if lease else 0) + self._tallies.get(key, 0)

    def reserve(self, provider: str, scope_keys: Mapping[str, str], rules: Sequence[QuotaRule], now: datetime) -> None:
        super().reserve(provider, scope_keys, rules, now)
        if self.queue_wait_s <= 0:
            return
        paced = [r for r in rules if r.period == PACED_PERIOD and r.scope in scope_keys]
        with self._lock:  # for API Health's calls today (the minute buckets of V2 and Enphase)
            for rule in paced:
                self._tallies[(provider, scope_keys[rule.scope], rule.period, period_bounds(rule.period, now)[0])] += 1
        if paced and self.clock.now() - self._published >= PUBLISH_EVERY_S:
            self.publish_queues()

    def count(self, provider: str, scope_keys: Mapping[str, str], counted: Sequence[QuotaRule], now: datetime) -> None:
        if not counted:
            return
        with self._counting:
            if self._from_leases(provider, scope_keys, counted, now):
                return
            try:
                with contextlib.suppress(UnmovedLines):  # the journal holds no call then; the collector's sync says it
                    self._flush_journal_calls()
                with self.store.transaction(timeout_s=self.db_wait_s if self.journal else None) as con:
                    taken = self._take(con, provider, scope_keys, counted, now)
                    tallies = self._write_tallies(con)
            except StoreBusy:
                if self.journal is None:
                    raise
                self._reserve_offline(provider, scope_keys, counted, now)
                return
            with self._lock:
                self._tallies.subtract(tallies)
                for key, (calls, block) in taken.items():
                    self._seen[key] = calls + block
                    if block:  # a new lease; its first call is this one
                        self._leases[key] = Lease(block)
                    self._leases[key].left -= 1
                    if self._leases[key].left == 0:
                        del self._leases[key]

    def _from_leases(
        self, provider: str, scope_keys: Mapping[str, str], counted: Sequence[QuotaRule], now: datetime
    ) -> bool:
        """Hand out the call from this process's leases, if every bucket it counts in has one with calls left."""
        keys = [_bucket(provider, scope_keys, rule, now) for rule in counted]
        with self._lock:
            if not all(key in self._leases for key in keys):
                return False
            for key in keys:
                self._leases[key].left -= 1
                if self._leases[key].left == 0:
                    del self._leases[key]
            return True

    def _take(
        self,
        con: duckdb.DuckDBPyConnection,
        provider: str,
        scope_keys: Mapping[str, str],
        counted: Sequence[QuotaRule],
        now: datetime,
    ) -> dict[BucketKey, tuple[int, int]]:
        """In the store's transaction: bucket -> (its count before, calls added) for one more call: a new lease where
        this process has none left, nothing where it has. `RateLimited` (the transaction then changes nothing) when
        a budget has no room left. A lease is at most `lease_calls` and a small share of the budget, so that another
        process (the dashboard's Test Connection) still finds room, and a crash strands few calls."""
        taken: dict[BucketKey, tuple[int, int]] = {}
        for rule in counted:
            key = _bucket(provider, scope_keys, rule, now)
            if key in self._leases:
                taken[key] = (self._seen.get(key, 0), 0)
                continue
            calls = _count(con, key)
            room = rule.limit - calls
            if room <= 0:
                with self._lock:
                    self._seen[key] = calls
                raise budget_used_up(provider, rule, period_bounds(rule.period, now)[1])
            block = min(self.lease_calls, room, max(1, rule.limit // LEASE_SHARE))
            con.execute(_INCREMENT, [*key, block])
            taken[key] = (calls, block)
        return taken

    def _write_tallies(self, con: duckdb.DuckDBPyConnection) -> Counter[BucketKey]:
        with self._lock:
            tallies = +self._tallies
        for key, calls in tallies.items():
            con.execute(_INCREMENT, [*key, calls])
        return tallies

    def return_leases(self) -> None:
        """Give the calls leased and not made back to `quota_usage`, and add the minute calls made. Called by the
        collector's every-minute sync (through `flush_journal`) and at shutdown (`close`). `StoreBusy` when the file
        is held: the leases are then kept and still used."""
        with self._counting:
            with self._lock:
                if not self._leases and not self._tallies:
                    return
                unused = {key: lease.left for key, lease in self._leases.items()}
            with self.store.transaction(timeout_s=self.db_wait_s) as con:
                for key, left in unused.items():
                    con.execute(_INCREMENT, [*key, -left])
                tallies = self._write_tallies(con)
            with self._lock:
                self._tallies.subtract(tallies)
                self._tallies = +self._tallies
                for key, left in unused.items():
                    self._seen[key] = self._seen.get(key, left) - left
                self._leases.clear()

    def publish_queues(self) -> None:
        """Write this process's queue figures for API Health (`request_queues`), at most every `PUBLISH_EVERY_S`.
        A held file (or a file not yet migrated) skips a turn: the figures are a view, not a count."""
        with self._lock:
            now = self.clock.now()
            if now - self._published < PUBLISH_EVERY_S:
                return
            self._published = now
        # Only rows that changed, or whose last write is a minute old (API Health takes a row older than 3 minutes for
        # a stopped collector's): a fleet of thousands of accounts is not rewritten every 5 s.
        rows = []
        for f in self.queue_figures():
            row = (f.provider, f.scope_key, f.queued, f.calls, _rounded(f.wait_p50_s), _rounded(f.wait_p95_s))
            last = self._written.get(row[:2])
            if last is None or last[0] != row or now - last[1] >= REPUBLISH_S:
                rows.append(row)
        if not rows:
            return
        with (
            contextlib.suppress(StoreUnavailable, duckdb.Error),
            self.store.transaction(timeout_s=PUBLISH_WAIT_S) as con,
        ):
            for chunk in range(0, len(rows), PUBLISH_CHUNK):  # one statement per 500 rows, not one per row
                part = rows[chunk : chunk + PUBLISH_CHUNK]
                values = ", ".join(["(?, ?, ?, ?, ?, ?, now())"] * len(part))
                con.execute(_PUBLISH + values, [value for row in part for value in row])
            self._written.update({row[:2]: (row, now) for row in rows})

    def close(self) -> None:
        """At shutdown: leases back and the last queue figures; nothing fails for a held file (the calls leased
        stay counted, which errs on the safe side)."""
        with contextlib.suppress(StoreBusy, StoreFault):
            self.return_leases()
        if self.queue_wait_s > 0:
            self._published = -math.inf
            self.publish_queues()

    def _reserve_offline(
        self, provider: str, scope_keys: Mapping[str, str], counted: Sequence[QuotaRule], now: datetime
    ) -> None:
        """With the file held: the buckets where this process has leased calls left take them; the others are
        checked against the counts this process saw and journalled."""
        assert self.journal is not None
        with self._lock:
            leased = [r for r in counted if _bucket(provider, scope_keys, r, now) in self._leases]
            journalled = [r for r in counted if r not in leased]
            buckets: list[BucketKey] = [_bucket(provider, scope_keys, r, now) for r in journalled]
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
            keys = self._check(provider, scope_keys, journalled, now, lambda key: self._seen[key])
            if keys:
                with self._locked() as handle:
                    self._end_last_line(handle)
                    handle.seek(0, os.SEEK_END)
                    for key in keys:
                        handle.write((json.dumps([key[0], key[1], key[2], key[3].isoformat()]) + "\n").encode("utf-8"))
                    handle.flush()
                    os.fsync(handle.fileno())
            for key in keys:
                self._seen[key] += 1
            for rule in leased:
                key = _bucket(provider, scope_keys, rule, now)
                self._leases[key].left -= 1
                if self._leases[key].left == 0:
                    del self._leases[key]

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
            key = _bucket(provider, scope_keys, rule, now)
            calls = count(key)
            self._seen[key] = calls
            if calls >= rule.limit:
                raise budget_used_up(provider, rule, period_bounds(rule.period, now)[1])
            keys.append(key)
        return keys

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
        """The collector's every-minute settling: the journal's calls added (`_flush_journal_calls`), then this
        process's unused leases returned and its queue figures published."""
        self._flush_journal_calls()
        self.return_leases()
        if self.queue_wait_s > 0:
            self.publish_queues()

    def _flush_journal_calls(self) -> None:
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


def _bucket(provider: str, scope_keys: Mapping[str, str], rule: QuotaRule, now: datetime) -> BucketKey:
    return (provider, scope_keys[rule.scope], rule.period, period_bounds(rule.period, now)[0])


def _rounded(seconds: float | None) -> float | None:
    """A wait as API Health shows it at most (a tenth of a second): finer changes are not worth a write."""
    return None if seconds is None else round(seconds, 1)
