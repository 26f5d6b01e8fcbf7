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
`quota-journal-<utc time>-<random>/quota-journal.jsonl`, byte for byte.

The quarantine, like the spool, is its owner's only (`core.private_files`): folders 0700, files 0600, created so
whatever the umask (`private_dir`, `write_private`, also used by the spool and the quota journal).
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from core.private_files import PRIVATE_DIR, PRIVATE_FILE, make_private

log = logging.getLogger(__name__)

FOLDER = "quarantine"
NOTE = "WHY.txt"
MAX_REASON = 500  # an exception text can quote a whole file; the note and the log line stay readable


def private_dir(path: Path) -> None:
    """Create `path` (and missing parents) owner-only; an existing folder is left to `tighten`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=PRIVATE_DIR)
    except FileExistsError:
        return
    make_private(path)  # mkdir's mode is masked by the umask, which may also take the owner's bits


def write_private(path: Path, data: bytes) -> None:
    """Write an owner-only file durably (replacing any file of that name)."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE), "wb") as handle:
        os.fchmod(handle.fileno(), PRIVATE_FILE)  # an existing file keeps its mode through O_CREAT
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


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

    def hold_entry(self, entry: Path, what: str, reason: str) -> Path:
        """Move the folder `entry` into the quarantine (same name, unless taken) with its note; logged once."""
        private_dir(self.directory)
        target = self._free_name(entry.name)
        os.rename(entry, target)
        return self._noted(target, what, reason)

    def hold_bytes(self, file_name: str, data: bytes, what: str, reason: str) -> Path:
        """Keep `data` byte for byte as `<new folder>/<file_name>` in the quarantine, with its note; logged once."""
        private_dir(self.directory)
        stem = file_name.split(".")[0]
        target = self._free_name(f"{stem}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}")
        private_dir(target)
        write_private(target / file_name, data)
        return self._noted(target, what, reason)

    def report(self) -> QuarantineReport:
        """The items waiting, oldest first; never raises (the page and `--once` only look)."""
        try:
            folders = sorted(p for p in self.directory.iterdir() if p.is_dir()) if self.directory.is_dir() else []
        except OSError as exc:
            return QuarantineReport(self.directory, [], f"{exc.strerror or exc}")
        items = [_read_note(folder) for folder in folders]
        items.sort(key=lambda item: (item.quarantined_at or datetime.max.replace(tzinfo=UTC), item.name))
        return QuarantineReport(self.directory, items)

    def _free_name(self, name: str) -> Path:
        target = self.directory / name
        suffix = 1
        while target.exists():
            suffix += 1
            target = self.directory / f"{name}-{suffix}"
        return target

    def _noted(self, target: Path, what: str, reason: str) -> Path:
        reason = _short(reason)
        note = (
            f"What: {what}\n"
            f"When: {datetime.now(UTC).isoformat(timespec='seconds')}\n"
            f"Why: {reason}\n"
            "What to do: look at it; then delete this folder, or (for a spool entry) repair it, delete this note and"
            " move the folder back into the spool folder under its own name: the collector writes it at its next"
            " pass.\n"
        )
        write_private(target / NOTE, note.encode("utf-8"))
        log.error("%s moved to quarantine, %s: %s", what, target, reason)
        return target


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def _read_note(folder: Path) -> QuarantinedItem:
    try:
        lines = (folder / NOTE).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
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
    lines += [f"  {item.name}: {item.reason}" for item in report.items[:limit]]
    if len(report.items) > limit:
        lines.append(f"  ... and {len(report.items) - limit} more")
    return lines
