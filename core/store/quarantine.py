"""Where the collector puts what it read at start and cannot use: a damaged spool entry, garbled journal lines.

One bad file must never stop the collector for good, nor hold back the good entries queued behind it; nor may it
be silently deleted (it may hold readings the vendor no longer serves). So it is moved aside, with a note saying
why, logged once at ERROR, and skipped. The operator inspects it, then deletes it or, for a spool entry, repairs it
and moves it back; until then the API Health page and `collector --once` say it is there.

The quarantine is the folder `quarantine/` INSIDE the spool folder (`<database file>.spool/quarantine/`):
- it stays as private as the spool (inside its owner-only folder), and a move into it is one rename on the same
  file system, so an entry is never half moved;
- `Spool.pending` only takes `pass-*` folders, so nothing in it is ever applied;
- the operator has one folder to look at for everything the collector keeps on disk beside the database.

Each quarantined item is one folder holding the item and a `WHY.txt` note (what, when, why, what to do): a spool
entry keeps its folder and name (moved back, it is written at the next pass), garbled journal lines go to
`quota-journal-<utc time>-<random>/quota-journal.jsonl`, byte for byte, and a journal that is not a file we wrote
(a named pipe, a folder, a file of absurd size) is moved into such a folder whole.

An item appears whole or not at all, so a failure (a full disk) never leaves something moved without its note, nor
a note without its item: the note is written before the move (into the entry folder, which then moves with it),
and bytes and their note are put together in a hidden `.tmp-*` folder renamed into place at the end. When the item
is gone before it could be moved, another process (a `collector --once` beside the daemon) handled it first: that
is not a failure and is not logged as one.

The quarantine, like the spool, is its owner's only (`core.store.private_files`): folders 0700, files 0600.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from core.store.private_files import Unreadable, os_error_words, private_dir, read_bounded, write_private
from core.validation import capped

log = logging.getLogger(__name__)

FOLDER = "quarantine"
NOTE = "WHY.txt"
MAX_REASON = 500  # an exception text can quote a whole file; the note and the log line stay readable
NOTE_MAX_BYTES = 64_000  # a note we wrote is under 2 KB; anything larger is not ours to show
_STAGING = ".tmp-"


@dataclass(frozen=True)
class QuarantinedItem:
    name: str  # the item's folder in the quarantine
    reason: str
    quarantined_at: datetime | None  # None when its note is missing or unreadable


@dataclass(frozen=True)
class QuarantineReport:
    """What waits in the quarantine folder; `unreadable` says why it could not be looked into (then no items)."""

    folder: Path
    items: list[QuarantinedItem]
    unreadable: str | None = None


class Quarantine:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def hold_entry(self, entry: Path, what: str, reason: str) -> Path | None:
        """Move the folder `entry` into the quarantine (same name, unless taken), its note written into it first;
        logged once. None when `entry` is gone: another process moved or wrote it first."""
        private_dir(self.directory)
        reason = _short(reason)
        try:
            write_private(entry / NOTE, _note(what, reason))
            target = self._free_name(entry.name)
            os.rename(entry, target)
        except FileNotFoundError:
            if os.path.lexists(entry):
                raise  # the quarantine folder went away meanwhile: a failure of ours
            log.debug("%s was already handled by another process", what)
            return None
        return self._logged(target, what, reason)

    def hold_bytes(self, file_name: str, data: bytes, what: str, reason: str) -> Path:
        """Keep `data` byte for byte as `<new folder>/<file_name>` in the quarantine, with its note; logged once."""
        reason = _short(reason)
        staging = self._staging(file_name)
        try:
            write_private(staging / file_name, data)
            write_private(staging / NOTE, _note(what, reason))
            target = self._free_name(staging.name.removeprefix(_STAGING))
            os.rename(staging, target)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return self._logged(target, what, reason)

    def hold_file(self, path: Path, what: str, reason: str) -> Path | None:
        """Move whatever is at `path` (a file, named pipe, folder) into a new folder of the quarantine, with its
        note; logged once. None when it is gone: another process moved it first."""
        reason = _short(reason)
        staging = self._staging(path.name)
        try:
            write_private(staging / NOTE, _note(what, reason))
            os.rename(path, staging / path.name)
            target = self._free_name(staging.name.removeprefix(_STAGING))
            os.rename(staging, target)
        except FileNotFoundError:
            shutil.rmtree(staging, ignore_errors=True)
            if os.path.lexists(path):
                raise
            log.debug("%s was already handled by another process", what)
            return None
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return self._logged(target, what, reason)

    def report(self) -> QuarantineReport:
        """The items waiting, oldest first; never raises (the page and `--once` only look)."""
        try:
            folders = (
                sorted(p for p in self.directory.iterdir() if p.is_dir() and not p.name.startswith(_STAGING))
                if self.directory.is_dir()
                else []
            )
        except OSError as exc:
            return QuarantineReport(self.directory, [], os_error_words(exc))
        items = [_read_note(folder) for folder in folders]
        items.sort(key=lambda item: (item.quarantined_at or datetime.max.replace(tzinfo=UTC), item.name))
        return QuarantineReport(self.directory, items)

    def _staging(self, file_name: str) -> Path:
        """A new hidden folder in the quarantine where an item is put together before it appears under its name."""
        private_dir(self.directory)
        stem = file_name.split(".")[0]
        staging = self.directory / f"{_STAGING}{stem}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
        private_dir(staging)
        return staging

    def _free_name(self, name: str) -> Path:
        target = self.directory / name
        suffix = 1
        while os.path.lexists(target):
            suffix += 1
            target = self.directory / f"{name}-{suffix}"
        return target

    def _logged(self, target: Path, what: str, reason: str) -> Path:
        log.error("%s moved to quarantine, %s: %s", what, target, reason)
        return target


def _note(what: str, reason: str) -> bytes:
    return (
        f"What: {what}\n"
        f"When: {datetime.now(UTC).isoformat(timespec='seconds')}\n"
        f"Why: {reason}\n"
        "What to do: look at it; then delete this folder, or (for a spool entry) repair it, delete this note and"
        " move the folder back into the spool folder under its own name: the collector writes it at its next"
        " pass.\n"
    ).encode()


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def _read_note(folder: Path) -> QuarantinedItem:
    try:
        lines = read_bounded(folder / NOTE, NOTE_MAX_BYTES).decode("utf-8", errors="replace").splitlines()
    except (OSError, Unreadable):
        return QuarantinedItem(folder.name, f"no readable {NOTE} note", None)
    fields = dict(line.split(": ", 1) for line in lines if ": " in line)
    try:
        when: datetime | None = datetime.fromisoformat(fields.get("When", ""))
    except ValueError:
        when = None
    return QuarantinedItem(folder.name, fields.get("Why", f"{NOTE} gives no reason"), when)


def report_lines(report: QuarantineReport, limit: int = 5) -> list[str]:
    """What waits in the quarantine in a few lines for the operator (`collector --once`, the collector's start); no
    lines when nothing does."""
    if report.unreadable:
        return [f"the quarantine folder {report.folder} cannot be read: {report.unreadable}"]
    if not report.items:
        return []
    lines = [
        f"{len(report.items)} item(s) in quarantine, {report.folder}: look at each (its {NOTE} says why), then"
        " delete it, or repair a spool entry and move it back into the spool folder"
    ]
    return lines + capped([f"{item.name}: {item.reason}" for item in report.items], limit, indent="  ")
